// Tests of MaxPool2D and MaxPoolGrad (src/ops/conv_ops.cpp), against a naive
// reference (conv_test_util.h), central finite differences, and for bitwise
// determinism across thread counts.
#include <gtest/gtest.h>

#include "conv_test_util.h"

namespace ringflow {
namespace {

using namespace conv_test;  // the references and helpers of this test family

// --- MaxPool2D ---------------------------------------------------------------

TEST(MaxPool2D, ForwardAndGradMatchReference) {
  std::uint64_t seed = 300;
  for (const Conv& cv : pool_cases()) {
    SCOPED_TRACE(cv.name());
    const Tensor x = random_tensor(cv.x_shape(), seed++);
    const Tensor dy = random_tensor(cv.y_shape(), seed++);
    PoolGraph pg(cv);
    Session sess(pg.g, {.num_threads = 2});
    const auto out = sess.run({pg.y, pg.dx}, {{pg.x, x}, {pg.dy, dy}});
    ASSERT_EQ(out[0].shape(), cv.y_shape());
    ASSERT_EQ(out[1].shape(), cv.x_shape());
    const PoolRef ref = ref_pool(cv, x);
    std::vector<double> dx_ref(static_cast<std::size_t>(x.num_elements()), 0.0);
    for (std::size_t o = 0; o < ref.y.size(); ++o) {
      EXPECT_EQ(out[0].data<float>()[o], ref.y[o]) << "y element " << o;
      dx_ref[static_cast<std::size_t>(ref.argmax[o])] += dy.data<float>()[o];
    }
    expect_near_all(out[1], dx_ref, 1e-6, "dx");
  }
}

TEST(MaxPool2D, StaticShapes) {
  Graph g;
  auto x = g.placeholder("x", {-1, 7, 5, 3});
  EXPECT_EQ(max_pool2d(x).shape(), Shape({-1, 3, 2, 3}));
  EXPECT_EQ(max_pool2d(x, 2, 2, Padding::same).shape(), Shape({-1, 4, 3, 3}));
  EXPECT_EQ(max_pool2d(x, 3, 1, Padding::same).shape(), Shape({-1, 7, 5, 3}));
}

// Ties: the first maximum in row-major window order takes the gradient.
TEST(MaxPool2D, TiesGoToFirstMaximum) {
  Graph g;
  auto x = g.placeholder("x", {1, 4, 4, 1});
  auto y = max_pool2d(x, 2, 2, Padding::valid);
  auto dy = g.placeholder("dy", {1, 2, 2, 1});
  auto dx = g.add_op("MaxPoolGrad", {x, dy},
                     {{"window", I64{2}}, {"stride", I64{2}}, {"padding", std::string("VALID")}});
  const Tensor xv = Tensor::from_vector({1, 4, 4, 1}, {1, 1, 0, 5,  //
                                                       1, 1, 5, 5,  //
                                                       2, 0, 7, 3,  //
                                                       0, 2, 7, 7});
  const Tensor dyv = Tensor::from_vector({1, 2, 2, 1}, {10, 20, 30, 40});
  Session sess(g, {.num_threads = 1});
  const auto out = sess.run({y, dx}, {{x, xv}, {dy, dyv}});
  EXPECT_EQ(std::vector<float>(out[0].flat<float>().begin(), out[0].flat<float>().end()),
            (std::vector<float>{1, 5, 2, 7}));
  EXPECT_EQ(std::vector<float>(out[1].flat<float>().begin(), out[1].flat<float>().end()),
            (std::vector<float>{10, 0, 0, 20,  //
                                0, 0, 0, 0,    //
                                30, 0, 40, 0,  //
                                0, 0, 0, 0}));
}

// Central differences of sum(maxpool(x) * w), on inputs spaced far apart
// (more than 2 eps) so that no maximum changes under the perturbation.
TEST(MaxPool2D, GradMatchesFiniteDifferences) {
  const float eps = 1e-2f;
  for (const Conv& cv : {Conv{2, 7, 5, 3, 3, 3, 3, 2, Padding::same},
                         Conv{2, 7, 5, 3, 2, 2, 3, 1, Padding::valid}}) {
    SCOPED_TRACE(cv.name());
    Tensor x(DType::f32, cv.x_shape());
    const I64 n = x.num_elements();
    for (I64 i = 0; i < n; ++i)  // a fixed permutation of 0, 0.1, 0.2, ...
      x.data<float>()[i] = 0.1f * static_cast<float>((i * 37) % n) - 5.0f;
    const Tensor w = random_tensor(cv.y_shape(), 77);
    PoolGraph pg(cv);
    Session sess(pg.g, {.num_threads = 1});
    auto loss = [&] {
      const Tensor yv = sess.run({pg.y}, {{pg.x, x}})[0];
      double s = 0;
      for (I64 i = 0; i < yv.num_elements(); ++i)
        s += double(yv.data<float>()[i]) * w.data<float>()[i];
      return s;
    };
    const Tensor dx = sess.run({pg.dx}, {{pg.x, x}, {pg.dy, w}})[0];
    for (I64 i = 0; i < n; ++i) {
      float* p = x.data<float>() + i;
      const float saved = *p;
      *p = saved + eps;
      const double up = loss();
      *p = saved - eps;
      const double down = loss();
      *p = saved;
      const double numeric = (up - down) / (2.0 * eps);
      EXPECT_NEAR(dx.data<float>()[i], numeric, 1e-2 * (1.0 + std::abs(numeric))) << i;
    }
  }
}

TEST(MaxPool2D, GradientBuilderEmitsMaxPoolGrad) {
  Graph g;
  auto x = g.placeholder("x", {-1, 7, 5, 3});
  auto y = max_pool2d(x, 3, 2, Padding::same);
  auto dy = g.placeholder("dy", {-1, 4, 3, 3});
  GradContext ctx{g, y.node(), {dy}};
  const auto in_grads = OpRegistry::global().get("MaxPool2D").grad(ctx);
  ASSERT_EQ(in_grads.size(), 1u);
  EXPECT_EQ(in_grads[0].node().op, "MaxPoolGrad");
  EXPECT_EQ(in_grads[0].node().attrs.get_int("window"), 3);
  EXPECT_EQ(in_grads[0].node().attrs.get_int("stride"), 2);
  EXPECT_EQ(in_grads[0].node().attrs.get<std::string>("padding"), "SAME");
  EXPECT_EQ(in_grads[0].shape(), Shape({-1, 7, 5, 3}));
}

TEST(MaxPool2D, DeterministicAcrossThreads) {
  const Conv cv{16, 14, 14, 8, 3, 3, 8, 1, Padding::same};  // overlapping windows
  const Tensor x = random_tensor(cv.x_shape(), 5);
  const Tensor dy = random_tensor(cv.y_shape(), 6);
  PoolGraph pg(cv);
  Session one(pg.g, {.num_threads = 1});
  Session two(pg.g, {.num_threads = 2});
  const auto a = one.run({pg.y, pg.dx}, {{pg.x, x}, {pg.dy, dy}});
  const auto b = two.run({pg.y, pg.dx}, {{pg.x, x}, {pg.dy, dy}});
  EXPECT_TRUE(bitwise_equal(a[0], b[0]));
  EXPECT_TRUE(bitwise_equal(a[1], b[1]));
}

}  // namespace
}  // namespace ringflow
