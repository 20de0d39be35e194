// Data-parallel training on real ranks: N ranks equal one rank with the same
// global batch, replicas stay bitwise identical, runs are deterministic, and
// bucket allreduces overlap backward (asserted on recorded events).
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
#include <string>
#include <thread>
#include <utility>

#include "ringflow/ops/ops.h"
#include "ringflow/runtime/session.h"
#include "ringflow/train/reducer.h"
#include "ringflow/train/trainer.h"

#include "blobs_fixture.h"
#include "mpi_test_util.h"

namespace rt = ringflow::train;
namespace rc = ringflow::collectives;

namespace {

using ringflow::mpi_test::world_rank;
using ringflow::mpi_test::world_size;

// The shared blobs problem (blobs_fixture.h).
class TrainTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { path_ = ringflow::mpi_test::write_shared_blobs("train_test"); }
  static void TearDownTestSuite() { ringflow::mpi_test::remove_shared(path_); }

  static rt::TrainConfig config() {
    rt::TrainConfig c = ringflow::mpi_test::blobs_config(path_);
    c.fusion_mb = 600.0 / (1024 * 1024);  // ~150 floats: several buckets
    return c;
  }

  static std::string path_;
};
std::string TrainTest::path_;

void expect_same_variables(rt::Trainer& a, rt::Trainer& b, double rel, const std::string& what) {
  auto va = a.variables();
  auto vb = b.variables();
  ASSERT_EQ(va.size(), vb.size());
  for (std::size_t i = 0; i < va.size(); ++i) {
    ASSERT_EQ(va[i].first, vb[i].first);
    auto fa = va[i].second->flat<float>();
    auto fb = vb[i].second->flat<float>();
    ASSERT_EQ(fa.size(), fb.size());
    // Relative to the tensor's scale: summation order differs between one
    // rank and N, so elements near zero carry absolute, not relative, noise.
    double diff = 0, scale = 0;
    for (std::size_t k = 0; k < fa.size(); ++k) {
      diff = std::max(diff, std::abs(static_cast<double>(fa[k]) - fb[k]));
      scale = std::max(scale, std::abs(static_cast<double>(fb[k])));
    }
    EXPECT_LE(diff, rel * std::max(scale, 1e-6)) << what << ": variable " << va[i].first;
  }
}

TEST_F(TrainTest, NRanksEqualOneRankWithTheSameGlobalBatch) {
  for (const std::string algo : {"ring", "mpi"})
    for (const std::string overlap : {"on", "off"}) {
      rt::TrainConfig c = config();
      c.allreduce = algo;
      c.overlap = overlap;
      rc::Communicator world;
      rt::Trainer dist(c, world);
      EXPECT_GT(dist.reducer().num_buckets(), 1);
      dist.train_steps(8);
      // The reference: this rank alone, batch B, the whole data set.
      rc::Communicator self(MPI_COMM_SELF);
      rt::Trainer single(c, self);
      single.train_steps(8);
      expect_same_variables(dist, single, 1e-5, algo + " overlap " + overlap);
      // And training moved the variables (the comparison is not vacuous).
      rc::Communicator self2(MPI_COMM_SELF);
      rt::Trainer untrained(c, self2);
      EXPECT_NE(untrained.variables_hash(), single.variables_hash());
    }
}

TEST_F(TrainTest, SeveralExecutorThreadsKeepOneCollectiveOrder) {
  // With three executor threads, gradients (and buckets) become ready in
  // varying orders, and the step's last bucket is reduced either on the
  // communication thread or on the executor thread that handed it over.
  // Every bucket must still be reduced once per step, in the same order on
  // every rank, or the ranks would mismatch collectives and diverge.
  rt::TrainConfig c = config();
  c.threads = 3;
  c.overlap = "on";
  rc::Communicator world;
  rt::Trainer dist(c, world);
  dist.train_steps(12);
  const rt::ReducerStats stats = dist.reducer().stats();
  if (world.size() > 1) {  // one rank passes gradients through, uncounted
    EXPECT_EQ(stats.steps, 12);
    EXPECT_EQ(stats.collectives, 12 * dist.reducer().num_buckets());
  }
  rc::Communicator self(MPI_COMM_SELF);
  c.threads = 1;
  rt::Trainer single(c, self);
  single.train_steps(12);
  expect_same_variables(dist, single, 1e-5, "3 executor threads");
}

// An async op that passes its input through once the test opens it: it
// holds one gradient back for certain, whatever the scheduler does.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  ringflow::KernelContext* held = nullptr;
};
Gate& gate() {
  static Gate g;
  return g;
}
// Registers a test op, once, whose output has input 0's shape.
void register_test_op(const char* name, ringflow::KernelFn kernel, bool async) {
  if (ringflow::OpRegistry::global().find(name) != nullptr) return;
  ringflow::OpRegistry::global().add(
      {.name = name,
       .shape_fn =
           [](ringflow::ShapeContext& c) { c.set_output(0, ringflow::DType::f32, c.in_shape(0)); },
       .kernel = std::move(kernel),
       .no_gradient = true,
       .async = async});
}

void register_gate_op() {
  register_test_op(
      "TestGate",
      [](ringflow::KernelContext& c) {
        std::lock_guard<std::mutex> lock(gate().mu);
        gate().held = &c;
        gate().cv.notify_all();
      },
      true);
}

// Two one-gradient buckets handed over in different orders on different
// ranks: even ranks hold gradient 0 (bucket 0) back until the last bucket
// has been handed over, odd ranks the other way round. Every rank must
// still reduce bucket 0 first, or bucket 0 of one rank would be averaged
// with bucket 1 of another.
TEST(Reducer, BucketsAreReducedInBucketOrderWhateverOrderTheyAreHandedOver) {
  rc::Communicator world;
  if (world.size() == 1) GTEST_SKIP() << "one rank reduces nothing";
  register_gate_op();
  const bool even = world.rank() % 2 == 0;
  const std::int64_t n = 64;
  ringflow::Graph g;
  auto value = [&](float v) { return g.constant(ringflow::Tensor::filled({n, n}, v)); };
  auto held = [&](float v) { return g.add_op("TestGate", {value(v)}); };
  const float r = static_cast<float>(world.rank() + 1);
  // Built in this order on every rank, so gradient 0 has the smaller node id.
  const ringflow::Output g0 = even ? held(r) : ringflow::identity(value(r));
  const ringflow::Output g1 = even ? ringflow::identity(value(10 * r)) : held(10 * r);
  const ringflow::Output v0 = g.variable("v0", {n, n}, ringflow::init::zeros());
  const ringflow::Output v1 = g.variable("v1", {n, n}, ringflow::init::zeros());
  rt::Timeline timeline(true);
  rt::GradientReducer reducer(world, {.fusion_bytes = 1024}, &timeline);
  const auto reduced = reducer.add_to_graph(g, {{g0, v0}, {g1, v1}});
  ASSERT_EQ(reducer.num_buckets(), 2);
  ASSERT_EQ(reducer.buckets()[0], std::vector<int>{0});
  const std::string other_ready = even ? "bucket1 ready" : "bucket0 ready";
  ringflow::Session session(g, {.num_threads = 1, .user_context = reducer.context()});
  const float mean_r = static_cast<float>(world.size() + 1) / 2;
  for (int run = 1; run <= 3; ++run) {
    // Opens the gate once the other bucket has been handed over.
    std::thread opener([&] {
      for (;;) {
        const auto events = timeline.events();
        if (std::count_if(events.begin(), events.end(),
                          [&](const rt::TraceEvent& e) { return e.name == other_ready; }) == run)
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      std::unique_lock<std::mutex> lock(gate().mu);
      gate().cv.wait(lock, [] { return gate().held != nullptr; });
      ringflow::KernelContext* c = std::exchange(gate().held, nullptr);
      lock.unlock();
      c->set_output(0, c->input(0));
      c->done(nullptr);
    });
    const auto out = session.run({reduced[0].grad, reduced[1].grad});
    opener.join();
    EXPECT_FLOAT_EQ(out[0].flat<float>()[0], mean_r) << "run " << run;
    EXPECT_FLOAT_EQ(out[1].flat<float>()[n * n - 1], 10 * mean_r) << "run " << run;
  }
}

// Passes x through, or fails when the fed flag is > 0.
void register_fail_op() {
  register_test_op(
      "TestFailIf",
      [](ringflow::KernelContext& c) {
        if (c.input(1).scalar_value() > 0) c.fail("deliberate failure");
        c.set_output(0, c.input(0));
      },
      false);
}

// A step that fails after bucket 0 was handed over, before bucket 1 was
// ready: the run raises the failure on every rank instead of waiting for
// ever on bucket 0 (with overlap off nothing is reduced before the last
// bucket arrives), and the next step reduces both buckets correctly.
TEST(Reducer, AFailedStepRaisesInsteadOfWaitingForItsBuckets) {
  rc::Communicator world;
  register_fail_op();
  const std::int64_t n = 64;
  const float r = static_cast<float>(world.rank() + 1);
  const float mean_r = static_cast<float>(world.size() + 1) / 2;
  for (const bool overlap : {false, true}) {
    SCOPED_TRACE(overlap ? "overlap on" : "overlap off");
    ringflow::Graph g;
    const ringflow::Output flag = g.placeholder("flag", {});
    const ringflow::Output g0 = ringflow::identity(g.constant(ringflow::Tensor::filled({n, n}, r)));
    const ringflow::Output g1 =
        g.add_op("TestFailIf", {g.constant(ringflow::Tensor::filled({n, n}, 10 * r)), flag});
    const ringflow::Output v0 = g.variable("v0", {n, n}, ringflow::init::zeros());
    const ringflow::Output v1 = g.variable("v1", {n, n}, ringflow::init::zeros());
    rt::GradientReducer reducer(world, {.fusion_bytes = 1024, .overlap = overlap});
    const auto reduced = reducer.add_to_graph(g, {{g0, v0}, {g1, v1}});
    ASSERT_EQ(reducer.num_buckets(), 2);
    ringflow::Session session(g, {.num_threads = 1,
                                  .user_context = reducer.context(),
                                  .on_abort = [&] { reducer.abort_step(); }});
    const std::vector<ringflow::Output> fetch{reduced[0].grad, reduced[1].grad};
    try {
      session.run(fetch, {{flag, ringflow::Tensor::scalar(1.0f)}});
      ADD_FAILURE() << "the failing step did not raise";
    } catch (const ringflow::Error& e) {
      EXPECT_NE(std::string(e.what()).find("deliberate failure"), std::string::npos) << e.what();
    }
    const auto out = session.run(fetch, {{flag, ringflow::Tensor::scalar(0.0f)}});
    EXPECT_FLOAT_EQ(out[0].flat<float>()[0], mean_r);
    EXPECT_FLOAT_EQ(out[1].flat<float>()[n * n - 1], 10 * mean_r);
  }
}

TEST(Overlap, AutoOverlapsWhenTheNodeHasACoreToSpare) {
  rc::Communicator world;
  if (world.local_size() != world.size()) GTEST_SKIP() << "auto always overlaps across nodes";
  EXPECT_TRUE(rt::overlap_backward("on", world, 64, 1, 1));
  EXPECT_FALSE(rt::overlap_backward("off", world, 1, 64, 64));
  const int n = world.local_size();
  // Unbound ranks (their mask is the whole node) share the node's cores.
  EXPECT_TRUE(rt::overlap_backward("auto", world, 1, n + 1, n + 1));
  EXPECT_FALSE(rt::overlap_backward("auto", world, 1, n, n));
  EXPECT_FALSE(rt::overlap_backward("auto", world, 2, 2 * n, 2 * n));
  EXPECT_TRUE(rt::overlap_backward("auto", world, 2, 2 * n + 1, 2 * n + 1));
  // A rank bound to 4 of the node's 64 cores has them to itself.
  EXPECT_TRUE(rt::overlap_backward("auto", world, 3, 4, 64));
  EXPECT_FALSE(rt::overlap_backward("auto", world, 4, 4, 64));
}

TEST_F(TrainTest, ReplicasStayBitwiseIdenticalAndRunsAreDeterministic) {
  rt::TrainConfig c = config();
  c.shuffle = true;
  c.model.name = "mlp";
  std::uint64_t first = 0;
  for (int run = 0; run < 2; ++run) {
    rc::Communicator world;
    rt::Trainer t(c, world);
    t.train_steps(30);  // more than one epoch (480 / 24 = 20 steps)
    const std::uint64_t h = t.variables_hash();
    std::vector<std::uint64_t> all(static_cast<std::size_t>(world.size()));
    MPI_Allgather(&h, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, world.handle());
    for (auto v : all) EXPECT_EQ(v, h) << "replicas differ";
    if (run == 0) first = h;
    if (run == 1) {
      EXPECT_EQ(h, first) << "two runs with the same seed differ";
    }
  }
}

TEST_F(TrainTest, BucketAllreduceOverlapsBackward) {
  rc::Communicator world;
  // Oversubscribed ranks (more ranks than cores) may not get the CPU to
  // start the communication thread while their short backward runs; there
  // only the hand-over order is deterministic and checked.
  if (world.size() == 1) GTEST_SKIP() << "one rank has no allreduce to overlap";
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  const bool oversubscribed = world.local_size() > std::max(1, cores);
  for (const std::string overlap : {"on", "off"}) {
    rt::TrainConfig c = config();
    c.model.hidden = {512, 512};  // a backward long enough to overlap with
    c.fusion_mb = 20000.0 / (1024 * 1024);
    c.overlap = overlap;
    c.timeline = "unused.json";  // record events; nothing is written
    c.timeline_steps = 10;
    rt::Trainer t(c, world);
    ASSERT_GT(t.reducer().num_buckets(), 1);
    t.train_steps(10);
    const auto events = t.timeline().events();
    // Per step: the earliest bucket hand-over and allreduce start vs the
    // latest backward op end.
    int overlapped_steps = 0, handed_over_steps = 0, steps = 0;
    for (const auto& s : events) {
      if (s.category != "step") continue;
      std::int64_t first_allreduce = INT64_MAX, first_ready = INT64_MAX, last_backward = 0;
      for (const auto& e : events) {
        if (e.begin_ns < s.begin_ns || e.end_ns > s.end_ns) continue;
        if (e.category == "allreduce") first_allreduce = std::min(first_allreduce, e.begin_ns);
        if (e.category == "bucket") first_ready = std::min(first_ready, e.begin_ns);
        if (e.category == "backward") last_backward = std::max(last_backward, e.end_ns);
      }
      ASSERT_NE(first_allreduce, INT64_MAX);
      ASSERT_GT(last_backward, 0);
      ++steps;
      overlapped_steps += first_allreduce < last_backward;
      handed_over_steps += first_ready < last_backward;
    }
    EXPECT_EQ(steps, 10);
    if (overlap == "on") {
      EXPECT_EQ(handed_over_steps, 10) << "a bucket waited for the end of backward";
      // Whether the communication thread gets a core while backward still
      // runs is up to the OS; over 10 steps and all ranks it must have
      // happened at least once.
      int all_overlapped = 0;
      MPI_Allreduce(&overlapped_steps, &all_overlapped, 1, MPI_INT, MPI_SUM, world.handle());
      if (!oversubscribed) {
        EXPECT_GE(all_overlapped, 1) << "no bucket's allreduce began before backward ended";
      }
    } else {
      EXPECT_EQ(overlapped_steps, 0) << "--no-overlap started an allreduce during backward";
    }
  }
}

TEST_F(TrainTest, EvaluationIsExactAcrossRanks) {
  rt::TrainConfig c = config();
  rc::Communicator world;
  rt::Trainer dist(c, world);
  dist.train_steps(5);
  rc::Communicator self(MPI_COMM_SELF);
  rt::Trainer single(c, self);
  single.train_steps(5);
  const auto [dl, da] = dist.evaluate();
  const auto [sl, sa] = single.evaluate();
  EXPECT_NEAR(dl, sl, 1e-4 * (1 + std::abs(sl)));
  EXPECT_DOUBLE_EQ(da, sa);  // counts of correct rows over all 97 test rows
}

TEST_F(TrainTest, BadConfigurationFailsBeforeAnyCollective) {
  rc::Communicator world;
  rt::TrainConfig c = config();
  c.batch_size = world.size() * 3 + (world.size() > 1 ? 1 : 0);
  if (world.size() > 1) {
    EXPECT_THROW(rt::Trainer(c, world), ringflow::InvalidArgument);
  }
  c = config();
  c.model.name = "cnn";  // 8-feature rows are not images
  EXPECT_THROW(rt::Trainer(c, world), ringflow::InvalidArgument);
  c = config();
  c.data = "/nonexistent/data.h5";
  EXPECT_THROW(rt::Trainer(c, world), ringflow::Error);
}

}  // namespace
