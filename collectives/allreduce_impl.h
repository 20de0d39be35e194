// Private: the allreduce algorithms without the cross-rank call check, so that
// allreduce() checks once with the algorithm (and ring transport) it resolved.
#pragma once

#include <span>

#include "check.h"
#include "ringflow/collectives/communicator.h"
#include "ringflow/collectives/types.h"

namespace ringflow::collectives::detail {

// `transport` is choose_ring_transport(comm), resolved by the caller.
void ring_allreduce_unchecked(Communicator& comm, std::span<float> data, ReduceOp op,
                              RingTransport transport);
// The shared-memory transport (ring_shm.cpp); comm.size() >= 2, data not empty.
void shm_ring_allreduce(Communicator& comm, std::span<float> data, ReduceOp op);
// What a ring allreduce of `count` floats checks across ranks: op, segment size and
// transport, since ranks that differ in any of them would not meet in the ring.
CallSignature ring_signature(const Communicator& comm, std::size_t count, ReduceOp op,
                             RingTransport transport);
void mpi_allreduce_unchecked(Communicator& comm, std::span<float> data, ReduceOp op);

}  // namespace ringflow::collectives::detail
