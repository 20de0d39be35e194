// Tests of ringflow::collectives under mpiexec -n 1, 2, 3, 4 and an oversubscribed 8.
// Every test runs on every rank; each rank checks its own result and that all ranks
// hold identical bytes.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ringflow/collectives/collectives.h"

namespace ringflow::collectives {
namespace {

// A communicator with the cross-rank call check on, as in debug builds.
Communicator make_comm() {
  Communicator comm;
  comm.set_check_collectives(true);
  return comm;
}

// FNV-1a of the bytes, to compare buffers across ranks cheaply.
std::uint64_t hash_bytes(const void* data, std::size_t size) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// True if every rank holds the same bytes as rank 0 (collective: all ranks call it).
bool identical_on_all_ranks(const Communicator& comm, const void* data, std::size_t size) {
  const std::uint64_t mine[2] = {hash_bytes(data, size), size};
  std::vector<std::uint64_t> all(2 * static_cast<std::size_t>(comm.size()));
  MPI_Allgather(mine, 2, MPI_UINT64_T, all.data(), 2, MPI_UINT64_T, comm.handle());
  for (int r = 1; r < comm.size(); ++r) {
    if (all[2 * r] != all[0] || all[2 * r + 1] != all[1]) return false;
  }
  return true;
}

// Small integers, different on every rank and element: their sums are exact in float.
float int_value(int rank, std::size_t i) {
  return static_cast<float>(static_cast<int>((i * 7 + static_cast<std::size_t>(rank) * 13) % 33) -
                            16);
}

std::vector<float> int_input(int rank, std::size_t count) {
  std::vector<float> v(count);
  for (std::size_t i = 0; i < count; ++i) v[i] = int_value(rank, i);
  return v;
}

// The sum over ranks, computed by hand (exact: small integers).
std::vector<float> int_sum(int ranks, std::size_t count) {
  std::vector<float> v(count, 0.0f);
  for (int r = 0; r < ranks; ++r) {
    for (std::size_t i = 0; i < count; ++i) v[i] += int_value(r, i);
  }
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Lengths the issue names: 0, 1, N-1, N, N+1, a prime, 2^20 + 3.
std::vector<std::size_t> interesting_lengths(int n) {
  std::vector<std::size_t> lengths = {0,
                                      1,
                                      static_cast<std::size_t>(n - 1),
                                      static_cast<std::size_t>(n),
                                      static_cast<std::size_t>(n + 1),
                                      7919,
                                      (std::size_t{1} << 20) + 3};
  std::sort(lengths.begin(), lengths.end());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  return lengths;
}

// Several segment sizes, down to one float per segment, so multi-segment paths with
// uneven last segments run. Combinations that would send more than ~300 segments per
// chunk are skipped to keep the oversubscribed runs fast.
bool worth_running(std::size_t count, int n, std::size_t segment_bytes) {
  const std::size_t chunk = (count + n - 1) / n;
  const std::size_t per_segment = std::max<std::size_t>(1, segment_bytes / sizeof(float));
  return (chunk + per_segment - 1) / per_segment <= 300;
}

const std::size_t kSegmentSizes[] = {4, 12, 1000, 64 << 10, kDefaultMaxSegmentBytes, 1 << 20};

// Uniform floats in [-1, 1), different on every rank. Every rank can regenerate every
// rank's input from its seed, so tests can compute exact sums locally.
std::vector<float> random_input(int rank, std::size_t count) {
  std::mt19937 gen(1234u + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

// The ring's tests run over both transports (on one node, as in CI, auto picks shm).
class RingAllreduce : public testing::TestWithParam<RingTransport> {
 protected:
  Communicator make_ring_comm() {
    Communicator comm = make_comm();
    comm.set_ring_transport(GetParam());
    return comm;
  }
};

INSTANTIATE_TEST_SUITE_P(Transports, RingAllreduce,
                         testing::Values(RingTransport::p2p, RingTransport::shm),
                         [](const testing::TestParamInfo<RingTransport>& param) {
                           return std::string(to_string(param.param));
                         });

TEST_P(RingAllreduce, EqualsMpiAllreduceExactlyForIntegerValuedFloats) {
  Communicator comm = make_ring_comm();
  const int n = comm.size();
  for (std::size_t count : interesting_lengths(n)) {
    const std::vector<float> expected = int_sum(n, count);
    std::vector<float> reference = int_input(comm.rank(), count);
    MPI_Allreduce(MPI_IN_PLACE, reference.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                  comm.handle());
    ASSERT_TRUE(same_bits(reference, expected)) << "MPI_Allreduce itself, count " << count;
    for (std::size_t segment_bytes : kSegmentSizes) {
      if (!worth_running(count, n, segment_bytes)) continue;
      SCOPED_TRACE("count " + std::to_string(count) + ", segment " + std::to_string(segment_bytes) +
                   " bytes");
      comm.set_max_segment_bytes(segment_bytes);
      std::vector<float> data = int_input(comm.rank(), count);
      ring_allreduce(comm, data, ReduceOp::sum);
      EXPECT_TRUE(same_bits(data, reference));
      EXPECT_TRUE(identical_on_all_ranks(comm, data.data(), data.size() * sizeof(float)));
    }
  }
}

TEST_P(RingAllreduce, MatchesMpiAllreduceWithinToleranceForRandomFloats) {
  Communicator comm = make_ring_comm();
  const int n = comm.size();
  std::vector<std::size_t> lengths = {static_cast<std::size_t>(n + 1), 7919};
  if (n <= 4) lengths.push_back((std::size_t{1} << 20) + 3);
  for (std::size_t count : lengths) {
    std::vector<double> exact(count, 0.0), magnitude(count, 0.0);
    for (int r = 0; r < n; ++r) {
      const std::vector<float> x = random_input(r, count);
      for (std::size_t i = 0; i < count; ++i) {
        exact[i] += x[i];
        magnitude[i] += std::fabs(x[i]);
      }
    }
    std::vector<float> reference = random_input(comm.rank(), count);
    MPI_Allreduce(MPI_IN_PLACE, reference.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                  comm.handle());
    for (std::size_t segment_bytes : {std::size_t{1000}, kDefaultMaxSegmentBytes}) {
      if (!worth_running(count, n, segment_bytes)) continue;
      SCOPED_TRACE("count " + std::to_string(count) + ", segment " + std::to_string(segment_bytes) +
                   " bytes");
      comm.set_max_segment_bytes(segment_bytes);
      std::vector<float> data = random_input(comm.rank(), count);
      ring_allreduce(comm, data, ReduceOp::sum);
      // Any summation order of N terms errs by at most (N-1) eps sum|x| (first order).
      const double eps = std::numeric_limits<float>::epsilon();
      std::size_t bad = 0;
      for (std::size_t i = 0; i < count; ++i) {
        const double bound = (n - 1) * eps * magnitude[i] * 1.01;
        if (std::fabs(data[i] - exact[i]) > bound ||
            std::fabs(static_cast<double>(data[i]) - reference[i]) > 2 * bound) {
          if (++bad <= 3)
            ADD_FAILURE() << "element " << i << ": ring " << data[i] << ", mpi " << reference[i]
                          << ", exact " << exact[i];
        }
      }
      EXPECT_EQ(bad, 0u);
      EXPECT_TRUE(identical_on_all_ranks(comm, data.data(), data.size() * sizeof(float)));
      // Deterministic: the same inputs give the same bits again.
      std::vector<float> again = random_input(comm.rank(), count);
      ring_allreduce(comm, again, ReduceOp::sum);
      EXPECT_TRUE(same_bits(again, data));
    }
  }
}

TEST_P(RingAllreduce, AverageOp) {
  Communicator comm = make_ring_comm();
  const int n = comm.size();
  std::vector<std::size_t> lengths = {1, static_cast<std::size_t>(n + 1), 7919};
  if (n <= 4) lengths.push_back((std::size_t{1} << 20) + 3);
  for (std::size_t count : lengths) {
    // Exact sums divided once by N: every algorithm must give these bits.
    std::vector<float> expected = int_sum(n, count);
    for (float& x : expected) x /= static_cast<float>(n);
    for (std::size_t segment_bytes :
         {std::size_t{12}, std::size_t{4096}, kDefaultMaxSegmentBytes}) {
      if (!worth_running(count, n, segment_bytes)) continue;
      SCOPED_TRACE("count " + std::to_string(count) + ", segment " + std::to_string(segment_bytes) +
                   " bytes");
      comm.set_max_segment_bytes(segment_bytes);
      for (Algorithm algorithm : {Algorithm::ring, Algorithm::mpi, Algorithm::automatic}) {
        std::vector<float> data = int_input(comm.rank(), count);
        allreduce(comm, data, ReduceOp::average, algorithm);
        EXPECT_TRUE(same_bits(data, expected)) << to_string(algorithm);
      }
      std::vector<float> data = int_input(comm.rank(), count);
      ring_allreduce(comm, data, ReduceOp::average);
      EXPECT_TRUE(same_bits(data, expected)) << "ring_allreduce";
      data = int_input(comm.rank(), count);
      mpi_allreduce(comm, data, ReduceOp::average);
      EXPECT_TRUE(same_bits(data, expected)) << "mpi_allreduce";
    }
  }
}

TEST_P(RingAllreduce, HundredBackToBackCallsOfVaryingLength) {
  Communicator comm = make_ring_comm();
  const int n = comm.size();
  comm.set_max_segment_bytes(4096);  // several segments per chunk for most lengths
  const int allocations_before = comm.scratch_allocations();
  std::mt19937 gen(99);  // same seed on every rank: same sequence of lengths
  std::uniform_int_distribution<std::size_t> length(0, 20000);
  const Algorithm algorithms[] = {Algorithm::ring, Algorithm::ring, Algorithm::automatic,
                                  Algorithm::mpi};
  for (int call = 0; call < 100; ++call) {
    const std::size_t count = call % 10 == 0 ? static_cast<std::size_t>(call % n) : length(gen);
    const ReduceOp op = call % 3 == 0 ? ReduceOp::average : ReduceOp::sum;
    const Algorithm algorithm = algorithms[call % 4];
    std::vector<float> expected = int_sum(n, count);
    if (op == ReduceOp::average) {
      for (float& x : expected) x /= static_cast<float>(n);
    }
    std::vector<float> data = int_input(comm.rank(), count);
    allreduce(comm, data, op, algorithm);
    ASSERT_TRUE(same_bits(data, expected))
        << "call " << call << ", count " << count << ", " << to_string(algorithm);
  }
  // The ring's scratch and window are allocated at most once for this segment size,
  // never per call.
  EXPECT_LE(comm.scratch_allocations() - allocations_before, 1);
  EXPECT_LE(comm.shm_window_allocations(), 1);
}

// The shared-memory transport must give the point-to-point ring's bits exactly (same
// chunks, same sums in the same order), for every length, segment size and op.
TEST(ShmRing, BitwiseEqualToP2pRingForRandomFloats) {
  Communicator comm = make_comm();
  const int n = comm.size();
  for (std::size_t count : interesting_lengths(n)) {
    for (std::size_t segment_bytes : kSegmentSizes) {
      if (!worth_running(count, n, segment_bytes)) continue;
      comm.set_max_segment_bytes(segment_bytes);
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::average}) {
        SCOPED_TRACE("count " + std::to_string(count) + ", segment " +
                     std::to_string(segment_bytes) + " bytes, " + std::string(to_string(op)));
        std::vector<float> p2p = random_input(comm.rank(), count);
        comm.set_ring_transport(RingTransport::p2p);
        ring_allreduce(comm, p2p, op);
        std::vector<float> shm = random_input(comm.rank(), count);
        comm.set_ring_transport(RingTransport::shm);
        ring_allreduce(comm, shm, op);
        EXPECT_TRUE(same_bits(shm, p2p));
        EXPECT_TRUE(identical_on_all_ranks(comm, shm.data(), shm.size() * sizeof(float)));
      }
    }
  }
}

// Shared-memory rings between broadcasts, allgathers, MPI_Allreduce, point-to-point
// rings and barriers: the window's counters carry on across calls, whatever runs in
// between, and tiny segments make every call reuse each slot many times.
TEST(ShmRing, InterleavesWithOtherCollectives) {
  Communicator comm = make_comm();
  const int n = comm.size();
  std::mt19937 gen(7);  // same seed on every rank: same sequence of lengths
  std::uniform_int_distribution<std::size_t> length(0, 3000);
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    comm.set_max_segment_bytes(round % 2 == 0 ? 16 : 4096);
    const std::size_t count = length(gen);
    const std::vector<float> expected = int_sum(n, count);

    comm.set_ring_transport(RingTransport::shm);
    std::vector<float> data = int_input(comm.rank(), count);
    ring_allreduce(comm, data);
    ASSERT_TRUE(same_bits(data, expected));

    std::vector<float> root_data(count, static_cast<float>(round));
    if (comm.rank() != 0) std::fill(root_data.begin(), root_data.end(), -1.0f);
    broadcast(comm, std::span<float>(root_data), 0);
    EXPECT_EQ(root_data, std::vector<float>(count, static_cast<float>(round)));

    data = int_input(comm.rank(), count);
    mpi_allreduce(comm, data);
    EXPECT_TRUE(same_bits(data, expected));

    comm.set_ring_transport(RingTransport::p2p);
    data = int_input(comm.rank(), count);
    ring_allreduce(comm, data);
    EXPECT_TRUE(same_bits(data, expected));
    comm.set_ring_transport(RingTransport::shm);

    const float mine = static_cast<float>(comm.rank());
    std::vector<float> all(static_cast<std::size_t>(n));
    allgather(comm, std::span<const float>(&mine, 1), std::span<float>(all));
    for (int r = 0; r < n; ++r) EXPECT_EQ(all[static_cast<std::size_t>(r)], static_cast<float>(r));

    data = int_input(comm.rank(), count);
    allreduce(comm, data, ReduceOp::average, Algorithm::ring);
    std::vector<float> mean = expected;
    for (float& x : mean) x /= static_cast<float>(n);
    EXPECT_TRUE(same_bits(data, mean));
    barrier(comm);
  }
}

// One window per communicator: allocated by the first shm ring call, again only for a
// larger segment size, kept through a move, never touched by the p2p ring.
TEST(ShmRing, WindowIsAllocatedOnceAndGrowsOnlyForLargerSegments) {
  Communicator comm = make_comm();
  const int n = comm.size();
  const int windows = n > 1 ? 1 : 0;  // one rank communicates nothing
  std::vector<float> data = int_input(comm.rank(), 5000);
  comm.set_ring_transport(RingTransport::p2p);
  ring_allreduce(comm, data);
  EXPECT_EQ(comm.shm_window_allocations(), 0);
  comm.set_ring_transport(RingTransport::shm);
  comm.set_max_segment_bytes(4096);
  for (int i = 0; i < 3; ++i) {
    data = int_input(comm.rank(), 5000);
    ring_allreduce(comm, data);
    EXPECT_TRUE(same_bits(data, int_sum(n, 5000)));
  }
  EXPECT_EQ(comm.shm_window_allocations(), windows);
  comm.set_max_segment_bytes(1024);  // smaller segments fit the slots there are
  ring_allreduce(comm, data);
  EXPECT_EQ(comm.shm_window_allocations(), windows);
  comm.set_max_segment_bytes(65536);
  data = int_input(comm.rank(), 100000);
  ring_allreduce(comm, data);
  EXPECT_TRUE(same_bits(data, int_sum(n, 100000)));
  EXPECT_EQ(comm.shm_window_allocations(), 2 * windows);

  Communicator moved = std::move(comm);
  data = int_input(moved.rank(), 777);
  ring_allreduce(moved, data, ReduceOp::average);
  std::vector<float> mean = int_sum(n, 777);
  for (float& x : mean) x /= static_cast<float>(n);
  EXPECT_TRUE(same_bits(data, mean));
  EXPECT_EQ(moved.shm_window_allocations(), 2 * windows);
}

TEST_P(RingAllreduce, CountsTheBytesTheRingMoves) {
  // Each rank sends N-1 chunks in reduce-scatter and N-1 in allgather: over
  // all ranks 2(N-1) * bytes each way, and per rank 2(N-1)/N * bytes up to
  // the chunks' rounding (one float per chunk and step). Over shm a segment is
  // sent when it is copied into a slot and received when it is read out of one.
  Communicator comm = make_ring_comm();
  comm.set_max_segment_bytes(64);  // several segments per chunk
  const int n = comm.size();
  for (std::size_t count : {std::size_t{1}, std::size_t{97}, std::size_t{1000}}) {
    auto data = int_input(comm.rank(), count);
    const std::int64_t sent0 = comm.bytes_sent(), recv0 = comm.bytes_received();
    ring_allreduce(comm, std::span<float>(data));
    std::int64_t mine[2] = {comm.bytes_sent() - sent0, comm.bytes_received() - recv0};
    std::int64_t total[2] = {0, 0};
    MPI_Allreduce(mine, total, 2, MPI_INT64_T, MPI_SUM, comm.handle());
    const auto bytes = static_cast<std::int64_t>(count * sizeof(float));
    EXPECT_EQ(total[0], 2 * (n - 1) * bytes) << count;
    EXPECT_EQ(total[1], 2 * (n - 1) * bytes) << count;
    const double per_rank = 2.0 * (n - 1) / n * static_cast<double>(bytes);
    EXPECT_LE(std::abs(static_cast<double>(mine[0]) - per_rank), 2.0 * n * sizeof(float)) << count;
  }
}

TEST(Broadcast, FloatsAndBytesFromEveryKindOfRoot) {
  Communicator comm = make_comm();
  const int n = comm.size();
  for (int root : {0, n / 2, n - 1}) {
    for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{1001}}) {
      SCOPED_TRACE("root " + std::to_string(root) + ", count " + std::to_string(count));
      std::vector<float> expected(count);
      for (std::size_t i = 0; i < count; ++i) expected[i] = 0.5f * i - root;
      std::vector<float> data(count, -7.0f);
      if (comm.rank() == root) data = expected;
      broadcast(comm, std::span<float>(data), root);
      EXPECT_TRUE(same_bits(data, expected));
      EXPECT_TRUE(identical_on_all_ranks(comm, data.data(), data.size() * sizeof(float)));

      std::vector<std::byte> bytes(count + 3, std::byte{0xEE});
      std::vector<std::byte> expected_bytes(count + 3);
      for (std::size_t i = 0; i < expected_bytes.size(); ++i) {
        expected_bytes[i] = static_cast<std::byte>((i * 31 + root) & 0xFF);
      }
      if (comm.rank() == root) bytes = expected_bytes;
      broadcast(comm, std::span<std::byte>(bytes), root);
      EXPECT_EQ(bytes, expected_bytes);
      EXPECT_TRUE(identical_on_all_ranks(comm, bytes.data(), bytes.size()));
    }
  }
}

TEST(Allgather, FloatsAndBytesConcatenateInRankOrder) {
  Communicator comm = make_comm();
  const int n = comm.size();
  for (std::size_t per_rank : {std::size_t{0}, std::size_t{1}, std::size_t{37}}) {
    SCOPED_TRACE("per rank " + std::to_string(per_rank));
    std::vector<float> mine(per_rank), expected(per_rank * n);
    for (std::size_t i = 0; i < per_rank; ++i) mine[i] = 100.0f * comm.rank() + i;
    for (int r = 0; r < n; ++r) {
      for (std::size_t i = 0; i < per_rank; ++i) expected[r * per_rank + i] = 100.0f * r + i;
    }
    std::vector<float> all(per_rank * n, -1.0f);
    allgather(comm, std::span<const float>(mine), std::span<float>(all));
    EXPECT_TRUE(same_bits(all, expected));
    EXPECT_TRUE(identical_on_all_ranks(comm, all.data(), all.size() * sizeof(float)));

    std::vector<std::byte> mine_bytes(per_rank, static_cast<std::byte>(comm.rank() + 1));
    std::vector<std::byte> all_bytes(per_rank * n), expected_bytes(per_rank * n);
    for (int r = 0; r < n; ++r) {
      std::fill_n(expected_bytes.begin() + r * per_rank, per_rank, static_cast<std::byte>(r + 1));
    }
    allgather(comm, std::span<const std::byte>(mine_bytes), std::span<std::byte>(all_bytes));
    EXPECT_EQ(all_bytes, expected_bytes);
    EXPECT_TRUE(identical_on_all_ranks(comm, all_bytes.data(), all_bytes.size()));
  }
  std::vector<float> mine(2), wrong(2 * n + 1);
  EXPECT_THROW(allgather(comm, std::span<const float>(mine), std::span<float>(wrong)),
               InvalidArgument);
}

// A length that differs across ranks must become a CommError on every rank, naming
// the ranks and their lengths, instead of a hang; the communicator stays usable.
TEST(CollectiveCheck, LengthMismatchIsAnErrorNotAHang) {
  Communicator comm = make_comm();
  const int n = comm.size();
  if (n == 1) GTEST_SKIP() << "one rank cannot disagree with itself";
  const bool odd_one = comm.rank() == n - 1;
  const std::string last = "rank " + std::to_string(n - 1) + " called ";
  for (Algorithm algorithm : {Algorithm::ring, Algorithm::mpi, Algorithm::automatic}) {
    std::vector<float> data(odd_one ? 11 : 10, 1.0f);
    try {
      allreduce(comm, data, ReduceOp::sum, algorithm);
      ADD_FAILURE() << "no error for mismatched lengths, " << to_string(algorithm);
    } catch (const CommError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("rank 0 called allreduce of 10 floats"), std::string::npos) << what;
      EXPECT_NE(what.find(last + "allreduce of 11 floats"), std::string::npos) << what;
    }
  }
  std::vector<float> data(odd_one ? 1 << 20 : 5, 1.0f);
  EXPECT_THROW(ring_allreduce(comm, data), CommError);
  EXPECT_THROW(mpi_allreduce(comm, data), CommError);
  EXPECT_THROW(broadcast(comm, std::span<float>(data), 0), CommError);
  std::vector<float> all(data.size() * n);
  EXPECT_THROW(allgather(comm, std::span<const float>(data), std::span<float>(all)), CommError);
  // Disagreeing on the op is caught too.
  std::vector<float> same(8, 1.0f);
  EXPECT_THROW(ring_allreduce(comm, same, odd_one ? ReduceOp::average : ReduceOp::sum), CommError);
  // So is disagreeing on the ring's segment size (messages would differ in size).
  comm.set_max_segment_bytes(odd_one ? 4096 : 8192);
  EXPECT_THROW(ring_allreduce(comm, same), CommError);
  comm.set_max_segment_bytes(4096);
  // And on the ring's transport (the shm ring never meets a p2p one).
  comm.set_ring_transport(odd_one ? RingTransport::p2p : RingTransport::shm);
  try {
    ring_allreduce(comm, same);
    ADD_FAILURE() << "no error for mismatched ring transports";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 0 called allreduce of 8 floats (sum, ring over shm"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(last + "allreduce of 8 floats (sum, ring over p2p"), std::string::npos)
        << what;
  }
  comm.set_ring_transport(RingTransport::automatic);
  // Nothing was sent: the next, matching call works.
  ring_allreduce(comm, same);
  EXPECT_EQ(same, std::vector<float>(8, static_cast<float>(n)));
}

TEST(Algorithm, ParseToStringAndAutomaticCrossovers) {
  EXPECT_EQ(parse_algorithm("ring"), Algorithm::ring);
  EXPECT_EQ(parse_algorithm("mpi"), Algorithm::mpi);
  EXPECT_EQ(parse_algorithm("auto"), Algorithm::automatic);
  for (Algorithm a : {Algorithm::ring, Algorithm::mpi, Algorithm::automatic}) {
    EXPECT_EQ(parse_algorithm(to_string(a)), a);
  }
  EXPECT_THROW(parse_algorithm("tree"), InvalidArgument);
  EXPECT_EQ(parse_reduce_op("sum"), ReduceOp::sum);
  EXPECT_EQ(parse_reduce_op("average"), ReduceOp::average);
  EXPECT_EQ(to_string(ReduceOp::average), "average");
  EXPECT_THROW(parse_reduce_op("max"), InvalidArgument);
  for (RingTransport t : {RingTransport::automatic, RingTransport::shm, RingTransport::p2p}) {
    EXPECT_EQ(parse_ring_transport(to_string(t)), t);
  }
  EXPECT_EQ(to_string(RingTransport::automatic), "auto");
  EXPECT_THROW(parse_ring_transport("tcp"), InvalidArgument);

  Communicator comm = make_comm();
  comm.set_auto_crossovers(1000, 5000);
  const bool many = comm.size() > 1;
  EXPECT_EQ(choose_algorithm(comm, 999), Algorithm::mpi);
  EXPECT_EQ(choose_algorithm(comm, 1000), many ? Algorithm::ring : Algorithm::mpi);
  EXPECT_EQ(choose_algorithm(comm, 4999), many ? Algorithm::ring : Algorithm::mpi);
  EXPECT_EQ(choose_algorithm(comm, 5000), Algorithm::mpi);
  EXPECT_THROW(comm.set_auto_crossovers(10, 5), InvalidArgument);
  // The defaults: small buffers to MPI, large ones to the ring.
  Communicator defaults;
  EXPECT_EQ(choose_algorithm(defaults, 64), Algorithm::mpi);
  EXPECT_EQ(choose_algorithm(defaults, std::size_t{64} << 20),
            many ? Algorithm::ring : Algorithm::mpi);
  // Every rank on one node (CI): auto takes the shared-memory transport, and its
  // own lower crossover.
  EXPECT_EQ(choose_ring_transport(defaults), RingTransport::shm);
  EXPECT_EQ(choose_algorithm(defaults, kDefaultShmRingMinBytes),
            many ? Algorithm::ring : Algorithm::mpi);
  EXPECT_EQ(choose_algorithm(defaults, kDefaultShmRingMinBytes - 1), Algorithm::mpi);
  defaults.set_ring_transport(RingTransport::p2p);
  EXPECT_EQ(choose_ring_transport(defaults), RingTransport::p2p);
  EXPECT_EQ(choose_algorithm(defaults, kDefaultRingMinBytes),
            many ? Algorithm::ring : Algorithm::mpi);
  EXPECT_EQ(choose_algorithm(defaults, kDefaultRingMinBytes - 1), Algorithm::mpi);
}

TEST(Communicator, DuplicatesWorldAndKnowsTheNode) {
  MpiEnvironment env;  // MPI is already up (mpi_main): checks the level, owns nothing
  EXPECT_FALSE(env.owns_mpi());
  EXPECT_GE(env.provided_level(), MPI_THREAD_SERIALIZED);

  Communicator comm = make_comm();
  int world_rank = -1, world_size = -1, compare = MPI_UNEQUAL;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_compare(comm.handle(), MPI_COMM_WORLD, &compare);
  EXPECT_EQ(compare, MPI_CONGRUENT);  // same group, different context
  EXPECT_EQ(comm.rank(), world_rank);
  EXPECT_EQ(comm.size(), world_size);
  EXPECT_EQ(comm.local_size(), comm.size());  // one node in CI
  EXPECT_EQ(comm.local_rank(), comm.rank());
  barrier(comm);

  Communicator moved = std::move(comm);
  EXPECT_EQ(comm.handle(), MPI_COMM_NULL);
  EXPECT_EQ(moved.size(), world_size);
  std::vector<float> one(3, 1.0f);
  allreduce(moved, one);
  EXPECT_EQ(one[2], static_cast<float>(world_size));
}

TEST(Communicator, MpiErrorsBecomeCommErrors) {
  Communicator comm = make_comm();
  float x = 0.0f;
  try {
    RF_MPI_CHECK(MPI_Send(&x, 1, MPI_FLOAT, comm.size() + 5, 0, comm.handle()));
    ADD_FAILURE() << "MPI_Send to a rank that does not exist succeeded";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("MPI_Send"), std::string::npos) << what;
    EXPECT_NE(what.find("rank " + std::to_string(comm.rank())), std::string::npos) << what;
  }
}

TEST(Communicator, OptionsFromEnvironment) {
  setenv("RINGFLOW_RING_SEGMENT_BYTES", "1234", 1);
  setenv("RINGFLOW_CHECK_COLLECTIVES", "0", 1);
  setenv("RINGFLOW_ALLREDUCE_RING_MIN_BYTES", "77", 1);
  setenv("RINGFLOW_RING_TRANSPORT", "p2p", 1);
  setenv("RINGFLOW_ALLREDUCE_SHM_RING_MIN_BYTES", "88", 1);
  CollectiveOptions o = CollectiveOptions::from_env();
  EXPECT_EQ(o.max_segment_bytes, 1234u);
  EXPECT_FALSE(o.check_collectives);
  EXPECT_EQ(o.ring_min_bytes, 77u);
  EXPECT_EQ(o.ring_transport, RingTransport::p2p);
  EXPECT_EQ(o.shm_ring_min_bytes, 88u);
  unsetenv("RINGFLOW_ALLREDUCE_SHM_RING_MIN_BYTES");
  setenv("RINGFLOW_RING_TRANSPORT", "ib", 1);
  try {
    CollectiveOptions::from_env();
    ADD_FAILURE() << "RINGFLOW_RING_TRANSPORT=ib accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("RINGFLOW_RING_TRANSPORT"), std::string::npos);
  }
  unsetenv("RINGFLOW_RING_TRANSPORT");
  setenv("RINGFLOW_RING_SEGMENT_BYTES", "lots", 1);
  EXPECT_THROW(CollectiveOptions::from_env(), InvalidArgument);
  unsetenv("RINGFLOW_RING_SEGMENT_BYTES");
  unsetenv("RINGFLOW_CHECK_COLLECTIVES");
  unsetenv("RINGFLOW_ALLREDUCE_RING_MIN_BYTES");
}

}  // namespace
}  // namespace ringflow::collectives
