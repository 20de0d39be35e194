// Private: the arithmetic of the ring allreduce that its two transports share — which
// chunk and segment every item of the ring carries, and the elementwise reductions.
// The words (chunk, segment, step, item) are defined in the opening comment of
// ring_allreduce.cpp; the point-to-point transport lives there, the shared-memory
// one in ring_shm.cpp. Both walk the same items and add in the same order, so they
// give bitwise the same results.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace ringflow::collectives::detail {

// A range [offset, offset + count) of floats of the buffer.
struct Range {
  std::size_t offset;
  std::size_t count;
};

// Part `index` of `parts` near-equal parts of `whole`: the first whole.count % parts
// parts get one float more. Used for chunks (of the buffer) and segments (of a chunk).
inline Range part_of(Range whole, std::size_t parts, std::size_t index) {
  const std::size_t base = whole.count / parts;
  const std::size_t extra = whole.count % parts;
  return {whole.offset + index * base + std::min(index, extra), base + (index < extra ? 1 : 0)};
}

inline std::size_t round_up(std::size_t x, std::size_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

// a mod n in [0, n), also for negative a.
inline int ring_mod(std::int64_t a, int n) {
  return static_cast<int>(((a % n) + n) % n);
}

// Which chunk and segment each item carries, for rank `rank` of `n` and a buffer of
// `count` floats cut into segments of at most max_segment_bytes.
class RingPlan {
 public:
  RingPlan(int n, int rank, std::size_t count, std::size_t max_segment_bytes)
      : n_(n), rank_(rank), count_(count) {
    const std::size_t max_segment_floats =
        std::max<std::size_t>(1, max_segment_bytes / sizeof(float));
    const std::size_t max_chunk = (count + n - 1) / n;
    segments_ = std::max<std::size_t>(1, (max_chunk + max_segment_floats - 1) / max_segment_floats);
    items_ = static_cast<std::int64_t>(2 * (n - 1)) * static_cast<std::int64_t>(segments_);
  }

  int n() const { return n_; }
  int rank() const { return rank_; }
  int left() const { return ring_mod(rank_ - 1, n_); }
  int right() const { return ring_mod(rank_ + 1, n_); }
  std::size_t count() const { return count_; }
  // Segments per chunk (the same for every chunk; a segment may be empty).
  std::size_t segments() const { return segments_; }
  // Items of the whole allreduce: 2(N-1) steps of `segments` segments.
  std::int64_t items() const { return items_; }

  std::int64_t step_of(std::int64_t item) const {
    return item / static_cast<std::int64_t>(segments_);
  }
  // 2(N-1): steps 0 .. N-2 reduce-scatter, steps N-1 .. 2N-3 allgather.
  std::int64_t steps() const { return 2 * static_cast<std::int64_t>(n_ - 1); }
  bool reduce_scatter(std::int64_t step) const { return step < n_ - 1; }
  // The reduce-scatter step whose reduction completes a chunk (and divides it for
  // average).
  bool last_reduce_scatter(std::int64_t step) const { return step == n_ - 2; }

  // Chunk this rank sends / receives in `step`; see ring_allreduce.cpp.
  int send_chunk(std::int64_t step) const {
    return reduce_scatter(step) ? ring_mod(rank_ - step, n_)
                                : ring_mod(rank_ + 1 - (step - (n_ - 1)), n_);
  }
  int recv_chunk(std::int64_t step) const {
    return reduce_scatter(step) ? ring_mod(rank_ - step - 1, n_)
                                : ring_mod(rank_ - (step - (n_ - 1)), n_);
  }
  // Segment `segment` of chunk `chunk`, as a range of the buffer.
  Range segment_of_chunk(int chunk, std::size_t segment) const {
    const Range whole = part_of({0, count_}, static_cast<std::size_t>(n_), chunk);
    return part_of(whole, segments_, segment);
  }
  // For items numbered item = step * segments + segment (the p2p pipeline's order).
  Range send_segment(std::int64_t item) const {
    return segment_of_chunk(send_chunk(step_of(item)), segment_of(item));
  }
  Range recv_segment(std::int64_t item) const {
    return segment_of_chunk(recv_chunk(step_of(item)), segment_of(item));
  }

 private:
  std::size_t segment_of(std::int64_t item) const {
    return static_cast<std::size_t>(item % static_cast<std::int64_t>(segments_));
  }

  int n_;
  int rank_;
  std::size_t count_;
  std::size_t segments_ = 1;
  std::int64_t items_ = 0;
};

// The reductions, used by both transports: own + incoming, in that order, so that
// both give the same bits. Plain loops so that GCC vectorises them.

// own += incoming
inline void reduce_into(float* __restrict own, const float* __restrict incoming,
                        std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) own[i] += incoming[i];
}

// own = (own + incoming) / divisor: the last reduce-scatter step of an average.
// Division (not multiplication by 1/N) keeps the result equal to sum / N exactly.
inline void reduce_into_scaled(float* __restrict own, const float* __restrict incoming,
                               std::size_t count, float divisor) {
  for (std::size_t i = 0; i < count; ++i) own[i] = (own[i] + incoming[i]) / divisor;
}

}  // namespace ringflow::collectives::detail
