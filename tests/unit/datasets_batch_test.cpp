// Unit tests of ringflow::datasets shards and batches on small generated
// files: row partitions, scaling at load, the step rule, shuffling,
// evaluation, and the synthetic sets.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "datasets_files.h"
#include "expect_error.h"
#include "ringflow/base/error.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/datasets/convert.h"
#include "ringflow/datasets/format.h"
#include "ringflow/datasets/idx.h"
#include "ringflow/datasets/shard.h"
#include "ringflow/datasets/synth.h"

namespace rd = ringflow::datasets;
using rftest::expect_error;
using rftest::TempDir;

namespace {

std::vector<int64_t> all_rows(const std::vector<rd::Shard>& shards) {
  std::vector<int64_t> rows;
  for (const rd::Shard& s : shards) {
    for (int64_t i = 0; i < s.num_rows(); ++i) rows.push_back(s.global_row(i));
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

// ---------------------------------------------------------------- shards

TEST(Shard, RowsPartitionForEveryRankCount) {
  for (const int64_t total : {1, 2, 7, 100, 103}) {
    for (int n = 1; n <= std::min<int64_t>(total, 9); ++n) {
      for (const rd::ShardMode mode : {rd::ShardMode::kStrided, rd::ShardMode::kContiguous}) {
        std::vector<int64_t> rows;
        int64_t lo = total, hi = 0;
        for (int r = 0; r < n; ++r) {
          const rd::RowRange rr = rd::shard_rows(total, r, n, mode);
          lo = std::min(lo, rr.count);
          hi = std::max(hi, rr.count);
          for (int64_t i = 0; i < rr.count; ++i) rows.push_back(rr[i]);
        }
        std::sort(rows.begin(), rows.end());
        std::vector<int64_t> want(static_cast<size_t>(total));
        std::iota(want.begin(), want.end(), int64_t{0});
        EXPECT_EQ(rows, want) << total << " rows, " << n << " ranks, " << rd::to_string(mode);
        EXPECT_LE(hi - lo, 1);
        EXPECT_GE(lo, total / n);
      }
    }
  }
  const rd::RowRange s = rd::shard_rows(10, 1, 3, rd::ShardMode::kStrided);
  EXPECT_EQ(s.start, 1);
  EXPECT_EQ(s.stride, 3);
  EXPECT_EQ(s.count, 3);  // 1, 4, 7
  const rd::RowRange c = rd::shard_rows(10, 1, 3, rd::ShardMode::kContiguous);
  EXPECT_EQ(c.start, 3);
  EXPECT_EQ(c.count, 3);  // 3, 4, 5
}

TEST(Shard, BadRankArguments) {
  expect_error([] { rd::shard_rows(3, 0, 4, rd::ShardMode::kStrided); },
               {"4 ranks but only 3 rows"});
  EXPECT_THROW(rd::shard_rows(10, 3, 3, rd::ShardMode::kStrided), ringflow::InvalidArgument);
  EXPECT_THROW(rd::shard_rows(10, -1, 3, rd::ShardMode::kStrided), ringflow::InvalidArgument);
  EXPECT_THROW(rd::shard_rows(10, 0, 0, rd::ShardMode::kStrided), ringflow::InvalidArgument);
  EXPECT_EQ(rd::parse_shard_mode("contiguous"), rd::ShardMode::kContiguous);
  EXPECT_THROW(rd::parse_shard_mode("random"), ringflow::InvalidArgument);

  TempDir dir;
  const std::string path = dir.file("tiny.h5");
  rftest::write_small_dataset(path, 3, 2, 2, 2, false);
  expect_error([&] { rd::load_shard(path, "train", 0, 4); },
               {path, "/train", "4 ranks but only 3 rows"});
  expect_error([&] { rd::load_shard(path, "test", 2, 3); }, {path, "/test", "3 ranks but only 2"});
  EXPECT_THROW(rd::load_shard(path, "valid", 0, 1), ringflow::InvalidArgument);
}

// Loads every rank's shard in this process and checks values and selections.
TEST(Shard, LoadedShardsHoldExactlyTheirRows) {
  TempDir dir;
  const std::string f32 = dir.file("f32.h5"), u8 = dir.file("u8.h5");
  // Small chunks so that shards cross many chunk boundaries.
  rftest::write_small_dataset(f32, 103, 11, 5, 7, false, /*chunk_bytes=*/5 * 4 * 8);
  rftest::write_small_dataset(u8, 103, 11, 6, 7, true, /*chunk_bytes=*/6 * 9);
  for (const std::string& path : {f32, u8}) {
    const bool is_u8 = path == u8;
    const int64_t row_size = is_u8 ? 6 : 5;
    for (int n : {1, 2, 3, 4, 5, 8}) {
      for (const rd::ShardMode mode : {rd::ShardMode::kStrided, rd::ShardMode::kContiguous}) {
        std::vector<rd::Shard> shards;
        for (int r = 0; r < n; ++r) shards.push_back(rd::load_shard(path, "train", r, n, mode));
        std::vector<int64_t> want(103);
        std::iota(want.begin(), want.end(), int64_t{0});
        EXPECT_EQ(all_rows(shards), want);
        for (const rd::Shard& s : shards) {
          EXPECT_EQ(s.total_rows, 103);
          EXPECT_EQ(s.row_size, row_size);
          EXPECT_EQ(s.selected_x_elements, s.num_rows() * row_size);
          EXPECT_EQ(s.selected_y_elements, s.num_rows());
          EXPECT_EQ(s.stored_bytes_read, s.num_rows() * (row_size * (is_u8 ? 1 : 4) + 4));
          ASSERT_EQ(static_cast<int64_t>(s.x.size()), s.num_rows() * row_size);
          for (int64_t i = 0; i < s.num_rows(); ++i) {
            const int64_t g = s.global_row(i);
            ASSERT_EQ(s.y[i], rftest::row_label(g, 7));
            for (int64_t j = 0; j < row_size; ++j) {
              const float want_x =
                  is_u8 ? rftest::row_byte(g, j) * (1.0f / 255.0f) : rftest::row_value(g, j);
              ASSERT_FLOAT_EQ(s.x[i * row_size + j], want_x) << "row " << g << " feature " << j;
            }
          }
        }
      }
    }
  }
}

TEST(Shard, PieceBoundaryOfLargeShards) {
  // More rows than one 8 MiB staging piece (row of 4000 bytes -> 2097 rows per
  // piece), so the piecewise hyperslab reads are exercised.
  TempDir dir;
  const std::string path = dir.file("big.h5");
  const int64_t rows = 2500, features = 4000;
  std::vector<uint8_t> x(static_cast<size_t>(rows * features));
  std::vector<int32_t> y(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < features; ++j) x[i * features + j] = rftest::row_byte(i, j);
    y[i] = static_cast<int32_t>(i % 3);
  }
  rd::SplitData s{.shape = {rows, features}, .x_u8 = x, .x_f32 = {}, .scale = 1.0f, .y = y};
  rd::write_dataset(path, s, s, {.num_classes = 3});
  const rd::Shard sh = rd::load_shard(path, "train", 0, 1, rd::ShardMode::kContiguous);
  for (int64_t i : {int64_t{0}, int64_t{2096}, int64_t{2097}, int64_t{2098}, rows - 1}) {
    EXPECT_EQ(sh.x[i * features + 5], rftest::row_byte(i, 5));
    EXPECT_EQ(sh.y[i], i % 3);
  }
}

TEST(Shard, ScaleAndStandardizeOnceAtLoad) {
  TempDir dir;
  const std::string path = dir.file("u8.h5");
  rftest::write_small_dataset(path, 40, 10, 4, 3, true);
  const rd::DatasetInfo info = rd::open_dataset(path);
  const rd::Shard plain = rd::load_shard(path, "test", 0, 1);
  for (const float v : plain.x) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
  // Standardised test features use the train statistics stored in the file.
  const rd::Shard z =
      rd::load_shard(path, "test", 0, 1, rd::ShardMode::kStrided, {.standardize = true});
  for (size_t k = 0; k < z.x.size(); ++k) {
    EXPECT_NEAR(z.x[k], (plain.x[k] - *info.train_mean) / *info.train_std, 1e-5);
  }
  // On the train split itself the result has mean ~0, std ~1.
  const rd::Shard zt =
      rd::load_shard(path, "train", 0, 1, rd::ShardMode::kStrided, {.standardize = true});
  double sum = 0, sq = 0;
  for (const float v : zt.x) {
    sum += v;
    sq += double{v} * v;
  }
  EXPECT_NEAR(sum / zt.x.size(), 0.0, 1e-5);
  EXPECT_NEAR(std::sqrt(sq / zt.x.size()), 1.0, 1e-4);
  expect_error(
      [&] {
        rd::load_shard(path, "train", 0, 1, rd::ShardMode::kStrided,
                       {.standardize = true, .mean = 0.f, .stddev = 0.f});
      },
      {"std must be positive"});
}

// ---------------------------------------------------------------- batches

TEST(Batch, SplitMix64MatchesReference) {
  // Reference outputs of splitmix64 from state 0 (Vigna's splitmix64.c).
  rd::SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.next(), 0x06c45d188009454fULL);
  rd::SplitMix64 b(42);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_LT(b.below(7), 7u);
    const double u = b.uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

TEST(Batch, PermutationIsDeterministicAndDependsOnSeedEpochRank) {
  const auto p = rd::shard_permutation(50, 7, 3, 1);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(50);
  std::iota(iota.begin(), iota.end(), int64_t{0});
  EXPECT_EQ(sorted, iota);
  EXPECT_EQ(p, rd::shard_permutation(50, 7, 3, 1));
  EXPECT_NE(p, rd::shard_permutation(50, 8, 3, 1));
  EXPECT_NE(p, rd::shard_permutation(50, 7, 4, 1));
  EXPECT_NE(p, rd::shard_permutation(50, 7, 3, 2));
  EXPECT_NE(p, iota);
  // Pinned: shuffles must not change between builds, compilers or platforms
  // (same seed, same N: bitwise the same run).
  EXPECT_EQ(rd::shard_permutation(10, 1, 0, 0),
            (std::vector<int64_t>{7, 6, 9, 5, 3, 0, 4, 8, 2, 1}));
  EXPECT_EQ(rd::shard_permutation(10, 1, 2, 3),
            (std::vector<int64_t>{0, 1, 6, 4, 9, 8, 5, 3, 2, 7}));
  EXPECT_TRUE(rd::shard_permutation(0, 1, 0, 0).empty());
}

TEST(Batch, StepsPerEpochRule) {
  EXPECT_EQ(rd::steps_per_epoch(103, 8), 12);
  EXPECT_EQ(rd::steps_per_epoch(96, 8), 12);
  EXPECT_EQ(rd::steps_per_epoch(7, 8), 0);
  EXPECT_THROW(rd::steps_per_epoch(10, 0), ringflow::InvalidArgument);
}

// N ranks with strided shards, no shuffle: step k's union over ranks is rows
// k*B .. k*B+B-1, exactly what one rank with batch B sees, and every rank runs
// the same number of steps although the shards are uneven.
TEST(Batch, StridedUnionEqualsSingleRankBatch) {
  TempDir dir;
  const std::string path = dir.file("d.h5");
  rftest::write_small_dataset(path, 103, 9, 3, 5, false);
  const rd::Shard one = rd::load_shard(path, "train", 0, 1);
  for (const int n : {1, 2, 3, 4}) {
    const int64_t global_batch = 12;
    rd::BatchIterator single(one, {.global_batch = global_batch});
    std::vector<rd::Shard> shards;
    for (int r = 0; r < n; ++r) shards.push_back(rd::load_shard(path, "train", r, n));
    std::vector<rd::BatchIterator> its;
    for (const rd::Shard& s : shards)
      its.emplace_back(s, rd::BatchOptions{.global_batch = global_batch});
    const int64_t b = global_batch / n;
    for (const auto& it : its) {
      EXPECT_EQ(it.steps_per_epoch(), 8);  // floor(103 / 12)
      EXPECT_EQ(it.local_batch(), b);
    }
    std::vector<float> sx(global_batch * 3), x(b * 3);
    std::vector<int32_t> sy(global_batch), y(b);
    for (int64_t k = 0; k < 8; ++k) {
      ASSERT_TRUE(single.next(sx, sy));
      std::vector<int64_t> rows;
      std::multiset<float> xs, single_xs(sx.begin(), sx.end());
      for (int r = 0; r < n; ++r) {
        ASSERT_TRUE(its[r].next(x, y));
        for (int64_t j = 0; j < b; ++j) {
          const int64_t g = its[r].last_rows()[j];
          EXPECT_EQ(g, k * global_batch + r + n * j);
          EXPECT_EQ(x[j * 3], rftest::row_value(g, 0));
          EXPECT_EQ(y[j], rftest::row_label(g, 5));
          rows.push_back(g);
        }
        xs.insert(x.begin(), x.end());
      }
      std::sort(rows.begin(), rows.end());
      std::vector<int64_t> want(global_batch);
      std::iota(want.begin(), want.end(), k * global_batch);
      EXPECT_EQ(rows, want);
      EXPECT_EQ(xs, single_xs);
    }
    EXPECT_FALSE(single.next(sx, sy));
    for (auto& it : its) EXPECT_FALSE(it.next(x, y));
  }
}

TEST(Batch, ShuffleIsDeterministicAndCoversTheShard) {
  TempDir dir;
  const std::string path = dir.file("d.h5");
  rftest::write_small_dataset(path, 50, 9, 2, 5, false);
  const rd::Shard s = rd::load_shard(path, "train", 1, 2);  // 25 rows: 1, 3, ..., 49
  auto epoch_rows = [&](uint64_t seed, int64_t epoch) {
    rd::BatchIterator it(s, {.global_batch = 10, .shuffle = true, .seed = seed});
    it.start_epoch(epoch);
    std::vector<float> x(5 * 2);
    std::vector<int32_t> y(5);
    std::vector<int64_t> rows;
    while (it.next(x, y)) {
      for (int j = 0; j < 5; ++j) {
        EXPECT_EQ(x[j * 2], rftest::row_value(it.last_rows()[j], 0));
        rows.push_back(it.last_rows()[j]);
      }
    }
    EXPECT_EQ(it.step(), 5);
    return rows;
  };
  const auto a = epoch_rows(3, 0);
  EXPECT_EQ(a.size(), 25u);  // 5 steps * 5; this shard loses no rows
  EXPECT_EQ(a, epoch_rows(3, 0));
  EXPECT_NE(a, epoch_rows(3, 1));
  EXPECT_NE(a, epoch_rows(4, 0));
  std::set<int64_t> uniq(a.begin(), a.end());
  EXPECT_EQ(uniq.size(), 25u);
  for (const int64_t g : a) EXPECT_EQ(g % 2, 1);
}

TEST(Batch, UnevenShardsRunTheSameSteps) {
  TempDir dir;
  const std::string path = dir.file("d.h5");
  rftest::write_small_dataset(path, 103, 9, 2, 5, false);
  for (const rd::ShardMode mode : {rd::ShardMode::kStrided, rd::ShardMode::kContiguous}) {
    for (const bool shuffle : {false, true}) {
      std::vector<int64_t> steps;
      for (int r = 0; r < 4; ++r) {
        const rd::Shard s = rd::load_shard(path, "train", r, 4, mode);
        rd::BatchIterator it(s, {.global_batch = 8, .shuffle = shuffle, .seed = 9});
        std::vector<float> x(2 * 2);
        std::vector<int32_t> y(2);
        int64_t k = 0;
        for (int64_t epoch = 0; epoch < 2; ++epoch) {
          it.start_epoch(epoch);
          while (it.next(x, y)) ++k;
        }
        steps.push_back(k);
      }
      EXPECT_EQ(steps, (std::vector<int64_t>(4, 2 * 12)));
    }
  }
}

TEST(Batch, BadBatchArguments) {
  TempDir dir;
  const std::string path = dir.file("d.h5");
  rftest::write_small_dataset(path, 20, 9, 2, 5, false);
  const rd::Shard s = rd::load_shard(path, "train", 0, 3);
  expect_error([&] { rd::BatchIterator(s, {.global_batch = 8}); }, {"not a multiple of the 3"});
  expect_error([&] { rd::BatchIterator(s, {.global_batch = 21}); }, {"exceeds the 20 rows"});
  expect_error([&] { rd::BatchIterator(s, {.global_batch = 0}); }, {"must be >= 1"});
  rd::BatchIterator it(s, {.global_batch = 6});
  std::vector<float> x(3);
  std::vector<int32_t> y(2);
  expect_error([&] { it.next(x, y); }, {"local_batch*row_size"});
  expect_error([&] { rd::EvalIterator(s, 4); }, {"multiple of the 3 ranks"});
}

TEST(Batch, EvalVisitsEveryRowOnceWithEqualStepCounts) {
  TempDir dir;
  const std::string path = dir.file("d.h5");
  rftest::write_small_dataset(path, 20, 23, 2, 5, false);
  for (const int n : {1, 2, 3, 4}) {
    std::vector<int64_t> seen;
    std::vector<int64_t> step_counts;
    for (int r = 0; r < n; ++r) {
      const rd::Shard s = rd::load_shard(path, "test", r, n);
      rd::EvalIterator it(s, 4 * n);  // local batch 4
      step_counts.push_back(it.steps());
      std::vector<float> x(4 * 2);
      std::vector<int32_t> y(4);
      int64_t got = 0;
      for (int64_t k = 0; k < it.steps(); ++k) {
        const int64_t m = it.next(x, y);
        EXPECT_LE(m, 4);
        for (int64_t j = 0; j < m; ++j) {
          const int64_t local = got + j;
          EXPECT_EQ(x[j * 2], rftest::row_value(s.global_row(local), 0));
          seen.push_back(s.global_row(local));
        }
        got += m;
      }
      EXPECT_EQ(got, s.num_rows());
      EXPECT_EQ(it.next(x, y), 0);
      it.reset();
      EXPECT_EQ(it.next(x, y), std::min<int64_t>(4, s.num_rows()));
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> want(23);
    std::iota(want.begin(), want.end(), int64_t{0});
    EXPECT_EQ(seen, want) << n << " ranks";
    EXPECT_EQ(std::count(step_counts.begin(), step_counts.end(), step_counts[0]), n);
  }
}

// ---------------------------------------------------------------- synth

TEST(Synth, BlobsAndSpiralsAreSeededAndValid) {
  const rd::SynthData a = rd::make_blobs({.rows = 300, .classes = 4, .dims = 3, .seed = 5});
  const rd::SynthData b = rd::make_blobs({.rows = 300, .classes = 4, .dims = 3, .seed = 5});
  const rd::SynthData c = rd::make_blobs({.rows = 300, .classes = 4, .dims = 3, .seed = 6});
  EXPECT_EQ(a.shape, (std::vector<int64_t>{300, 3}));
  EXPECT_EQ(a.x, b.x);
  EXPECT_EQ(a.y, b.y);
  EXPECT_NE(a.x, c.x);
  std::vector<int> counts(4);
  for (const int32_t k : a.y) {
    ASSERT_GE(k, 0);
    ASSERT_LT(k, 4);
    ++counts[k];
  }
  for (const int c4 : counts) EXPECT_GT(c4, 40);
  // Rows of a class gather around one centre: class means are far apart
  // compared with spread 1 when centres are drawn in [-5, 5]^3.
  const rd::SynthData s = rd::make_spirals({.rows = 500, .classes = 3, .noise = 0.0f, .seed = 1});
  EXPECT_EQ(s.shape, (std::vector<int64_t>{500, 2}));
  for (int64_t i = 0; i < 500; ++i) {
    const double r = std::hypot(s.x[2 * i], s.x[2 * i + 1]);
    EXPECT_LE(r, 1.0 + 1e-6);
  }
  EXPECT_EQ(s.x, rd::make_spirals({.rows = 500, .classes = 3, .noise = 0.0f, .seed = 1}).x);
  EXPECT_THROW(rd::make_blobs({.rows = 0}), ringflow::InvalidArgument);
  EXPECT_THROW(rd::make_spirals({.rows = 10, .classes = 0}), ringflow::InvalidArgument);
}

}  // namespace
