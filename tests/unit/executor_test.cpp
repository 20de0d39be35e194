// The executor: pruning, parallel correctness against a sequential
// reference, real concurrency (counted, not timed), error propagation, and
// the release of intermediate buffers.
#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "ringflow/ops/ops.h"
#include "test_util.h"

namespace ringflow {
namespace {

using testing_util::values;

TEST(Executor, RunsOnlyThePrunedSubgraph) {
  Graph g;
  auto x = g.placeholder("x", {3});
  auto a = exp(x);
  auto b = tanh(x);  // another branch
  auto c = square(b);
  Session s(g, {.num_threads = 2});
  s.run({a}, {{x, Tensor::filled(Shape{3}, 1.0f)}});
  EXPECT_EQ(s.run_count(a.node_id()), 1u);
  EXPECT_EQ(s.run_count(b.node_id()), 0u);
  EXPECT_EQ(s.run_count(c.node_id()), 0u);
  EXPECT_EQ(s.last_run_stats().nodes_executed, 2);  // x and a
  // Fetching c needs b and x, not a.
  s.run({c}, {{x, Tensor::filled(Shape{3}, 1.0f)}});
  EXPECT_EQ(s.run_count(a.node_id()), 1u);
  EXPECT_EQ(s.run_count(b.node_id()), 1u);
  EXPECT_EQ(s.cached_plans(), 2u);
  s.run({a}, {{x, Tensor::filled(Shape{3}, 1.0f)}});
  EXPECT_EQ(s.cached_plans(), 2u);  // the first plan was reused
}

TEST(Executor, FeedErrorsNameThePlaceholder) {
  Graph g;
  auto x = g.placeholder("pixels", {-1, 4});
  auto labels = g.placeholder("labels", {-1}, DType::i32);
  auto y = reduce_sum(x);
  Session s(g, {.num_threads = 1});
  auto message = [&](auto&& f) -> std::string {
    try {
      f();
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_NE(message([&] { s.run({y}); }).find("'pixels'"), std::string::npos);
  EXPECT_NE(message([&] {
              s.run({y}, {{x, Tensor::zeros(DType::f32, Shape{2, 5})}});
            }).find("'pixels'"),
            std::string::npos);
  EXPECT_NE(message([&] {
              s.run({y}, {{x, Tensor::zeros(DType::i32, Shape{2, 4})}});
            }).find("'pixels'"),
            std::string::npos);
  EXPECT_NE(message([&] {
              s.run({y}, {{y, Tensor::scalar(1)}});
            }).find("only placeholders"),
            std::string::npos);
  EXPECT_NO_THROW(s.run({y}, {{x, Tensor::zeros(DType::f32, Shape{2, 4})},
                              {labels, Tensor::zeros(DType::i32, Shape{2})}}));
}

// A random DAG of 1,000 element-wise nodes, evaluated by the executor with
// 1, 2 and 4 threads and by a plain sequential loop in the test.
TEST(Executor, RandomDagMatchesSequentialReference) {
  constexpr int kSources = 10, kNodes = 1000, kWidth = 16;
  std::uint64_t rng = 12345;
  auto next = [&rng](std::uint64_t n) { return random::mix64(rng++) % n; };
  Graph g;
  std::vector<Output> outs;
  std::vector<std::vector<float>> ref;
  for (int i = 0; i < kSources; ++i) {
    Tensor t =
        testing_util::random_tensor(Shape{kWidth}, -1, 1, 100 + static_cast<std::uint64_t>(i));
    outs.push_back(g.constant(t));
    ref.push_back(values(t));
  }
  for (int i = 0; i < kNodes; ++i) {
    const int kind = static_cast<int>(next(4));
    const auto a = next(outs.size()), b = next(outs.size());
    std::vector<float> r(kWidth);
    if (kind == 0) {
      outs.push_back(add(outs[a], outs[b]) * 0.5f);
      for (int k = 0; k < kWidth; ++k) r[k] = (ref[a][k] + ref[b][k]) * 0.5f;
    } else if (kind == 1) {
      outs.push_back(mul(outs[a], outs[b]));
      for (int k = 0; k < kWidth; ++k) r[k] = ref[a][k] * ref[b][k];
    } else if (kind == 2) {
      outs.push_back(tanh(outs[a]));
      for (int k = 0; k < kWidth; ++k) r[k] = std::tanh(ref[a][k]);
    } else {
      const auto c = next(outs.size());
      outs.push_back(add_n({outs[a], outs[b], outs[c]}) * 0.25f);
      for (int k = 0; k < kWidth; ++k) r[k] = (ref[a][k] + ref[b][k] + ref[c][k]) * 0.25f;
    }
    ref.push_back(r);
  }
  std::vector<Output> fetches;
  std::vector<std::size_t> idx;
  for (std::size_t i = outs.size() - 20; i < outs.size(); ++i) {
    fetches.push_back(outs[i]);
    idx.push_back(i);
  }
  for (int threads : {1, 2, 4}) {
    Session s(g, {.num_threads = threads});
    for (int rep = 0; rep < 3; ++rep) {
      auto got = s.run(fetches);
      for (std::size_t f = 0; f < fetches.size(); ++f)
        EXPECT_EQ(values(got[f]), ref[idx[f]]) << "threads " << threads << " fetch " << f;
    }
  }
}

// An op that waits (up to a guard timeout) until `want` instances of it are
// running at once: it can only finish quickly if the executor really runs
// independent branches in parallel.
std::atomic<int> g_rendezvous_running{0};
std::atomic<int> g_rendezvous_met{0};

void register_rendezvous() {
  static bool done = [] {
    ops::ensure_registered();
    OpRegistry::global().add(
        {.name = "TestRendezvous",
         .shape_fn = [](ShapeContext& c) { c.set_output(0, DType::f32, c.in_shape(0)); },
         .kernel =
             [](KernelContext& c) {
               g_rendezvous_running.fetch_add(1);
               const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
               while (g_rendezvous_running.load() < 2 &&
                      std::chrono::steady_clock::now() < deadline)
                 std::this_thread::yield();
               if (g_rendezvous_running.load() >= 2) g_rendezvous_met.fetch_add(1);
               c.set_output(0, c.input(0));
             }});
    return true;
  }();
  (void)done;
}

TEST(Executor, IndependentBranchesRunConcurrently) {
  register_rendezvous();
  Graph g;
  auto x = g.placeholder("x", {4});
  auto a = g.add_op("TestRendezvous", {exp(x)});
  auto b = g.add_op("TestRendezvous", {tanh(x)});
  auto y = a + b;
  Session s(g, {.num_threads = 2});
  g_rendezvous_running = 0;
  g_rendezvous_met = 0;
  s.run({y}, {{x, Tensor::filled(Shape{4}, 0.5f)}});
  EXPECT_EQ(g_rendezvous_met.load(), 2) << "the two branches never ran at the same time";
  EXPECT_GE(s.last_run_stats().max_concurrent, 2);
}

TEST(Executor, FirstErrorSurfacesAndSessionStaysUsable) {
  ops::ensure_registered();
  static bool registered = [] {
    OpRegistry::global().add(
        {.name = "TestFail",
         .shape_fn = [](ShapeContext& c) { c.set_output(0, DType::f32, c.in_shape(0)); },
         .kernel = [](KernelContext& c) { c.fail("deliberate failure"); }});
    return true;
  }();
  (void)registered;
  Graph g;
  auto x = g.placeholder("x", {8});
  auto bad = g.add_op("TestFail", {exp(x)}, {}, "broken");
  std::vector<Output> many;
  for (int i = 0; i < 20; ++i) many.push_back(tanh(x) * static_cast<float>(i));
  auto y = add_n(many) + bad;
  auto ok = add_n(many);
  Session s(g, {.num_threads = 2});
  const FeedList feed{{x, Tensor::filled(Shape{8}, 1.0f)}};
  for (int rep = 0; rep < 5; ++rep) {
    try {
      s.run({y}, feed);
      FAIL() << "no error";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("'broken'"), std::string::npos) << e.what();
    }
    EXPECT_EQ(s.run({ok}, feed)[0].num_elements(), 8);
  }
}

TEST(Executor, IntermediateBuffersAreReleased) {
  Graph g;
  auto x = g.placeholder("x", {256, 256});
  Output h = x;
  for (int i = 0; i < 50; ++i) h = tanh(h) * 0.9f;
  auto y = reduce_sum(h);
  std::atomic<std::int64_t> peak{0};
  Session s(g, {.num_threads = 2, .on_node = [&](const NodeEvent&) {
                  const auto live = Tensor::storage_stats().live_buffers;
                  auto p = peak.load();
                  while (live > p && !peak.compare_exchange_weak(p, live)) {
                  }
                }});
  Tensor in = Tensor::filled(Shape{256, 256}, 0.5f);
  s.run({y}, {{x, in}});  // warm-up: plan compiled
  const auto baseline = Tensor::storage_stats().live_buffers;
  peak = 0;
  {
    Tensor out = s.run({y}, {{x, in}})[0];
    EXPECT_EQ(Tensor::storage_stats().live_buffers, baseline + 1);  // just the fetched scalar
  }
  EXPECT_EQ(Tensor::storage_stats().live_buffers, baseline);
  // A chain needs at most a few intermediates alive at once, not 100.
  EXPECT_LE(peak.load(), baseline + 4);
}

// An async op that completes on another thread, like the gradient buckets.
TEST(Executor, AsyncKernelsCompleteFromAnotherThread) {
  ops::ensure_registered();
  static bool registered = [] {
    OpRegistry::global().add(
        {.name = "TestAsyncDouble",
         .shape_fn = [](ShapeContext& c) { c.set_output(0, DType::f32, c.in_shape(0)); },
         .kernel =
             [](KernelContext& c) {
               Tensor in = c.input(0);
               std::thread([&c, in] {
                 std::this_thread::sleep_for(std::chrono::milliseconds(5));
                 Tensor out(DType::f32, in.shape());
                 for (std::int64_t i = 0; i < in.num_elements(); ++i)
                   out.data<float>()[i] = 2 * in.data<float>()[i];
                 c.set_output(0, out);
                 c.done(nullptr);
               }).detach();
             },
         .async = true});
    return true;
  }();
  (void)registered;
  Graph g;
  auto x = g.placeholder("x", {3});
  auto a = g.add_op("TestAsyncDouble", {exp(x)});
  auto y = a + tanh(x);
  for (int threads : {1, 2}) {
    Session s(g, {.num_threads = threads});
    for (int rep = 0; rep < 10; ++rep) {
      Tensor out = s.run({y}, {{x, Tensor::filled(Shape{3}, 0.0f)}})[0];
      testing_util::expect_near(values(out), {2, 2, 2});
    }
  }
}

}  // namespace
}  // namespace ringflow

namespace ringflow {
namespace {

// Kernels run with denormals flushed to zero (FTZ/DAZ) on every thread count,
// and the calling thread's own floating-point mode is left as it was.
TEST(Executor, KernelsFlushDenormalsAndCallerModeIsKept) {
  ops::ensure_registered();
  static bool registered = [] {
    OpRegistry::global().add(
        {.name = "TestMxcsr",
         .shape_fn = [](ShapeContext& c) { c.set_output(0, DType::f32, Shape{}); },
         .kernel =
             [](KernelContext& c) {
               // 1e-40f is a denormal: DAZ reads it as 0.
               volatile float tiny = 1e-40f;
               c.allocate_output(0, DType::f32, Shape{}).data<float>()[0] =
                   tiny * 1.0f == 0.0f ? 1.0f : 0.0f;
             }});
    return true;
  }();
  (void)registered;
  Graph g;
  auto y = g.add_op("TestMxcsr", {g.scalar(1.0f)});
  const float denormal_before = [] {
    volatile float tiny = 1e-40f;
    return tiny * 1.0f;
  }();
  for (int threads : {1, 2}) {
    Session s(g, {.num_threads = threads});
    EXPECT_EQ(s.run({y})[0].scalar_value(), 1.0f)
        << "denormals not flushed with " << threads << " threads";
  }
  volatile float tiny = 1e-40f;
  EXPECT_EQ(tiny * 1.0f, denormal_before);  // the caller still sees denormals as before
  EXPECT_NE(denormal_before, 0.0f);
}

}  // namespace
}  // namespace ringflow
