// Broadcast (initial parameters, checkpoints) and allgather, for floats and raw bytes.
#pragma once

#include <cstddef>
#include <span>

#include "ringflow/collectives/communicator.h"

namespace ringflow::collectives {

// Every rank ends with root's `data`. Every rank passes the same length.
// Any length (split into MPI-sized pieces beyond 2^31 - 1 elements).
void broadcast(Communicator& comm, std::span<float> data, int root = 0);
void broadcast(Communicator& comm, std::span<std::byte> data, int root = 0);

// all = concatenation over ranks r = 0..N-1 of rank r's `mine`.
// Every rank passes the same mine.size(); all.size() == N * mine.size().
void allgather(Communicator& comm, std::span<const float> mine, std::span<float> all);
void allgather(Communicator& comm, std::span<const std::byte> mine, std::span<std::byte> all);

}  // namespace ringflow::collectives
