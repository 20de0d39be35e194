// Forward kernels against hand computations and naive loops, including odd
// and zero-size shapes.
#include <cmath>

#include "ringflow/ops/ops.h"
#include "test_util.h"

namespace ringflow {
namespace {

using testing_util::eval;
using testing_util::expect_near;
using testing_util::ivalues;
using testing_util::random_tensor;
using testing_util::values;

TEST(Ops, BroadcastArithmetic) {
  Graph g;
  auto a = g.constant(Tensor::from_vector(Shape{2, 3}, {1, 2, 3, 4, 5, 6}));
  auto bias = g.constant(Tensor::from_vector(Shape{3}, {10, 20, 30}));
  auto col = g.constant(Tensor::from_vector(Shape{2, 1}, {2, 4}));
  expect_near(values(eval(g, a + bias)), {11, 22, 33, 14, 25, 36});
  expect_near(values(eval(g, a - bias)), {-9, -18, -27, -6, -15, -24});
  expect_near(values(eval(g, a * col)), {2, 4, 6, 16, 20, 24});
  expect_near(values(eval(g, a / col)), {0.5f, 1, 1.5f, 1, 1.25f, 1.5f});
  expect_near(values(eval(g, a * 2.0f)), {2, 4, 6, 8, 10, 12});
  expect_near(values(eval(g, 1.0f - a)), {0, -1, -2, -3, -4, -5});
  expect_near(values(eval(g, bias + a)), {11, 22, 33, 14, 25, 36});
  // (2, 1, 3) with (4, 1): general broadcast to (2, 4, 3)
  auto p = g.constant(Tensor::from_vector(Shape{2, 1, 3}, {1, 2, 3, 4, 5, 6}));
  auto q = g.constant(Tensor::from_vector(Shape{4, 1}, {0, 10, 20, 30}));
  Tensor r = eval(g, p + q);
  ASSERT_EQ(r.shape(), (Shape{2, 4, 3}));
  std::vector<float> want;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 3; ++k) want.push_back(static_cast<float>(i * 3 + k + 1 + 10 * j));
  expect_near(values(r), want);
}

TEST(Ops, BroadcastWithRunTimeBatchAndZeroSize) {
  Graph g;
  auto x = g.placeholder("x", {-1, 3});
  auto b = g.constant(Tensor::from_vector(Shape{3}, {1, 2, 3}));
  auto y = x + b;
  Session s(g, {.num_threads = 2});
  Tensor out = s.run({y}, {{x, Tensor::zeros(DType::f32, Shape{0, 3})}})[0];
  EXPECT_EQ(out.shape(), (Shape{0, 3}));
  out = s.run({y}, {{x, Tensor::filled(Shape{5, 3}, 1.0f)}})[0];
  expect_near(values(out), {2, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 4, 2, 3, 4});
  EXPECT_THROW(s.run({y}, {{x, Tensor::filled(Shape{5, 4}, 1.0f)}}), InvalidArgument);
}

TEST(Ops, UnaryFunctions) {
  Graph g;
  const std::vector<float> in = {-2.0f, -0.5f, 0.0f, 0.5f, 3.0f};
  auto x = g.constant(Tensor::from_vector(Shape{5}, in));
  auto check = [&](Output y, float (*f)(float)) {
    std::vector<float> want;
    for (float v : in) want.push_back(f(v));
    expect_near(values(eval(g, y)), want, 1e-6f);
  };
  check(neg(x), [](float v) { return -v; });
  check(relu(x), [](float v) { return v > 0 ? v : 0.0f; });
  check(sigmoid(x), [](float v) { return 1.0f / (1.0f + std::exp(-v)); });
  check(tanh(x), [](float v) { return std::tanh(v); });
  check(exp(x), [](float v) { return std::exp(v); });
  check(square(x), [](float v) { return v * v; });
  check(identity(x), [](float v) { return v; });
  auto pos = g.constant(Tensor::from_vector(Shape{3}, {0.5f, 1.0f, 4.0f}));
  expect_near(values(eval(g, log(pos))), {std::log(0.5f), 0.0f, std::log(4.0f)});
  // Sigmoid of large magnitudes stays finite.
  auto big = g.constant(Tensor::from_vector(Shape{2}, {-100.0f, 100.0f}));
  expect_near(values(eval(g, sigmoid(big))), {0.0f, 1.0f});
}

TEST(Ops, MatMulAllTransposesAgainstNaiveLoop) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int m = 5, k = 7, n = 3;
      Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, -1, 1, 1);
      Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, -1, 1, 2);
      Graph g;
      auto y = matmul(g.constant(a), g.constant(b), ta, tb);
      Tensor out = eval(g, y);
      ASSERT_EQ(out.shape(), (Shape{m, n}));
      std::vector<float> want;
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int p = 0; p < k; ++p) {
            const float av = ta ? a.data<float>()[p * m + i] : a.data<float>()[i * k + p];
            const float bv = tb ? b.data<float>()[j * k + p] : b.data<float>()[p * n + j];
            s += static_cast<double>(av) * bv;
          }
          want.push_back(static_cast<float>(s));
        }
      expect_near(values(out), want, 1e-5f);
    }
}

TEST(Ops, MatMulLargeIsSplitAcrossThreadsBitwiseEqually) {
  Tensor a = random_tensor(Shape{200, 300}, -1, 1, 3);
  Tensor b = random_tensor(Shape{300, 100}, -1, 1, 4);
  Graph g;
  auto y = matmul(g.constant(a), g.constant(b));
  EXPECT_EQ(values(eval(g, y, {}, 1)), values(eval(g, y, {}, 2)));
}

TEST(Ops, MatMulZeroSizes) {
  Graph g;
  auto x = g.placeholder("x", {-1, 4});
  auto w = g.constant(Tensor::filled(Shape{4, 2}, 1.0f));
  auto y = matmul(x, w);
  Session s(g, {.num_threads = 1});
  EXPECT_EQ(s.run({y}, {{x, Tensor::zeros(DType::f32, Shape{0, 4})}})[0].shape(), (Shape{0, 2}));
  Graph g2;
  auto e = matmul(g2.constant(Tensor::zeros(DType::f32, Shape{2, 0})),
                  g2.constant(Tensor::zeros(DType::f32, Shape{0, 3})));
  expect_near(values(eval(g2, e)), {0, 0, 0, 0, 0, 0});
}

TEST(Ops, Reductions) {
  Graph g;
  auto x = g.constant(Tensor::from_vector(Shape{2, 3}, {1, 2, 3, 4, 5, 6}));
  expect_near(values(eval(g, reduce_sum(x))), {21});
  expect_near(values(eval(g, reduce_mean(x))), {3.5f});
  expect_near(values(eval(g, reduce_sum(x, 0))), {5, 7, 9});
  expect_near(values(eval(g, reduce_sum(x, 1))), {6, 15});
  expect_near(values(eval(g, reduce_mean(x, -1))), {2, 5});
  EXPECT_EQ(eval(g, reduce_sum(x, 1, true)).shape(), (Shape{2, 1}));
  EXPECT_EQ(eval(g, reduce_sum(x, kAllAxes, true)).shape(), (Shape{1, 1}));
  auto empty = g.constant(Tensor::zeros(DType::f32, Shape{0, 3}));
  expect_near(values(eval(g, reduce_sum(empty, 0))), {0, 0, 0});
  expect_near(values(eval(g, reduce_mean(empty))), {0});
  EXPECT_THROW(reduce_sum(x, 2), ShapeError);
}

TEST(Ops, ArgMaxEqualCastAccuracy) {
  Graph g;
  auto logits = g.constant(Tensor::from_vector(Shape{3, 3}, {0, 5, 1, 9, 2, 2, 1, 1, 3}));
  auto labels = g.constant(Tensor::from_vector_i32(Shape{3}, {1, 0, 0}));
  auto pred = argmax(logits);
  EXPECT_EQ(ivalues(eval(g, pred)), (std::vector<std::int32_t>{1, 0, 2}));
  auto acc = reduce_mean(cast(equal(pred, labels), DType::f32));
  expect_near(values(eval(g, acc)), {2.0f / 3.0f});
  // Ties go to the first index.
  auto tie = g.constant(Tensor::from_vector(Shape{1, 3}, {2, 2, 1}));
  EXPECT_EQ(ivalues(eval(g, argmax(tie))), (std::vector<std::int32_t>{0}));
  EXPECT_EQ(ivalues(eval(g, argmax(logits, 0))), (std::vector<std::int32_t>{1, 0, 2}));
}

TEST(Ops, ReshapeResolvesMinusOne) {
  Graph g;
  auto x = g.placeholder("x", {-1, 6});
  auto y = reshape(x, {-1, 2, 3});
  Session s(g, {.num_threads = 1});
  Tensor in = random_tensor(Shape{4, 6}, 0, 1, 5);
  Tensor out = s.run({y}, {{x, in}})[0];
  EXPECT_EQ(out.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(values(out), values(in));
  EXPECT_THROW(reshape(g.constant(Tensor::zeros(DType::f32, Shape{5})), {2, -1}), ShapeError);
  EXPECT_THROW(reshape(x, {-1, -1}), ShapeError);
}

TEST(Ops, SoftmaxAndCrossEntropyAreStable) {
  Graph g;
  auto logits = g.constant(Tensor::from_vector(Shape{2, 3}, {1, 2, 3, 1000, 1000, 0}));
  auto labels = g.constant(Tensor::from_vector_i32(Shape{2}, {2, 0}));
  Tensor sm = eval(g, softmax(logits));
  const float z = std::exp(1.0f) + std::exp(2.0f) + std::exp(3.0f);
  expect_near(values(sm),
              {std::exp(1.0f) / z, std::exp(2.0f) / z, std::exp(3.0f) / z, 0.5f, 0.5f, 0.0f});
  Tensor loss = eval(g, sparse_softmax_cross_entropy_with_logits(logits, labels));
  expect_near(values(loss), {std::log(z) - 3.0f, std::log(2.0f)});
  for (float v : values(loss)) EXPECT_TRUE(std::isfinite(v));
}

TEST(Ops, CrossEntropyRejectsLabelOutOfRange) {
  Graph g;
  auto logits = g.constant(Tensor::zeros(DType::f32, Shape{2, 3}));
  auto labels = g.constant(Tensor::from_vector_i32(Shape{2}, {1, 3}));
  try {
    eval(g, sparse_softmax_cross_entropy_with_logits(logits, labels));
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("label 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sparse_softmax_cross_entropy_with_logits(
                   logits, g.constant(Tensor::zeros(DType::f32, Shape{2}))),
               ShapeError);
}

TEST(Ops, DropoutIsSeededScaledAndSwitchable) {
  Graph g;
  auto x = g.constant(Tensor::filled(Shape{1000}, 1.0f));
  auto training = placeholder_with_default(g, "training", Tensor::scalar(0.0f));
  auto y = dropout(x, 0.4f, training, 42);
  Session s(g, {.num_threads = 2});
  EXPECT_EQ(values(s.run({y})[0]), values(Tensor::filled(Shape{1000}, 1.0f)));  // eval: identity
  Tensor t1 = s.run({y}, {{training, Tensor::scalar(1.0f)}})[0];
  Tensor t2 = s.run({y}, {{training, Tensor::scalar(1.0f)}})[0];
  int kept = 0;
  for (float v : values(t1)) {
    EXPECT_TRUE(v == 0.0f || std::abs(v - 1.0f / 0.6f) < 1e-6f);
    kept += v != 0.0f;
  }
  EXPECT_NEAR(kept / 1000.0, 0.6, 0.06);
  EXPECT_NE(values(t1), values(t2));  // a fresh mask each run
  // A new session with the same graph replays the same masks.
  Session s2(g, {.num_threads = 1});
  s2.run({y});
  EXPECT_EQ(values(s2.run({y}, {{training, Tensor::scalar(1.0f)}})[0]), values(t1));
  EXPECT_THROW(dropout(x, 1.0f, training, 1), ShapeError);
}

TEST(Ops, AddNAndAssign) {
  Graph g;
  auto a = g.constant(Tensor::from_vector(Shape{2}, {1, 2}));
  auto b = g.constant(Tensor::from_vector(Shape{2}, {10, 20}));
  expect_near(values(eval(g, add_n({a, b, a}))), {12, 24});
  auto v = g.variable("v", {2}, init::constant(5.0f));
  auto upd = assign(v, a + b);
  Session s(g, {.num_threads = 1});
  expect_near(values(s.run({v})[0]), {5, 5});
  s.run({}, {}, {upd});
  expect_near(values(s.variable(v)), {11, 22});
  expect_near(values(s.run({v})[0]), {11, 22});
}

TEST(Ops, InitializersAreSeededAndScaled) {
  Tensor a = init::glorot_uniform(7).make(Shape{300, 200});
  Tensor b = init::glorot_uniform(7).make(Shape{300, 200});
  Tensor c = init::glorot_uniform(8).make(Shape{300, 200});
  EXPECT_EQ(values(a), values(b));
  EXPECT_NE(values(a), values(c));
  const float limit = std::sqrt(6.0f / 500.0f);
  double sum2 = 0;
  for (float v : values(a)) {
    EXPECT_LE(std::abs(v), limit);
    sum2 += v * v;
  }
  EXPECT_NEAR(sum2 / 60000.0, limit * limit / 3.0, 0.05 * limit * limit / 3.0);  // var of U(-l, l)
  Tensor h = init::he_normal(3).make(Shape{5, 5, 32, 64});
  double s2 = 0;
  for (float v : values(h)) s2 += v * v;
  EXPECT_NEAR(s2 / static_cast<double>(h.num_elements()), 2.0 / 800.0, 0.1 * 2.0 / 800.0);
  EXPECT_EQ(values(init::constant(0.1f).make(Shape{2})), (std::vector<float>{0.1f, 0.1f}));
}

}  // namespace
}  // namespace ringflow
