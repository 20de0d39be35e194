// Executor overhead per node: 10,000 trivial nodes as a chain and as a wide
// fan, with 1 and 2 threads. Prints TSV: shape, kind, threads, nodes,
// us_per_run (median), ns_per_node.
//   kind cheap: Identity nodes (run inline by the thread that readies them)
//   kind task:  a trivial op registered as expensive (each one a TBB task
//               candidate), to price the scheduling path itself
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ringflow/ops/ops.h"
#include "ringflow/runtime/session.h"

using namespace ringflow;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int nodes = 10000, reps = 15;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--nodes")) nodes = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  ops::ensure_registered();
  OpRegistry::global().add(
      {.name = "BenchTask",
       .shape_fn = [](ShapeContext& c) { c.set_output(0, c.in_dtype(0), c.in_shape(0)); },
       .kernel = [](KernelContext& c) { c.set_output(0, c.input(0)); }});
  std::printf("shape\tkind\tthreads\tnodes\tus_per_run\tns_per_node\n");
  for (const std::string shape : {"chain", "fan"})
    for (const std::string kind : {"cheap", "task"})
      for (int threads : {1, 2}) {
        Graph g;
        auto x = g.placeholder("x", {1});
        const std::string op = kind == "cheap" ? "Identity" : "BenchTask";
        Output target;
        if (shape == "chain") {
          Output h = x;
          for (int i = 0; i < nodes; ++i) h = g.add_op(op, {h});
          target = h.op();
        } else {
          std::vector<Output> leaves;
          for (int i = 0; i < nodes; ++i) leaves.push_back(g.add_op(op, {x}));
          target = g.group(leaves);
        }
        Session s(g, {.num_threads = threads});
        const FeedList feed{{x, Tensor::filled(Shape{1}, 1.0f)}};
        s.run({}, feed, {target});  // compile the plan
        std::vector<double> us;
        for (int r = 0; r < reps; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          s.run({}, feed, {target});
          const auto t1 = std::chrono::steady_clock::now();
          us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        }
        const double m = median(us);
        std::printf("%s\t%s\t%d\t%d\t%.1f\t%.1f\n", shape.c_str(), kind.c_str(), threads, nodes, m,
                    1000.0 * m / nodes);
      }
  return 0;
}
