// Session: runs a graph. run(fetches, feeds, targets) executes only the nodes
// the fetches and targets need, through a Plan compiled once per
// fetch/feed/target signature and cached. Variables live in the session.
//
//   Session sess(g, {.num_threads = 2});
//   auto [loss_value] = sess.run({loss}, {{x, batch_x}, {y, batch_y}}, {train_op});
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ringflow/graph/graph.h"

namespace ringflow {

class Plan;
struct KernelState;

using FeedList = std::vector<std::pair<Output, Tensor>>;

// One node execution, for timelines and tests. Times are steady_clock ns.
struct NodeEvent {
  int node_id;
  std::int64_t begin_ns;
  std::int64_t end_ns;
  int thread;  // a small per-run index of the executing thread
};

struct SessionOptions {
  // Threads the executor (and kernels that split their work) may use.
  // 0: the cores this process may run on.
  int num_threads = 0;
  // Passed to every kernel as KernelContext::user_context().
  void* user_context = nullptr;
  // Called after each node execution when set (from the executing thread).
  std::function<void(const NodeEvent&)> on_node;
  // Flush denormal floats to zero on the executor's threads (FTZ/DAZ).
  bool flush_denormals = true;
  // Called once when a run fails, before it returns. Async nodes still out
  // must then complete (with an error is fine), or the run waits for them
  // for ever. GradientReducer::abort_step is one.
  std::function<void()> on_abort;
};

struct RunStats {
  int nodes_executed = 0;
  int max_concurrent = 0;  // the most nodes that were running at one time
};

class Session {
 public:
  explicit Session(Graph& graph, SessionOptions options = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Computes `fetches` (copies, safe to keep) after feeding `feeds` into
  // placeholders, and also runs `targets` (ops such as a train step). The
  // first error raised by any node is rethrown here; the session stays usable.
  std::vector<Tensor> run(const std::vector<Output>& fetches, const FeedList& feeds = {},
                          const std::vector<Output>& targets = {});

  // The storage of a variable (created from its initialiser on first use).
  Tensor& variable(Output var);
  Tensor& variable(const std::string& name);
  // Every variable of the graph, in creation order, created if needed.
  std::vector<std::pair<std::string, Tensor*>> variables();
  // Re-creates every variable from its initialiser.
  void reset_variables();

  int num_threads() const { return num_threads_; }
  const RunStats& last_run_stats() const { return stats_; }
  // How many times the node has run in this session.
  std::uint64_t run_count(int node_id) const;
  Graph& graph() const { return graph_; }
  std::size_t cached_plans() const { return plans_.size(); }

 private:
  friend class Executor;
  const Plan& plan_for(const std::vector<Output>& fetches, const FeedList& feeds,
                       const std::vector<Output>& targets);
  Tensor& variable_by_id(int node_id);

  Graph& graph_;
  SessionOptions options_;
  int num_threads_;
  std::mutex run_mu_;  // one run at a time
  std::map<std::string, std::unique_ptr<Plan>> plans_;
  std::map<int, Tensor> variables_;
  std::vector<std::uint64_t> run_counts_;
  std::vector<std::unique_ptr<KernelState>> states_;
  RunStats stats_;
  struct ArenaHolder;
  std::unique_ptr<ArenaHolder> arena_;
};

// The cores this process may run on (its CPU affinity).
int available_cores();

}  // namespace ringflow
