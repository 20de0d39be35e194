// A Plan: the pruned, compiled subgraph for one fetch/feed/target signature.
//
// Words: a *value* is one output of one node, numbered densely in the plan.
// A node's *pending* count is its number of incoming edges (data and
// control) from nodes in the plan; it is ready when that count reaches zero.
// A value's *reference* count is its number of consuming data edges, plus one
// when it is fetched; the executor releases the value when it drops to zero.
#pragma once

#include <string>
#include <vector>

#include "ringflow/graph/op_registry.h"
#include "ringflow/runtime/session.h"

namespace ringflow {

struct PlanNode {
  const Node* node = nullptr;
  const OpDef* def = nullptr;
  std::vector<int> input_values;  // one per data input
  // Per input: this edge is the value's only use (one consumer, not
  // fetched) and the value is an ordinary intermediate (not a variable,
  // constant or feed, whose storage lives on).
  std::vector<bool> input_exclusive;
  int first_value = 0;         // output k is value first_value + k
  std::vector<int> consumers;  // plan indices, once per edge into them
  int initial_pending = 0;
  int feed_index = -1;  // >= 0: the output comes from feeds[feed_index]
  // Among nodes ready on one thread, the lowest priority runs first: the
  // plan index, except that async nodes (hand-offs to another thread) go
  // before everything else.
  int priority = 0;
};

class Plan {
 public:
  // Prunes graph to what fetches and targets need and compiles it.
  Plan(Graph& graph, const std::vector<Output>& fetches, const FeedList& feeds,
       const std::vector<Output>& targets);

  std::vector<PlanNode> nodes;       // in graph-id order, a topological order
  std::vector<int> initial_refs;     // per value
  std::vector<int> fetch_values;     // per fetch
  std::vector<int> roots;            // plan indices with no pending inputs
  std::vector<int> feed_plan_index;  // per feed: the plan node it feeds (-1 if unused)
  int num_values = 0;

  static std::string key(const std::vector<Output>& fetches, const FeedList& feeds,
                         const std::vector<Output>& targets);
};

}  // namespace ringflow
