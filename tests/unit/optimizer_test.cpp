// Optimizers against hand-computed updates.
#include <cmath>

#include "ringflow/ops/ops.h"
#include "ringflow/ops/optimizers.h"
#include "test_util.h"

namespace ringflow {
namespace {

// loss = sum(w * c): d loss / dw = c, a constant gradient we can follow by hand.
struct Fixture {
  Graph g;
  Output w = g.variable("w", {3}, init::constant(1.0f));
  Output c = g.constant(Tensor::from_vector(Shape{3}, {0.5f, -1.0f, 2.0f}));
  Output lr = g.placeholder("lr", {});
  Output loss = reduce_sum(w * c);
  std::vector<float> grad = {0.5f, -1.0f, 2.0f};
};

TEST(Optimizers, GradientDescentWithFedLearningRateAndWeightDecay) {
  Fixture f;
  GradientDescent opt(f.lr, 0.1f);
  auto train = opt.minimize(f.loss);
  Session s(f.g, {.num_threads = 1});
  std::vector<float> w = {1, 1, 1};
  for (float lr : {0.1f, 0.05f, 0.2f}) {  // a schedule, fed each step
    s.run({}, {{f.lr, Tensor::scalar(lr)}}, {train});
    for (int i = 0; i < 3; ++i) w[i] -= lr * (f.grad[i] + 0.1f * w[i]);
  }
  testing_util::expect_near(testing_util::values(s.variable(f.w)), w, 1e-6f);
}

TEST(Optimizers, MomentumAndNesterov) {
  for (bool nesterov : {false, true}) {
    Fixture f;
    Momentum opt(f.lr, 0.9f, nesterov);
    auto train = opt.minimize(f.loss);
    Session s(f.g, {.num_threads = 1});
    std::vector<float> w = {1, 1, 1}, a = {0, 0, 0};
    for (int step = 0; step < 4; ++step) {
      s.run({}, {{f.lr, Tensor::scalar(0.1f)}}, {train});
      for (int i = 0; i < 3; ++i) {
        a[i] = 0.9f * a[i] + f.grad[i];
        w[i] -= nesterov ? 0.1f * (f.grad[i] + 0.9f * a[i]) : 0.1f * a[i];
      }
    }
    testing_util::expect_near(testing_util::values(s.variable(f.w)), w, 1e-6f);
    testing_util::expect_near(testing_util::values(s.variable("w/momentum")), a, 1e-6f);
  }
}

TEST(Optimizers, Adam) {
  Fixture f;
  Adam opt(f.lr, 0.9f, 0.999f, 1e-8f);
  auto train = opt.minimize(f.loss);
  Session s(f.g, {.num_threads = 1});
  std::vector<double> w = {1, 1, 1}, m = {0, 0, 0}, v = {0, 0, 0};
  for (int t = 1; t <= 5; ++t) {
    s.run({}, {{f.lr, Tensor::scalar(0.01f)}}, {train});
    const double lr_t = 0.01 * std::sqrt(1 - std::pow(0.999, t)) / (1 - std::pow(0.9, t));
    for (int i = 0; i < 3; ++i) {
      m[i] = 0.9 * m[i] + 0.1 * f.grad[i];
      v[i] = 0.999 * v[i] + 0.001 * f.grad[i] * f.grad[i];
      w[i] -= lr_t * m[i] / (std::sqrt(v[i]) + 1e-8);
    }
  }
  auto got = testing_util::values(s.variable(f.w));
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[i], w[i], 1e-5);
  EXPECT_EQ(s.variable("w/adam_t").scalar_value(), 5.0f);
}

TEST(Optimizers, RejectBadLearningRateTensor) {
  Graph g;
  auto lr = g.placeholder("lr", {2});
  EXPECT_THROW(GradientDescent{lr}, InvalidArgument);
}

}  // namespace
}  // namespace ringflow
