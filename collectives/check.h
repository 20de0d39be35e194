// Private: the optional cross-rank check that every rank issues the same
// collective with the same length (CollectiveOptions::check_collectives).
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringflow/collectives/communicator.h"

namespace ringflow::collectives::detail {

// What one rank is about to do. Encoded as integers so a single small
// MPI_Allgather can compare all ranks.
enum class CallKind : std::int64_t {
  allreduce = 1,
  broadcast_floats = 2,
  broadcast_bytes = 3,
  allgather_floats = 4,
  allgather_bytes = 5,
};

struct CallSignature {
  CallKind kind;
  std::size_t length;      // elements (floats or bytes)
  std::int64_t param;      // allreduce: ReduceOp; broadcast: root; allgather: 0
  std::int64_t algorithm;  // allreduce: the resolved Algorithm; else 0
  // ring: max_segment_bytes (ranks that cut segments differently would exchange
  // messages of different sizes); else 0.
  std::int64_t segment_bytes = 0;
  // ring: the resolved RingTransport (ranks on different transports would never
  // meet); else 0.
  std::int64_t transport = 0;
};

// If comm.options().check_collectives: allgathers every rank's signature and, if
// any differs from another's, throws CommError on every rank naming each rank's
// call and length. Otherwise does nothing.
void check_call(Communicator& comm, const CallSignature& mine);

}  // namespace ringflow::collectives::detail
