// The op registry: for each op type, a shape function (build time), a kernel
// (run time) and a gradient builder (autodiff). Op families register
// themselves from src/ops; the graph's own source ops (Placeholder, Const,
// Variable, NoOp) and the ops autodiff itself emits (AddN, OnesLike,
// ZerosLike) are registered by the graph layer.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ringflow/graph/graph.h"

namespace ringflow {

// Build-time view of a node being added: its inputs' static shapes.
class ShapeContext {
 public:
  ShapeContext(Graph& g, Node& node) : graph_(g), node_(node) {}
  Graph& graph() const { return graph_; }
  const Node& node() const { return node_; }
  const AttrMap& attrs() const { return node_.attrs; }
  int num_inputs() const { return static_cast<int>(node_.inputs.size()); }
  const Shape& in_shape(int i) const {
    return node_.inputs.at(static_cast<std::size_t>(i)).shape();
  }
  DType in_dtype(int i) const { return node_.inputs.at(static_cast<std::size_t>(i)).dtype(); }
  // "input 'x' f32[?, 784]", for error messages.
  std::string in_desc(int i) const;
  void set_output(int i, DType dtype, Shape shape);

  // Raises a ShapeError "op MatMul 'dense/MatMul': <parts>".
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw ShapeError(
        detail::str_cat("op ", node_.op, " '", node_.name, "': ", std::forward<Parts>(parts)...),
        __FILE__, __LINE__);
  }
  void expect_inputs(int n) const;
  void expect_dtype(int i, DType dtype) const;
  void expect_rank(int i, int rank) const;

 private:
  Graph& graph_;
  Node& node_;
};

// Per-session persistent state a kernel may keep between runs (e.g. the
// dropout step counter). Owned by the session, one per node that asks.
struct KernelState {
  virtual ~KernelState() = default;
};

// Run-time view of one node execution.
class KernelContext {
 public:
  const Node& node() const { return *node_; }
  const AttrMap& attrs() const { return node_->attrs; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  const Tensor& input(int i) const { return *inputs_.at(static_cast<std::size_t>(i)); }
  // True when this node is the only reader of input i and no other value
  // shares its storage: the kernel may then write into it (forward it as an
  // output) instead of allocating.
  bool can_overwrite_input(int i) const {
    const auto k = static_cast<std::size_t>(i);
    return k < exclusive_.size() && exclusive_[k] && inputs_[k]->use_count() == 1;
  }
  // Allocates output i with a fully defined shape.
  Tensor& allocate_output(int i, DType dtype, Shape shape);
  void set_output(int i, Tensor t);
  Tensor& output(int i) { return outputs_.at(static_cast<std::size_t>(i)); }

  // The live storage of a Variable node (for Variable, Assign and apply ops).
  Tensor& variable(int node_id) const { return variable_lookup_(node_id); }
  // How many times this node has run in this session before this run.
  std::uint64_t run_count() const { return run_count_; }
  // Persistent state for this node, created on first use.
  template <class S>
  S& state() {
    if (!*state_) *state_ = std::make_unique<S>();
    return static_cast<S&>(**state_);
  }
  // Threads this kernel may use to split its work (the session's setting).
  int intra_op_threads() const { return intra_op_threads_; }
  // Opaque pointer the session's owner passes through (e.g. the train layer's
  // communication context for gradient buckets).
  void* user_context() const { return user_context_; }

  // For async kernels: call exactly once, from any thread, when the work the
  // kernel started is finished (with an exception on failure).
  std::function<void(std::exception_ptr)> done;

  // Raises an InvalidArgument "op MatMul 'dense/MatMul': <parts>".
  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw InvalidArgument(
        detail::str_cat("op ", node_->op, " '", node_->name, "': ", std::forward<Parts>(parts)...),
        __FILE__, __LINE__);
  }

  // Set up by the executor.
  const Node* node_ = nullptr;
  std::vector<const Tensor*> inputs_;
  std::vector<bool> exclusive_;  // per input: this is its only consuming edge
  std::vector<Tensor> outputs_;
  std::function<Tensor&(int)> variable_lookup_;
  std::unique_ptr<KernelState>* state_ = nullptr;
  std::uint64_t run_count_ = 0;
  int intra_op_threads_ = 1;
  void* user_context_ = nullptr;
};

// Build-time view for a gradient builder: out_grads[k] is d(loss)/d(output k),
// invalid when no gradient flows into that output.
struct GradContext {
  Graph& graph;
  const Node& node;
  std::vector<Output> out_grads;

  Output input(int i) const { return node.inputs.at(static_cast<std::size_t>(i)); }
  Output output(int i = 0) const { return node.output(i); }
  Output grad(int i = 0) const { return out_grads.at(static_cast<std::size_t>(i)); }
};

using ShapeFn = std::function<void(ShapeContext&)>;
using KernelFn = std::function<void(KernelContext&)>;
// Returns one entry per input: the gradient w.r.t. that input, or an invalid
// Output when the input gets none (labels, indices).
using GradFn = std::function<std::vector<Output>(GradContext&)>;

struct OpDef {
  std::string name;
  ShapeFn shape_fn;
  KernelFn kernel;
  GradFn grad;
  // Registered as having no gradient (ArgMax, Equal, ...): autodiff stops here
  // instead of raising.
  bool no_gradient = false;
  // Cheap ops run inline on the thread that made them ready.
  bool cheap = false;
  // The kernel returns before its work is finished and calls ctx.done later.
  bool async = false;
  // Mutates state (variables): never pruned by CSE-like rewrites, and the
  // executor keeps run order deterministic through the graph's edges only.
  bool stateful = false;
};

class OpRegistry {
 public:
  static OpRegistry& global();
  void add(OpDef def);
  const OpDef* find(const std::string& name) const;
  const OpDef& get(const std::string& name) const;  // raises NotFound
  std::vector<std::string> names() const;

 private:
  OpRegistry();
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<OpDef>> ops_;
};

// The ops autodiff emits, as builders the op families also use.
Output add_n(const std::vector<Output>& xs);
Output ones_like(Output x);
Output zeros_like(Output x);

}  // namespace ringflow
