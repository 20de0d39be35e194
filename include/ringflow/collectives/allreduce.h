// Allreduce of a span of floats, in place: the segmented, pipelined ring (over MPI
// point-to-point or a shared-memory window), the MPI_Allreduce fallback, and the
// size-based choice between them.
#pragma once

#include <cstddef>
#include <span>

#include "ringflow/collectives/communicator.h"
#include "ringflow/collectives/types.h"

namespace ringflow::collectives {

// Reduce-scatter then allgather around the ring of ranks, in place; see the
// opening comment of collectives/ring_allreduce.cpp. Each rank sends and receives
// 2(N-1)/N of the buffer, whatever N. Deterministic: the same inputs give bitwise
// the same result on every run, and every rank ends with identical bytes.
// Any length works (0, 1, fewer elements than ranks, not divisible by N); one rank
// does no communication. Scratch: a few segments, owned by `comm`.
// The transport is choose_ring_transport(comm): on one node a shared-memory window
// (collectives/ring_shm.cpp, created by the first such call on `comm`, collectively),
// else MPI point-to-point. Both give bitwise the same result.
void ring_allreduce(Communicator& comm, std::span<float> data, ReduceOp op = ReduceOp::sum);

// MPI_Allreduce(MPI_IN_PLACE, ...) with MPI_SUM; average divides afterwards.
void mpi_allreduce(Communicator& comm, std::span<float> data, ReduceOp op = ReduceOp::sum);

// The algorithm `automatic` resolves to for a buffer of `bytes` bytes on `comm`
// (ring or mpi; one rank always gives mpi, which then does nothing). The lower
// crossover is the ring transport's (CollectiveOptions::shm_ring_min_bytes or
// ring_min_bytes).
Algorithm choose_algorithm(const Communicator& comm, std::size_t bytes);

// The transport the ring uses on `comm`: comm.options().ring_transport, with automatic
// resolved to shm if every rank of `comm` is on this node and p2p otherwise. Throws
// InvalidArgument (on every rank) if shm is forced on a communicator that spans nodes.
RingTransport choose_ring_transport(const Communicator& comm);

// Dispatches to ring_allreduce or mpi_allreduce; automatic uses choose_algorithm.
void allreduce(Communicator& comm, std::span<float> data, ReduceOp op = ReduceOp::sum,
               Algorithm algorithm = Algorithm::automatic);

}  // namespace ringflow::collectives
