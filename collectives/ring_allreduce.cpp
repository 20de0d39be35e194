// Ring allreduce: reduce-scatter, then allgather, around the ring of N ranks.
//
// Two transports move its segments (choose_ring_transport): this file's pipeline of
// MPI point-to-point messages (p2p), for any communicator, and, when every rank is on
// one node, a shared-memory window (ring_shm.cpp), which the same MPI path cannot
// match there: vader copies each message twice. Both walk the chunks, segments and
// steps defined here (ring_plan.h) and add in the same order: bitwise the same result.
//
// Words (used as such in the code below):
//   chunk    The buffer of `count` floats is cut into N chunks, one per rank, of
//            count/N floats each (the first count % N chunks take one float more, so
//            any length works, including fewer floats than ranks: empty chunks).
//   segment  Each chunk is cut into the same number of segments of at most
//            max_segment_bytes. A segment is one MPI message (one slot over shm);
//            segments are what flows around the ring and what the scratch memory holds.
//   step     One of the 2(N-1) hops of the ring. In every step, rank r sends one chunk
//            to its right neighbour r+1 and receives one chunk from its left
//            neighbour r-1 (indices mod N), segment by segment.
//   item     One (step, segment) pair, numbered item = step * segments + segment; the
//            pipeline below runs over items in order (ring_shm.cpp numbers them
//            segment-major, for its own reasons).
//
// Reduce-scatter, steps s = 0 .. N-2: rank r sends chunk r-s and receives chunk
// r-s-1, which it adds into its own copy. The chunk it sends in step s is the one it
// received and reduced in step s-1, so after N-1 steps chunk c has visited ranks
// c, c+1, ..., c+N-1 and rank r holds the complete sum of chunk r+1.
// Allgather, steps s = N-1 .. 2N-3 (t = s-(N-1)): rank r sends chunk r+1-t (at t = 0
// the chunk it completed) and receives the completed chunk r-t straight into the
// buffer, so after N-1 more steps every rank holds every completed chunk.
//
// Why 2(N-1)/N: each of the 2(N-1) steps moves one chunk, 1/N of the buffer, out of
// every rank (and one into it). That is the minimum for any allreduce in which every
// rank must both contribute to and receive all of the result, independent of N, and
// it is why the ring is the choice for large buffers (busbw = algbw * 2(N-1)/N). Its
// cost is 2(N-1) message latencies, which is why small buffers go to MPI_Allreduce.
//
// Pipelining: receives are posted kSegmentsInFlight items ahead into scratch slots,
// and the send of an item is posted as soon as its data is final (the send of item
// i depends only on item i - segments, the same segment one step earlier). So while
// this rank reduces one segment, the next segment is already being transferred, as
// in gloo's ring(). Nothing is copied before sending: sends read the buffer in place.
//
// Determinism: chunk c is always summed in the order x_c + x_{c+1} + ... around the
// ring, and the allgather copies the owner's bits, so every rank ends with bitwise
// identical buffers and every run with the same inputs and N gives the same bits.
// Average divides the completed chunk by N once, on its owner, in the last
// reduce-scatter step (post-scaling fused into the reduction, no extra pass).
//
// Scratch (p2p): kSegmentsInFlight segments, owned by the Communicator, allocated once.
#include <mpi.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "allreduce_impl.h"
#include "check.h"
#include "ring_plan.h"
#include "ringflow/collectives/allreduce.h"

namespace ringflow::collectives {
namespace {

using detail::Range;
using detail::RingPlan;

// Receives posted ahead, and scratch slots: one segment being reduced while the next
// one is in transfer.
constexpr int kSegmentsInFlight = 2;
// Sends posted ahead of the item being reduced (bounded by their data dependency).
constexpr int kSendsAhead = 2;
// Request slots for outstanding sends; the oldest is waited for before reuse.
constexpr int kSendSlots = 4;
// All ring messages use one tag: MPI keeps messages between one pair of ranks on one
// communicator and tag in order, and both sides walk the items in the same order.
constexpr int kRingTag = 17;

constexpr std::size_t kSlotAlignFloats = 16;

class RingPipeline {
 public:
  RingPipeline(Communicator& comm, std::span<float> data, ReduceOp op)
      : comm_(comm),
        plan_(comm.size(), comm.rank(), data.size(), comm.options().max_segment_bytes),
        data_(data.data()),
        n_(comm.size()),
        segments_(static_cast<std::int64_t>(plan_.segments())),
        items_(plan_.items()),
        mpi_comm_(comm.handle()),
        average_(op == ReduceOp::average) {
    const std::size_t max_segment_floats =
        std::max<std::size_t>(1, comm.options().max_segment_bytes / sizeof(float));
    const std::size_t max_chunk = (data.size() + n_ - 1) / n_;
    // Slots start on cache lines (16 floats) so the reduction's loads of them are aligned.
    slot_floats_ =
        detail::round_up((max_chunk + plan_.segments() - 1) / plan_.segments(), kSlotAlignFloats);
    // Always ask for the full-size scratch, so it is allocated once per segment size
    // and never grows with the buffer.
    scratch_ =
        comm.scratch(kSegmentsInFlight * detail::round_up(max_segment_floats, kSlotAlignFloats))
            .data();
    recv_requests_.fill(MPI_REQUEST_NULL);
    send_requests_.fill(MPI_REQUEST_NULL);
  }

  void run() {
    post_ahead(0);
    for (std::int64_t item = 0; item < items_; ++item) {
      RF_MPI_CHECK(MPI_Wait(&recv_requests_[item % kSegmentsInFlight], MPI_STATUS_IGNORE));
      const std::int64_t step = plan_.step_of(item);
      if (plan_.reduce_scatter(step)) {
        // Reduce-scatter: add the incoming segment (in a scratch slot) into ours.
        const Range segment = plan_.recv_segment(item);
        const float* incoming = slot(item);
        if (average_ && plan_.last_reduce_scatter(step)) {
          detail::reduce_into_scaled(data_ + segment.offset, incoming, segment.count,
                                     static_cast<float>(n_));
        } else {
          detail::reduce_into(data_ + segment.offset, incoming, segment.count);
        }
      }
      post_ahead(item + 1);
    }
    wait_sends_through(items_ - 1);
  }

 private:
  float* slot(std::int64_t item) const {
    return scratch_ + (item % kSegmentsInFlight) * slot_floats_;
  }

  // Posts every receive and send that may be in flight once items [0, done) are
  // complete (received, and reduced in the reduce-scatter).
  // Sends go first: an allgather receive may have to wait for an older send.
  void post_ahead(std::int64_t done) {
    // The send of item i carries the segment that item i - segments completed.
    const std::int64_t ready = done + segments_;
    while (send_posted_ < items_ && send_posted_ < ready && send_posted_ < done + kSendsAhead) {
      post_send(send_posted_++);
    }
    while (recv_posted_ < items_ && recv_posted_ < done + kSegmentsInFlight) {
      post_recv(recv_posted_++);
    }
  }

  void post_recv(std::int64_t item) {
    const Range segment = plan_.recv_segment(item);
    MPI_Request& request = recv_requests_[item % kSegmentsInFlight];
    float* target = slot(item);
    if (!plan_.reduce_scatter(plan_.step_of(item))) {
      // Allgather receives straight into the buffer, over the segment this rank sent
      // in reduce-scatter step t (item - (N-1) * segments): that send must be done.
      const std::int64_t sent = item - (n_ - 1) * segments_;
      // Holds because (N-1) * segments + min(segments, kSendsAhead) >= kSegmentsInFlight.
      RF_CHECK_AS(InternalError, sent < send_posted_, "ring allreduce: item ", item,
                  " would overwrite the segment of send ", sent, " before it was posted");
      wait_sends_through(sent);
      target = data_ + segment.offset;
    }
    if (segment.count == 0) return;  // both sides skip empty segments (request stays null)
    RF_MPI_CHECK(MPI_Irecv(target, static_cast<int>(segment.count), MPI_FLOAT, plan_.left(),
                           kRingTag, mpi_comm_, &request));
    comm_.add_traffic(0, static_cast<std::int64_t>(segment.count * sizeof(float)));
  }

  void post_send(std::int64_t item) {
    wait_sends_through(item - kSendSlots);  // frees this item's request slot
    const Range segment = plan_.send_segment(item);
    if (segment.count == 0) return;
    RF_MPI_CHECK(MPI_Isend(data_ + segment.offset, static_cast<int>(segment.count), MPI_FLOAT,
                           plan_.right(), kRingTag, mpi_comm_, &send_requests_[item % kSendSlots]));
    comm_.add_traffic(static_cast<std::int64_t>(segment.count * sizeof(float)), 0);
  }

  // Waits for the sends of items [sends_done_, last].
  void wait_sends_through(std::int64_t last) {
    for (; sends_done_ <= last && sends_done_ < send_posted_; ++sends_done_) {
      RF_MPI_CHECK(MPI_Wait(&send_requests_[sends_done_ % kSendSlots], MPI_STATUS_IGNORE));
    }
  }

  Communicator& comm_;
  RingPlan plan_;
  float* data_;
  int n_;
  std::int64_t segments_;  // per chunk
  std::int64_t items_;
  MPI_Comm mpi_comm_;
  bool average_;
  std::size_t slot_floats_ = 1;
  float* scratch_ = nullptr;
  std::int64_t recv_posted_ = 0;
  std::int64_t send_posted_ = 0;
  std::int64_t sends_done_ = 0;
  std::array<MPI_Request, kSegmentsInFlight> recv_requests_;
  std::array<MPI_Request, kSendSlots> send_requests_;
};

}  // namespace

namespace detail {

void ring_allreduce_unchecked(Communicator& comm, std::span<float> data, ReduceOp op,
                              RingTransport transport) {
  // One rank: the sum is the buffer and the average divides by 1: nothing to do.
  if (comm.size() == 1 || data.empty()) return;
  if (transport == RingTransport::shm) {
    shm_ring_allreduce(comm, data, op);
  } else {
    RingPipeline(comm, data, op).run();
  }
}

CallSignature ring_signature(const Communicator& comm, std::size_t count, ReduceOp op,
                             RingTransport transport) {
  return {CallKind::allreduce,
          count,
          static_cast<std::int64_t>(op),
          static_cast<std::int64_t>(Algorithm::ring),
          static_cast<std::int64_t>(comm.options().max_segment_bytes),
          static_cast<std::int64_t>(transport)};
}

}  // namespace detail

void ring_allreduce(Communicator& comm, std::span<float> data, ReduceOp op) {
  const RingTransport transport = choose_ring_transport(comm);
  detail::check_call(comm, detail::ring_signature(comm, data.size(), op, transport));
  detail::ring_allreduce_unchecked(comm, data, op, transport);
}

}  // namespace ringflow::collectives
