// Parameter-server training on real ranks: the layout, sync PS equals one
// rank with the same global batch (P = 1 and 2), exact evaluation, async
// convergence, staleness (recorded when a worker is slowed, bounded under
// --max-staleness), shutdown with uneven workers under a watchdog, and bad
// configurations failing before any message.
#include <mpi.h>

#include <gtest/gtest.h>

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>

#include "ringflow/train/ps.h"
#include "ringflow/train/trainer.h"

#include "blobs_fixture.h"
#include "mpi_test_util.h"

namespace rt = ringflow::train;
namespace rc = ringflow::collectives;

namespace {

using ringflow::mpi_test::world_rank;
using ringflow::mpi_test::world_size;

// Aborts the whole job if the scope is not left within `seconds`: a hang
// in the shutdown protocol fails loudly instead of waiting for CTest.
class Watchdog {
 public:
  Watchdog(int seconds, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [&] { return done_; })) {
        std::fprintf(stderr, "rank %d: watchdog: '%s' hung for %d s\n", world_rank(), what_.c_str(),
                     seconds);
        MPI_Abort(MPI_COMM_WORLD, 3);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// The shared blobs problem (blobs_fixture.h).
class PsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { path_ = ringflow::mpi_test::write_shared_blobs("ps_test"); }
  static void TearDownTestSuite() { ringflow::mpi_test::remove_shared(path_); }

  static rt::TrainConfig config() { return ringflow::mpi_test::blobs_config(path_); }
  static rt::TrainConfig ps_config(int num_ps, const std::string& update) {
    rt::TrainConfig c = config();
    c.mode = "ps";
    c.num_ps = num_ps;
    c.ps_update = update;
    return c;
  }
  // Whether P servers leave workers that split the batch evenly.
  static bool fits(int num_ps) {
    const int w = world_size() - num_ps;
    return w >= 1 && 24 % w == 0;
  }

  static std::string path_;
};
std::string PsTest::path_;

std::vector<float> flat_variables(rt::Trainer& t) {
  std::vector<float> out;
  for (const auto& v : t.model().x.graph().trainable_variables()) {
    for (const auto& [name, tensor] : t.variables())
      if (name == v.name()) {
        const auto f = tensor->flat<float>();
        out.insert(out.end(), f.begin(), f.end());
      }
  }
  return out;
}

// Each variable within rel of the reference, relative to its scale.
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<std::int64_t>& sizes, double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::size_t off = 0;
  for (std::size_t v = 0; v < sizes.size(); ++v) {
    double diff = 0, scale = 0;
    for (std::int64_t k = 0; k < sizes[v]; ++k, ++off) {
      diff = std::max(diff, std::abs(static_cast<double>(got[off]) - want[off]));
      scale = std::max(scale, std::abs(static_cast<double>(want[off])));
    }
    EXPECT_LE(diff, rel * std::max(scale, 1e-6)) << what << ": variable " << v;
  }
}

TEST(PsLayout, SplitsTheFlatVectorIntoEqualRangesCoveringEveryFloatOnce) {
  const std::vector<std::int64_t> sizes{10, 3, 7, 1};
  for (int p = 1; p <= 5; ++p) {
    const rt::PsLayout l = rt::make_ps_layout(sizes, p);
    ASSERT_EQ(l.num_shards(), p);
    EXPECT_EQ(l.total(), 21);
    std::vector<int> covered(21, 0);
    std::int64_t smallest = 21, largest = 0;
    for (int s = 0; s < p; ++s) {
      smallest = std::min(smallest, l.shard_size(s));
      largest = std::max(largest, l.shard_size(s));
      std::int64_t next = 0;  // pieces tile the shard in order
      for (const auto& piece : l.pieces[static_cast<std::size_t>(s)]) {
        EXPECT_EQ(piece.shard_offset, next);
        next += piece.count;
        std::int64_t var_start = 0;
        for (int v = 0; v < piece.var; ++v) var_start += sizes[static_cast<std::size_t>(v)];
        EXPECT_LE(piece.var_offset + piece.count, sizes[static_cast<std::size_t>(piece.var)]);
        for (std::int64_t k = 0; k < piece.count; ++k)
          ++covered[static_cast<std::size_t>(var_start + piece.var_offset + k)];
        // the flat position agrees with the shard's range
        EXPECT_EQ(var_start + piece.var_offset,
                  l.shard_begin[static_cast<std::size_t>(s)] + piece.shard_offset);
      }
      EXPECT_EQ(next, l.shard_size(s));
    }
    EXPECT_LE(largest - smallest, 1) << "unbalanced at P = " << p;
    for (int c : covered) EXPECT_EQ(c, 1);
  }
}

TEST_F(PsTest, SyncEqualsOneRankWithTheSameGlobalBatch) {
  if (world_size() < 2) GTEST_SKIP() << "ps mode needs a server and a worker";
  struct Variant {
    std::string optimizer, schedule;
    double warmup;
  };
  for (int num_ps : {1, 2}) {
    if (!fits(num_ps)) continue;
    for (const Variant& v : {Variant{"momentum", "cosine", 0.2}, Variant{"adam", "constant", 0}}) {
      const std::string what = "P=" + std::to_string(num_ps) + " " + v.optimizer;
      rt::TrainConfig c = ps_config(num_ps, "sync");
      c.optimizer = v.optimizer;
      c.schedule = v.schedule;
      c.warmup_epochs = v.warmup;
      c.lr = v.optimizer == "adam" ? 0.01f : 0.05f;
      c.epochs = 1;
      rc::Communicator world;
      rt::PsTrainer ps(c, world);
      EXPECT_EQ(ps.roles().num_workers(), world.size() - num_ps);
      {
        Watchdog dog(120, "sync train_steps");
        ps.train_steps(8);
      }
      const auto got = ps.gather_parameters();
      // Bytes: per step a server receives W gradient slices of its shard and
      // sends W parameter slices, a worker the whole vector each way, plus a
      // 32-byte header per message (pull and done requests are headers only).
      const std::int64_t w = ps.roles().num_workers(), steps = 8, header = 32;
      const auto& t = ps.traffic();
      if (ps.is_server()) {
        EXPECT_EQ(ps.server_stats().version, 8);
        EXPECT_EQ(ps.server_stats().staleness_max, 0);
        const std::int64_t shard = ps.layout().shard_size(world.rank()) * 4;
        EXPECT_EQ(t.bytes_sent, steps * w * (shard + header)) << what;
        EXPECT_EQ(t.bytes_received, steps * w * (shard + 2 * header) + w * header) << what;
      } else {
        const std::int64_t all = ps.layout().total() * 4;
        EXPECT_EQ(t.bytes_sent, steps * (all + 2 * num_ps * header) + num_ps * header) << what;
        EXPECT_EQ(t.bytes_received, steps * (all + num_ps * header)) << what;
      }
      // The reference: this rank alone in allreduce mode, batch B, all the data.
      rt::TrainConfig one = c;
      one.mode = "allreduce";
      one.num_ps = 0;
      one.ps_update.clear();
      rc::Communicator self(MPI_COMM_SELF);
      rt::Trainer single(one, self);
      single.train_steps(8);
      const auto want = flat_variables(single);
      expect_close(got, want, ps.layout().var_sizes, 1e-5, what);
      // Training moved the parameters (the comparison is not vacuous).
      rc::Communicator self2(MPI_COMM_SELF);
      rt::Trainer untrained(one, self2);
      const auto before = flat_variables(untrained);
      double moved = 0;
      for (std::size_t i = 0; i < before.size(); ++i)
        moved = std::max(moved, std::abs(static_cast<double>(before[i]) - got[i]));
      EXPECT_GT(moved, 1e-3) << what;
    }
  }
}

TEST_F(PsTest, EvaluationIsExactAcrossWorkers) {
  if (world_size() < 2 || !fits(1)) GTEST_SKIP() << "needs a server and workers that split B";
  rc::Communicator world;
  rt::PsTrainer ps(ps_config(1, "sync"), world);
  ps.train_steps(5);
  const auto [pl, pa] = ps.evaluate();
  rt::TrainConfig one = config();
  rc::Communicator self(MPI_COMM_SELF);
  rt::Trainer single(one, self);
  single.train_steps(5);
  const auto [sl, sa] = single.evaluate();
  EXPECT_NEAR(pl, sl, 1e-4 * (1 + std::abs(sl)));
  EXPECT_DOUBLE_EQ(pa, sa);  // counts of correct rows over all 97 test rows
}

TEST_F(PsTest, AsyncConvergesAndRank0ReceivesEveryEpoch) {
  if (world_size() < 2) GTEST_SKIP() << "ps mode needs a server and a worker";
  const int num_ps = fits(2) && world_size() > 3 ? 2 : 1;
  if (!fits(num_ps)) GTEST_SKIP() << "the workers do not split the batch evenly";
  rt::TrainConfig c = ps_config(num_ps, "async");
  // Plain SGD: asynchrony acts as extra momentum (W stale updates per global
  // batch), and momentum 0.9 on top of it makes this small net diverge.
  c.optimizer = "sgd";
  c.lr = 0.1f;
  c.epochs = 4;
  c.shuffle = true;
  rc::Communicator world;
  rt::PsTrainer ps(c, world);
  std::vector<rt::EpochMetrics> history;
  {
    Watchdog dog(120, "async run");
    history = ps.run();
  }
  if (world.rank() == 0 || !ps.is_server()) {
    ASSERT_EQ(history.size(), 4u) << "rank " << world.rank();
    EXPECT_EQ(history.back().test_rows, 97);
  }
  const auto [loss, acc] = ps.evaluate();
  // The reference: the same model trained by one rank for the same epochs.
  rt::TrainConfig one = config();
  one.optimizer = "sgd";
  one.lr = 0.1f;
  one.epochs = 4;
  one.shuffle = true;
  rc::Communicator self(MPI_COMM_SELF);
  rt::Trainer single(one, self);
  single.run();
  const auto [sl, sa] = single.evaluate();
  EXPECT_GT(acc, 0.8) << "async PS did not learn (chance is 1/3)";
  EXPECT_GE(acc, sa - 0.1) << "async accuracy " << acc << " vs one rank " << sa;
  EXPECT_LT(loss, 1.0986) << "no better than the uniform prediction (ln 3)";
  if (world.rank() == 0 && ps.is_server()) {
    ASSERT_FALSE(history.empty());
    EXPECT_NEAR(history.back().test_accuracy, acc, 0.15);
  }
  (void)sl;
}

TEST_F(PsTest, StalenessIsRecordedWhenAWorkerIsSlowAndBoundedUnderMaxStaleness) {
  if (world_size() < 3 || !fits(1)) GTEST_SKIP() << "needs two workers";
  for (std::int64_t bound : {-1, 0, 2}) {
    rt::TrainConfig c = ps_config(1, "async");
    c.max_staleness = bound;
    rt::PsTestHooks hooks;
    hooks.before_push = [](int worker, std::int64_t) {
      if (worker == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    };
    rc::Communicator world;
    rt::PsTrainer ps(c, world, hooks);
    const std::int64_t steps = 12;
    // Start together: on a loaded machine one rank may finish constructing
    // long after another, and a fast worker could then be done before the
    // slowed one has pulled at all (nothing would be stale).
    RF_MPI_CHECK(MPI_Barrier(world.handle()));
    {
      Watchdog dog(120, "staleness train_steps");
      ps.train_steps(steps);
    }
    const rt::PsSummary s = ps.summarize();
    const std::string what = "max-staleness " + std::to_string(bound);
    EXPECT_EQ(s.gradients, steps * ps.roles().num_workers()) << what;
    if (bound < 0) {
      EXPECT_GT(s.staleness_max, 0) << "a slowed worker's gradients were never stale";
      EXPECT_GT(s.staleness_mean, 0.0);
    } else {
      EXPECT_LE(s.staleness_max, bound) << what;
      // A positive bound still lets the fast workers run ahead (not sync).
      if (bound > 0) {
        EXPECT_GE(s.staleness_max, 1) << what;
      }
    }
    if (world.rank() == 0)
      std::printf("%s: staleness mean %.2f max %lld\n", what.c_str(), s.staleness_mean,
                  static_cast<long long>(s.staleness_max));
    if (ps.is_server()) {
      EXPECT_EQ(ps.server_stats().version, steps * ps.roles().num_workers());
    }
  }
}

TEST_F(PsTest, UnevenWorkersShutDownWithoutHanging) {
  if (world_size() < 2) GTEST_SKIP() << "ps mode needs a server and a worker";
  for (const std::string update : {"sync", "async"}) {
    const int num_ps = world_size() >= 4 && fits(2) ? 2 : 1;
    if (!fits(num_ps)) continue;
    rc::Communicator world;
    rt::PsTrainer ps(ps_config(num_ps, update), world);
    const int workers = ps.roles().num_workers();
    auto steps_of = [](int w) { return static_cast<std::int64_t>(2 + 3 * w); };
    {
      Watchdog dog(60, update + " shutdown with uneven workers");
      ps.train_steps(ps.is_server() ? 0 : steps_of(ps.roles().worker_index(world.rank())));
    }
    std::int64_t all = 0;
    for (int w = 0; w < workers; ++w) all += steps_of(w);
    if (ps.is_server()) {
      EXPECT_EQ(ps.server_stats().gradients, all) << update;
      // sync: one update per step of the longest worker; async: per gradient
      EXPECT_EQ(ps.server_stats().version, update == "sync" ? steps_of(workers - 1) : all)
          << update;
    }
    const auto [loss, acc] = ps.evaluate();  // the job is still usable
    EXPECT_GT(acc, 0.0);
    EXPECT_TRUE(std::isfinite(loss));
  }
}

TEST_F(PsTest, BadConfigurationFailsBeforeAnyMessage) {
  rc::Communicator world;
  const int n = world.size();
  rt::TrainConfig c = ps_config(n, "sync");  // no worker left
  EXPECT_THROW(rt::PsTrainer(c, world), ringflow::InvalidArgument);
  c = ps_config(0, "sync");
  EXPECT_THROW(rt::PsTrainer(c, world), ringflow::InvalidArgument);
  c = ps_config(1, "sync");
  c.max_staleness = 2;  // a bound needs async
  EXPECT_THROW(rt::PsTrainer(c, world), ringflow::InvalidArgument);
  c = config();  // ps flags without ps mode
  c.num_ps = 1;
  EXPECT_THROW(rt::validate(c, n), ringflow::InvalidArgument);
  c = config();
  c.ps_update = "async";
  EXPECT_THROW(rt::validate(c, n), ringflow::InvalidArgument);
  if (n >= 3) {
    c = ps_config(1, "sync");
    c.batch_size = 24 * (n - 1) + 1;  // not divisible by the workers
    EXPECT_THROW(rt::PsTrainer(c, world), ringflow::InvalidArgument);
  }
}

}  // namespace
