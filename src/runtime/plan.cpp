#include "plan.h"

#include <algorithm>
#include <map>
#include <sstream>

namespace ringflow {

std::string Plan::key(const std::vector<Output>& fetches, const FeedList& feeds,
                      const std::vector<Output>& targets) {
  std::ostringstream os;
  os << "fetch";
  for (const auto& f : fetches) os << ' ' << f.node_id() << ':' << f.index();
  std::vector<int> fed;
  for (const auto& [o, t] : feeds) fed.push_back(o.node_id());
  std::sort(fed.begin(), fed.end());
  os << "|feed";
  for (int id : fed) os << ' ' << id;
  os << "|target";
  for (const auto& t : targets) os << ' ' << t.node_id();
  return os.str();
}

Plan::Plan(Graph& graph, const std::vector<Output>& fetches, const FeedList& feeds,
           const std::vector<Output>& targets) {
  const int n = graph.num_nodes();
  std::map<int, int> feed_of_node;
  for (std::size_t i = 0; i < feeds.size(); ++i) {
    const Output& o = feeds[i].first;
    RF_CHECK(o.valid() && &o.graph() == &graph, "feed ", i,
             " is not a tensor of this session's graph");
    const Node& node = o.node();
    RF_CHECK(node.op == "Placeholder" || node.op == "PlaceholderWithDefault", "cannot feed '",
             node.name, "': it is a ", node.op, ", and only placeholders can be fed");
    RF_CHECK(!feed_of_node.count(o.node_id()), "placeholder '", node.name, "' is fed twice");
    feed_of_node[o.node_id()] = static_cast<int>(i);
  }

  // Prune: everything the fetches and targets reach through data and control
  // inputs, stopping at fed placeholders.
  std::vector<char> needed(static_cast<std::size_t>(n), 0);
  std::vector<int> stack;
  auto want = [&](int id) {
    if (!needed[static_cast<std::size_t>(id)]) {
      needed[static_cast<std::size_t>(id)] = 1;
      stack.push_back(id);
    }
  };
  for (const auto& f : fetches) {
    RF_CHECK(f.valid() && &f.graph() == &graph, "a fetch is not a tensor of this session's graph");
    RF_CHECK(f.index() >= 0 && f.index() < f.node().num_outputs(), "cannot fetch '", f.node().name,
             "': it is an op with no output ", f.index(), "; pass it as a target instead");
    want(f.node_id());
  }
  for (const auto& t : targets) {
    RF_CHECK(t.valid() && &t.graph() == &graph, "a target is not an op of this session's graph");
    want(t.node_id());
  }
  RF_CHECK(!stack.empty(), "Session::run: nothing to fetch and no targets");
  while (!stack.empty()) {
    const int id = stack.back();
    stack.pop_back();
    if (feed_of_node.count(id)) continue;
    const Node& node = graph.node(id);
    for (const auto& in : node.inputs) want(in.node_id());
    for (int c : node.control_inputs) want(c);
  }

  std::vector<int> plan_index(static_cast<std::size_t>(n), -1);
  for (int id = 0; id < n; ++id) {
    if (!needed[static_cast<std::size_t>(id)]) continue;
    const Node& node = graph.node(id);
    PlanNode p;
    p.node = &node;
    p.def = node.def;
    p.first_value = num_values;
    num_values += node.num_outputs();
    auto f = feed_of_node.find(id);
    if (f != feed_of_node.end()) {
      p.feed_index = f->second;
    } else {
      RF_CHECK(node.op != "Placeholder", "placeholder '", node.name,
               "' must be fed: pass a value for it in the feeds of Session::run");
      RF_CHECK(static_cast<bool>(node.def->kernel), "op ", node.op, " '", node.name,
               "' has no kernel");
    }
    plan_index[static_cast<std::size_t>(id)] = static_cast<int>(nodes.size());
    nodes.push_back(std::move(p));
  }
  initial_refs.assign(static_cast<std::size_t>(num_values), 0);
  for (auto& p : nodes) {
    const int self = plan_index[static_cast<std::size_t>(p.node->id)];
    if (p.feed_index >= 0) continue;  // a fed node has no inputs to wait for
    for (const auto& in : p.node->inputs) {
      PlanNode& src =
          nodes[static_cast<std::size_t>(plan_index[static_cast<std::size_t>(in.node_id())])];
      const int v = src.first_value + in.index();
      p.input_values.push_back(v);
      ++initial_refs[static_cast<std::size_t>(v)];
      src.consumers.push_back(self);
      ++p.initial_pending;
    }
    for (int c : p.node->control_inputs) {
      nodes[static_cast<std::size_t>(plan_index[static_cast<std::size_t>(c)])].consumers.push_back(
          self);
      ++p.initial_pending;
    }
  }
  for (const auto& f : fetches) {
    const int v = nodes[static_cast<std::size_t>(plan_index[static_cast<std::size_t>(f.node_id())])]
                      .first_value +
                  f.index();
    fetch_values.push_back(v);
    ++initial_refs[static_cast<std::size_t>(v)];
  }
  // Inputs a kernel may overwrite: the only use of an intermediate value.
  for (auto& p : nodes) {
    for (std::size_t i = 0; i < p.node->inputs.size() && i < p.input_values.size(); ++i) {
      const Output& in = p.node->inputs[i];
      const PlanNode& src =
          nodes[static_cast<std::size_t>(plan_index[static_cast<std::size_t>(in.node_id())])];
      const std::string& op = src.node->op;
      const bool persistent = src.feed_index >= 0 || op == "Variable" || op == "Const" ||
                              op == "PlaceholderWithDefault" || src.def->stateful;
      p.input_exclusive.push_back(!persistent &&
                                  initial_refs[static_cast<std::size_t>(p.input_values[i])] == 1);
    }
  }
  const int count = static_cast<int>(nodes.size());
  for (int i = 0; i < count; ++i) {
    PlanNode& p = nodes[static_cast<std::size_t>(i)];
    p.priority = p.def->async ? i - count : i;
    if (p.initial_pending == 0) roots.push_back(i);
  }
  feed_plan_index.assign(feeds.size(), -1);
  for (const auto& [id, fi] : feed_of_node)
    if (needed[static_cast<std::size_t>(id)])
      feed_plan_index[static_cast<std::size_t>(fi)] = plan_index[static_cast<std::size_t>(id)];
}

}  // namespace ringflow
