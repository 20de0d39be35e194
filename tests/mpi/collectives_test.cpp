// Tests of ringflow::collectives other than the ring (broadcast, allgather,
// the cross-rank call check, algorithm choice, the Communicator) under
// mpiexec -n 1, 2, 3, 4 and an oversubscribed 8. Every test runs on every
// rank; each rank checks its own result and that all ranks hold identical bytes.
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
