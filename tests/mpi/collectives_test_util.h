// Helpers of the collectives' MPI tests (collectives_test.cpp,
// ring_allreduce_test.cpp): inputs every rank can regenerate for any rank,
// their exact sums, and cross-rank comparisons of bytes.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "ringflow/collectives/collectives.h"

namespace ringflow::collectives::test {

// A communicator with the cross-rank call check on, as in debug builds.
inline Communicator make_comm() {
  Communicator comm;
  comm.set_check_collectives(true);
  return comm;
}

// FNV-1a of the bytes, to compare buffers across ranks cheaply.
inline std::uint64_t hash_bytes(const void* data, std::size_t size) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// True if every rank holds the same bytes as rank 0 (collective: all ranks call it).
inline bool identical_on_all_ranks(const Communicator& comm, const void* data, std::size_t size) {
  const std::uint64_t mine[2] = {hash_bytes(data, size), size};
  std::vector<std::uint64_t> all(2 * static_cast<std::size_t>(comm.size()));
  MPI_Allgather(mine, 2, MPI_UINT64_T, all.data(), 2, MPI_UINT64_T, comm.handle());
  for (int r = 1; r < comm.size(); ++r) {
    if (all[2 * r] != all[0] || all[2 * r + 1] != all[1]) return false;
  }
  return true;
}

// Small integers, different on every rank and element: their sums are exact in float.
inline float int_value(int rank, std::size_t i) {
  return static_cast<float>(static_cast<int>((i * 7 + static_cast<std::size_t>(rank) * 13) % 33) -
                            16);
}

inline std::vector<float> int_input(int rank, std::size_t count) {
  std::vector<float> v(count);
  for (std::size_t i = 0; i < count; ++i) v[i] = int_value(rank, i);
  return v;
}

// The sum over ranks, computed by hand (exact: small integers).
inline std::vector<float> int_sum(int ranks, std::size_t count) {
  std::vector<float> v(count, 0.0f);
  for (int r = 0; r < ranks; ++r) {
    for (std::size_t i = 0; i < count; ++i) v[i] += int_value(r, i);
  }
  return v;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Uniform floats in [-1, 1), different on every rank. Every rank can regenerate every
// rank's input from its seed, so tests can compute exact sums locally.
inline std::vector<float> random_input(int rank, std::size_t count) {
  std::mt19937 gen(1234u + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace ringflow::collectives::test
