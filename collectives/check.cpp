#include "check.h"

#include <sstream>
#include <string>
#include <vector>

#include "ringflow/collectives/types.h"

namespace ringflow::collectives::detail {
namespace {

constexpr int kFields = 6;

// "allreduce of 10 floats (sum, ring over shm, 4096-byte segments)"
std::string describe(const std::int64_t* f) {
  std::ostringstream os;
  const auto kind = static_cast<CallKind>(f[0]);
  const bool floats = kind == CallKind::allreduce || kind == CallKind::broadcast_floats ||
                      kind == CallKind::allgather_floats;
  switch (kind) {
    case CallKind::allreduce:
      os << "allreduce";
      break;
    case CallKind::broadcast_floats:
    case CallKind::broadcast_bytes:
      os << "broadcast";
      break;
    case CallKind::allgather_floats:
    case CallKind::allgather_bytes:
      os << "allgather";
      break;
    default:
      os << "unknown collective " << f[0];
      break;
  }
  os << " of " << f[1] << (floats ? " floats" : " bytes");
  if (kind == CallKind::allreduce) {
    os << " (" << to_string(static_cast<ReduceOp>(f[2])) << ", "
       << to_string(static_cast<Algorithm>(f[3]));
    if (static_cast<Algorithm>(f[3]) == Algorithm::ring)
      os << " over " << to_string(static_cast<RingTransport>(f[5]));
    if (f[4] != 0) os << ", " << f[4] << "-byte segments";
    os << ")";
  } else if (kind == CallKind::broadcast_floats || kind == CallKind::broadcast_bytes) {
    os << " (root " << f[2] << ")";
  }
  return os.str();
}

}  // namespace

void check_call(Communicator& comm, const CallSignature& mine) {
  if (!comm.options().check_collectives || comm.size() == 1) return;
  const std::int64_t fields[kFields] = {static_cast<std::int64_t>(mine.kind),
                                        static_cast<std::int64_t>(mine.length),
                                        mine.param,
                                        mine.algorithm,
                                        mine.segment_bytes,
                                        mine.transport};
  std::vector<std::int64_t> all(static_cast<std::size_t>(kFields) * comm.size());
  RF_MPI_CHECK(
      MPI_Allgather(fields, kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, comm.handle()));
  bool agree = true;
  for (int r = 1; r < comm.size() && agree; ++r) {
    for (int f = 0; f < kFields; ++f) agree = agree && all[r * kFields + f] == all[f];
  }
  if (agree) return;
  // Every rank holds the same gathered table, so every rank raises the same error
  // and none is left waiting in the collective.
  std::ostringstream os;
  os << "ranks disagree on a collective call:";
  for (int r = 0; r < comm.size(); ++r) {
    os << (r == 0 ? " " : "; ") << "rank " << r << " called "
       << describe(&all[static_cast<std::size_t>(r) * kFields]);
  }
  os << " — every rank must issue the same collectives, with the same lengths, in the "
        "same order";
  RF_THROW(CommError, os.str());
}

}  // namespace ringflow::collectives::detail
