// Executor: runs one Plan once.
//
// Each node has an atomic pending counter; a node that finishes decrements
// its consumers' counters and the consumer whose counter reaches zero
// (fetch_sub(1) == 1) is ready. Cheap ready nodes run inline on the thread
// that made them ready; of the expensive ones one runs inline and the rest
// become TBB tasks. A thread's inline nodes run lowest graph id first. Async kernels (a gradient
// bucket's allreduce) finish on another thread: their completion *posts* the nodes it made ready,
// and the next node to finish on a worker (or the run() thread, if everything else is idle) turns
// them into tasks. The first exception wins: it stops new nodes from starting and is rethrown from
// run() once nothing is in flight.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include "plan.h"

namespace ringflow {

class Executor {
 public:
  Executor(Session& session, const Plan& plan, const FeedList& feeds, tbb::task_arena& arena);
  // Runs the plan; returns the fetched values; rethrows the first error.
  std::vector<Tensor> run();
  RunStats stats() const;

 private:
  void process(int p);
  void execute(int p, std::vector<int>& local);
  void finish(int p, KernelContext& ctx, std::vector<int>& ready);
  void schedule(const std::vector<int>& ready, std::vector<int>& local);
  void drain_posted();
  void record_error(std::exception_ptr e);
  void check_feed(int p) const;

  // Heap order for a thread's local ready nodes (std heaps pop the largest,
  // so "a after b" means a runs later).
  struct ByPriority {
    const Plan* plan;
    bool operator()(int a, int b) const {
      return plan->nodes[static_cast<std::size_t>(a)].priority >
             plan->nodes[static_cast<std::size_t>(b)].priority;
    }
  };

  Session& session_;
  const Plan& plan_;
  const FeedList& feeds_;
  tbb::task_arena& arena_;
  tbb::task_group tasks_;
  ByPriority by_priority_;

  std::vector<Tensor> values_;
  std::unique_ptr<std::atomic<int>[]> pending_;
  std::unique_ptr<std::atomic<int>[]> refs_;
  std::atomic<int> completed_{0};
  std::atomic<int> running_{0};
  std::atomic<int> max_running_{0};
  std::atomic<bool> aborted_{false};
  std::exception_ptr error_;

  // Posted by async completions; guarded by mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> posted_;
  std::atomic<bool> has_posted_{false};
  int outstanding_async_ = 0;
  bool abort_announced_ = false;  // on_abort called (under mu_)
  // Contexts of finished async kernels, freed when the run ends (a context
  // cannot free itself from inside its own done callback).
  std::vector<KernelContext*> finished_async_;

 public:
  ~Executor();
};

}  // namespace ringflow
