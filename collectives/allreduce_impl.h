// Private: the allreduce algorithms without the cross-rank call check, so that
// allreduce() checks once with the algorithm it resolved.
#pragma once

#include <span>

#include "ringflow/collectives/communicator.h"
#include "ringflow/collectives/types.h"

namespace ringflow::collectives::detail {

void ring_allreduce_unchecked(Communicator& comm, std::span<float> data, ReduceOp op);
void mpi_allreduce_unchecked(Communicator& comm, std::span<float> data, ReduceOp op);

}  // namespace ringflow::collectives::detail
