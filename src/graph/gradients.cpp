// Reverse-mode autodiff over the graph.
//
// Words: the *path* is the set of nodes that depend on some x and that loss
// depends on; only they get gradients. A node's *pending* count is the number
// of its (consumer, input slot) edges into path nodes: the gradient of a node
// is complete once every such consumer has sent its contribution. Nodes whose
// pending count reaches zero enter the *ready* queue; the loss starts it with
// d(loss)/d(loss) = 1. Several contributions to one output are summed with
// AddN, in the fixed order the consumers were processed (deterministic).
#include "ringflow/graph/gradients.h"

#include <deque>
#include <map>

#include "ringflow/graph/op_registry.h"

namespace ringflow {

std::vector<Output> gradients(Output loss, const std::vector<Output>& xs) {
  RF_CHECK(loss.valid(), "gradients: the loss is an empty Output handle");
  Graph& g = loss.graph();
  RF_CHECK(loss.index() >= 0, "gradients: loss '", loss.name(), "' is an op, not a tensor");
  RF_CHECK(loss.shape().rank() == 0, "gradients: loss ", loss.describe(),
           " must be a scalar; reduce it first (e.g. reduce_mean)");
  RF_CHECK(loss.dtype() == DType::f32, "gradients: loss ", loss.describe(), " must be f32");
  const int n = g.num_nodes();

  // Backward reachability from the loss (data edges only).
  std::vector<char> to_loss(static_cast<std::size_t>(n), 0);
  {
    std::vector<int> stack{loss.node_id()};
    to_loss[static_cast<std::size_t>(loss.node_id())] = 1;
    while (!stack.empty()) {
      int id = stack.back();
      stack.pop_back();
      for (const auto& in : g.node(id).inputs) {
        auto k = static_cast<std::size_t>(in.node_id());
        if (!to_loss[k]) {
          to_loss[k] = 1;
          stack.push_back(in.node_id());
        }
      }
    }
  }
  // Forward reachability from the xs, restricted to nodes the loss depends on.
  // Node ids are a topological order (inputs always exist before a node).
  std::vector<char> on_path(static_cast<std::size_t>(n), 0);
  for (const auto& x : xs) {
    RF_CHECK(x.valid() && &x.graph() == &g, "gradients: x ", x.describe(),
             " is not in the loss's graph");
    if (to_loss[static_cast<std::size_t>(x.node_id())])
      on_path[static_cast<std::size_t>(x.node_id())] = 1;
  }
  for (int id = 0; id < n; ++id) {
    if (!to_loss[static_cast<std::size_t>(id)] || on_path[static_cast<std::size_t>(id)]) continue;
    for (const auto& in : g.node(id).inputs)
      if (on_path[static_cast<std::size_t>(in.node_id())]) {
        on_path[static_cast<std::size_t>(id)] = 1;
        break;
      }
  }
  for (const auto& x : xs)
    RF_CHECK(on_path[static_cast<std::size_t>(x.node_id())], "gradients: loss '", loss.name(),
             "' does not depend on ", x.describe(), "; leave it out of the list of variables");

  // Pending counts over the reversed path.
  std::vector<int> pending(static_cast<std::size_t>(n), 0);
  for (int id = 0; id < n; ++id) {
    if (!on_path[static_cast<std::size_t>(id)]) continue;
    for (const auto& in : g.node(id).inputs)
      if (on_path[static_cast<std::size_t>(in.node_id())])
        ++pending[static_cast<std::size_t>(in.node_id())];
  }

  // contributions[(node, output)] in arrival order.
  std::map<std::pair<int, int>, std::vector<Output>> contrib;
  auto scope = g.scope("gradients");
  contrib[{loss.node_id(), loss.index()}].push_back(ones_like(loss));

  std::map<int, std::size_t> x_index;
  std::deque<int> ready{loss.node_id()};
  RF_CHECK_AS(InternalError, pending[static_cast<std::size_t>(loss.node_id())] == 0,
              "gradients: the loss feeds its own path");
  while (!ready.empty()) {
    const int id = ready.front();
    ready.pop_front();
    const Node& node = g.node(id);
    std::vector<Output> out_grads(static_cast<std::size_t>(node.num_outputs()));
    bool any = false;
    for (int k = 0; k < node.num_outputs(); ++k) {
      auto it = contrib.find({id, k});
      if (it == contrib.end() || it->second.empty()) continue;
      out_grads[static_cast<std::size_t>(k)] = add_n(it->second);
      it->second.assign(1, out_grads[static_cast<std::size_t>(k)]);
      any = true;
    }
    bool is_x = false;
    for (const auto& x : xs) is_x = is_x || x.node_id() == id;
    if (is_x) continue;  // an x's own inputs are not asked for

    std::vector<Output> in_grads;
    const OpDef& def = *node.def;
    if (any && !def.no_gradient) {
      RF_CHECK(static_cast<bool>(def.grad), "gradients: op ", node.op, " (node '", node.name,
               "') has no gradient registered, and the path from a variable to loss '", loss.name(),
               "' goes through it");
      GradContext ctx{g, node, out_grads};
      in_grads = def.grad(ctx);
      RF_CHECK_AS(InternalError, in_grads.size() == node.inputs.size(), "gradient of op ", node.op,
                  " returned ", in_grads.size(), " gradients for ", node.inputs.size(), " inputs");
    }
    for (std::size_t i = 0; i < node.inputs.size(); ++i) {
      const Output& in = node.inputs[i];
      const auto k = static_cast<std::size_t>(in.node_id());
      if (!on_path[k]) continue;
      if (i < in_grads.size() && in_grads[i].valid()) {
        RF_CHECK_AS(InternalError, in_grads[i].shape().compatible_with(in.shape()),
                    "gradient of op ", node.op, " '", node.name, "' for input ", i, " has shape ",
                    in_grads[i].shape().to_string(), ", the input has ", in.shape().to_string());
        contrib[{in.node_id(), in.index()}].push_back(in_grads[i]);
      }
      if (--pending[k] == 0) ready.push_back(in.node_id());
    }
  }

  std::vector<Output> result;
  for (const auto& x : xs) {
    auto it = contrib.find({x.node_id(), x.index()});
    if (it == contrib.end() || it->second.empty()) {
      // Every path from x to the loss crosses an op registered without a
      // gradient (ArgMax, Equal, ...): the gradient is zero.
      result.push_back(zeros_like(x));
    } else {
      result.push_back(it->second.front());
    }
  }
  return result;
}

}  // namespace ringflow
