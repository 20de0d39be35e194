// The static dataflow graph: nodes with an op type, inputs (node, output
// index), control inputs, attributes and static output shapes inferred when
// the node is added. Build the graph first, then run it with a Session.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "ringflow/tensor/tensor.h"

namespace ringflow {

class Graph;
struct Node;
struct OpDef;

// A handle to output `index` of a node: what TF1 calls a Tensor in a graph.
// index == -1 names the node itself (as a run target or control input).
class Output {
 public:
  Output() = default;
  Output(Graph* graph, int node, int index) : graph_(graph), node_(node), index_(index) {}

  bool valid() const { return graph_ != nullptr; }
  Graph& graph() const;
  int node_id() const { return node_; }
  int index() const { return index_; }
  const Node& node() const;
  const Shape& shape() const;
  DType dtype() const;
  const std::string& name() const;  // the node's name
  std::string describe() const;     // "'dense/MatMul' f32[?, 256]"
  Output op() const { return Output(graph_, node_, -1); }

  bool operator==(const Output& o) const {
    return graph_ == o.graph_ && node_ == o.node_ && index_ == o.index_;
  }

 private:
  Graph* graph_ = nullptr;
  int node_ = -1;
  int index_ = 0;
};

// How a variable gets its first value. Seeded, and generated with ringflow's
// own PRNG so the same seed gives the same bits on every machine.
struct Initializer {
  enum class Kind {
    zeros,
    constant,
    uniform,
    normal,
    glorot_uniform,
    glorot_normal,
    he_uniform,
    he_normal
  };
  Kind kind = Kind::zeros;
  float value = 0.0f;  // constant: the value; uniform: the half-width; normal: the stddev
  std::uint64_t seed = 0;

  // A fresh tensor of this shape holding the initial value.
  Tensor make(const Shape& shape) const;
  std::string to_string() const;
};

namespace init {
inline Initializer zeros() {
  return {Initializer::Kind::zeros, 0.0f, 0};
}
inline Initializer constant(float v) {
  return {Initializer::Kind::constant, v, 0};
}
inline Initializer uniform(float limit, std::uint64_t seed) {
  return {Initializer::Kind::uniform, limit, seed};
}
inline Initializer normal(float stddev, std::uint64_t seed) {
  return {Initializer::Kind::normal, stddev, seed};
}
inline Initializer glorot_uniform(std::uint64_t seed) {
  return {Initializer::Kind::glorot_uniform, 0.0f, seed};
}
inline Initializer glorot_normal(std::uint64_t seed) {
  return {Initializer::Kind::glorot_normal, 0.0f, seed};
}
inline Initializer he_uniform(std::uint64_t seed) {
  return {Initializer::Kind::he_uniform, 0.0f, seed};
}
inline Initializer he_normal(std::uint64_t seed) {
  return {Initializer::Kind::he_normal, 0.0f, seed};
}
}  // namespace init

using AttrValue = std::variant<std::int64_t, double, bool, std::string, std::vector<std::int64_t>,
                               Shape, DType, Tensor, Initializer>;

class AttrMap {
 public:
  AttrMap() = default;
  AttrMap(std::initializer_list<std::pair<const std::string, AttrValue>> init) : map_(init) {}

  bool has(const std::string& name) const { return map_.count(name) != 0; }
  void set(const std::string& name, AttrValue v) { map_[name] = std::move(v); }
  template <class T>
  const T& get(const std::string& name) const {
    auto it = map_.find(name);
    RF_CHECK_AS(InternalError, it != map_.end(), "missing attribute '", name, "'");
    const T* v = std::get_if<T>(&it->second);
    RF_CHECK_AS(InternalError, v != nullptr, "attribute '", name, "' has another type");
    return *v;
  }
  template <class T>
  T get_or(const std::string& name, T fallback) const {
    auto it = map_.find(name);
    if (it == map_.end()) return fallback;
    const T* v = std::get_if<T>(&it->second);
    return v ? *v : fallback;
  }
  std::int64_t get_int(const std::string& name) const { return get<std::int64_t>(name); }
  float get_float(const std::string& name) const { return static_cast<float>(get<double>(name)); }
  bool get_bool(const std::string& name) const { return get<bool>(name); }

 private:
  std::map<std::string, AttrValue> map_;
};

struct Node {
  int id = -1;
  std::string name;
  std::string op;
  const OpDef* def = nullptr;
  std::vector<Output> inputs;
  std::vector<int> control_inputs;  // nodes that must run first, no data
  AttrMap attrs;
  std::vector<Shape> out_shapes;
  std::vector<DType> out_dtypes;

  int num_outputs() const { return static_cast<int>(out_shapes.size()); }
  Output output(int i = 0) const;
  Graph* graph = nullptr;
};

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Adds a node of a registered op; runs its shape function, which raises a
  // ShapeError naming both nodes and shapes on a mismatch. Names are made
  // unique within the current name scope ("dense1/MatMul", "dense1/MatMul_1").
  Node& add_node(const std::string& op, std::vector<Output> inputs, AttrMap attrs = {},
                 const std::string& name = "", std::vector<int> control_inputs = {});
  // add_node(...) and return its output 0.
  Output add_op(const std::string& op, std::vector<Output> inputs, AttrMap attrs = {},
                const std::string& name = "");

  // A value fed at run time. One dim may be -1 (the batch).
  Output placeholder(const std::string& name, Shape shape, DType dtype = DType::f32);
  Output constant(Tensor value, const std::string& name = "");
  Output scalar(float value, const std::string& name = "");
  // A trainable (or not) variable; the Session creates its storage from init.
  Output variable(const std::string& name, Shape shape, Initializer init, bool trainable = true);
  // A node that does nothing but depends on deps: a run target grouping them.
  Output group(const std::vector<Output>& deps, const std::string& name = "group");

  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  const Node& node(int id) const;
  Node& mutable_node(int id);
  const Node* find(const std::string& name) const;
  const Node& node_by_name(const std::string& name) const;
  // Variable nodes in creation order.
  std::vector<Output> variables() const;
  std::vector<Output> trainable_variables() const;

  // RAII name scope: nodes added while it lives get "prefix/" in front.
  class Scope {
   public:
    Scope(Graph& g, const std::string& name);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Graph& g_;
    std::size_t saved_;
  };
  Scope scope(const std::string& name) { return Scope(*this, name); }
  std::string unique_name(const std::string& base);

 private:
  std::deque<Node> nodes_;  // a deque keeps Node references stable as nodes are added
  std::map<std::string, int> by_name_;
  std::map<std::string, int> name_counts_;
  std::string scope_;
};

// Returns the graph that all valid outputs belong to; raises if they differ.
Graph& graph_of(std::initializer_list<Output> outputs);

}  // namespace ringflow
