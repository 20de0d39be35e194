// Tests of the ring allreduce over both of its transports (MPI point-to-point
// and the shared-memory window), under mpiexec -n 1, 2, 3, 4 and an
// oversubscribed 8: against MPI_Allreduce and hand-computed sums, at every
// length and segment size that reaches a different path of the ring.
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

#include "collectives_test_util.h"
#include "ringflow/collectives/collectives.h"

namespace ringflow::collectives {
namespace {

using namespace test;  // collectives_test_util.h

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

}  // namespace
}  // namespace ringflow::collectives
