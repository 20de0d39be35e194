// Tests of Conv2D and its backprops (src/ops/conv_ops.cpp), against naive
// nested-loop references (conv_test_util.h), central finite differences, and
// for bitwise determinism across runs and thread counts. Shapes are odd on
// purpose (7x5 images, 2x4 kernels, strides that do not divide) so every
// padding case is hit, for both the direct kernels (conv_direct.h, at most 4
// input channels) and im2col + GEMM; a few larger cases reach the GEMM
// kernels' multi-chunk, multi-group and multi-slab paths, and the direct
// kernels' whole and partial packets of output channels.
#include <gtest/gtest.h>

#include "conv_test_util.h"

namespace ringflow {
namespace {

using namespace conv_test;  // the references and helpers of this test family

// --- Conv2D ----------------------------------------------------------------

TEST(Conv2D, StaticShapeKeepsUnknownBatch) {
  Graph g;
  auto x = g.placeholder("x", {-1, 7, 5, 3});
  auto f = g.variable("f", {3, 3, 3, 4}, init::glorot_uniform(1));
  EXPECT_EQ(conv2d(x, f, 1, Padding::same).shape(), Shape({-1, 7, 5, 4}));
  EXPECT_EQ(conv2d(x, f, 2, Padding::same).shape(), Shape({-1, 4, 3, 4}));
  EXPECT_EQ(conv2d(x, f, 1, Padding::valid).shape(), Shape({-1, 5, 3, 4}));
  EXPECT_EQ(conv2d(x, f, 2, Padding::valid).shape(), Shape({-1, 3, 2, 4}));
}

TEST(Conv2D, ForwardMatchesReference) {
  std::uint64_t seed = 1;
  for (const Conv& cv : small_cases()) {
    SCOPED_TRACE(cv.name());
    const Tensor x = random_tensor(cv.x_shape(), seed++);
    const Tensor f = random_tensor(cv.f_shape(), seed++);
    ConvGraph cg(cv, f);
    Session sess(cg.g, {.num_threads = 2});
    const Tensor y = sess.run({cg.y}, {{cg.x, x}})[0];
    EXPECT_EQ(y.shape(), cv.y_shape());
    expect_near_all(y, ref_conv(cv, x, f), 1e-5, "y");
  }
}

TEST(Conv2D, BackpropsMatchReference) {
  std::uint64_t seed = 100;
  for (const Conv& cv : small_cases()) {
    SCOPED_TRACE(cv.name());
    const Tensor x = random_tensor(cv.x_shape(), seed++);
    const Tensor f = random_tensor(cv.f_shape(), seed++);
    const Tensor dy = random_tensor(cv.y_shape(), seed++);
    ConvGraph cg(cv, f);
    Session sess(cg.g, {.num_threads = 2});
    const auto out = sess.run({cg.dx, cg.df}, {{cg.x, x}, {cg.dy, dy}});
    EXPECT_EQ(out[0].shape(), cv.x_shape());
    EXPECT_EQ(out[1].shape(), cv.f_shape());
    expect_near_all(out[0], ref_conv_dx(cv, f, dy), 1e-5, "dx");
    expect_near_all(out[1], ref_conv_df(cv, x, dy), 1e-5, "df");
  }
}

// Shapes that reach the GEMM kernels' multi-chunk (one image split into
// several GEMMs), multi-group and multi-slab paths, and the direct kernels'.
std::vector<Conv> large_cases() {
  return {
      {3, 40, 40, 8, 5, 5, 16, 1, Padding::same},  // 1600 rows per image, K = 200: chunks
      {6, 14, 14, 32, 5, 5, 8, 1, Padding::same},  // K = 800: one group per image, 6 slabs
      {20, 28, 28, 1, 5, 5, 4, 1, Padding::same},  // Cin = 1: direct kernels, channel tails
      {5, 33, 31, 6, 4, 3, 5, 2, Padding::valid},  // odd sizes, even kernel, stride 2
      {40, 9, 9, 4, 3, 3, 3, 1, Padding::valid},   // many small images (direct: Cin = 4)
      // Few input channels take the direct kernels (conv_direct.h): whole
      // packets of output channels, packets plus leftover channels, output
      // rows that are not a whole number of 8-pixel tiles.
      {4, 28, 28, 1, 5, 5, 32, 1, Padding::same},  // the CNN's first layer
      {3, 13, 11, 3, 3, 4, 37, 2, Padding::same},
      {2, 12, 9, 2, 5, 3, 16, 1, Padding::valid},
  };
}

TEST(Conv2D, LargeShapesMatchReference) {
  std::uint64_t seed = 500;
  for (const Conv& cv : large_cases()) {
    SCOPED_TRACE(cv.name());
    const Tensor x = random_tensor(cv.x_shape(), seed++);
    const Tensor f = random_tensor(cv.f_shape(), seed++);
    const Tensor dy = random_tensor(cv.y_shape(), seed++);
    ConvGraph cg(cv, f);
    Session sess(cg.g, {.num_threads = 2});
    const auto out = sess.run({cg.y, cg.dx, cg.df}, {{cg.x, x}, {cg.dy, dy}});
    expect_near_all(out[0], ref_conv(cv, x, f), 1e-4, "y");
    expect_near_all(out[1], ref_conv_dx(cv, f, dy), 1e-4, "dx");
    expect_near_all(out[2], ref_conv_df(cv, x, dy), 1e-4, "df");
  }
}

TEST(Conv2D, ZeroSizeBatch) {
  const Conv cv{0, 7, 5, 3, 3, 3, 4, 1, Padding::same};
  const Tensor f = random_tensor(cv.f_shape(), 3);
  ConvGraph cg(cv, f);
  Session sess(cg.g, {.num_threads = 2});
  const Tensor x(DType::f32, cv.x_shape());
  const Tensor dy(DType::f32, cv.y_shape());
  const auto out = sess.run({cg.y, cg.dx, cg.df}, {{cg.x, x}, {cg.dy, dy}});
  EXPECT_EQ(out[0].shape(), Shape({0, 7, 5, 4}));
  EXPECT_EQ(out[1].shape(), Shape({0, 7, 5, 3}));
  ASSERT_EQ(out[2].shape(), cv.f_shape());
  for (float v : out[2].flat<float>()) EXPECT_EQ(v, 0.0f);
}

// Central differences of L(x, f) = sum(y * w) with y = conv2d(x, f), against
// the backprops evaluated at dy = w.
TEST(Conv2D, BackpropsMatchFiniteDifferences) {
  const float eps = 1e-2f;
  std::uint64_t seed = 900;
  for (const Conv& cv :
       {Conv{2, 7, 5, 3, 3, 3, 4, 1, Padding::same}, Conv{2, 7, 5, 3, 5, 5, 4, 2, Padding::same},
        Conv{2, 7, 5, 3, 3, 2, 4, 2, Padding::valid}}) {
    SCOPED_TRACE(cv.name());
    Tensor x = random_tensor(cv.x_shape(), seed++);
    Tensor fv = random_tensor(cv.f_shape(), seed++);
    const Tensor w = random_tensor(cv.y_shape(), seed++);

    Graph g;
    auto xp = g.placeholder("x", {-1, cv.h, cv.w, cv.cin});
    auto fp = g.placeholder("f", cv.f_shape());
    auto y = conv2d(xp, fp, static_cast<int>(cv.stride), cv.pad);
    auto dyp = g.placeholder("dy", cv.y_shape());
    auto dx = g.add_op("Conv2DBackpropInput", {xp, fp, dyp}, conv_attrs(cv.stride, cv.pad));
    auto df = g.add_op("Conv2DBackpropFilter", {xp, fp, dyp}, conv_attrs(cv.stride, cv.pad));
    Session sess(g, {.num_threads = 1});
    auto loss = [&] {
      const Tensor yv = sess.run({y}, {{xp, x}, {fp, fv}})[0];
      double s = 0;
      for (I64 i = 0; i < yv.num_elements(); ++i)
        s += double(yv.data<float>()[i]) * w.data<float>()[i];
      return s;
    };
    const auto grads = sess.run({dx, df}, {{xp, x}, {fp, fv}, {dyp, w}});
    for (int which = 0; which < 2; ++which) {
      Tensor& v = which == 0 ? x : fv;
      const float* analytic = grads[static_cast<std::size_t>(which)].data<float>();
      for (I64 i = 0; i < v.num_elements(); ++i) {
        float* p = v.data<float>() + i;
        const float saved = *p;
        *p = saved + eps;
        const double up = loss();
        *p = saved - eps;
        const double down = loss();
        *p = saved;
        const double numeric = (up - down) / (2.0 * eps);
        EXPECT_NEAR(analytic[i], numeric, 1e-2 * (1.0 + std::abs(numeric)))
            << (which == 0 ? "dx" : "df") << " element " << i;
      }
    }
  }
}

// Conv2D's registered gradient builder emits the two backprops with the
// forward's attributes, and they compute d(sum(y * w)).
TEST(Conv2D, GradientBuilderEmitsBackprops) {
  const Conv cv{2, 7, 5, 3, 3, 3, 4, 2, Padding::same};
  const Tensor x = random_tensor(cv.x_shape(), 41);
  const Tensor f = random_tensor(cv.f_shape(), 42);
  const Tensor w = random_tensor(cv.y_shape(), 43);
  Graph g;
  auto xp = g.placeholder("x", {-1, 7, 5, 3});
  auto fc = g.constant(f, "f");
  auto y = conv2d(xp, fc, 2, Padding::same);
  auto dyp = g.placeholder("dy", {-1, 4, 3, 4});
  GradContext ctx{g, y.node(), {dyp}};
  const auto in_grads = OpRegistry::global().get("Conv2D").grad(ctx);
  ASSERT_EQ(in_grads.size(), 2u);
  EXPECT_EQ(in_grads[0].node().op, "Conv2DBackpropInput");
  EXPECT_EQ(in_grads[1].node().op, "Conv2DBackpropFilter");
  EXPECT_EQ(in_grads[0].shape(), Shape({-1, 7, 5, 3}));
  EXPECT_EQ(in_grads[1].shape(), cv.f_shape());
  Session sess(g, {.num_threads = 2});
  const auto out = sess.run(in_grads, {{xp, x}, {dyp, w}});
  expect_near_all(out[0], ref_conv_dx(cv, f, w), 1e-5, "dx");
  expect_near_all(out[1], ref_conv_df(cv, x, w), 1e-5, "df");
}

// Through autodiff: loss = reduce_sum(conv2d(x, f) * w).
TEST(Conv2D, GradientsThroughAutodiff) {
  const Conv cv{2, 7, 5, 3, 3, 3, 4, 1, Padding::same};
  const Tensor xv = random_tensor(cv.x_shape(), 51);
  const Tensor w = random_tensor(cv.y_shape(), 52);
  Graph g;
  auto x = g.placeholder("x", {2, 7, 5, 3});
  auto f = g.variable("f", cv.f_shape(), init::glorot_uniform(1));
  auto loss = reduce_sum(conv2d(x, f, 1, Padding::same) * g.constant(w, "w"));
  const auto grads = gradients(loss, {x, f});
  Session sess(g, {.num_threads = 2});
  const auto out = sess.run(grads, {{x, xv}});
  const Tensor fv = sess.variable(f).clone();
  expect_near_all(out[0], ref_conv_dx(cv, fv, w), 1e-5, "dx");
  expect_near_all(out[1], ref_conv_df(cv, xv, w), 1e-5, "df");
}

// Same inputs: bitwise the same outputs on every run and for 1 or 2 threads.
TEST(Conv2D, DeterministicAcrossRunsAndThreads) {
  std::uint64_t seed = 700;
  for (const Conv& cv : large_cases()) {
    SCOPED_TRACE(cv.name());
    const Tensor x = random_tensor(cv.x_shape(), seed++);
    const Tensor f = random_tensor(cv.f_shape(), seed++);
    const Tensor dy = random_tensor(cv.y_shape(), seed++);
    ConvGraph cg(cv, f);
    const FeedList feeds{{cg.x, x}, {cg.dy, dy}};
    Session one(cg.g, {.num_threads = 1});
    Session two(cg.g, {.num_threads = 2});
    const auto a = one.run({cg.y, cg.dx, cg.df}, feeds);
    const auto b = two.run({cg.y, cg.dx, cg.df}, feeds);
    const auto c = two.run({cg.y, cg.dx, cg.df}, feeds);
    for (std::size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(bitwise_equal(a[i], b[i])) << "output " << i << ": 1 vs 2 threads";
      EXPECT_TRUE(bitwise_equal(b[i], c[i])) << "output " << i << ": two runs";
    }
  }
}

// --- shape errors ------------------------------------------------------------

TEST(Conv2D, ChannelMismatchNamesBothNodes) {
  Graph g;
  auto x = g.placeholder("images", {-1, 7, 5, 3});
  auto f = g.variable("kernel", {3, 3, 2, 4}, init::glorot_uniform(1));
  const std::string msg = shape_error_of([&] { conv2d(x, f); });
  EXPECT_NE(msg.find("images"), std::string::npos) << msg;
  EXPECT_NE(msg.find("kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Conv2D"), std::string::npos) << msg;
}

TEST(Conv2D, BadRanksAndSizesAreShapeErrors) {
  Graph g;
  auto x3 = g.placeholder("flat_images", {-1, 7, 5});
  auto x = g.placeholder("images", {-1, 7, 5, 3});
  auto f = g.variable("kernel", {3, 3, 3, 4}, init::glorot_uniform(1));
  auto f3 = g.variable("kernel3", {3, 3, 3}, init::glorot_uniform(1));
  auto big = g.variable("big_kernel", {9, 3, 3, 4}, init::glorot_uniform(1));
  std::string msg = shape_error_of([&] { conv2d(x3, f); });
  EXPECT_NE(msg.find("flat_images"), std::string::npos) << msg;
  EXPECT_NE(msg.find("kernel"), std::string::npos) << msg;
  msg = shape_error_of([&] { conv2d(x, f3); });
  EXPECT_NE(msg.find("kernel3"), std::string::npos) << msg;
  msg = shape_error_of([&] { conv2d(x, big, 1, Padding::valid); });  // 9 > 7 rows
  EXPECT_NE(msg.find("VALID"), std::string::npos) << msg;
  EXPECT_NO_THROW(conv2d(x, big, 1, Padding::same));
  shape_error_of([&] { conv2d(x, f, 0); });  // stride 0
  shape_error_of([&] {
    g.add_op("Conv2D", {x, f}, {{"stride", I64{1}}, {"padding", std::string("FULL")}});
  });
  shape_error_of([&] { max_pool2d(x3); });
  shape_error_of([&] { max_pool2d(x, 8, 1, Padding::valid); });  // window 8 > 7 rows
}

// A channel mismatch that only shows at run time (Cin unknown when built).
TEST(Conv2D, RunTimeChannelMismatchRaises) {
  Graph g;
  auto x = g.placeholder("x", {-1, 7, 5, -1});
  auto f = g.constant(random_tensor({3, 3, 3, 4}, 1), "f");
  auto y = conv2d(x, f);
  EXPECT_EQ(y.shape(), Shape({-1, 7, 5, 4}));
  Session sess(g, {.num_threads = 1});
  EXPECT_THROW(sess.run({y}, {{x, random_tensor({2, 7, 5, 2}, 2)}}), Error);
}

// --- FusedConv2D -----------------------------------------------------------

// act(conv2d(x, f) + b) as one node gives the same bits as the three separate
// nodes, forward and for the gradients of x, f and b.
TEST(FusedConv2D, EqualsConvPlusBiasThenActivationBitwise) {
  std::uint64_t seed = 900;
  std::vector<Conv> cases = small_cases();
  for (const Conv& cv : large_cases()) cases.push_back(cv);
  cases.push_back({2, 5, 4, 0, 3, 3, 4, 1, Padding::same});  // Cin = 0: y = act(bias)
  for (const Conv& cv : cases) {
    for (bool relu : {true, false}) {
      SCOPED_TRACE(cv.name() + (relu ? " relu" : " none"));
      Graph g;
      auto x = g.placeholder("x", {-1, cv.h, cv.w, cv.cin});
      auto f = g.constant(random_tensor(cv.f_shape(), seed++), "f");
      auto b = g.constant(random_tensor({cv.cout}, seed++), "b");
      auto dy = g.placeholder("dy", {-1, cv.dh().out, cv.dw().out, cv.cout});
      const auto s = static_cast<int>(cv.stride);
      Output fused = fused_conv2d(x, f, b, relu, s, cv.pad);
      Output plain = conv2d(x, f, s, cv.pad) + b;
      if (relu) plain = ringflow::relu(plain);
      // loss = sum(y * dy): the gradient reaching y is dy.
      const auto gf = gradients(reduce_sum(mul(fused, dy)), {x, f, b});
      const auto gp = gradients(reduce_sum(mul(plain, dy)), {x, f, b});
      Session sess(g, {.num_threads = 2});
      const auto out = sess.run(
          {fused, gf[0], gf[1], gf[2], plain, gp[0], gp[1], gp[2]},
          {{x, random_tensor(cv.x_shape(), seed++)}, {dy, random_tensor(cv.y_shape(), seed++)}});
      const char* what[] = {"y", "dx", "df", "db"};
      for (std::size_t i = 0; i < 4; ++i) {
        ASSERT_EQ(out[i].shape(), out[i + 4].shape()) << what[i];
        EXPECT_EQ(std::memcmp(out[i].data<float>(), out[i + 4].data<float>(), out[i].num_bytes()),
                  0)
            << what[i] << " differs from the unfused graph";
      }
    }
  }
}

// conv -> relu -> max pool: the fused gradient routes the pool's gradient
// and the relu's in one pass; the bits match the separate ops, for
// non-overlapping (2/2 VALID) and overlapping (3/2 SAME) windows.
TEST(FusedConv2D, ThroughMaxPoolEqualsUnfusedBitwise) {
  std::uint64_t seed = 1300;
  for (const Conv& cv : {Conv{2, 8, 6, 3, 3, 3, 4, 1, Padding::same},
                         Conv{3, 14, 14, 8, 5, 5, 16, 1, Padding::same}}) {
    for (int window : {2, 3}) {
      SCOPED_TRACE(cv.name() + " pool " + std::to_string(window));
      const Padding pool_pad = window == 2 ? Padding::valid : Padding::same;
      Graph g;
      auto x = g.placeholder("x", {-1, cv.h, cv.w, cv.cin});
      auto f = g.constant(random_tensor(cv.f_shape(), seed++), "f");
      auto b = g.constant(random_tensor({cv.cout}, seed++), "b");
      Output fused = max_pool2d(fused_conv2d(x, f, b, true), window, 2, pool_pad);
      Output plain = max_pool2d(ringflow::relu(conv2d(x, f) + b), window, 2, pool_pad);
      auto dy = g.placeholder("dy", fused.shape());
      const auto gf = gradients(reduce_sum(mul(fused, dy)), {x, f, b});
      const auto gp = gradients(reduce_sum(mul(plain, dy)), {x, f, b});
      int fused_pool_grads = 0;  // the fused path was taken
      for (int id = 0; id < g.num_nodes(); ++id)
        fused_pool_grads += g.node(id).op == "MaxPoolGrad" && g.node(id).attrs.has("relu");
      EXPECT_EQ(fused_pool_grads, 1);
      Session sess(g, {.num_threads = 2});
      const Tensor xv = random_tensor(cv.x_shape(), seed++);
      const Tensor yv = sess.run({fused}, {{x, xv}})[0];
      const auto out = sess.run({gf[0], gf[1], gf[2], gp[0], gp[1], gp[2]},
                                {{x, xv}, {dy, random_tensor(yv.shape(), seed++)}});
      const char* what[] = {"dx", "df", "db"};
      for (std::size_t i = 0; i < 3; ++i)
        EXPECT_EQ(std::memcmp(out[i].data<float>(), out[i + 3].data<float>(), out[i].num_bytes()),
                  0)
            << what[i] << " differs from the unfused graph";
    }
  }
}

TEST(FusedConv2D, BadBiasAndActivationAreShapeErrors) {
  Graph g;
  auto x = g.placeholder("images", {-1, 7, 5, 3});
  auto f = g.variable("kernel", {3, 3, 3, 4}, init::glorot_uniform(1));
  auto b5 = g.variable("bias5", {5}, init::zeros());
  auto b = g.variable("bias", {4}, init::zeros());
  std::string msg = shape_error_of([&] { fused_conv2d(x, f, b5, true); });
  EXPECT_NE(msg.find("bias5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 output channels"), std::string::npos) << msg;
  msg = shape_error_of([&] {
    g.add_op("FusedConv2D", {x, f, b},
             {{"stride", I64{1}},
              {"padding", std::string("SAME")},
              {"activation", std::string("gelu")}});
  });
  EXPECT_NE(msg.find("gelu"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ringflow
