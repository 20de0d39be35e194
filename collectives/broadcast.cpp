#include "ringflow/collectives/broadcast.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include "check.h"

namespace ringflow::collectives {
namespace {

void check_root(const Communicator& comm, int root) {
  RF_CHECK(root >= 0 && root < comm.size(), "broadcast: root ", root,
           " is not a rank of this communicator of ", comm.size(), " ranks");
}

// MPI counts are ints: broadcast in pieces of at most INT_MAX elements.
template <class T>
void broadcast_pieces(Communicator& comm, T* data, std::size_t count, MPI_Datatype type, int root) {
  for (std::size_t offset = 0; offset < count; offset += INT_MAX) {
    const std::size_t piece = std::min<std::size_t>(INT_MAX, count - offset);
    RF_MPI_CHECK(MPI_Bcast(data + offset, static_cast<int>(piece), type, root, comm.handle()));
  }
}

// Local argument checks come before the cross-rank check so that they cannot leave
// the other ranks waiting in its allgather.
template <class T>
void allgather_impl(Communicator& comm, detail::CallKind kind, const T* mine, std::size_t count,
                    T* all, std::size_t all_count, MPI_Datatype type) {
  RF_CHECK(all_count == count * static_cast<std::size_t>(comm.size()), "allgather: output of ",
           all_count, " elements, but ", comm.size(), " ranks x ", count,
           " elements = ", count * static_cast<std::size_t>(comm.size()));
  RF_CHECK(count <= static_cast<std::size_t>(INT_MAX), "allgather: ", count,
           " elements per rank exceed MPI's int count");
  detail::check_call(comm, {kind, count, 0, 0});
  if (count == 0) return;
  RF_MPI_CHECK(MPI_Allgather(mine, static_cast<int>(count), type, all, static_cast<int>(count),
                             type, comm.handle()));
}

}  // namespace

void broadcast(Communicator& comm, std::span<float> data, int root) {
  check_root(comm, root);
  detail::check_call(comm, {detail::CallKind::broadcast_floats, data.size(), root, 0});
  if (comm.size() == 1) return;
  broadcast_pieces(comm, data.data(), data.size(), MPI_FLOAT, root);
}

void broadcast(Communicator& comm, std::span<std::byte> data, int root) {
  check_root(comm, root);
  detail::check_call(comm, {detail::CallKind::broadcast_bytes, data.size(), root, 0});
  if (comm.size() == 1) return;
  broadcast_pieces(comm, data.data(), data.size(), MPI_BYTE, root);
}

void allgather(Communicator& comm, std::span<const float> mine, std::span<float> all) {
  allgather_impl(comm, detail::CallKind::allgather_floats, mine.data(), mine.size(), all.data(),
                 all.size(), MPI_FLOAT);
}

void allgather(Communicator& comm, std::span<const std::byte> mine, std::span<std::byte> all) {
  allgather_impl(comm, detail::CallKind::allgather_bytes, mine.data(), mine.size(), all.data(),
                 all.size(), MPI_BYTE);
}

}  // namespace ringflow::collectives
