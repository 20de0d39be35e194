#include "ringflow/collectives/communicator.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <utility>

namespace ringflow::collectives {
namespace detail {

void raise_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    std::snprintf(text, sizeof text, "MPI error code %d", code);
  }
  int initialized = 0, finalized = 0, rank = -1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ::ringflow::detail::raise<CommError>(file, line, "MPI call failed on rank ", rank, ": ", call,
                                       ": ", text);
}

}  // namespace detail

namespace {

// Parses a non-negative integer environment variable; `fallback` if unset.
std::size_t env_size(const char* name, std::size_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  RF_CHECK(errno == 0 && *end == '\0' && text[0] != '-', "environment variable ", name, "='", text,
           "' is not a non-negative integer (bytes)");
  return static_cast<std::size_t>(value);
}

bool env_bool(const char* name, bool fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  const std::string_view value = text;
  if (value == "1" || value == "on" || value == "true") return true;
  if (value == "0" || value == "off" || value == "false") return false;
  RF_THROW(InvalidArgument, "environment variable ", name, "='", text,
           "' must be 1/on/true or 0/off/false");
}

}  // namespace

CollectiveOptions CollectiveOptions::from_env() {
  CollectiveOptions o;
  o.max_segment_bytes = env_size("RINGFLOW_RING_SEGMENT_BYTES", o.max_segment_bytes);
  RF_CHECK(o.max_segment_bytes >= sizeof(float), "RINGFLOW_RING_SEGMENT_BYTES must be at least ",
           sizeof(float));
  o.check_collectives = env_bool("RINGFLOW_CHECK_COLLECTIVES", o.check_collectives);
  o.ring_min_bytes = env_size("RINGFLOW_ALLREDUCE_RING_MIN_BYTES", o.ring_min_bytes);
  o.shm_ring_min_bytes = env_size("RINGFLOW_ALLREDUCE_SHM_RING_MIN_BYTES", o.shm_ring_min_bytes);
  o.ring_max_bytes = env_size("RINGFLOW_ALLREDUCE_RING_MAX_BYTES", o.ring_max_bytes);
  if (const char* transport = std::getenv("RINGFLOW_RING_TRANSPORT");
      transport != nullptr && *transport != '\0') {
    try {
      o.ring_transport = parse_ring_transport(transport);
    } catch (const InvalidArgument&) {
      RF_THROW(InvalidArgument, "environment variable RINGFLOW_RING_TRANSPORT='", transport,
               "' must be auto, shm or p2p");
    }
  }
  return o;
}

Communicator::Communicator(MPI_Comm parent, CollectiveOptions options) : options_(options) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  RF_CHECK_AS(CommError, initialized && !finalized,
              "MPI is not initialised — create a collectives::MpiEnvironment in main() before "
              "any Communicator");
  set_max_segment_bytes(options.max_segment_bytes);
  RF_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
  // Errors on our communicator come back as codes, which RF_MPI_CHECK turns into
  // CommErrors with MPI's message (the default handler would abort inside MPI).
  RF_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  RF_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  RF_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  MPI_Comm local = MPI_COMM_NULL;
  RF_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  RF_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  RF_MPI_CHECK(MPI_Comm_size(local, &local_size_));
  RF_MPI_CHECK(MPI_Comm_free(&local));
}

Communicator::~Communicator() {
  shm_window_.reset();  // before the communicator it was allocated on
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&comm_);
}

Communicator::Communicator(Communicator&& other) noexcept
    : comm_(std::exchange(other.comm_, MPI_COMM_NULL)),
      rank_(other.rank_),
      size_(other.size_),
      local_rank_(other.local_rank_),
      local_size_(other.local_size_),
      options_(other.options_),
      scratch_(std::move(other.scratch_)),
      scratch_floats_(std::exchange(other.scratch_floats_, 0)),
      scratch_allocations_(other.scratch_allocations_),
      bytes_sent_(other.bytes_sent_),
      bytes_received_(other.bytes_received_),
      shm_window_(std::move(other.shm_window_)),
      shm_window_allocations_(other.shm_window_allocations_) {}

Communicator& Communicator::operator=(Communicator&& other) noexcept {
  if (this != &other) {
    Communicator dying(std::move(*this));  // frees our old communicator
    comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
    rank_ = other.rank_;
    size_ = other.size_;
    local_rank_ = other.local_rank_;
    local_size_ = other.local_size_;
    options_ = other.options_;
    scratch_ = std::move(other.scratch_);
    scratch_floats_ = std::exchange(other.scratch_floats_, 0);
    scratch_allocations_ = other.scratch_allocations_;
    bytes_sent_ = other.bytes_sent_;
    bytes_received_ = other.bytes_received_;
    shm_window_ = std::move(other.shm_window_);
    shm_window_allocations_ = other.shm_window_allocations_;
  }
  return *this;
}

void Communicator::set_max_segment_bytes(std::size_t bytes) {
  // A segment is one MPI message, whose count is an int.
  constexpr std::size_t kMaxBytes = std::size_t{1} << 30;
  RF_CHECK(bytes >= sizeof(float) && bytes <= kMaxBytes, "max segment size ", bytes,
           " bytes is out of range [", sizeof(float), ", ", kMaxBytes, "]");
  options_.max_segment_bytes = bytes;
}

void Communicator::set_auto_crossovers(std::size_t ring_min_bytes, std::size_t ring_max_bytes) {
  RF_CHECK(ring_min_bytes <= ring_max_bytes, "allreduce crossovers: ring_min_bytes ",
           ring_min_bytes, " > ring_max_bytes ", ring_max_bytes);
  options_.ring_min_bytes = ring_min_bytes;
  options_.shm_ring_min_bytes = ring_min_bytes;
  options_.ring_max_bytes = ring_max_bytes;
}

std::span<float> Communicator::scratch(std::size_t floats) {
  if (scratch_floats_ < floats) {
    // A cache line of alignment keeps the ring's vectorised reduction on aligned loads.
    constexpr std::size_t kAlignment = 64;
    const std::size_t bytes = (floats * sizeof(float) + kAlignment - 1) / kAlignment * kAlignment;
    scratch_.reset();  // release the old block before taking the new one
    scratch_floats_ = 0;
    scratch_.reset(static_cast<float*>(std::aligned_alloc(kAlignment, bytes)));
    RF_CHECK_AS(InternalError, scratch_ != nullptr, "cannot allocate ", bytes,
                " bytes of collectives scratch memory");
    scratch_floats_ = floats;
    ++scratch_allocations_;
  }
  return {scratch_.get(), floats};
}

void barrier(Communicator& comm) {
  RF_MPI_CHECK(MPI_Barrier(comm.handle()));
}

void abort_job(const Communicator& comm, const std::string& what, const std::string& hint) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  std::fprintf(stderr, "rank %d: %s — %s\n", comm.rank(), what.c_str(), hint.c_str());
  std::fflush(stderr);
  if (initialized && !finalized) {
    // MPI_COMM_WORLD rather than comm: the whole job must go, not just this group.
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  std::_Exit(1);
}

}  // namespace ringflow::collectives
