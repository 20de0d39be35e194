// MatMul GFLOP/s through the MatMul op (one node per run) at the shapes the
// models use: the MLP's forward GEMM and its two backward GEMMs, the CNN's
// im2col GEMMs and its dense layer. 1 and 2 threads. Prints TSV.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ringflow/ops/ops.h"
#include "ringflow/runtime/session.h"
#include "ringflow/tensor/random.h"

using namespace ringflow;

namespace {

struct Case {
  const char* name;
  std::int64_t m, k, n;
  bool ta, tb;
};

Tensor random_tensor(Shape s, std::uint64_t seed) {
  Tensor t(DType::f32, std::move(s));
  auto f = t.flat<float>();
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = random::uniform01(seed, 1, i) - 0.5f;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--quick")) quick = true;
  }
  std::vector<Case> cases = {
      {"mlp_fwd_x.W1", 64, 784, 256, false, false},
      {"mlp_bwd_xT.g", 784, 64, 256, true, false},
      {"mlp_bwd_g.W1T", 64, 256, 784, false, true},
      {"mlp_fwd_b128", 128, 784, 256, false, false},
      {"mlp_bwd_b128_xT.g", 784, 128, 256, true, false},
      {"mlp_bwd_b128_g.W1T", 128, 256, 784, false, true},
      {"cnn_conv1_im2col", 64 * 28 * 28, 25, 32, false, false},
      {"cnn_conv2_im2col", 64 * 14 * 14, 800, 64, false, false},
      {"cnn_fc1", 64, 3136, 1024, false, false},
      {"square_1024", 1024, 1024, 1024, false, false},
  };
  if (quick) cases = {{"tiny", 8, 16, 4, false, false}};
  // Warm-up: on the VMs here the CPU runs ~35 % slower for its first second
  // of heavy compute; do that second before measuring anything.
  if (!quick) {
    Graph g;
    auto y = matmul(g.constant(random_tensor(Shape{512, 512}, 3)),
                    g.constant(random_tensor(Shape{512, 512}, 4)));
    Session s(g, {.num_threads = 1});
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < until) s.run({y});
  }
  std::printf("case\tM\tK\tN\tthreads\tus_median\tgflops\n");
  for (const auto& c : cases)
    for (int threads : {1, 2}) {
      Graph g;
      auto a = g.constant(random_tensor(c.ta ? Shape{c.k, c.m} : Shape{c.m, c.k}, 1));
      auto b = g.constant(random_tensor(c.tb ? Shape{c.n, c.k} : Shape{c.k, c.n}, 2));
      auto y = matmul(a, b, c.ta, c.tb);
      Session s(g, {.num_threads = threads});
      s.run({y});
      std::vector<double> us;
      for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        s.run({y});
        us.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      std::sort(us.begin(), us.end());
      const double med = us[us.size() / 2];
      const double flops =
          2.0 * static_cast<double>(c.m) * static_cast<double>(c.k) * static_cast<double>(c.n);
      std::printf("%s\t%ld\t%ld\t%ld\t%d\t%.1f\t%.1f\n", c.name, static_cast<long>(c.m),
                  static_cast<long>(c.k), static_cast<long>(c.n), threads, med, flops / med / 1e3);
    }
  return 0;
}
