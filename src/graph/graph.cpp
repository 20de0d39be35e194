#include "ringflow/graph/graph.h"

#include <cmath>
#include <sstream>

#include "ringflow/graph/op_registry.h"
#include "ringflow/tensor/random.h"

namespace ringflow {

Graph& Output::graph() const {
  RF_CHECK(graph_ != nullptr, "use of an empty Output handle");
  return *graph_;
}
const Node& Output::node() const {
  return graph().node(node_);
}
const Shape& Output::shape() const {
  const Node& n = node();
  RF_CHECK(index_ >= 0 && index_ < n.num_outputs(), "node '", n.name, "' (", n.op,
           ") has no output ", index_);
  return n.out_shapes[static_cast<std::size_t>(index_)];
}
DType Output::dtype() const {
  const Node& n = node();
  RF_CHECK(index_ >= 0 && index_ < n.num_outputs(), "node '", n.name, "' (", n.op,
           ") has no output ", index_);
  return n.out_dtypes[static_cast<std::size_t>(index_)];
}
const std::string& Output::name() const {
  return node().name;
}
std::string Output::describe() const {
  if (!valid()) return "<none>";
  const Node& n = node();
  std::string s = "'" + n.name + (index_ > 0 ? ":" + std::to_string(index_) : "") + "'";
  if (index_ >= 0 && index_ < n.num_outputs())
    s += std::string(" ") + dtype_name(dtype()) + shape().to_string();
  return s;
}

Output Node::output(int i) const {
  RF_CHECK(i >= 0 && i < num_outputs(), "node '", name, "' (", op, ") has no output ", i);
  return Output(graph, id, i);
}

// ---------------------------------------------------------------------------
// Initializers

namespace {

// fan_in / fan_out of a weight: (in, out) for a dense layer, (H, W, I, O) for
// a convolution (the receptive field multiplies both).
void fans(const Shape& s, double& fan_in, double& fan_out) {
  if (s.rank() == 0) {
    fan_in = fan_out = 1;
  } else if (s.rank() == 1) {
    fan_in = fan_out = static_cast<double>(s.dim(0));
  } else {
    double receptive = 1;
    for (int i = 0; i + 2 < s.rank(); ++i) receptive *= static_cast<double>(s.dim(i));
    fan_in = receptive * static_cast<double>(s.dim(-2));
    fan_out = receptive * static_cast<double>(s.dim(-1));
  }
  fan_in = std::max(fan_in, 1.0);
  fan_out = std::max(fan_out, 1.0);
}

}  // namespace

Tensor Initializer::make(const Shape& shape) const {
  Tensor t = Tensor::zeros(DType::f32, shape);
  auto v = t.flat<float>();
  double fan_in = 1, fan_out = 1;
  fans(shape, fan_in, fan_out);
  const std::uint64_t stream = 0x1417;  // initialisers' stream, apart from dropout's
  auto fill_uniform = [&](double limit) {
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>((2.0 * random::uniform01(seed, stream, i) - 1.0) * limit);
  };
  auto fill_normal = [&](double stddev) {
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>(random::normal(seed, stream, i) * stddev);
  };
  switch (kind) {
    case Kind::zeros:
      break;
    case Kind::constant:
      t.fill(value);
      break;
    case Kind::uniform:
      fill_uniform(value);
      break;
    case Kind::normal:
      fill_normal(value);
      break;
    case Kind::glorot_uniform:
      fill_uniform(std::sqrt(6.0 / (fan_in + fan_out)));
      break;
    case Kind::glorot_normal:
      fill_normal(std::sqrt(2.0 / (fan_in + fan_out)));
      break;
    case Kind::he_uniform:
      fill_uniform(std::sqrt(6.0 / fan_in));
      break;
    case Kind::he_normal:
      fill_normal(std::sqrt(2.0 / fan_in));
      break;
  }
  return t;
}

std::string Initializer::to_string() const {
  static const char* kNames[] = {"zeros",          "constant",      "uniform",    "normal",
                                 "glorot_uniform", "glorot_normal", "he_uniform", "he_normal"};
  std::ostringstream os;
  os << kNames[static_cast<int>(kind)] << "(value=" << value << ", seed=" << seed << ")";
  return os.str();
}

// ---------------------------------------------------------------------------
// Graph

Node& Graph::add_node(const std::string& op, std::vector<Output> inputs, AttrMap attrs,
                      const std::string& name, std::vector<int> control_inputs) {
  const OpDef& def = OpRegistry::global().get(op);
  Node node;
  node.id = num_nodes();
  node.op = op;
  node.def = &def;
  node.graph = this;
  node.name = unique_name(name.empty() ? op : name);
  for (const auto& in : inputs) {
    RF_CHECK(in.valid(), "op ", op, " '", node.name, "': an input is an empty Output handle");
    RF_CHECK(&in.graph() == this, "op ", op, " '", node.name, "': input ", in.describe(),
             " belongs to another graph");
    RF_CHECK(in.index() >= 0 && in.index() < in.node().num_outputs(), "op ", op, " '", node.name,
             "': input node '", in.node().name, "' has no output ", in.index());
  }
  node.inputs = std::move(inputs);
  for (int c : control_inputs)
    RF_CHECK(c >= 0 && c < num_nodes(), "op ", op, ": bad control input ", c);
  node.control_inputs = std::move(control_inputs);
  node.attrs = std::move(attrs);
  ShapeContext ctx(*this, node);
  if (def.shape_fn) def.shape_fn(ctx);
  // Only now, with shapes checked, does the node become part of the graph.
  by_name_[node.name] = node.id;
  nodes_.push_back(std::move(node));
  return nodes_.back();
}

Output Graph::add_op(const std::string& op, std::vector<Output> inputs, AttrMap attrs,
                     const std::string& name) {
  Node& n = add_node(op, std::move(inputs), std::move(attrs), name);
  return n.output(0);
}

Output Graph::placeholder(const std::string& name, Shape shape, DType dtype) {
  return add_op("Placeholder", {}, {{"shape", std::move(shape)}, {"dtype", dtype}}, name);
}

Output Graph::constant(Tensor value, const std::string& name) {
  RF_CHECK(value.valid(), "constant '", name, "': empty tensor");
  return add_op("Const", {}, {{"value", std::move(value)}}, name.empty() ? "Const" : name);
}

Output Graph::scalar(float value, const std::string& name) {
  return constant(Tensor::scalar(value), name);
}

Output Graph::variable(const std::string& name, Shape shape, Initializer init, bool trainable) {
  RF_CHECK(shape.is_fully_defined(), "variable '", name, "': shape ", shape.to_string(),
           " must be fully defined");
  RF_CHECK(!name.empty(), "a variable needs a name (checkpoints and broadcasts use it)");
  const std::string full = scope_ + name;
  RF_CHECK(find(full) == nullptr, "variable '", full,
           "' already exists; give each variable a unique name");
  return add_op("Variable", {},
                {{"shape", std::move(shape)},
                 {"dtype", DType::f32},
                 {"init", init},
                 {"trainable", trainable}},
                name);
}

Output Graph::group(const std::vector<Output>& deps, const std::string& name) {
  std::vector<int> ctrl;
  for (const auto& d : deps) {
    RF_CHECK(d.valid() && &d.graph() == this, "group '", name,
             "': a dependency is not in this graph");
    ctrl.push_back(d.node_id());
  }
  Node& n = add_node("NoOp", {}, {}, name, std::move(ctrl));
  return Output(this, n.id, -1);
}

const Node& Graph::node(int id) const {
  RF_CHECK(id >= 0 && id < num_nodes(), "no node with id ", id);
  return nodes_[static_cast<std::size_t>(id)];
}

Node& Graph::mutable_node(int id) {
  RF_CHECK(id >= 0 && id < num_nodes(), "no node with id ", id);
  return nodes_[static_cast<std::size_t>(id)];
}

const Node* Graph::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &nodes_[static_cast<std::size_t>(it->second)];
}

const Node& Graph::node_by_name(const std::string& name) const {
  const Node* n = find(name);
  if (!n) RF_THROW(NotFound, "no node named '", name, "' in the graph");
  return *n;
}

std::vector<Output> Graph::variables() const {
  std::vector<Output> out;
  for (const auto& n : nodes_)
    if (n.op == "Variable") out.push_back(n.output(0));
  return out;
}

std::vector<Output> Graph::trainable_variables() const {
  std::vector<Output> out;
  for (const auto& n : nodes_)
    if (n.op == "Variable" && n.attrs.get_bool("trainable")) out.push_back(n.output(0));
  return out;
}

Graph::Scope::Scope(Graph& g, const std::string& name) : g_(g), saved_(g.scope_.size()) {
  g_.scope_ += name + "/";
}
Graph::Scope::~Scope() {
  g_.scope_.resize(saved_);
}

std::string Graph::unique_name(const std::string& base) {
  const std::string full = scope_ + base;
  int& count = name_counts_[full];
  std::string candidate = count == 0 ? full : full + "_" + std::to_string(count);
  while (by_name_.count(candidate)) candidate = full + "_" + std::to_string(++count);
  ++count;
  return candidate;
}

Graph& graph_of(std::initializer_list<Output> outputs) {
  Graph* g = nullptr;
  for (const auto& o : outputs) {
    if (!o.valid()) continue;
    if (!g) g = &o.graph();
    RF_CHECK(g == &o.graph(), "inputs ", o.describe(), " come from different graphs");
  }
  RF_CHECK(g != nullptr, "an op needs at least one input from a graph");
  return *g;
}

}  // namespace ringflow
