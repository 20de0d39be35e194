// MPI test of ringflow::datasets shards and batches on real ranks: for every
// rank count (including counts that do not divide the rows) the shards
// partition the split exactly, each rank's HDF5 selection covers only its
// rows, and strided unshuffled batches on N ranks are the batches of one rank
// with the same global batch.
#include <mpi.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../unit/datasets_files.h"
#include "ringflow/base/error.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/datasets/shard.h"

#include "mpi_test_util.h"

namespace rd = ringflow::datasets;

namespace {

using ringflow::mpi_test::world_rank;
using ringflow::mpi_test::world_size;

// Every rank's values, concatenated in rank order, on every rank.
std::vector<int64_t> allgather(const std::vector<int64_t>& mine) {
  const int n = world_size();
  int count = static_cast<int>(mine.size());
  std::vector<int> counts(n), displs(n);
  MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::exclusive_scan(counts.begin(), counts.end(), displs.begin(), 0);
  std::vector<int64_t> all(static_cast<size_t>(displs.back() + counts.back()));
  MPI_Allgatherv(mine.data(), count, MPI_INT64_T, all.data(), counts.data(), displs.data(),
                 MPI_INT64_T, MPI_COMM_WORLD);
  return all;
}

int64_t allreduce(int64_t v, MPI_Op op) {
  int64_t out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_INT64_T, op, MPI_COMM_WORLD);
  return out;
}

// Rank 0 creates files in a temp dir; every rank learns its path.
class SharedDir {
 public:
  SharedDir() {
    std::string path;
    if (world_rank() == 0) {
      dir_ = std::make_unique<rftest::TempDir>();
      path = dir_->path();
    }
    int len = static_cast<int>(path.size());
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    path.resize(static_cast<size_t>(len));
    MPI_Bcast(path.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = path;
  }
  ~SharedDir() { MPI_Barrier(MPI_COMM_WORLD); }  // nobody reads while rank 0 removes
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Rank 0 runs write(path), then all ranks wait for it.
  template <class F>
  std::string make(const std::string& name, F&& write) const {
    const std::string p = file(name);
    if (world_rank() == 0) write(p);
    MPI_Barrier(MPI_COMM_WORLD);
    return p;
  }

 private:
  std::unique_ptr<rftest::TempDir> dir_;
  std::string path_;
};

std::vector<int64_t> iota(int64_t from, int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

TEST(DatasetsShard, ShardsPartitionTheSplitExactly) {
  const int n = world_size(), r = world_rank();
  SharedDir dir;
  // Row counts that N divides and ones it does not (97 is prime), small chunks
  // so each shard spans many chunks; uint8 and float32 features.
  for (const int64_t rows : {int64_t{97}, int64_t{12} * n, int64_t{1001}}) {
    for (const bool u8 : {false, true}) {
      const std::string path = dir.make(
          "p" + std::to_string(rows) + (u8 ? "u8" : "f32") + ".h5",
          [&](auto& p) { rftest::write_small_dataset(p, rows, 5, 4, 3, u8, /*chunk_bytes=*/64); });
      for (const rd::ShardMode mode : {rd::ShardMode::kStrided, rd::ShardMode::kContiguous}) {
        SCOPED_TRACE(std::to_string(rows) + " rows, " + std::string(rd::to_string(mode)) +
                     (u8 ? ", uint8" : ", float32"));
        const rd::Shard s = rd::load_shard(path, "train", r, n, mode);
        // This rank's selection covered exactly its rows, and the values are
        // those of its rows.
        EXPECT_EQ(s.selected_x_elements, s.num_rows() * 4);
        EXPECT_EQ(s.selected_y_elements, s.num_rows());
        std::vector<int64_t> mine;
        for (int64_t i = 0; i < s.num_rows(); ++i) {
          const int64_t g = s.global_row(i);
          mine.push_back(g);
          ASSERT_EQ(s.y[i], rftest::row_label(g, 3));
          for (int64_t j = 0; j < 4; ++j) {
            const float want =
                u8 ? rftest::row_byte(g, j) * (1.0f / 255.0f) : rftest::row_value(g, j);
            ASSERT_FLOAT_EQ(s.x[i * 4 + j], want);
          }
        }
        // The union over ranks: every row exactly once.
        std::vector<int64_t> all = allgather(mine);
        std::sort(all.begin(), all.end());
        EXPECT_EQ(all, iota(0, rows));
        const int64_t lo = allreduce(s.num_rows(), MPI_MIN), hi = allreduce(s.num_rows(), MPI_MAX);
        EXPECT_LE(hi - lo, 1);
        EXPECT_EQ(allreduce(s.selected_x_elements, MPI_SUM), rows * 4);
      }
    }
  }
}

TEST(DatasetsShard, StridedBatchesMatchOneRankWithTheGlobalBatch) {
  const int n = world_size(), r = world_rank();
  SharedDir dir;
  const int64_t rows = 103;  // uneven for 2, 3, 4 ranks
  const std::string path =
      dir.make("b.h5", [&](auto& p) { rftest::write_small_dataset(p, rows, 5, 2, 4, false); });
  const int64_t global_batch = 4 * n;
  const rd::Shard s = rd::load_shard(path, "train", r, n);
  rd::BatchIterator it(s, {.global_batch = global_batch});
  EXPECT_EQ(allreduce(it.steps_per_epoch(), MPI_MIN), allreduce(it.steps_per_epoch(), MPI_MAX));
  EXPECT_EQ(it.steps_per_epoch(), rows / global_batch);
  std::vector<float> x(4 * 2);
  std::vector<int32_t> y(4);
  int64_t k = 0;
  while (it.next(x, y)) {
    std::vector<int64_t> mine(it.last_rows().begin(), it.last_rows().end());
    for (int j = 0; j < 4; ++j) EXPECT_EQ(x[j * 2], rftest::row_value(mine[j], 0));
    std::vector<int64_t> all = allgather(mine);
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, iota(k * global_batch, global_batch)) << "step " << k;
    ++k;
  }
  EXPECT_EQ(k, rows / global_batch);
}

TEST(DatasetsShard, ShuffledEpochsStayInTheShardAndInStep) {
  const int n = world_size(), r = world_rank();
  SharedDir dir;
  const std::string path =
      dir.make("s.h5", [&](auto& p) { rftest::write_small_dataset(p, 101, 5, 2, 4, false); });
  for (const rd::ShardMode mode : {rd::ShardMode::kStrided, rd::ShardMode::kContiguous}) {
    const rd::Shard s = rd::load_shard(path, "train", r, n, mode);
    rd::BatchIterator it(s, {.global_batch = 2 * n, .shuffle = true, .seed = 11});
    std::vector<float> x(2 * 2);
    std::vector<int32_t> y(2);
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      it.start_epoch(epoch);
      std::vector<int64_t> mine;
      int64_t steps = 0;
      while (it.next(x, y)) {
        // Every step is matched on all ranks (a collective here never hangs).
        MPI_Barrier(MPI_COMM_WORLD);
        mine.insert(mine.end(), it.last_rows().begin(), it.last_rows().end());
        ++steps;
      }
      EXPECT_EQ(allreduce(steps, MPI_MIN), allreduce(steps, MPI_MAX));
      std::vector<int64_t> all = allgather(mine);
      std::sort(all.begin(), all.end());
      EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "a row twice";
      EXPECT_EQ(static_cast<int64_t>(all.size()), (101 / (2 * n)) * 2 * n);
      for (const int64_t g : mine) {
        bool in_shard = false;
        for (int64_t i = 0; i < s.num_rows(); ++i) in_shard |= s.global_row(i) == g;
        EXPECT_TRUE(in_shard) << "row " << g << " is not in rank " << r << "'s shard";
      }
    }
  }
}

TEST(DatasetsShard, EvaluationCoversEveryRowWithMatchedSteps) {
  const int n = world_size(), r = world_rank();
  SharedDir dir;
  const std::string path =
      dir.make("e.h5", [&](auto& p) { rftest::write_small_dataset(p, 9, 37, 2, 4, false); });
  const rd::Shard s = rd::load_shard(path, "test", r, n);
  rd::EvalIterator it(s, 3 * n);
  EXPECT_EQ(allreduce(it.steps(), MPI_MIN), allreduce(it.steps(), MPI_MAX));
  std::vector<float> x(3 * 2);
  std::vector<int32_t> y(3);
  std::vector<int64_t> mine;
  int64_t done = 0;
  for (int64_t k = 0; k < it.steps(); ++k) {
    const int64_t m = it.next(x, y);
    for (int64_t j = 0; j < m; ++j) mine.push_back(s.global_row(done + j));
    done += m;
    MPI_Barrier(MPI_COMM_WORLD);
  }
  EXPECT_EQ(done, s.num_rows());
  std::vector<int64_t> all = allgather(mine);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, iota(0, 37));
}

TEST(DatasetsShard, MoreRanksThanRowsIsAClearErrorOnEveryRank) {
  const int n = world_size(), r = world_rank();
  if (n < 2) GTEST_SKIP() << "needs at least 2 ranks";
  SharedDir dir;
  const std::string path = dir.make(
      "few.h5", [&](auto& p) { rftest::write_small_dataset(p, n - 1, n - 1, 2, 2, false); });
  try {
    rd::load_shard(path, "train", r, n);
    ADD_FAILURE() << "no error";
  } catch (const ringflow::InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(n) + " ranks but only " + std::to_string(n - 1) + " rows"),
              std::string::npos)
        << msg;
  }
}

}  // namespace
