#include "ringflow/collectives/allreduce.h"

#include <climits>
#include <cstdint>
#include <string>

#include "allreduce_impl.h"
#include "check.h"

namespace ringflow::collectives {

ReduceOp parse_reduce_op(std::string_view text) {
  if (text == "sum") return ReduceOp::sum;
  if (text == "average") return ReduceOp::average;
  RF_THROW(InvalidArgument, "unknown reduce op '", text, "' — expected sum or average");
}

std::string_view to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::average:
      return "average";
  }
  return "unknown";
}

Algorithm parse_algorithm(std::string_view text) {
  if (text == "ring") return Algorithm::ring;
  if (text == "mpi") return Algorithm::mpi;
  if (text == "auto") return Algorithm::automatic;
  RF_THROW(InvalidArgument, "unknown allreduce algorithm '", text,
           "' — expected ring, mpi or auto");
}

std::string_view to_string(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::ring:
      return "ring";
    case Algorithm::mpi:
      return "mpi";
    case Algorithm::automatic:
      return "auto";
  }
  return "unknown";
}

RingTransport parse_ring_transport(std::string_view text) {
  if (text == "auto") return RingTransport::automatic;
  if (text == "shm") return RingTransport::shm;
  if (text == "p2p") return RingTransport::p2p;
  RF_THROW(InvalidArgument, "unknown ring transport '", text, "' — expected auto, shm or p2p");
}

std::string_view to_string(RingTransport transport) {
  switch (transport) {
    case RingTransport::automatic:
      return "auto";
    case RingTransport::shm:
      return "shm";
    case RingTransport::p2p:
      return "p2p";
  }
  return "unknown";
}

namespace detail {

void mpi_allreduce_unchecked(Communicator& comm, std::span<float> data, ReduceOp op) {
  if (comm.size() == 1 || data.empty()) return;
  // MPI counts are ints: reduce in pieces of at most INT_MAX floats.
  for (std::size_t offset = 0; offset < data.size(); offset += INT_MAX) {
    const std::size_t count = std::min<std::size_t>(INT_MAX, data.size() - offset);
    RF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data() + offset, static_cast<int>(count),
                               MPI_FLOAT, MPI_SUM, comm.handle()));
  }
  // MPI does not say what its algorithm moved: count the bandwidth-optimal
  // 2(N-1)/N of the buffer each way (see Communicator::bytes_sent).
  const auto n_ranks = static_cast<std::int64_t>(comm.size());
  const auto moved = 2 * (n_ranks - 1) * static_cast<std::int64_t>(data.size_bytes()) / n_ranks;
  comm.add_traffic(moved, moved);
  if (op == ReduceOp::average) {
    // Division, as in the ring, so both algorithms give sum / N exactly.
    const float n = static_cast<float>(comm.size());
    float* __restrict p = data.data();
    for (std::size_t i = 0; i < data.size(); ++i) p[i] /= n;
  }
}

}  // namespace detail

void mpi_allreduce(Communicator& comm, std::span<float> data, ReduceOp op) {
  detail::check_call(comm, {detail::CallKind::allreduce, data.size(), static_cast<std::int64_t>(op),
                            static_cast<std::int64_t>(Algorithm::mpi)});
  detail::mpi_allreduce_unchecked(comm, data, op);
}

Algorithm choose_algorithm(const Communicator& comm, std::size_t bytes) {
  if (comm.size() == 1) return Algorithm::mpi;
  const CollectiveOptions& o = comm.options();
  const std::size_t ring_min_bytes =
      choose_ring_transport(comm) == RingTransport::shm ? o.shm_ring_min_bytes : o.ring_min_bytes;
  return bytes >= ring_min_bytes && bytes < o.ring_max_bytes ? Algorithm::ring : Algorithm::mpi;
}

RingTransport choose_ring_transport(const Communicator& comm) {
  const bool one_node = comm.local_size() == comm.size();
  switch (comm.options().ring_transport) {
    case RingTransport::p2p:
      return RingTransport::p2p;
    case RingTransport::shm:
      RF_CHECK(one_node,
               "ring transport shm needs every rank of the communicator on one node, but ",
               comm.local_size(), " of its ", comm.size(),
               " ranks share this node's memory — use ring transport auto or p2p "
               "(RINGFLOW_RING_TRANSPORT)");
      return RingTransport::shm;
    case RingTransport::automatic:
      break;
  }
  return one_node ? RingTransport::shm : RingTransport::p2p;
}

void allreduce(Communicator& comm, std::span<float> data, ReduceOp op, Algorithm algorithm) {
  if (algorithm == Algorithm::automatic) algorithm = choose_algorithm(comm, data.size_bytes());
  if (algorithm == Algorithm::ring) {
    const RingTransport transport = choose_ring_transport(comm);
    detail::check_call(comm, detail::ring_signature(comm, data.size(), op, transport));
    detail::ring_allreduce_unchecked(comm, data, op, transport);
  } else {
    detail::check_call(comm, {detail::CallKind::allreduce, data.size(),
                              static_cast<std::int64_t>(op), static_cast<std::int64_t>(algorithm)});
    detail::mpi_allreduce_unchecked(comm, data, op);
  }
}

}  // namespace ringflow::collectives
