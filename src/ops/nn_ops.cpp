// Neural-network ops: Softmax (and SoftmaxGrad),
// SparseSoftmaxCrossEntropyWithLogits, Dropout.
#include <cmath>

#include "op_util.h"
#include "ringflow/tensor/random.h"

namespace ringflow::ops {

namespace {

// Rows and classes of a tensor whose last axis is the class axis.
void rows_cols(const Tensor& x, std::int64_t& rows, std::int64_t& cols) {
  cols = x.rank() == 0 ? 1 : x.dim(-1);
  rows = cols == 0 ? 0 : x.num_elements() / cols;
}

struct RowStats {
  float max;  // m = max_k x_k
  float sum;  // sum_k e^(x_k - m)
};

// out_j = softmax(x)_j = e^(x_j - m) / sum_k e^(x_k - m); subtracting the row
// max m keeps every exponent <= 0 (no overflow).
RowStats softmax_row(const float* in, float* out, std::int64_t cols) {
  float m = in[0];
  for (std::int64_t j = 1; j < cols; ++j) m = std::max(m, in[j]);
  float s = 0;
  for (std::int64_t j = 0; j < cols; ++j) s += out[j] = std::exp(in[j] - m);
  const float inv = 1.0f / s;
  for (std::int64_t j = 0; j < cols; ++j) out[j] *= inv;
  return {m, s};
}

void softmax_kernel(KernelContext& c) {
  const Tensor& x = c.input(0);
  Tensor& y = c.allocate_output(0, DType::f32, x.shape());
  std::int64_t rows, cols;
  rows_cols(x, rows, cols);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  parallel_blocks(c, rows, 256, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t r = lo; r < hi; ++r) {
      const float* in = px + r * cols;
      float* out = py + r * cols;
      softmax_row(in, out, cols);
    }
  });
}

// dx_j = y_j (g_j - sum_k g_k y_k)
void softmax_grad_kernel(KernelContext& c) {
  const Tensor& g = c.input(0);
  const Tensor& y = c.input(1);
  if (g.shape() != y.shape()) c.fail("gradient ", describe(g), " vs output ", describe(y));
  Tensor& dx = c.allocate_output(0, DType::f32, y.shape());
  std::int64_t rows, cols;
  rows_cols(y, rows, cols);
  const float* pg = g.data<float>();
  const float* py = y.data<float>();
  float* pd = dx.data<float>();
  for (std::int64_t r = 0; r < rows; ++r) {
    float dot = 0;
    for (std::int64_t j = 0; j < cols; ++j) dot += pg[r * cols + j] * py[r * cols + j];
    for (std::int64_t j = 0; j < cols; ++j)
      pd[r * cols + j] = py[r * cols + j] * (pg[r * cols + j] - dot);
  }
}

// loss_b = log sum_j e^(x_bj) - x_b,label = (m + log sum_j e^(x_bj - m)) - x_b,label
// backprop_b = softmax(x_b) - onehot(label_b) = d loss_b / d x_b
void sparse_xent_kernel(KernelContext& c) {
  const Tensor& x = c.input(0);
  const Tensor& labels = c.input(1);
  const std::int64_t rows = x.dim(0), cols = x.dim(1);
  if (labels.rank() != 1 || labels.dim(0) != rows)
    c.fail("labels ", describe(labels), " do not match logits ", describe(x),
           "; need one label per row");
  Tensor& loss = c.allocate_output(0, DType::f32, Shape{rows});
  Tensor& back = c.allocate_output(1, DType::f32, x.shape());
  const float* px = x.data<float>();
  const std::int32_t* pl = labels.data<std::int32_t>();
  float* pb = back.data<float>();
  float* ploss = loss.data<float>();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int32_t label = pl[r];
    if (label < 0 || label >= cols)
      c.fail("label ", label, " in row ", r, " is outside [0, ", cols,
             "); check the data set's labels and the model's class count");
    const float* in = px + r * cols;
    float* out = pb + r * cols;
    const RowStats st = softmax_row(in, out, cols);
    out[label] -= 1.0f;
    ploss[r] = std::log(st.sum) - (in[label] - st.max);  // (in - max) first: no cancellation
  }
}

void dropout_kernel(KernelContext& c) {
  const Tensor& x = c.input(0);
  const bool training = c.input(1).scalar_value() != 0.0f;
  const float rate = c.attrs().get_float("rate");
  Tensor& mask = c.allocate_output(1, DType::f32, x.shape());
  if (!training || rate == 0.0f) {
    c.set_output(0, x);
    mask.fill(1.0f);
    return;
  }
  Tensor& y = c.allocate_output(0, DType::f32, x.shape());
  const auto seed = static_cast<std::uint64_t>(c.attrs().get_int("seed"));
  // A fresh mask each run, reproducibly: keyed by the optional stream input
  // (the trainer feeds step and rank) or else by how often the node ran.
  const std::uint64_t stream =
      c.num_inputs() == 3 ? static_cast<std::uint64_t>(
                                static_cast<std::uint32_t>(c.input(2).data<std::int32_t>()[0]))
                          : c.run_count();
  const float keep_scale = 1.0f / (1.0f - rate);
  const float* px = x.data<float>();
  float* py = y.data<float>();
  float* pm = mask.data<float>();
  parallel_blocks(c, x.num_elements(), 1 << 14, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) {
      const bool keep = random::uniform01(seed, stream, static_cast<std::uint64_t>(i)) >= rate;
      pm[i] = keep ? keep_scale : 0.0f;
      py[i] = px[i] * pm[i];
    }
  });
}

}  // namespace

void register_nn_ops(OpRegistry& r) {
  r.add({.name = "Softmax",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(1);
               c.expect_dtype(0, DType::f32);
               if (c.in_shape(0).rank() < 1) c.fail(c.in_desc(0), " needs at least one axis");
               c.set_output(0, DType::f32, c.in_shape(0));
             },
         .kernel = softmax_kernel,
         .grad =
             [](GradContext& g) {
               return std::vector<Output>{make_op("SoftmaxGrad", {g.grad(), g.output()})};
             }});
  r.add({.name = "SoftmaxGrad",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               c.set_output(0, DType::f32, c.in_shape(1));
             },
         .kernel = softmax_grad_kernel});
  r.add({.name = "SparseSoftmaxCrossEntropyWithLogits",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               c.expect_dtype(0, DType::f32);
               c.expect_rank(0, 2);
               if (c.in_dtype(1) != DType::i32) c.fail("labels ", c.in_desc(1), " must be i32");
               c.expect_rank(1, 1);
               const std::int64_t b0 = c.in_shape(0).dim(0), b1 = c.in_shape(1).dim(0);
               if (b0 >= 0 && b1 >= 0 && b0 != b1)
                 c.fail("logits ", c.in_desc(0), " and labels ", c.in_desc(1),
                        " differ in batch size");
               c.set_output(0, DType::f32, Shape{b0 >= 0 ? b0 : b1});
               c.set_output(1, DType::f32, c.in_shape(0));
             },
         .kernel = sparse_xent_kernel,
         // d loss_b / d logits_b = backprop_b, scaled by the incoming g_b.
         .grad =
             [](GradContext& g) {
               Output back = g.output(1);
               return std::vector<Output>{mul(back, reshape(g.grad(0), {-1, 1})), Output()};
             }});
  r.add({.name = "Dropout",
         .shape_fn =
             [](ShapeContext& c) {
               if (c.num_inputs() != 2) c.expect_inputs(3);
               c.expect_dtype(0, DType::f32);
               if (c.in_shape(1).rank() != 0)
                 c.fail("the training switch ", c.in_desc(1), " must be a scalar");
               if (c.num_inputs() == 3 &&
                   (c.in_dtype(2) != DType::i32 || c.in_shape(2).rank() != 0))
                 c.fail("the mask stream ", c.in_desc(2), " must be an i32 scalar");
               const float rate = c.attrs().get_float("rate");
               if (!(rate >= 0.0f && rate < 1.0f)) c.fail("rate ", rate, " must be in [0, 1)");
               c.set_output(0, DType::f32, c.in_shape(0));
               c.set_output(1, DType::f32, c.in_shape(0));
             },
         .kernel = dropout_kernel,
         // dy/dx = mask (0 or 1 / (1 - rate))
         .grad =
             [](GradContext& g) {
               std::vector<Output> grads{mul(g.grad(0), g.output(1)), Output()};
               if (g.node.inputs.size() == 3) grads.emplace_back();
               return grads;
             }});
}

}  // namespace ringflow::ops

namespace ringflow {

Output softmax(Output logits) {
  return ops::make_op("Softmax", {logits});
}
Output sparse_softmax_cross_entropy_with_logits(Output logits, Output labels) {
  return ops::make_op("SparseSoftmaxCrossEntropyWithLogits", {logits, labels});
}
Output dropout(Output x, float rate, Output training, std::uint64_t seed, Output stream) {
  std::vector<Output> inputs{x, training};
  if (stream.valid()) inputs.push_back(stream);
  return ops::make_op(
      "Dropout", inputs,
      {{"rate", static_cast<double>(rate)}, {"seed", static_cast<std::int64_t>(seed)}});
}

}  // namespace ringflow
