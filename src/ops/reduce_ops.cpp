// Reductions: ReduceSum, ReduceMean (over all elements or one axis), ArgMax,
// and BroadcastLike, the gradient of the first two.
//
// A reduction over `axis` views x as (outer, len, inner): outer is the product
// of the dims before the axis, inner of those after. Reducing everything is
// (1, n, 1). Sums accumulate in double in a fixed order (deterministic).
#include "op_util.h"

namespace ringflow::ops {

namespace {

struct Extent {
  std::int64_t outer = 1, len = 1, inner = 1;
};

Extent extent(const Shape& s, std::int64_t axis) {
  Extent e;
  if (axis == kAllAxes) {
    e.len = s.num_elements();
    return e;
  }
  const int a = norm_axis(axis, s.rank());
  for (int i = 0; i < a; ++i) e.outer *= s.dim(i);
  e.len = s.dim(a);
  for (int i = a + 1; i < s.rank(); ++i) e.inner *= s.dim(i);
  return e;
}

Shape reduced_shape(const Shape& s, std::int64_t axis, bool keep_dims) {
  if (axis == kAllAxes) {
    if (!keep_dims) return Shape{};
    return Shape(std::vector<std::int64_t>(static_cast<std::size_t>(s.rank()), 1));
  }
  const int a = norm_axis(axis, s.rank());
  std::vector<std::int64_t> d = s.dims();
  if (keep_dims)
    d[static_cast<std::size_t>(a)] = 1;
  else
    d.erase(d.begin() + a);
  return Shape(d);
}

void reduce_shape(ShapeContext& c) {
  c.expect_inputs(1);
  c.expect_dtype(0, DType::f32);
  const std::int64_t axis = c.attrs().get_int("axis");
  const Shape& s = c.in_shape(0);
  if (axis != kAllAxes) {
    const int a = norm_axis(axis, s.rank());
    if (a < 0 || a >= s.rank()) c.fail("axis ", axis, " is out of range for ", c.in_desc(0));
  }
  c.set_output(0, DType::f32, reduced_shape(s, axis, c.attrs().get_bool("keep_dims")));
}

void reduce_kernel(KernelContext& c, bool mean) {
  const Tensor& x = c.input(0);
  const std::int64_t axis = c.attrs().get_int("axis");
  const Extent e = extent(x.shape(), axis);
  Tensor& y = c.allocate_output(0, DType::f32,
                                reduced_shape(x.shape(), axis, c.attrs().get_bool("keep_dims")));
  const float* px = x.data<float>();
  float* py = y.data<float>();
  // The mean of nothing is 0 here (not NaN), so empty batches stay harmless.
  const double scale = mean && e.len > 0 ? 1.0 / static_cast<double>(e.len) : 1.0;
  for (std::int64_t o = 0; o < e.outer; ++o) {
    if (e.inner == 1) {
      double s = 0;
      const float* row = px + o * e.len;
      for (std::int64_t j = 0; j < e.len; ++j) s += row[j];
      py[o] = static_cast<float>(s * scale);
    } else {
      std::vector<double> acc(static_cast<std::size_t>(e.inner), 0.0);
      for (std::int64_t j = 0; j < e.len; ++j) {
        const float* row = px + (o * e.len + j) * e.inner;
        for (std::int64_t i = 0; i < e.inner; ++i) acc[static_cast<std::size_t>(i)] += row[i];
      }
      for (std::int64_t i = 0; i < e.inner; ++i)
        py[o * e.inner + i] = static_cast<float>(acc[static_cast<std::size_t>(i)] * scale);
    }
  }
}

// BroadcastLike(g, x): g (the reduced shape) expanded back to x's shape, and
// divided by len for a mean. d/dx_j sum(x) = 1, d/dx_j mean(x) = 1/len.
void broadcast_like_kernel(KernelContext& c) {
  const Tensor& g = c.input(0);
  const Tensor& x = c.input(1);
  const std::int64_t axis = c.attrs().get_int("axis");
  const Extent e = extent(x.shape(), axis);
  if (g.num_elements() != e.outer * e.inner)
    c.fail("gradient ", describe(g), " does not match the reduction of ", describe(x));
  Tensor& y = c.allocate_output(0, DType::f32, x.shape());
  const float* pg = g.data<float>();
  float* py = y.data<float>();
  const float scale =
      c.attrs().get_bool("mean") && e.len > 0 ? 1.0f / static_cast<float>(e.len) : 1.0f;
  for (std::int64_t o = 0; o < e.outer; ++o)
    for (std::int64_t j = 0; j < e.len; ++j)
      for (std::int64_t i = 0; i < e.inner; ++i)
        py[(o * e.len + j) * e.inner + i] = pg[o * e.inner + i] * scale;
}

GradFn reduce_grad(bool mean) {
  return [mean](GradContext& g) {
    AttrMap attrs{{"axis", g.node.attrs.get_int("axis")}, {"mean", mean}};
    return std::vector<Output>{make_op("BroadcastLike", {g.grad(), g.input(0)}, attrs)};
  };
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  r.add({.name = "ReduceSum",
         .shape_fn = reduce_shape,
         .kernel = [](KernelContext& c) { reduce_kernel(c, false); },
         .grad = reduce_grad(false),
         .cheap = true});
  r.add({.name = "ReduceMean",
         .shape_fn = reduce_shape,
         .kernel = [](KernelContext& c) { reduce_kernel(c, true); },
         .grad = reduce_grad(true),
         .cheap = true});
  r.add({.name = "BroadcastLike",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               c.set_output(0, DType::f32, c.in_shape(1));
             },
         .kernel = broadcast_like_kernel,
         .cheap = true});
  r.add({.name = "ArgMax",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(1);
               c.expect_dtype(0, DType::f32);
               const Shape& s = c.in_shape(0);
               const int a = norm_axis(c.attrs().get_int("axis"), s.rank());
               if (a < 0 || a >= s.rank()) c.fail("axis out of range for ", c.in_desc(0));
               c.set_output(0, DType::i32, reduced_shape(s, a, false));
             },
         .kernel =
             [](KernelContext& c) {
               const Tensor& x = c.input(0);
               const int a = norm_axis(c.attrs().get_int("axis"), x.rank());
               const Extent e = extent(x.shape(), a);
               if (e.len == 0 && e.outer * e.inner > 0)
                 c.fail("argmax over an empty axis of ", describe(x));
               Tensor& y = c.allocate_output(0, DType::i32, reduced_shape(x.shape(), a, false));
               const float* px = x.data<float>();
               std::int32_t* py = y.data<std::int32_t>();
               for (std::int64_t o = 0; o < e.outer; ++o)
                 for (std::int64_t i = 0; i < e.inner; ++i) {
                   std::int64_t best = 0;
                   float bv = px[o * e.len * e.inner + i];
                   for (std::int64_t j = 1; j < e.len; ++j) {
                     const float v = px[(o * e.len + j) * e.inner + i];
                     if (v > bv) {
                       bv = v;
                       best = j;
                     }
                   }
                   py[o * e.inner + i] = static_cast<std::int32_t>(best);
                 }
             },
         .no_gradient = true,
         .cheap = true});
}

}  // namespace ringflow::ops

namespace ringflow {

Output reduce_sum(Output x, std::int64_t axis, bool keep_dims) {
  return ops::make_op("ReduceSum", {x}, {{"axis", axis}, {"keep_dims", keep_dims}});
}
Output reduce_mean(Output x, std::int64_t axis, bool keep_dims) {
  return ops::make_op("ReduceMean", {x}, {{"axis", axis}, {"keep_dims", keep_dims}});
}
Output argmax(Output x, std::int64_t axis) {
  return ops::make_op("ArgMax", {x}, {{"axis", axis}});
}

}  // namespace ringflow
