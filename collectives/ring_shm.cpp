// Ring allreduce over shared memory: the ring of ring_allreduce.cpp (same chunks,
// segments and steps, the same sums in the same order, so bitwise the same result)
// with MPI point-to-point messages replaced by loads and stores in an MPI-3
// shared-memory window. Used when every rank of the communicator shares this node's
// memory (choose_ring_transport).
//
// Why: on one node MPI's point-to-point path (Open MPI's vader, without a single-copy
// mechanism) copies every message twice, sender to shared fragments and fragments to
// the receiver, and the receiver's reduction then reads the received copy once more;
// the p2p ring tops out at that path's ~9 GB/s. Here a rank copies a segment once into
// its own slot, and its right neighbour reduces straight out of that slot into its own
// buffer (fused receive + reduce: no receive copy). The allgather copies straight out of
// the left's slot into the buffer. At 2 ranks on the 2-core VM that is ~1.5x MPI's
// busbw from 4 KiB to 16 MiB (tests/bench/allreduce_bench).
//
// Words, on top of chunk, segment and step (ring_allreduce.cpp):
//   window   One MPI_Win_allocate_shared per Communicator, created collectively by the
//            first shm ring call on it (and again only when a larger segment size needs
//            larger slots). Rank r's part: its two counters, then kSlots slots.
//   slot     Room for one segment. Rank r writes only its own slots; only its right
//            neighbour reads them.
//   item     One (segment, step) pair, numbered segment-major here:
//            item = segment * 2(N-1) + step. A segment goes around its 2(N-1) steps
//            before the next one starts, so the segment a rank receives in step s is the
//            one it sends in step s+1, right away while it is in the L1 cache, and a few
//            slots suffice (see "fused send"). The p2p ring numbers step-major, where a
//            send follows its data by `segments` items: fusing there would need a slot
//            per segment of a chunk. The order of the items changes nothing in what is
//            added to what.
//   sequence number  Items are numbered across calls: seq = (items of earlier calls on
//            this window) + item. Every rank makes the same calls, so the numbers agree,
//            and the counters only grow and never need resetting. Item seq travels
//            through slot seq mod kSlots.
//   published  In r's part, written by r: r's slots hold its items with seq < published.
//   consumed   In r's part, written by r+1: r+1 is done with r's items seq < consumed.
//
// Send of item i: once its data is final and its slot is free (consumed > seq - kSlots),
// copy it into the slot, then store published = seq + 1 with release order. Receive of
// item i: wait until the left's published > seq (acquire), reduce or copy straight out of
// the left's slot, then store the left's consumed = seq + 1 (release). By step, for rank
// r and one segment:
//   step 0             send: the segment of chunk r, from the buffer.
//   steps 0 .. N-2     receive: buffer += left; in step N-2 the chunk is complete, and
//                      average divides it: buffer = (buffer + left) / N.
//   steps N-1 .. 2N-3  receive: buffer = left.
//   fused send         Every receive but the last (step 2N-3) makes the data of the next
//                      step's send. If that send is next in line (items are published in
//                      order) and its slot is free, the receive copies each finished
//                      block of kBlockFloats (in L1) on into the slot. If not, the send
//                      copies the segment from the buffer later, as in step 0.
// Slots are written with rep movsb: with fast strings it stores whole cache lines
// without reading them first, and a slot's lines sit in the right neighbour's cache
// after it read them. Vector stores fetch every line back first, which measured 2x
// slower for the whole allreduce.
//
// No deadlock: a rank never waits for its right neighbour while it holds a receive
// (a send that cannot go now is left for later), and every wait keeps trying the pending
// send. Of the items that some rank has not received, take the smallest, i: its left
// neighbour has received every item before i, so its send of i has its data, and that
// send's slot is free, since the receiver has consumed every item before i.
//
// Waiting: spin on the counter for a while (pause), then sched_yield() between polls, so
// that more ranks than cores (tests run 8 ranks on 2) still make progress. The trainer's
// stall watchdog may MPI_Abort the job while a rank waits here; nothing needs cleaning
// up. The window is created on whichever thread calls the ring, the one that owns MPI
// at the time (MPI_THREAD_SERIALIZED).
//
// Determinism: every reduction is own + incoming, as in the p2p ring, and the average
// divides once on the chunk's owner in step N-2; so both transports give bitwise the
// same bytes, on every rank.
#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

#include "allreduce_impl.h"
#include "ring_plan.h"
#include "ringflow/collectives/communicator.h"

namespace ringflow::collectives {
namespace detail {
namespace {

// Slots per rank. Two would do for correctness; four let a rank run a little ahead of
// a momentarily slower right neighbour without losing the fused send (2, 4 and 8 were
// within noise of each other at 2 ranks).
constexpr int kSlots = 4;
// Floats a fused receive finishes before copying them on into the outgoing slot: 16 KiB
// keeps own block, incoming block and copy in the 48 KiB L1 (8-64 KiB measured alike).
constexpr std::size_t kBlockFloats = 4096;
// Each counter gets two cache lines of its own (the adjacent-line prefetcher moves
// lines in pairs), so the owner's stores to `published` and the right neighbour's
// stores to `consumed` never contend for one line.
constexpr std::size_t kCounterStride = 128;
constexpr std::size_t kPublishedOffset = 0;
constexpr std::size_t kConsumedOffset = kCounterStride;
constexpr std::size_t kSlotsOffset = 2 * kCounterStride;
constexpr std::size_t kCacheLine = 64;
// Polls with a pause before a waiting rank starts yielding its core (~10 us on the CI VM).
constexpr int kSpinPolls = 512;

std::atomic_ref<std::uint64_t> counter(std::byte* part, std::size_t offset) {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(part + offset));
}

std::byte* align_to_cache_line(void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  return static_cast<std::byte*>(p) + (round_up(address, kCacheLine) - address);
}

// dst = src, with rep movsb on x86-64 (see the opening comment).
void copy_floats(float* dst, const float* src, std::size_t count) {
#if defined(__x86_64__)
  std::size_t bytes = count * sizeof(float);
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(bytes) : : "memory");
#else
  std::memcpy(dst, src, count * sizeof(float));
#endif
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins a while, then yields the core on every further poll.
class Backoff {
 public:
  void pause() {
    if (polls_ < kSpinPolls) {
      ++polls_;
      cpu_relax();
    } else {
      sched_yield();
    }
  }
  void reset() { polls_ = 0; }

 private:
  int polls_ = 0;
};

}  // namespace

class ShmRingWindow {
 public:
  // Collective over `comm`: allocates every rank's part of the window, zeroes this
  // rank's counters and waits until every rank has, so no rank reads a stale counter.
  static std::unique_ptr<ShmRingWindow, ShmRingWindowDeleter> open(MPI_Comm comm, int rank,
                                                                   int size,
                                                                   std::size_t slot_bytes) {
    std::unique_ptr<ShmRingWindow, ShmRingWindowDeleter> w(new ShmRingWindow);
    w->slot_bytes_ = round_up(slot_bytes, kCacheLine);
    MPI_Info info = MPI_INFO_NULL;
    RF_MPI_CHECK(MPI_Info_create(&info));
    // Each rank's part on its own pages: no false sharing between neighbours' parts.
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    // Open MPI puts its own header before each part, so a part starts on 8 bytes only:
    // ask for a cache line more and align. Parts are mapped page-aligned in every
    // process, so both neighbours agree on where the aligned part starts.
    void* base = nullptr;
    const int rc = MPI_Win_allocate_shared(
        static_cast<MPI_Aint>(kCacheLine + kSlotsOffset + kSlots * w->slot_bytes_), 1, info, comm,
        &base, &w->win_);
    MPI_Info_free(&info);
    RF_MPI_CHECK(rc);
    RF_MPI_CHECK(MPI_Win_set_errhandler(w->win_, MPI_ERRORS_RETURN));
    MPI_Aint left_bytes = 0;
    int left_unit = 0;
    void* left_base = nullptr;
    RF_MPI_CHECK(MPI_Win_shared_query(w->win_, ring_mod(rank - 1, size), &left_bytes, &left_unit,
                                      &left_base));
    w->own_ = align_to_cache_line(base);
    w->left_ = align_to_cache_line(left_base);
    // A passive-target epoch for the window's lifetime: from here on the ranks
    // synchronise through the counters alone.
    RF_MPI_CHECK(MPI_Win_lock_all(MPI_MODE_NOCHECK, w->win_));
    w->locked_ = true;
    counter(w->own_, kPublishedOffset).store(0, std::memory_order_relaxed);
    counter(w->own_, kConsumedOffset).store(0, std::memory_order_relaxed);
    RF_MPI_CHECK(MPI_Win_sync(w->win_));
    RF_MPI_CHECK(MPI_Barrier(comm));
    return w;
  }

  ~ShmRingWindow() {
    if (win_ == MPI_WIN_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (locked_) MPI_Win_unlock_all(win_);
    // Collective, and no rank returns before all have called it (MPI-3.1, 11.2.5), so
    // no neighbour is still reading this rank's slots when they go.
    MPI_Win_free(&win_);
  }

  std::size_t slot_bytes() const { return slot_bytes_; }

  // This rank's counters and slots, and its left neighbour's.
  std::atomic_ref<std::uint64_t> own_published() const { return counter(own_, kPublishedOffset); }
  std::atomic_ref<std::uint64_t> own_consumed() const { return counter(own_, kConsumedOffset); }
  std::atomic_ref<std::uint64_t> left_published() const { return counter(left_, kPublishedOffset); }
  std::atomic_ref<std::uint64_t> left_consumed() const { return counter(left_, kConsumedOffset); }
  float* own_slot(std::uint64_t seq) const { return slot(own_, seq); }
  const float* left_slot(std::uint64_t seq) const { return slot(left_, seq); }

  // Sequence number of the next call's first item; the same on every rank.
  std::uint64_t next_seq = 0;

 private:
  ShmRingWindow() = default;
  float* slot(std::byte* part, std::uint64_t seq) const {
    return reinterpret_cast<float*>(part + kSlotsOffset + (seq % kSlots) * slot_bytes_);
  }

  MPI_Win win_ = MPI_WIN_NULL;
  bool locked_ = false;
  std::size_t slot_bytes_ = 0;
  std::byte* own_ = nullptr;
  std::byte* left_ = nullptr;
};

void ShmRingWindowDeleter::operator()(ShmRingWindow* window) const {
  delete window;
}

namespace {

class ShmRingPipeline {
 public:
  ShmRingPipeline(Communicator& comm, const RingPlan& plan, std::span<float> data, ReduceOp op,
                  ShmRingWindow& window)
      : comm_(comm),
        plan_(plan),
        data_(data.data()),
        w_(window),
        steps_(plan.steps()),
        items_(plan.items()),
        base_(window.next_seq),
        average_(op == ReduceOp::average) {}

  void run() {
    for (std::int64_t item = 0; item < items_; ++item) {
      const std::uint64_t seq = seq_of(item);
      wait_until([&] {
        if (left_published_ > seq) return true;
        left_published_ = w_.left_published().load(std::memory_order_acquire);
        return left_published_ > seq;
      });
      receive(item);
      while (try_send()) {
      }
    }
    // The right neighbour may still be reading the last items when this returns; the
    // next call's sends wait for it through `consumed`.
    wait_until([&] { return sent_ == items_; });
    w_.next_seq = seq_of(items_);
  }

 private:
  std::int64_t step_of(std::int64_t item) const { return item % steps_; }
  std::size_t segment_of(std::int64_t item) const {
    return static_cast<std::size_t>(item / steps_);
  }
  std::uint64_t seq_of(std::int64_t item) const { return base_ + static_cast<std::uint64_t>(item); }

  // Polls `ready` until it holds, trying the pending send between polls.
  template <class Ready>
  void wait_until(Ready ready) {
    Backoff backoff;
    while (!ready()) {
      if (try_send()) {
        backoff.reset();
      } else {
        backoff.pause();
      }
    }
  }

  // True if this rank's slot for `item` may be overwritten: the right neighbour has
  // consumed the item that used it kSlots items earlier.
  bool slot_free(std::int64_t item) {
    const std::uint64_t seq = seq_of(item);
    if (seq < right_consumed_ + kSlots) return true;
    right_consumed_ = w_.own_consumed().load(std::memory_order_acquire);
    return seq < right_consumed_ + kSlots;
  }

  // Makes item `item`, `count` floats, visible to the right neighbour.
  void publish(std::int64_t item, std::size_t count) {
    w_.own_published().store(seq_of(item) + 1, std::memory_order_release);
    ++sent_;
    comm_.add_traffic(static_cast<std::int64_t>(count * sizeof(float)), 0);
  }

  // Sends item sent_ by copying it from the buffer, if its data is final and its slot
  // free. Step 0 sends the rank's own data; step s > 0 the result of receiving the
  // same segment's step s-1 (item sent_ - 1) when that receive could not fuse the send.
  bool try_send() {
    if (sent_ == items_) return false;
    const std::int64_t step = step_of(sent_);
    if (step > 0 && received_ < sent_) return false;
    if (!slot_free(sent_)) return false;
    const Range segment = plan_.segment_of_chunk(plan_.send_chunk(step), segment_of(sent_));
    copy_floats(w_.own_slot(seq_of(sent_)), data_ + segment.offset, segment.count);
    publish(sent_, segment.count);
    return true;
  }

  // Reduces or copies item `item` out of the left neighbour's slot into the buffer and,
  // if the next step's send can go now, on into this rank's slot (fused send).
  void receive(std::int64_t item) {
    const std::int64_t step = step_of(item);
    const Range segment = plan_.segment_of_chunk(plan_.recv_chunk(step), segment_of(item));
    const float* incoming = w_.left_slot(seq_of(item));
    float* own = data_ + segment.offset;
    const bool forward = step + 1 < steps_;
    float* out = forward && sent_ == item + 1 && slot_free(item + 1) ? w_.own_slot(seq_of(item + 1))
                                                                     : nullptr;
    const bool reduce = plan_.reduce_scatter(step);
    const bool scale = average_ && plan_.last_reduce_scatter(step);
    const float n = static_cast<float>(plan_.n());
    for (std::size_t done = 0; done < segment.count; done += kBlockFloats) {
      const std::size_t count = std::min(kBlockFloats, segment.count - done);
      if (!reduce) {
        copy_floats(own + done, incoming + done, count);
      } else if (scale) {
        reduce_into_scaled(own + done, incoming + done, count, n);
      } else {
        reduce_into(own + done, incoming + done, count);
      }
      if (out != nullptr) copy_floats(out + done, own + done, count);
    }
    // Done with the left's slot: the left may refill it.
    w_.left_consumed().store(seq_of(item) + 1, std::memory_order_release);
    ++received_;
    comm_.add_traffic(0, static_cast<std::int64_t>(segment.count * sizeof(float)));
    // The next step sends the range this step received.
    if (out != nullptr) publish(item + 1, segment.count);
  }

  Communicator& comm_;
  const RingPlan& plan_;
  float* data_;
  ShmRingWindow& w_;
  std::int64_t steps_;
  std::int64_t items_;
  std::uint64_t base_;
  bool average_;
  std::int64_t sent_ = 0;      // items of this call published into this rank's slots
  std::int64_t received_ = 0;  // items of this call received from the left
  // The counters' last loaded values (they only grow), to poll shared lines less.
  std::uint64_t left_published_ = 0;
  std::uint64_t right_consumed_ = 0;
};

}  // namespace

void shm_ring_allreduce(Communicator& comm, std::span<float> data, ReduceOp op) {
  const RingPlan plan(comm.size(), comm.rank(), data.size(), comm.options().max_segment_bytes);
  // Slots of the full max_segment_bytes whatever this call's length, so the window is
  // allocated once per segment size and never grows with the buffer.
  const std::size_t max_segment_floats =
      std::max<std::size_t>(1, comm.options().max_segment_bytes / sizeof(float));
  ShmRingWindow& window = comm.shm_ring_window(max_segment_floats * sizeof(float));
  ShmRingPipeline(comm, plan, data, op, window).run();
}

}  // namespace detail

// Defined here, where the window's type is complete.
detail::ShmRingWindow& Communicator::shm_ring_window(std::size_t slot_bytes) {
  if (!shm_window_ || shm_window_->slot_bytes() < slot_bytes) {
    shm_window_.reset();  // collective, like the allocation that follows
    shm_window_ = detail::ShmRingWindow::open(comm_, rank_, size_, slot_bytes);
    ++shm_window_allocations_;
  }
  return *shm_window_;
}

}  // namespace ringflow::collectives
