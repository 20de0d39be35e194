#include "ringflow/graph/op_registry.h"

#include <algorithm>

namespace ringflow {

std::string ShapeContext::in_desc(int i) const {
  return "input " + node_.inputs.at(static_cast<std::size_t>(i)).describe();
}

void ShapeContext::set_output(int i, DType dtype, Shape shape) {
  const auto k = static_cast<std::size_t>(i);
  if (node_.out_shapes.size() <= k) {
    node_.out_shapes.resize(k + 1);
    node_.out_dtypes.resize(k + 1, DType::f32);
  }
  node_.out_shapes[k] = std::move(shape);
  node_.out_dtypes[k] = dtype;
}

void ShapeContext::expect_inputs(int n) const {
  if (num_inputs() != n) fail("expects ", n, " inputs, got ", num_inputs());
}

void ShapeContext::expect_dtype(int i, DType dtype) const {
  if (in_dtype(i) != dtype) fail(in_desc(i), " must be ", dtype_name(dtype));
}

void ShapeContext::expect_rank(int i, int rank) const {
  if (in_shape(i).rank() != rank) fail(in_desc(i), " must have rank ", rank);
}

Tensor& KernelContext::allocate_output(int i, DType dtype, Shape shape) {
  auto& slot = outputs_.at(static_cast<std::size_t>(i));
  slot = Tensor(dtype, std::move(shape));
  return slot;
}

void KernelContext::set_output(int i, Tensor t) {
  outputs_.at(static_cast<std::size_t>(i)) = std::move(t);
}

// ---------------------------------------------------------------------------
// The graph layer's own ops.

namespace {

void register_core_ops(OpRegistry& r) {
  r.add({.name = "Placeholder",
         .shape_fn =
             [](ShapeContext& c) {
               c.expect_inputs(0);
               c.set_output(0, c.attrs().get<DType>("dtype"), c.attrs().get<Shape>("shape"));
             },
         .kernel =
             [](KernelContext& c) {
               c.fail("placeholder must be fed: pass a value for '", c.node().name,
                      "' in the feeds of Session::run");
             },
         .no_gradient = true,
         .cheap = true});
  r.add({.name = "Const",
         .shape_fn =
             [](ShapeContext& c) {
               const Tensor& v = c.attrs().get<Tensor>("value");
               c.set_output(0, v.dtype(), v.shape());
             },
         .kernel = [](KernelContext& c) { c.set_output(0, c.attrs().get<Tensor>("value")); },
         .no_gradient = true,
         .cheap = true});
  r.add({.name = "Variable",
         .shape_fn =
             [](ShapeContext& c) {
               c.set_output(0, c.attrs().get<DType>("dtype"), c.attrs().get<Shape>("shape"));
             },
         .kernel = [](KernelContext& c) { c.set_output(0, c.variable(c.node().id)); },
         .no_gradient = true,
         .cheap = true});
  r.add({.name = "NoOp",
         .shape_fn = [](ShapeContext&) {},
         .kernel = [](KernelContext&) {},
         .no_gradient = true,
         .cheap = true});
  // AddN: y = x0 + x1 + ... ; every input has the same shape.
  r.add({.name = "AddN",
         .shape_fn =
             [](ShapeContext& c) {
               if (c.num_inputs() < 1) c.fail("needs at least one input");
               Shape s = c.in_shape(0);
               for (int i = 1; i < c.num_inputs(); ++i) {
                 if (c.in_dtype(i) != c.in_dtype(0))
                   c.fail(c.in_desc(i), " and ", c.in_desc(0), " differ in dtype");
                 if (!c.in_shape(i).compatible_with(s))
                   c.fail(c.in_desc(i), " and ", c.in_desc(0), " differ in shape");
                 std::vector<std::int64_t> d = s.dims();
                 for (int k = 0; k < s.rank(); ++k)
                   if (d[static_cast<std::size_t>(k)] < 0)
                     d[static_cast<std::size_t>(k)] = c.in_shape(i).dim(k);
                 s = Shape(d);
               }
               c.set_output(0, c.in_dtype(0), s);
             },
         .kernel =
             [](KernelContext& c) {
               const Tensor& x0 = c.input(0);
               for (int i = 1; i < c.num_inputs(); ++i)
                 if (c.input(i).shape() != x0.shape())
                   c.fail("input ", i, " has shape ", c.input(i).shape().to_string(),
                          ", input 0 has ", x0.shape().to_string());
               Tensor& y = c.allocate_output(0, DType::f32, x0.shape());
               float* out = y.data<float>();
               const auto n = static_cast<std::size_t>(y.num_elements());
               std::copy_n(x0.data<float>(), n, out);
               for (int i = 1; i < c.num_inputs(); ++i) {
                 const float* in = c.input(i).data<float>();
                 for (std::size_t k = 0; k < n; ++k) out[k] += in[k];
               }
             },
         .grad =
             [](GradContext& g) { return std::vector<Output>(g.node.inputs.size(), g.grad(0)); }});
  auto like = [](float value) {
    return [value](KernelContext& c) {
      Tensor& y = c.allocate_output(0, c.input(0).dtype(), c.input(0).shape());
      y.fill(value);
    };
  };
  auto same_shape = [](ShapeContext& c) {
    c.expect_inputs(1);
    c.set_output(0, c.in_dtype(0), c.in_shape(0));
  };
  r.add({.name = "OnesLike",
         .shape_fn = same_shape,
         .kernel = like(1.0f),
         .no_gradient = true,
         .cheap = true});
  r.add({.name = "ZerosLike",
         .shape_fn = same_shape,
         .kernel = like(0.0f),
         .no_gradient = true,
         .cheap = true});
}

}  // namespace

OpRegistry::OpRegistry() {
  register_core_ops(*this);
}

OpRegistry& OpRegistry::global() {
  static OpRegistry registry;
  return registry;
}

void OpRegistry::add(OpDef def) {
  std::lock_guard<std::mutex> lock(mu_);
  RF_CHECK_AS(InternalError, !ops_.count(def.name), "op ", def.name, " registered twice");
  auto name = def.name;
  ops_[name] = std::make_unique<OpDef>(std::move(def));
}

const OpDef* OpRegistry::find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : it->second.get();
}

const OpDef& OpRegistry::get(const std::string& name) const {
  const OpDef* d = find(name);
  if (!d) RF_THROW(NotFound, "unknown op '", name, "': no op of that name is registered");
  return *d;
}

std::vector<std::string> OpRegistry::names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [k, v] : ops_) out.push_back(k);
  return out;
}

Output add_n(const std::vector<Output>& xs) {
  RF_CHECK(!xs.empty(), "add_n needs at least one input");
  if (xs.size() == 1) return xs[0];
  return xs[0].graph().add_op("AddN", xs);
}

Output ones_like(Output x) {
  return x.graph().add_op("OnesLike", {x});
}
Output zeros_like(Output x) {
  return x.graph().add_op("ZerosLike", {x});
}

}  // namespace ringflow
