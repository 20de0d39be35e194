// A small MLP learns two interleaved spirals through the public API only.
#include <cmath>

#include "ringflow/ops/ops.h"
#include "ringflow/ops/optimizers.h"
#include "test_util.h"

namespace ringflow {
namespace {

TEST(MlpLearns, TwoSpiralsToNearlyPerfectAccuracy) {
  // Two spirals, 200 points each, 2 features.
  constexpr int kPerClass = 200, kN = 2 * kPerClass;
  Tensor features(DType::f32, Shape{kN, 2});
  Tensor labels(DType::i32, Shape{kN});
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < kPerClass; ++i) {
      const double t = 0.25 + 3.0 * M_PI * i / kPerClass;  // angle
      const double r = t / (3.0 * M_PI);
      const double sign = c == 0 ? 1.0 : -1.0;
      const int row = c * kPerClass + i;
      features.data<float>()[2 * row] = static_cast<float>(sign * r * std::cos(t));
      features.data<float>()[2 * row + 1] = static_cast<float>(sign * r * std::sin(t));
      labels.data<std::int32_t>()[row] = c;
    }

  Graph g;
  auto x = g.placeholder("x", {-1, 2});
  auto y = g.placeholder("y", {-1}, DType::i32);
  Output h = x;
  std::int64_t in = 2;
  std::uint64_t seed = 1;
  for (std::int64_t width : {64, 64}) {
    auto w = g.variable("w" + std::to_string(seed), {in, width}, init::he_uniform(seed));
    auto b = g.variable("b" + std::to_string(seed), {width}, init::zeros());
    h = tanh(matmul(h, w) + b);
    in = width;
    ++seed;
  }
  auto wo = g.variable("wo", {in, 2}, init::glorot_uniform(seed));
  auto bo = g.variable("bo", {2}, init::zeros());
  auto logits = matmul(h, wo) + bo;
  auto loss = reduce_mean(sparse_softmax_cross_entropy_with_logits(logits, y));
  auto accuracy = reduce_mean(cast(equal(argmax(logits), y), DType::f32));
  Adam opt(g.scalar(0.01f));
  auto train = opt.minimize(loss);

  Session s(g, {.num_threads = 2});
  const FeedList feed{{x, features}, {y, labels}};
  const float initial = s.run({loss}, feed)[0].scalar_value();
  for (int step = 0; step < 1500; ++step) s.run({}, feed, {train});
  auto out = s.run({loss, accuracy}, feed);
  EXPECT_LT(out[0].scalar_value(), 0.1f * initial);
  EXPECT_GE(out[1].scalar_value(), 0.99f);
}

}  // namespace
}  // namespace ringflow
