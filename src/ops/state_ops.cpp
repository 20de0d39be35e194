// Ops that write variables: Assign and the optimizers' apply ops. Input 0 of
// each is a Variable's output, which is a handle to the variable's storage,
// so the update happens in place. Weight decay adds wd * var to the gradient
// (coupled L2, as in SGD with weight_decay).
#include <cmath>

#include "op_util.h"

namespace ringflow::ops {

namespace {

void expect_variable(ShapeContext& c, int i) {
  if (c.node().inputs.at(static_cast<std::size_t>(i)).node().op != "Variable")
    c.fail(c.in_desc(i), " must be a variable");
}

void expect_like(ShapeContext& c, int i, int like) {
  if (!c.in_shape(i).compatible_with(c.in_shape(like)))
    c.fail(c.in_desc(i), " must have the shape of ", c.in_desc(like));
}

void expect_scalar(ShapeContext& c, int i) {
  if (c.in_shape(i).rank() != 0) c.fail(c.in_desc(i), " must be a scalar");
}

void check_runtime(KernelContext& c, const Tensor& var, const Tensor& grad) {
  if (var.shape() != grad.shape())
    c.fail("gradient ", describe(grad), " does not match variable ", describe(var));
}

// ApplyGradientDescent(var, lr, grad): var -= lr * (grad + wd var)
void sgd_kernel(KernelContext& c) {
  Tensor var = c.input(0);
  const float lr = c.input(1).scalar_value();
  const Tensor& grad = c.input(2);
  check_runtime(c, var, grad);
  const float wd = c.attrs().get_float("weight_decay");
  float* w = var.data<float>();
  const float* g = grad.data<float>();
  parallel_blocks(c, var.num_elements(), 1 << 15, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) w[i] -= lr * (g[i] + wd * w[i]);
  });
  c.set_output(0, var);
}

// ApplyMomentum(var, accum, lr, grad):
//   accum = momentum accum + g;  var -= lr accum
//   Nesterov: var -= lr (g + momentum accum)
void momentum_kernel(KernelContext& c) {
  Tensor var = c.input(0);
  Tensor accum = c.input(1);
  const float lr = c.input(2).scalar_value();
  const Tensor& grad = c.input(3);
  check_runtime(c, var, grad);
  const float m = c.attrs().get_float("momentum");
  const float wd = c.attrs().get_float("weight_decay");
  const bool nesterov = c.attrs().get_bool("nesterov");
  float* w = var.data<float>();
  float* a = accum.data<float>();
  const float* g = grad.data<float>();
  parallel_blocks(c, var.num_elements(), 1 << 15, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) {
      const float gi = g[i] + wd * w[i];
      a[i] = m * a[i] + gi;
      w[i] -= nesterov ? lr * (gi + m * a[i]) : lr * a[i];
    }
  });
  c.set_output(0, var);
}

// ApplyAdam(var, m, v, t, lr, grad):
//   t += 1;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   var -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
void adam_kernel(KernelContext& c) {
  Tensor var = c.input(0);
  Tensor m = c.input(1);
  Tensor v = c.input(2);
  Tensor t = c.input(3);
  const float lr = c.input(4).scalar_value();
  const Tensor& grad = c.input(5);
  check_runtime(c, var, grad);
  const float b1 = c.attrs().get_float("beta1"), b2 = c.attrs().get_float("beta2");
  const float eps = c.attrs().get_float("epsilon"), wd = c.attrs().get_float("weight_decay");
  float& step = t.data<float>()[0];
  step += 1.0f;
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(step));
  const auto lr_t = static_cast<float>(lr * std::sqrt(bc2) / bc1);
  float* w = var.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const float* g = grad.data<float>();
  parallel_blocks(c, var.num_elements(), 1 << 15, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) {
      const float gi = g[i] + wd * w[i];
      pm[i] = b1 * pm[i] + (1.0f - b1) * gi;
      pv[i] = b2 * pv[i] + (1.0f - b2) * gi * gi;
      w[i] -= lr_t * pm[i] / (std::sqrt(pv[i]) + eps);
    }
  });
  c.set_output(0, var);
}

}  // namespace

void register_state_ops(OpRegistry& r) {
  r.add({.name = "Assign",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               expect_variable(c, 0);
               expect_like(c, 1, 0);
               c.set_output(0, DType::f32, c.in_shape(0));
             },
         .kernel =
             [](KernelContext& c) {
               Tensor var = c.input(0);
               if (var.shape() != c.input(1).shape())
                 c.fail("value ", describe(c.input(1)), " does not match variable ", describe(var));
               var.copy_from(c.input(1));
               c.set_output(0, var);
             },
         .no_gradient = true,
         .stateful = true});
  r.add({.name = "ApplyGradientDescent",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(3);
               expect_variable(c, 0);
               expect_scalar(c, 1);
               expect_like(c, 2, 0);
               c.set_output(0, DType::f32, c.in_shape(0));
             },
         .kernel = sgd_kernel,
         .no_gradient = true,
         .stateful = true});
  r.add({.name = "ApplyMomentum",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(4);
               expect_variable(c, 0);
               expect_variable(c, 1);
               expect_like(c, 1, 0);
               expect_scalar(c, 2);
               expect_like(c, 3, 0);
               c.set_output(0, DType::f32, c.in_shape(0));
             },
         .kernel = momentum_kernel,
         .no_gradient = true,
         .stateful = true});
  r.add({.name = "ApplyAdam",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(6);
               for (int i : {0, 1, 2, 3}) expect_variable(c, i);
               expect_like(c, 1, 0);
               expect_like(c, 2, 0);
               expect_scalar(c, 3);
               expect_scalar(c, 4);
               expect_like(c, 5, 0);
               c.set_output(0, DType::f32, c.in_shape(0));
             },
         .kernel = adam_kernel,
         .no_gradient = true,
         .stateful = true});
}

}  // namespace ringflow::ops

namespace ringflow {

Output assign(Output var, Output value) {
  return ops::make_op("Assign", {var, value});
}

}  // namespace ringflow
