// Training and evaluation batches (batch.h).
#include "ringflow/datasets/batch.h"

#include <algorithm>
#include <numeric>

#include "ringflow/base/error.h"

namespace ringflow::datasets {
namespace {

// The splitmix64 output function: a bijective 64-bit mixer.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

}  // namespace

uint64_t SplitMix64::next() {
  state_ += kGolden;
  return mix64(state_);
}

uint64_t SplitMix64::below(uint64_t n) {
  // Reject the lowest (2^64 mod n) outputs so every residue is equally likely.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return r % n;
  }
}

double SplitMix64::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::vector<int64_t> shard_permutation(int64_t n, uint64_t seed, int64_t epoch, int rank) {
  RF_CHECK(n >= 0, "shard_permutation: n must be >= 0, got ", n);
  // Each of seed, epoch, rank passes through the mixer, so neighbouring
  // (seed, epoch, rank) triples give unrelated streams.
  const uint64_t key = mix64(mix64(mix64(seed + kGolden) ^ static_cast<uint64_t>(epoch)) ^
                             (static_cast<uint64_t>(static_cast<uint32_t>(rank)) << 1 | 1));
  SplitMix64 rng(key);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  // Fisher-Yates: position i swaps with a uniform position in [0, i].
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

int64_t steps_per_epoch(int64_t total_rows, int64_t global_batch) {
  RF_CHECK(global_batch >= 1, "global batch must be >= 1, got ", global_batch);
  RF_CHECK(total_rows >= 0, "total rows must be >= 0, got ", total_rows);
  return total_rows / global_batch;
}

BatchIterator::BatchIterator(const Shard& shard, const BatchOptions& options)
    : shard_(shard),
      global_batch_(options.global_batch),
      local_batch_(0),
      steps_per_epoch_(0),
      shuffle_(options.shuffle),
      seed_(options.seed) {
  RF_CHECK(global_batch_ >= 1, shard_.path, ": /", shard_.split,
           ": global batch must be >= 1, got ", global_batch_);
  RF_CHECK(global_batch_ % shard_.num_ranks == 0, shard_.path, ": /", shard_.split,
           ": global batch ", global_batch_, " is not a multiple of the ", shard_.num_ranks,
           " ranks — choose a global batch divisible by the rank count");
  RF_CHECK(global_batch_ <= shard_.total_rows, shard_.path, ": /", shard_.split, ": global batch ",
           global_batch_, " exceeds the ", shard_.total_rows,
           " rows, so an epoch would have no steps — use a smaller batch");
  local_batch_ = global_batch_ / shard_.num_ranks;
  steps_per_epoch_ = datasets::steps_per_epoch(shard_.total_rows, global_batch_);
  // Holds because every shard has >= floor(total / N) rows (see batch.h).
  RF_CHECK_AS(InternalError, steps_per_epoch_ * local_batch_ <= shard_.num_rows(), "rank ",
              shard_.rank, ": shard of ", shard_.num_rows(), " rows is too small for ",
              steps_per_epoch_, " steps of ", local_batch_);
  order_.resize(static_cast<size_t>(shard_.num_rows()));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  last_rows_.resize(static_cast<size_t>(local_batch_));
  start_epoch(0);
}

void BatchIterator::start_epoch(int64_t epoch) {
  step_ = 0;
  if (shuffle_) order_ = shard_permutation(shard_.num_rows(), seed_, epoch, shard_.rank);
}

void BatchIterator::seek(int64_t step) {
  RF_CHECK(step >= 0 && step <= steps_per_epoch_, "BatchIterator::seek: step ", step,
           " is outside the epoch's ", steps_per_epoch_, " steps");
  step_ = step;
}

bool BatchIterator::next(std::span<float> x, std::span<int32_t> y) {
  const int64_t row_size = shard_.row_size;
  RF_CHECK(static_cast<int64_t>(x.size()) == local_batch_ * row_size &&
               static_cast<int64_t>(y.size()) == local_batch_,
           "BatchIterator::next: x must hold local_batch*row_size = ", local_batch_, "*", row_size,
           " floats and y ", local_batch_, " labels; got ", x.size(), " and ", y.size());
  if (step_ >= steps_per_epoch_) return false;
  for (int64_t j = 0; j < local_batch_; ++j) {
    const int64_t local = order_[static_cast<size_t>(step_ * local_batch_ + j)];
    std::copy_n(shard_.x.data() + local * row_size, row_size, x.data() + j * row_size);
    y[static_cast<size_t>(j)] = shard_.y[static_cast<size_t>(local)];
    last_rows_[static_cast<size_t>(j)] = shard_.global_row(local);
  }
  ++step_;
  return true;
}

EvalIterator::EvalIterator(const Shard& shard, int64_t global_batch)
    : shard_(shard), local_batch_(0), steps_(0) {
  RF_CHECK(global_batch >= 1 && global_batch % shard_.num_ranks == 0, shard_.path, ": /",
           shard_.split, ": evaluation batch ", global_batch,
           " must be a positive multiple of the ", shard_.num_ranks, " ranks");
  local_batch_ = global_batch / shard_.num_ranks;
  // The largest shard has ceil(total / N) rows in both shard modes.
  const int64_t max_rows = (shard_.total_rows + shard_.num_ranks - 1) / shard_.num_ranks;
  steps_ = (max_rows + local_batch_ - 1) / local_batch_;
}

int64_t EvalIterator::next(std::span<float> x, std::span<int32_t> y) {
  const int64_t row_size = shard_.row_size;
  RF_CHECK(static_cast<int64_t>(x.size()) >= local_batch_ * row_size &&
               static_cast<int64_t>(y.size()) >= local_batch_,
           "EvalIterator::next: x must hold at least ", local_batch_, "*", row_size,
           " floats and y ", local_batch_, " labels; got ", x.size(), " and ", y.size());
  const int64_t n = std::min(local_batch_, shard_.num_rows() - next_row_);
  if (n <= 0) return 0;
  std::copy_n(shard_.x.data() + next_row_ * row_size, n * row_size, x.data());
  std::copy_n(shard_.y.data() + next_row_, n, y.data());
  next_row_ += n;
  return n;
}

}  // namespace ringflow::datasets
