// Gradient buckets and their allreduce on a communication thread.
//
// Words: a *bucket* is a group of gradients, at most --fusion-mb in size,
// that is averaged across ranks in one collective. Buckets are fixed when
// the graph is built, in the order backward produces the gradients (the last
// layer's first), and numbered 0, 1, 2, ... Each bucket becomes one async
// graph node, AllreduceBucket: when all of its gradients are ready the
// executor runs it, it packs them into the bucket's persistent *fusion
// buffer* and hands the bucket over, and backward goes on. With overlap on,
// the communication thread reduces the buckets handed over strictly in
// bucket order, whatever order they came in, so every rank issues the same
// collectives in the same order. It unpacks the averaged values into
// persistent gradient tensors and completes the node, which releases the
// apply ops of that bucket's variables only.
//
// The step's last hand-over is different: no backward is left to overlap, so
// when the communication thread is idle, the executor thread that hands over
// the last bucket reduces the buckets still waiting itself, in bucket order,
// sparing two thread wake-ups. With overlap off that is every bucket: the
// allreduces run after all of backward, on the executor thread, and there
// is no communication thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ringflow/collectives/collectives.h"
#include "ringflow/graph/op_registry.h"
#include "ringflow/ops/optimizers.h"
#include "ringflow/train/control.h"
#include "ringflow/train/timeline.h"

namespace ringflow::train {

// Gradients at least this large get a bucket of their own: packing them
// would copy more than it saves in per-collective latency.
inline constexpr std::size_t kOwnBucketBytes = 256 * 1024;

struct ReducerOptions {
  collectives::Algorithm algorithm = collectives::Algorithm::automatic;
  std::size_t fusion_bytes = 4u << 20;
  bool overlap = true;
  StallWatch* watch = nullptr;  // watches each bucket's allreduce (optional)
};

struct ReducerStats {
  std::int64_t steps = 0;
  std::int64_t collectives = 0;
  std::int64_t bytes_reduced = 0;  // fusion-buffer bytes allreduced, summed
  double allreduce_seconds = 0;    // time inside the collectives
};

class GradientReducer {
 public:
  GradientReducer(collectives::Communicator& comm, ReducerOptions options,
                  Timeline* timeline = nullptr);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Groups the gradients into buckets and adds one AllreduceBucket node per
  // bucket to the graph. Returns the pairs with each gradient replaced by
  // its averaged counterpart, in the input order. Call once.
  std::vector<GradAndVar> add_to_graph(Graph& g, const std::vector<GradAndVar>& grads_and_vars);

  // Pass as SessionOptions::user_context so the bucket kernels find us.
  void* context() { return this; }

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Gradient indices (into add_to_graph's input) of each bucket, in bucket order.
  const std::vector<std::vector<int>>& buckets() const { return bucket_members_; }
  ReducerStats stats() const;

  // The step being run, for messages (the stall watchdog's).
  void set_step(std::int64_t step) { step_.store(step, std::memory_order_relaxed); }
  // Every averaged gradient is checked for NaN and Inf after its allreduce;
  // the averages are the same on every rank, so every rank sees the same.
  // Returns the variables whose averaged gradient was not finite since the
  // last call, in graph order, and forgets them.
  std::vector<std::string> take_nonfinite();

  // Called by the AllreduceBucket kernel.
  void submit(int bucket, KernelContext& ctx);
  // Pass as SessionOptions::on_abort. A failed step leaves the buckets
  // handed over so far waiting for the rest, which never come (with overlap
  // off none of them is reduced before the last): completes those that can
  // no longer be reduced with an error, so that the run fails instead of
  // waiting for ever, and makes the next step start at bucket 0.
  void abort_step();

 private:
  struct Bucket {
    std::vector<float> fusion;          // persistent fusion buffer
    std::size_t fusion_floats = 0;      // its size, once allocated
    bool in_place = false;              // this step: reduced in the gradient's own storage
    std::vector<Tensor> outputs;        // persistent averaged gradients
    std::vector<std::int64_t> offsets;  // of each gradient in `fusion`
    KernelContext* pending = nullptr;   // handed over, not yet reduced
  };
  void loop();
  void reduce(int b);
  // Marks bucket b reduced and moves on to the next (takes mu_).
  void complete(int b);
  // reduce(b), complete(b), then completes its node (with reduce's error, if any).
  void reduce_and_finish(int b, KernelContext* ctx);
  // Records the members of bucket b whose values (at the bucket's offsets in
  // data, or the k-th input when data is empty) are not all finite.
  void check_finite(int b, std::span<const float> data, const KernelContext* inputs);

  collectives::Communicator& comm_;
  ReducerOptions options_;
  Timeline* timeline_;
  std::vector<Bucket> buckets_;
  std::vector<std::vector<int>> bucket_members_;
  std::vector<std::string> var_names_;  // by gradient index
  std::vector<char> nonfinite_;         // by gradient index, under mu_
  std::atomic<std::int64_t> step_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  int submitted_ = 0;           // buckets handed over this step
  int next_ = 0;                // the bucket the thread reduces next
  bool comm_busy_ = false;      // the communication thread is reducing a bucket
  bool reducing_here_ = false;  // submit() is reducing the step's last buckets itself
  bool restart_ = false;        // a step failed: start over at bucket 0 (abort_step)
  bool stop_ = false;
  bool skip_allreduce_ = false;
  ReducerStats stats_;
  std::thread thread_;
};

// Registers the AllreduceBucket op (idempotent).
void register_train_ops();

}  // namespace ringflow::train
