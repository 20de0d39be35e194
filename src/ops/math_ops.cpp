// Element-wise ops: Add, Sub, Mul, Div (with broadcasting), Neg, Relu,
// Sigmoid, Tanh, Exp, Log, Square, Identity, and the helpers their gradients
// need (SumLike, ReluGrad, SigmoidGrad, TanhGrad).
//
// Broadcasting aligns shapes from the right; each pair of dims must be equal
// or one of them 1 (a missing dim counts as 1). The gradient of a broadcast
// input is the output gradient summed over the dims it was expanded along.
#include <cmath>

#include "op_util.h"

namespace ringflow::ops {

Shape broadcast_shape(const ShapeContext& c, const Shape& a, const Shape& b) {
  const int r = std::max(a.rank(), b.rank());
  std::vector<std::int64_t> out(static_cast<std::size_t>(r));
  for (int i = 0; i < r; ++i) {
    const int ia = a.rank() - r + i, ib = b.rank() - r + i;
    const std::int64_t da = ia >= 0 ? a.dim(ia) : 1;
    const std::int64_t db = ib >= 0 ? b.dim(ib) : 1;
    std::int64_t d;
    if (da == db) {
      d = da;
    } else if (da == 1) {
      d = db;
    } else if (db == 1) {
      d = da;
    } else if (da < 0) {
      d = db;  // the unknown dim must turn out to be db (or 1)
    } else if (db < 0) {
      d = da;
    } else {
      c.fail("cannot broadcast ", c.in_desc(0), " with ", c.in_desc(1),
             ": dims must be equal or 1, aligned from the right");
    }
    out[static_cast<std::size_t>(i)] = d;
  }
  return Shape(out);
}

Shape broadcast_shape(const KernelContext& c, const Shape& a, const Shape& b) {
  const int r = std::max(a.rank(), b.rank());
  std::vector<std::int64_t> out(static_cast<std::size_t>(r));
  for (int i = 0; i < r; ++i) {
    const int ia = a.rank() - r + i, ib = b.rank() - r + i;
    const std::int64_t da = ia >= 0 ? a.dim(ia) : 1;
    const std::int64_t db = ib >= 0 ? b.dim(ib) : 1;
    if (da != db && da != 1 && db != 1)
      c.fail("cannot broadcast shapes ", a.to_string(), " and ", b.to_string(), " at run time");
    out[static_cast<std::size_t>(i)] = da == 1 ? db : da;
  }
  return Shape(out);
}

namespace {

// Strides of `s` seen through the broadcast shape `out` (0 along expanded dims).
std::vector<std::int64_t> broadcast_strides(const Shape& s, const Shape& out) {
  const int r = out.rank();
  std::vector<std::int64_t> st(static_cast<std::size_t>(r), 0);
  std::int64_t stride = 1;
  for (int i = s.rank() - 1; i >= 0; --i) {
    const int o = r - s.rank() + i;
    st[static_cast<std::size_t>(o)] = s.dim(i) == 1 ? 0 : stride;
    stride *= s.dim(i);
  }
  return st;
}

// Calls f(offset_out, offset_a, offset_b, inner_len, inner_stride_a,
// inner_stride_b) for each run of the innermost dim.
template <class F>
void for_each_broadcast_run(const Shape& out, const std::vector<std::int64_t>& sa,
                            const std::vector<std::int64_t>& sb, F&& f) {
  const int r = out.rank();
  if (r == 0) {
    f(0, 0, 0, 1, 0, 0);
    return;
  }
  const std::int64_t inner = out.dim(r - 1);
  const std::int64_t outer = inner == 0 ? 0 : out.num_elements() / inner;
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r), 0);
  for (std::int64_t o = 0; o < outer; ++o) {
    std::int64_t oa = 0, ob = 0;
    for (int d = 0; d < r - 1; ++d) {
      oa += idx[static_cast<std::size_t>(d)] * sa[static_cast<std::size_t>(d)];
      ob += idx[static_cast<std::size_t>(d)] * sb[static_cast<std::size_t>(d)];
    }
    f(o * inner, oa, ob, inner, sa[static_cast<std::size_t>(r - 1)],
      sb[static_cast<std::size_t>(r - 1)]);
    for (int d = r - 2; d >= 0; --d) {
      if (++idx[static_cast<std::size_t>(d)] < out.dim(d)) break;
      idx[static_cast<std::size_t>(d)] = 0;
    }
  }
}

template <class F>
void binary_kernel(KernelContext& c, F f) {
  const Tensor& a = c.input(0);
  const Tensor& b = c.input(1);
  const Shape out_shape = broadcast_shape(c, a.shape(), b.shape());
  Tensor& y = c.allocate_output(0, DType::f32, out_shape);
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* py = y.data<float>();
  const std::int64_t n = y.num_elements();
  constexpr std::int64_t kGrain = 1 << 15;
  if (a.num_elements() == n && b.num_elements() == n) {
    parallel_blocks(c, n, kGrain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) py[i] = f(pa[i], pb[i]);
    });
  } else if (b.num_elements() == 1 && a.num_elements() == n) {
    const float s = pb[0];
    parallel_blocks(c, n, kGrain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) py[i] = f(pa[i], s);
    });
  } else if (a.num_elements() == 1 && b.num_elements() == n) {
    const float s = pa[0];
    parallel_blocks(c, n, kGrain, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) py[i] = f(s, pb[i]);
    });
  } else if (a.num_elements() == n && b.num_elements() > 0 && n % b.num_elements() == 0 &&
             broadcast_strides(b.shape(), out_shape).back() == 1 &&
             [&] {  // b is a suffix of the output shape: the bias case [B, H] + [H]
               const int k = b.shape().rank();
               for (int i = 0; i < k; ++i)
                 if (b.shape().dim(i) != out_shape.dim(out_shape.rank() - k + i)) return false;
               return true;
             }()) {
    const std::int64_t inner = b.num_elements();
    parallel_blocks(c, n / inner, std::max<std::int64_t>(1, kGrain / inner),
                    [&](std::int64_t lo, std::int64_t hi) {
                      for (std::int64_t o = lo; o < hi; ++o)
                        for (std::int64_t j = 0; j < inner; ++j)
                          py[o * inner + j] = f(pa[o * inner + j], pb[j]);
                    });
  } else {
    const auto sa = broadcast_strides(a.shape(), out_shape);
    const auto sb = broadcast_strides(b.shape(), out_shape);
    for_each_broadcast_run(out_shape, sa, sb,
                           [&](std::int64_t oy, std::int64_t oa, std::int64_t ob, std::int64_t len,
                               std::int64_t ia, std::int64_t ib) {
                             for (std::int64_t j = 0; j < len; ++j)
                               py[oy + j] = f(pa[oa + j * ia], pb[ob + j * ib]);
                           });
  }
}

template <class F>
void unary_kernel(KernelContext& c, F f) {
  const Tensor& x = c.input(0);
  Tensor& y = c.allocate_output(0, DType::f32, x.shape());
  const float* px = x.data<float>();
  float* py = y.data<float>();
  parallel_blocks(c, x.num_elements(), 1 << 14, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) py[i] = f(px[i]);
  });
}

// y = f(a, b) for two same-shape inputs (the gradient helpers).
template <class F>
void same_shape_kernel(KernelContext& c, F f) {
  const Tensor& a = c.input(0);
  const Tensor& b = c.input(1);
  if (a.shape() != b.shape())
    c.fail("inputs have shapes ", a.shape().to_string(), " and ", b.shape().to_string());
  Tensor& y = c.allocate_output(0, DType::f32, a.shape());
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* py = y.data<float>();
  parallel_blocks(c, a.num_elements(), 1 << 14, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) py[i] = f(pa[i], pb[i]);
  });
}

void binary_shape(ShapeContext& c) {
  c.expect_inputs(2);
  c.expect_dtype(0, DType::f32);
  c.expect_dtype(1, DType::f32);
  c.set_output(0, DType::f32, broadcast_shape(c, c.in_shape(0), c.in_shape(1)));
}

void unary_shape(ShapeContext& c) {
  c.expect_inputs(1);
  c.expect_dtype(0, DType::f32);
  c.set_output(0, DType::f32, c.in_shape(0));
}

void same_shape2(ShapeContext& c) {
  c.expect_inputs(2);
  if (!c.in_shape(0).compatible_with(c.in_shape(1)))
    c.fail(c.in_desc(0), " and ", c.in_desc(1), " must have the same shape");
  c.set_output(0, DType::f32, c.in_shape(0));
}

// SumLike(g, x): g summed down to x's run-time shape.
void sum_like_kernel(KernelContext& c) {
  const Tensor& g = c.input(0);
  const Shape& target = c.input(1).shape();
  if (g.shape() == target) {
    c.set_output(0, g);
    return;
  }
  if (broadcast_shape(c, g.shape(), target) != g.shape())
    c.fail("cannot sum ", g.shape().to_string(), " down to ", target.to_string());
  Tensor& y = c.allocate_output(0, DType::f32, target);
  y.fill(0.0f);
  const float* pg = g.data<float>();
  float* py = y.data<float>();
  const std::int64_t n = g.num_elements();
  const std::int64_t m = y.num_elements();
  if (m == 1) {
    double s = 0;  // a long sum: accumulate in double
    for (std::int64_t i = 0; i < n; ++i) s += pg[i];
    py[0] = static_cast<float>(s);
    return;
  }
  const auto sy = broadcast_strides(target, g.shape());
  const auto sg = broadcast_strides(g.shape(), g.shape());
  for_each_broadcast_run(g.shape(), sg, sy,
                         [&](std::int64_t og, std::int64_t, std::int64_t oy, std::int64_t len,
                             std::int64_t, std::int64_t iy) {
                           if (iy == 0) {
                             float s = 0;
                             for (std::int64_t j = 0; j < len; ++j) s += pg[og + j];
                             py[oy] += s;
                           } else {
                             for (std::int64_t j = 0; j < len; ++j) py[oy + j * iy] += pg[og + j];
                           }
                         });
}

}  // namespace

void register_math_ops(OpRegistry& r) {
  r.add(
      {.name = "Add",
       .shape_fn = binary_shape,
       .kernel = [](KernelContext& c) { binary_kernel(c, [](float a, float b) { return a + b; }); },
       .grad =
           [](GradContext& g) {
             return std::vector<Output>{sum_like(g.grad(), g.input(0)),
                                        sum_like(g.grad(), g.input(1))};
           }});
  r.add(
      {.name = "Sub",
       .shape_fn = binary_shape,
       .kernel = [](KernelContext& c) { binary_kernel(c, [](float a, float b) { return a - b; }); },
       .grad =
           [](GradContext& g) {
             return std::vector<Output>{sum_like(g.grad(), g.input(0)),
                                        sum_like(neg(g.grad()), g.input(1))};
           }});
  r.add(
      {.name = "Mul",
       .shape_fn = binary_shape,
       .kernel = [](KernelContext& c) { binary_kernel(c, [](float a, float b) { return a * b; }); },
       .grad =
           [](GradContext& g) {
             return std::vector<Output>{sum_like(mul(g.grad(), g.input(1)), g.input(0)),
                                        sum_like(mul(g.grad(), g.input(0)), g.input(1))};
           }});
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -y/b
  r.add(
      {.name = "Div",
       .shape_fn = binary_shape,
       .kernel = [](KernelContext& c) { binary_kernel(c, [](float a, float b) { return a / b; }); },
       .grad =
           [](GradContext& g) {
             Output gb = neg(div(mul(g.grad(), g.output()), g.input(1)));
             return std::vector<Output>{sum_like(div(g.grad(), g.input(1)), g.input(0)),
                                        sum_like(gb, g.input(1))};
           }});
  r.add({.name = "SumLike",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               c.set_output(0, DType::f32, c.in_shape(1));
             },
         .kernel = sum_like_kernel,
         .cheap = true});
  r.add({.name = "Neg",
         .shape_fn = unary_shape,
         .kernel = [](KernelContext& c) { unary_kernel(c, [](float x) { return -x; }); },
         .grad = [](GradContext& g) { return std::vector<Output>{neg(g.grad())}; },
         .cheap = true});
  r.add({.name = "Identity",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(1);
               c.set_output(0, c.in_dtype(0), c.in_shape(0));
             },
         .kernel = [](KernelContext& c) { c.set_output(0, c.input(0)); },
         .grad = [](GradContext& g) { return std::vector<Output>{g.grad()}; },
         .cheap = true});
  // d/dx relu(x) = 1[x > 0], written in terms of y = relu(x) (y > 0 iff x > 0).
  r.add({.name = "Relu",
         .shape_fn = unary_shape,
         .kernel =
             [](KernelContext& c) { unary_kernel(c, [](float x) { return x > 0.0f ? x : 0.0f; }); },
         .grad =
             [](GradContext& g) {
               return std::vector<Output>{make_op("ReluGrad", {g.grad(), g.output()})};
             }});
  r.add({.name = "ReluGrad",  // (g, y) -> g * 1[y > 0]
         .shape_fn = same_shape2,
         .kernel = [](KernelContext& c) {
           same_shape_kernel(c, [](float gr, float y) { return y > 0.0f ? gr : 0.0f; });
         }});
  // sigmoid(x) = 1 / (1 + e^-x), computed without overflow for large |x|;
  // d/dx = y (1 - y)
  r.add({.name = "Sigmoid",
         .shape_fn = unary_shape,
         .kernel =
             [](KernelContext& c) {
               unary_kernel(c, [](float x) {
                 if (x >= 0) return 1.0f / (1.0f + std::exp(-x));
                 const float e = std::exp(x);
                 return e / (1.0f + e);
               });
             },
         .grad =
             [](GradContext& g) {
               return std::vector<Output>{make_op("SigmoidGrad", {g.grad(), g.output()})};
             }});
  r.add({.name = "SigmoidGrad",  // (g, y) -> g y (1 - y)
         .shape_fn = same_shape2,
         .kernel = [](KernelContext& c) {
           same_shape_kernel(c, [](float gr, float y) { return gr * y * (1.0f - y); });
         }});
  // d/dx tanh(x) = 1 - y^2
  r.add({.name = "Tanh",
         .shape_fn = unary_shape,
         .kernel = [](KernelContext& c) { unary_kernel(c, [](float x) { return std::tanh(x); }); },
         .grad =
             [](GradContext& g) {
               return std::vector<Output>{make_op("TanhGrad", {g.grad(), g.output()})};
             }});
  r.add({.name = "TanhGrad",  // (g, y) -> g (1 - y^2)
         .shape_fn = same_shape2,
         .kernel = [](KernelContext& c) {
           same_shape_kernel(c, [](float gr, float y) { return gr * (1.0f - y * y); });
         }});
  // d/dx e^x = e^x = y
  r.add({.name = "Exp",
         .shape_fn = unary_shape,
         .kernel = [](KernelContext& c) { unary_kernel(c, [](float x) { return std::exp(x); }); },
         .grad = [](GradContext& g) { return std::vector<Output>{mul(g.grad(), g.output())}; }});
  // d/dx log x = 1 / x
  r.add({.name = "Log",
         .shape_fn = unary_shape,
         .kernel = [](KernelContext& c) { unary_kernel(c, [](float x) { return std::log(x); }); },
         .grad = [](GradContext& g) { return std::vector<Output>{div(g.grad(), g.input(0))}; }});
  // d/dx x^2 = 2x
  r.add({.name = "Square",
         .shape_fn = unary_shape,
         .kernel = [](KernelContext& c) { unary_kernel(c, [](float x) { return x * x; }); },
         .grad =
             [](GradContext& g) { return std::vector<Output>{mul(g.grad(), g.input(0) * 2.0f)}; }});
}

}  // namespace ringflow::ops

namespace ringflow {

using ops::make_op;

Output add(Output a, Output b) {
  return make_op("Add", {a, b});
}
Output sub(Output a, Output b) {
  return make_op("Sub", {a, b});
}
Output mul(Output a, Output b) {
  return make_op("Mul", {a, b});
}
Output div(Output a, Output b) {
  return make_op("Div", {a, b});
}
Output neg(Output x) {
  return make_op("Neg", {x});
}
Output relu(Output x) {
  return make_op("Relu", {x});
}
Output sigmoid(Output x) {
  return make_op("Sigmoid", {x});
}
Output tanh(Output x) {
  return make_op("Tanh", {x});
}
Output exp(Output x) {
  return make_op("Exp", {x});
}
Output log(Output x) {
  return make_op("Log", {x});
}
Output square(Output x) {
  return make_op("Square", {x});
}
Output identity(Output x) {
  return make_op("Identity", {x});
}
Output sum_like(Output g, Output x) {
  return make_op("SumLike", {g, x});
}

Output operator+(Output a, float b) {
  return add(a, a.graph().scalar(b));
}
Output operator-(Output a, float b) {
  return sub(a, a.graph().scalar(b));
}
Output operator*(Output a, float b) {
  return mul(a, a.graph().scalar(b));
}
Output operator/(Output a, float b) {
  return div(a, a.graph().scalar(b));
}
Output operator*(float a, Output b) {
  return mul(b.graph().scalar(a), b);
}
Output operator-(float a, Output b) {
  return sub(b.graph().scalar(a), b);
}

}  // namespace ringflow
