// Array ops: Reshape (and ReshapeLike, its gradient), Cast, Equal,
// PlaceholderWithDefault.
#include <cstring>

#include "op_util.h"

namespace ringflow::ops {

namespace {

// Resolves the -1 in `target` against `count` elements, or fails.
template <class Ctx>
Shape resolve_reshape(const Ctx& c, const std::vector<std::int64_t>& target, std::int64_t count,
                      const std::string& what) {
  std::int64_t known = 1;
  int unknown = -1;
  for (std::size_t i = 0; i < target.size(); ++i) {
    if (target[i] < 0) {
      unknown = static_cast<int>(i);
    } else {
      known *= target[i];
    }
  }
  std::vector<std::int64_t> d = target;
  if (unknown >= 0) {
    if (known == 0 || count % known != 0)
      c.fail("cannot reshape ", what, " (", count, " elements) to ", Shape(target).to_string());
    d[static_cast<std::size_t>(unknown)] = count / known;
  } else if (known != count) {
    c.fail("cannot reshape ", what, " (", count, " elements) to ", Shape(target).to_string());
  }
  return Shape(d);
}

void reshape_shape(ShapeContext& c) {
  c.expect_inputs(1);
  const auto& target = c.attrs().get<std::vector<std::int64_t>>("shape");
  int unknown = 0;
  for (auto d : target) {
    if (d < -1) c.fail("bad target dim ", d, " in ", Shape(target).to_string());
    unknown += d == -1;
  }
  if (unknown > 1) c.fail("at most one -1 allowed in the target shape ", Shape(target).to_string());
  const Shape& in = c.in_shape(0);
  if (in.is_fully_defined()) {
    c.set_output(0, c.in_dtype(0), resolve_reshape(c, target, in.num_elements(), c.in_desc(0)));
  } else {
    c.set_output(0, c.in_dtype(0), Shape(target));
  }
}

}  // namespace

void register_array_ops(OpRegistry& r) {
  r.add({.name = "Reshape",
         .shape_fn = reshape_shape,
         .kernel =
             [](KernelContext& c) {
               const Tensor& x = c.input(0);
               const auto& target = c.attrs().get<std::vector<std::int64_t>>("shape");
               c.set_output(0,
                            x.reshaped(resolve_reshape(c, target, x.num_elements(), describe(x))));
             },
         .grad =
             [](GradContext& g) {
               return std::vector<Output>{make_op("ReshapeLike", {g.grad(), g.input(0)})};
             },
         .cheap = true});
  r.add({.name = "ReshapeLike",  // (g, x) -> g with x's run-time shape
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               c.set_output(0, c.in_dtype(0), c.in_shape(1));
             },
         .kernel =
             [](KernelContext& c) {
               if (c.input(0).num_elements() != c.input(1).num_elements())
                 c.fail("cannot reshape ", describe(c.input(0)), " like ", describe(c.input(1)));
               c.set_output(0, c.input(0).reshaped(c.input(1).shape()));
             },
         .cheap = true});
  r.add({.name = "Cast",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(1);
               c.set_output(0, c.attrs().get<DType>("dtype"), c.in_shape(0));
             },
         .kernel =
             [](KernelContext& c) {
               const Tensor& x = c.input(0);
               const DType to = c.attrs().get<DType>("dtype");
               if (x.dtype() == to) {
                 c.set_output(0, x);
                 return;
               }
               Tensor& y = c.allocate_output(0, to, x.shape());
               const auto n = static_cast<std::size_t>(x.num_elements());
               if (to == DType::f32) {
                 const std::int32_t* px = x.data<std::int32_t>();
                 float* py = y.data<float>();
                 for (std::size_t i = 0; i < n; ++i) py[i] = static_cast<float>(px[i]);
               } else {
                 const float* px = x.data<float>();
                 std::int32_t* py = y.data<std::int32_t>();
                 for (std::size_t i = 0; i < n; ++i) py[i] = static_cast<std::int32_t>(px[i]);
               }
             },
         .no_gradient = true,
         .cheap = true});
  r.add({.name = "Equal",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(2);
               if (c.in_dtype(0) != c.in_dtype(1))
                 c.fail(c.in_desc(0), " and ", c.in_desc(1), " differ in dtype; cast one first");
               if (!c.in_shape(0).compatible_with(c.in_shape(1)))
                 c.fail(c.in_desc(0), " and ", c.in_desc(1), " must have the same shape");
               c.set_output(0, DType::i32, c.in_shape(0));
             },
         .kernel =
             [](KernelContext& c) {
               const Tensor& a = c.input(0);
               const Tensor& b = c.input(1);
               if (a.shape() != b.shape())
                 c.fail("shapes ", a.shape().to_string(), " and ", b.shape().to_string(),
                        " differ");
               Tensor& y = c.allocate_output(0, DType::i32, a.shape());
               const auto n = static_cast<std::size_t>(a.num_elements());
               std::int32_t* py = y.data<std::int32_t>();
               if (a.dtype() == DType::f32) {
                 for (std::size_t i = 0; i < n; ++i)
                   py[i] = a.data<float>()[i] == b.data<float>()[i];
               } else {
                 for (std::size_t i = 0; i < n; ++i)
                   py[i] = a.data<std::int32_t>()[i] == b.data<std::int32_t>()[i];
               }
             },
         .no_gradient = true,
         .cheap = true});
  r.add({.name = "PlaceholderWithDefault",
         .shape_fn =
             [](ShapeContext& c) {
               const Tensor& v = c.attrs().get<Tensor>("value");
               c.set_output(0, v.dtype(), v.shape());
             },
         .kernel = [](KernelContext& c) { c.set_output(0, c.attrs().get<Tensor>("value")); },
         .no_gradient = true,
         .cheap = true});
}

}  // namespace ringflow::ops

namespace ringflow {

Output reshape(Output x, std::vector<std::int64_t> shape) {
  return ops::make_op("Reshape", {x}, {{"shape", std::move(shape)}});
}
Output cast(Output x, DType dtype) {
  return ops::make_op("Cast", {x}, {{"dtype", dtype}});
}
Output equal(Output a, Output b) {
  return ops::make_op("Equal", {a, b});
}
Output placeholder_with_default(Graph& g, const std::string& name, Tensor value) {
  ops::ensure_registered();
  return g.add_op("PlaceholderWithDefault", {}, {{"value", std::move(value)}}, name);
}

}  // namespace ringflow
