// Communicator: ringflow's own MPI communicator plus the persistent state of its
// collectives (knobs, the ring's scratch memory and shared-memory window). Also the
// MPI error idiom (RF_MPI_CHECK) and the fatal-error exit (abort_job).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <span>
#include <string>

#include "ringflow/base/error.h"
#include "ringflow/collectives/types.h"

namespace ringflow::collectives {

namespace detail {
// Throws CommError "MPI call failed on rank r: <call>: <MPI error string>".
[[noreturn]] void raise_mpi_error(int code, const char* call, const char* file, int line);

// The shared-memory ring's MPI window and item counters; defined, created and freed
// in collectives/ring_shm.cpp.
class ShmRingWindow;
struct ShmRingWindowDeleter {
  void operator()(ShmRingWindow* window) const;
};
}  // namespace detail

// RF_MPI_CHECK(MPI_Barrier(comm)) turns a failing MPI return code into a CommError
// that carries MPI's own error string. Our communicators use MPI_ERRORS_RETURN, so
// errors come back as codes instead of killing the job inside MPI.
#define RF_MPI_CHECK(call)                                                                     \
  do {                                                                                         \
    const int rf_mpi_rc_ = (call);                                                             \
    if (rf_mpi_rc_ != MPI_SUCCESS)                                                             \
      ::ringflow::collectives::detail::raise_mpi_error(rf_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

// Defaults measured with tests/bench/allreduce_bench at 2 ranks on the 2-core CI
// machine (Open MPI 4.1.4, vader without single-copy):
// - segment 256 KiB: the shm ring's best, as its 4 slots then stay in the 1 MiB L2
//   (busbw at 1 MiB 15.8 vs 13.3 GB/s with 1 MiB segments, at 8 MiB 13.8 vs 9.8);
//   the p2p ring was within noise of itself from 128 KiB to 2 MiB. The p2p scratch
//   is 2 segments, the shm window 4 slots of one segment per rank.
// - ring from 64 KiB over p2p: below it the ring's 2(N-1) messages of rendezvous
//   size lose to MPI's latency-optimised algorithms (8 KiB: 7.3 us vs 4.5 us); from
//   64 KiB on the ring is at least as fast.
// - ring from 4 KiB over shm: a step costs the shm ring a cross-core hand-off, not a
//   message (64 B: 1.2 us vs MPI's 0.7 us); from 1 KiB to 2 KiB the two are within
//   15 %, from 4 KiB on the shm ring is 1.7x or more.
// - no upper crossover: MPI_Allreduce allocates a full-size temporary per call and
//   collapses at >= 32 MiB, so the ring stays the choice for every larger size.
// The crossovers are in bytes, measured at N = 2; with more ranks the ring's latency
// grows with N, so large jobs may want higher minimums (see from_env()).
inline constexpr std::size_t kDefaultMaxSegmentBytes = std::size_t{256} << 10;
inline constexpr std::size_t kDefaultRingMinBytes = std::size_t{64} << 10;
inline constexpr std::size_t kDefaultShmRingMinBytes = std::size_t{4} << 10;
inline constexpr std::size_t kDefaultRingMaxBytes = std::numeric_limits<std::size_t>::max();

// Knobs of a Communicator's collectives. from_env() starts from the defaults and
// applies these environment variables (every rank must see the same values):
//   RINGFLOW_RING_SEGMENT_BYTES      max_segment_bytes (hidden knob for tests/tuning)
//   RINGFLOW_CHECK_COLLECTIVES=0|1   check_collectives
//   RINGFLOW_ALLREDUCE_RING_MIN_BYTES, RINGFLOW_ALLREDUCE_SHM_RING_MIN_BYTES,
//   RINGFLOW_ALLREDUCE_RING_MAX_BYTES  crossovers
//   RINGFLOW_RING_TRANSPORT=auto|shm|p2p  ring_transport (hidden knob for tests/benchmarks)
struct CollectiveOptions {
  // Upper bound on one ring segment (one message, or one slot of the shared-memory
  // transport). Smaller segments pipeline more finely but pay more per-segment latency.
  std::size_t max_segment_bytes = kDefaultMaxSegmentBytes;
  // Before every collective, allgather each rank's call signature (collective,
  // length, op/root, algorithm) and raise CommError on every rank if they differ,
  // instead of hanging or corrupting memory. Costs one tiny allgather per call:
  // on in debug builds and in tests, off in release builds by default.
#ifdef NDEBUG
  bool check_collectives = false;
#else
  bool check_collectives = true;
#endif
  // Algorithm::automatic uses the ring for buffers of [min, ring_max_bytes) bytes and
  // MPI_Allreduce otherwise, where min is shm_ring_min_bytes if the ring's transport
  // is shm and ring_min_bytes if it is p2p.
  std::size_t ring_min_bytes = kDefaultRingMinBytes;
  std::size_t shm_ring_min_bytes = kDefaultShmRingMinBytes;
  std::size_t ring_max_bytes = kDefaultRingMaxBytes;
  // How the ring moves segments (see RingTransport): automatic takes the shared-memory
  // window when every rank is on one node. Forcing shm or p2p is for tests and the
  // benchmark; both give bitwise the same results.
  RingTransport ring_transport = RingTransport::automatic;

  // Defaults overridden by the RINGFLOW_* variables above; throws InvalidArgument
  // naming the variable if a value does not parse.
  static CollectiveOptions from_env();
};

// A duplicate of an MPI communicator (MPI_COMM_WORLD by default), so ringflow's
// traffic never matches anyone else's messages. Owns the ring allreduce's scratch
// memory, allocated once and reused by every call, and the shared-memory ring's window.
//
// Not thread-safe: one thread uses a Communicator at a time (MPI is initialised
// with MPI_THREAD_SERIALIZED). Destroy it before the MpiEnvironment, on every
// rank together: once the shared-memory ring has run, the destructor frees its
// window with MPI_Win_free, which waits for every rank of the communicator.
class Communicator {
 public:
  // Requires MPI to be initialised (see MpiEnvironment); throws CommError if not.
  explicit Communicator(MPI_Comm parent = MPI_COMM_WORLD,
                        CollectiveOptions options = CollectiveOptions::from_env());
  ~Communicator();
  Communicator(Communicator&& other) noexcept;
  Communicator& operator=(Communicator&& other) noexcept;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Rank and rank count among the ranks that share this node's memory
  // (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  MPI_Comm handle() const { return comm_; }

  const CollectiveOptions& options() const { return options_; }
  // Hidden knob: lets tests reach the ring's multi-segment paths and the
  // benchmark tune the segment size. bytes >= sizeof(float).
  void set_max_segment_bytes(std::size_t bytes);
  void set_check_collectives(bool on) { options_.check_collectives = on; }
  // Sets both transports' lower crossover to ring_min_bytes.
  void set_auto_crossovers(std::size_t ring_min_bytes, std::size_t ring_max_bytes);
  // Hidden knob: forces the ring's transport (tests, benchmark). Every rank must set
  // the same; the collective check compares the resolved transport.
  void set_ring_transport(RingTransport transport) { options_.ring_transport = transport; }

  // Persistent scratch of at least `floats` floats, 64-byte aligned. Grows
  // (reallocates) only when a larger size is asked for; the ring asks for a size fixed
  // by max_segment_bytes, so it allocates once per communicator and segment size,
  // never per call.
  std::span<float> scratch(std::size_t floats);
  // How many times scratch() had to allocate (for tests of the invariant above).
  int scratch_allocations() const { return scratch_allocations_; }

  // Payload bytes this rank's allreduces sent and received, summed over calls.
  // The ring counts its messages; MPI_Allreduce hides its algorithm, so it is
  // counted as the 2(N-1)/N * bytes that a bandwidth-optimal allreduce moves.
  std::int64_t bytes_sent() const { return bytes_sent_; }
  std::int64_t bytes_received() const { return bytes_received_; }
  void add_traffic(std::int64_t sent, std::int64_t received) {
    bytes_sent_ += sent;
    bytes_received_ += received;
  }

  // The shared-memory ring's window, with slots of at least `slot_bytes` each
  // (collectives/ring_shm.cpp). Collective over the communicator when it must be
  // created or grown: the first shm ring allreduce, or the first with a larger
  // segment size than before; every rank reaches that call together, since all issue
  // the same collectives with the same segment size. Freed (collectively) with the
  // communicator.
  detail::ShmRingWindow& shm_ring_window(std::size_t slot_bytes);
  // How many times shm_ring_window() had to allocate a window (for tests).
  int shm_window_allocations() const { return shm_window_allocations_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  CollectiveOptions options_;
  struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, FreeDeleter> scratch_;
  std::size_t scratch_floats_ = 0;
  int scratch_allocations_ = 0;
  std::int64_t bytes_sent_ = 0;
  std::int64_t bytes_received_ = 0;
  std::unique_ptr<detail::ShmRingWindow, detail::ShmRingWindowDeleter> shm_window_;
  int shm_window_allocations_ = 0;
};

// MPI_Barrier on the communicator.
void barrier(Communicator& comm);

// The design's fatal-error exit: prints "rank r: <what> — <hint>" to stderr and
// aborts the whole job (MPI_Abort, exit code 1), so no other rank is left hanging
// in a collective. Also works if MPI is not (or no longer) initialised.
[[noreturn]] void abort_job(const Communicator& comm, const std::string& what,
                            const std::string& hint);

}  // namespace ringflow::collectives
