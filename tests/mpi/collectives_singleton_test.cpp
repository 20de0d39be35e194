// A program started without mpirun: MpiEnvironment must initialise MPI as a
// one-rank job (a "singleton") and every collective must work, doing nothing.
// Run by CTest directly, not under mpiexec.
#include <mpi.h>

#include <cstddef>
#include <vector>

#include <gtest/gtest.h>

#include "ringflow/collectives/collectives.h"

namespace ringflow::collectives {
namespace {

TEST(Singleton, EnvironmentAndCollectivesWithoutALauncher) {
  int initialized = 1;
  MPI_Initialized(&initialized);
  ASSERT_FALSE(initialized);
  {
    MpiEnvironment env;
    EXPECT_TRUE(env.owns_mpi());
    EXPECT_GE(env.provided_level(), MPI_THREAD_SERIALIZED);
    Communicator comm;
    comm.set_check_collectives(true);
    EXPECT_EQ(comm.size(), 1);
    EXPECT_EQ(comm.rank(), 0);
    EXPECT_EQ(comm.local_size(), 1);
    const std::vector<float> input = {1.5f, -2.0f, 3.25f};
    for (Algorithm a : {Algorithm::ring, Algorithm::mpi, Algorithm::automatic}) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::average}) {
        std::vector<float> data = input;
        allreduce(comm, data, op, a);
        EXPECT_EQ(data, input);  // one rank: sum and average are the identity
      }
    }
    std::vector<float> data = input;
    ring_allreduce(comm, data, ReduceOp::average);
    mpi_allreduce(comm, data, ReduceOp::sum);
    EXPECT_EQ(data, input);
    comm.set_ring_transport(RingTransport::shm);
    ring_allreduce(comm, data, ReduceOp::sum);
    EXPECT_EQ(data, input);
    EXPECT_EQ(comm.scratch_allocations(), 0);     // no communication, no scratch
    EXPECT_EQ(comm.shm_window_allocations(), 0);  // and no shared-memory window
    broadcast(comm, std::span<float>(data), 0);
    EXPECT_EQ(data, input);
    std::vector<float> all(3);
    allgather(comm, std::span<const float>(input), std::span<float>(all));
    EXPECT_EQ(all, input);
    barrier(comm);
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  EXPECT_TRUE(finalized);  // the environment owned MPI, so it finalised it
}

}  // namespace
}  // namespace ringflow::collectives
