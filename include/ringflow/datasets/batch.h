// Batches from a shard, for training and for evaluation.
//
// Words: the global batch B is the number of rows all N ranks process in one
// step together; the local batch b = B / N is one rank's part (B must be a
// multiple of N). A step is one optimizer update.
//
// The training rule, the same on every rank, so that no rank ever waits alone
// in a collective:
//   steps_per_epoch = floor(total_rows / B)
// It depends only on the split's total_rows and B, which every rank knows, not
// on the rank's own shard size. The rows of the last, partial global batch
// (total_rows mod B of them) are dropped for that epoch. Every shard holds at
// least floor(total_rows / N) >= steps_per_epoch * b rows, so every rank has
// enough rows even when shards are uneven.
//
// Without shuffling, step k on rank r uses its local rows k*b .. k*b+b-1. With
// strided shards those are the global rows k*B + r + N*j (j < b), so the union
// over ranks is exactly rows k*B .. k*B+B-1: the batch one rank with batch B
// would see. With shuffling, each epoch permutes the rank's local rows with a
// permutation seeded by (seed, epoch, rank) through splitmix64 (our own PRNG,
// so it is the same on every platform and standard library), and step k uses
// permuted positions k*b .. k*b+b-1.
//
// Evaluation visits every row of the shard exactly once with a partial last
// batch. Its step count, ceil(ceil(total_rows / N) / b), is again the same on
// every rank; a rank whose shard is one row shorter gets an empty batch (0
// rows) in its last step, so per-step collectives stay matched.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ringflow/datasets/shard.h"

namespace ringflow::datasets {

// splitmix64 (Steele, Lea, Flood 2014): a tiny PRNG whose output is fixed by
// its definition, unlike std:: distributions.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, n), n > 0, without modulo bias (rejection sampling).
  uint64_t below(uint64_t n);
  // Uniform in [0, 1) with 53 random bits.
  double uniform();

 private:
  uint64_t state_;
};

// The permutation of [0, n) used by shuffled epoch `epoch` on rank `rank`
// (Fisher-Yates driven by SplitMix64 seeded from a mix of seed, epoch, rank).
std::vector<int64_t> shard_permutation(int64_t n, uint64_t seed, int64_t epoch, int rank);

// floor(total_rows / global_batch); InvalidArgument when global_batch < 1.
int64_t steps_per_epoch(int64_t total_rows, int64_t global_batch);

struct BatchOptions {
  int64_t global_batch = 0;  // B, a positive multiple of the shard's num_ranks
  bool shuffle = false;
  uint64_t seed = 0;
};

// Training batches of one shard. Usage:
//   BatchIterator it(shard, {.global_batch = 256, .shuffle = true, .seed = 1});
//   for (int64_t epoch = 0; ...; ++epoch) {
//     it.start_epoch(epoch);
//     while (it.next(x_span, y_span)) { ... one step ... }
//   }
// The iterator keeps a reference to the shard, which must outlive it.
class BatchIterator {
 public:
  BatchIterator(const Shard& shard, const BatchOptions& options);

  int64_t global_batch() const { return global_batch_; }
  int64_t local_batch() const { return local_batch_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  // The step next() will produce, in [0, steps_per_epoch].
  int64_t step() const { return step_; }

  // Rewinds to step 0 of `epoch` (and reshuffles when shuffling).
  void start_epoch(int64_t epoch);
  // Moves to `step` of the current epoch, in [0, steps_per_epoch]: the next
  // next() returns that step's batch (resuming from a checkpoint).
  void seek(int64_t step);
  // Copies the next local batch into x: (local_batch, row_size) and
  // y: (local_batch); the spans must have exactly these sizes. Returns false,
  // leaving the spans alone, once the epoch's steps are done.
  bool next(std::span<float> x, std::span<int32_t> y);
  // Global row indices of the batch last returned by next(), (local_batch).
  std::span<const int64_t> last_rows() const { return last_rows_; }

 private:
  const Shard& shard_;
  int64_t global_batch_;
  int64_t local_batch_;
  int64_t steps_per_epoch_;
  bool shuffle_;
  uint64_t seed_;
  int64_t step_ = 0;
  std::vector<int64_t> order_;  // local row index of each position this epoch
  std::vector<int64_t> last_rows_;
};

// Evaluation batches: every row of the shard once, in order, last batch
// partial, then empty batches up to steps() (see the header comment).
class EvalIterator {
 public:
  EvalIterator(const Shard& shard, int64_t global_batch);

  int64_t local_batch() const { return local_batch_; }
  // ceil(ceil(total_rows / N) / local_batch): the same on every rank.
  int64_t steps() const { return steps_; }
  void reset() { next_row_ = 0; }
  // Copies up to local_batch rows into the front of x: (>= local_batch,
  // row_size) and y: (>= local_batch); returns how many rows it wrote
  // (0 once the shard is exhausted).
  int64_t next(std::span<float> x, std::span<int32_t> y);

 private:
  const Shard& shard_;
  int64_t local_batch_;
  int64_t steps_;
  int64_t next_row_ = 0;
};

}  // namespace ringflow::datasets
