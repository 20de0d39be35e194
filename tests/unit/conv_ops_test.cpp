// Tests of the convolution op family (src/ops/conv_ops.cpp): Conv2D,
// Conv2DBackpropInput, Conv2DBackpropFilter, MaxPool2D, MaxPoolGrad.
//
// Every kernel is checked against a naive nested-loop reference written here
// from the TF definitions (accumulating in double), the backprops also against
// central finite differences of the forward op, and the kernels for bitwise
// determinism across runs and thread counts. Shapes are odd on purpose
// (7x5 images, 2x4 kernels, strides that do not divide) so every padding
// case is hit; a few larger cases reach the kernels' multi-chunk,
// multi-group and multi-slab paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ringflow/graph/gradients.h"
#include "ringflow/graph/graph.h"
#include "ringflow/graph/op_registry.h"
#include "ringflow/ops/ops.h"
#include "ringflow/runtime/session.h"
#include "ringflow/tensor/random.h"
#include "ringflow/tensor/tensor.h"

namespace ringflow {
namespace {

using I64 = std::int64_t;

// --- helpers ---------------------------------------------------------------

Tensor random_tensor(Shape shape, std::uint64_t seed) {
  Tensor t(DType::f32, std::move(shape));
  auto v = t.flat<float>();
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = 2.0f * random::uniform01(seed, 7, i) - 1.0f;  // [-1, 1)
  return t;
}

const char* pad_str(Padding p) {
  return p == Padding::same ? "SAME" : "VALID";
}

// TF output size and leading pad along one dim, written independently of the op.
struct Dim {
  I64 out, pad;
};
Dim tf_dim(I64 in, I64 k, I64 stride, Padding p) {
  if (p == Padding::valid) return {(in - k + stride) / stride, 0};  // ceil((in - k + 1) / s)
  const I64 out = (in + stride - 1) / stride;
  const I64 total = std::max<I64>((out - 1) * stride + k - in, 0);
  return {out, total / 2};
}

// Row-major NHWC / HWIO indexing.
I64 at4(const Shape& s, I64 a, I64 b, I64 c, I64 d) {
  return ((a * s.dim(1) + b) * s.dim(2) + c) * s.dim(3) + d;
}

struct Conv {
  I64 n, h, w, cin, kh, kw, cout, stride;
  Padding pad;
  Shape x_shape() const { return {n, h, w, cin}; }
  Shape f_shape() const { return {kh, kw, cin, cout}; }
  Dim dh() const { return tf_dim(h, kh, stride, pad); }
  Dim dw() const { return tf_dim(w, kw, stride, pad); }
  Shape y_shape() const { return {n, dh().out, dw().out, cout}; }
  std::string name() const {
    return std::to_string(n) + "x" + std::to_string(h) + "x" + std::to_string(w) + "x" +
           std::to_string(cin) + " * " + std::to_string(kh) + "x" + std::to_string(kw) + "x" +
           std::to_string(cout) + " stride " + std::to_string(stride) + " " + pad_str(pad);
  }
};

// Calls f(n, oh, ow, ih, iw, kh, kw) for every in-image tap of the convolution.
template <class F>
void for_each_tap(const Conv& cv, F&& f) {
  const Dim dh = cv.dh(), dw = cv.dw();
  for (I64 n = 0; n < cv.n; ++n)
    for (I64 oh = 0; oh < dh.out; ++oh)
      for (I64 ow = 0; ow < dw.out; ++ow)
        for (I64 kh = 0; kh < cv.kh; ++kh)
          for (I64 kw = 0; kw < cv.kw; ++kw) {
            const I64 ih = oh * cv.stride - dh.pad + kh, iw = ow * cv.stride - dw.pad + kw;
            if (ih < 0 || ih >= cv.h || iw < 0 || iw >= cv.w) continue;
            f(n, oh, ow, ih, iw, kh, kw);
          }
}

// y[n, oh, ow, co] = sum_{kh, kw, ci} x[n, ih, iw, ci] f[kh, kw, ci, co]
std::vector<double> ref_conv(const Conv& cv, const Tensor& x, const Tensor& f) {
  const Shape ys = cv.y_shape();
  std::vector<double> y(static_cast<std::size_t>(ys.num_elements()), 0.0);
  const float* px = x.data<float>();
  const float* pf = f.data<float>();
  for_each_tap(cv, [&](I64 n, I64 oh, I64 ow, I64 ih, I64 iw, I64 kh, I64 kw) {
    for (I64 ci = 0; ci < cv.cin; ++ci)
      for (I64 co = 0; co < cv.cout; ++co)
        y[static_cast<std::size_t>(at4(ys, n, oh, ow, co))] +=
            double(px[at4(x.shape(), n, ih, iw, ci)]) * pf[at4(f.shape(), kh, kw, ci, co)];
  });
  return y;
}

// dx[n, ih, iw, ci] = sum over taps reading it of dy[n, oh, ow, co] f[kh, kw, ci, co]
std::vector<double> ref_conv_dx(const Conv& cv, const Tensor& f, const Tensor& dy) {
  const Shape xs = cv.x_shape();
  std::vector<double> dx(static_cast<std::size_t>(xs.num_elements()), 0.0);
  for_each_tap(cv, [&](I64 n, I64 oh, I64 ow, I64 ih, I64 iw, I64 kh, I64 kw) {
    for (I64 ci = 0; ci < cv.cin; ++ci)
      for (I64 co = 0; co < cv.cout; ++co)
        dx[static_cast<std::size_t>(at4(xs, n, ih, iw, ci))] +=
            double(dy.data<float>()[at4(dy.shape(), n, oh, ow, co)]) *
            f.data<float>()[at4(f.shape(), kh, kw, ci, co)];
  });
  return dx;
}

// df[kh, kw, ci, co] = sum over taps of x[n, ih, iw, ci] dy[n, oh, ow, co]
std::vector<double> ref_conv_df(const Conv& cv, const Tensor& x, const Tensor& dy) {
  const Shape fs = cv.f_shape();
  std::vector<double> df(static_cast<std::size_t>(fs.num_elements()), 0.0);
  for_each_tap(cv, [&](I64 n, I64 oh, I64 ow, I64 ih, I64 iw, I64 kh, I64 kw) {
    for (I64 ci = 0; ci < cv.cin; ++ci)
      for (I64 co = 0; co < cv.cout; ++co)
        df[static_cast<std::size_t>(at4(fs, kh, kw, ci, co))] +=
            double(x.data<float>()[at4(x.shape(), n, ih, iw, ci)]) *
            dy.data<float>()[at4(dy.shape(), n, oh, ow, co)];
  });
  return df;
}

// Max pooling as a conv geometry with Cin = Cout = C and a window x window
// "filter"; the reference also returns the argmax (first max, row-major).
struct PoolRef {
  std::vector<float> y;
  std::vector<I64> argmax;  // flat index into x, per output element
};
PoolRef ref_pool(const Conv& cv, const Tensor& x) {
  const Shape ys = cv.y_shape();
  PoolRef r;
  r.y.assign(static_cast<std::size_t>(ys.num_elements()), -INFINITY);
  r.argmax.assign(r.y.size(), -1);
  for_each_tap(cv, [&](I64 n, I64 oh, I64 ow, I64 ih, I64 iw, I64, I64) {
    for (I64 c = 0; c < cv.cin; ++c) {
      const auto o = static_cast<std::size_t>(at4(ys, n, oh, ow, c));
      const I64 i = at4(x.shape(), n, ih, iw, c);
      if (r.argmax[o] < 0 || x.data<float>()[i] > r.y[o]) {
        r.y[o] = x.data<float>()[i];
        r.argmax[o] = i;
      }
    }
  });
  return r;
}

void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol,
                     const std::string& what) {
  ASSERT_EQ(static_cast<std::size_t>(got.num_elements()), want.size()) << what;
  const float* p = got.data<float>();
  int bad = 0;
  for (std::size_t i = 0; i < want.size() && bad < 5; ++i) {
    if (std::abs(p[i] - want[i]) > tol * (1.0 + std::abs(want[i]))) {
      ADD_FAILURE() << what << ": element " << i << " is " << p[i] << ", want " << want[i];
      ++bad;
    }
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.num_bytes()) == 0;
}

AttrMap conv_attrs(I64 stride, Padding p) {
  return {{"stride", stride}, {"padding", std::string(pad_str(p))}};
}

// A graph with x (placeholder, batch unknown), f (constant) and dy
// (placeholder) computing y = conv2d(x, f) and both backprops from dy.
struct ConvGraph {
  Graph g;
  Output x, f, dy, y, dx, df;
  ConvGraph(const Conv& cv, const Tensor& filter) {
    ops::ensure_registered();
    x = g.placeholder("x", {-1, cv.h, cv.w, cv.cin});
    f = g.constant(filter, "f");
    y = conv2d(x, f, static_cast<int>(cv.stride), cv.pad);
    dy = g.placeholder("dy", {-1, cv.dh().out, cv.dw().out, cv.cout});
    dx = g.add_op("Conv2DBackpropInput", {x, f, dy}, conv_attrs(cv.stride, cv.pad));
    df = g.add_op("Conv2DBackpropFilter", {x, f, dy}, conv_attrs(cv.stride, cv.pad));
  }
};

std::vector<Conv> small_cases() {
  std::vector<Conv> cases;
  const I64 kernels[][2] = {{3, 3}, {5, 5}, {2, 4}, {1, 1}};
  for (Padding p : {Padding::same, Padding::valid})
    for (I64 s : {1, 2, 3})
      for (const auto& k : kernels) cases.push_back({2, 7, 5, 3, k[0], k[1], 4, s, p});
  return cases;
}

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

// Shapes that reach the kernels' multi-chunk (one image split into several
// GEMMs), multi-group and multi-slab paths.
std::vector<Conv> large_cases() {
  return {
      {3, 40, 40, 8, 5, 5, 16, 1, Padding::same},  // 1600 rows per image, K = 200: chunks
      {6, 14, 14, 32, 5, 5, 8, 1, Padding::same},  // K = 800: one group per image, 6 slabs
      {20, 28, 28, 1, 5, 5, 4, 1, Padding::same},  // K = 25: several images per group
      {5, 33, 31, 6, 4, 3, 5, 2, Padding::valid},  // odd sizes, even kernel, stride 2
      {40, 9, 9, 4, 3, 3, 3, 1, Padding::valid},   // many small images
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

template <class F>
std::string shape_error_of(F&& f) {
  try {
    f();
  } catch (const ShapeError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ShapeError raised";
  return "";
}

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

// --- MaxPool2D ---------------------------------------------------------------

struct PoolGraph {
  Graph g;
  Output x, y, dy, dx;
  PoolGraph(const Conv& cv) {
    x = g.placeholder("x", {-1, cv.h, cv.w, cv.cin});
    y = max_pool2d(x, static_cast<int>(cv.kh), static_cast<int>(cv.stride), cv.pad);
    dy = g.placeholder("dy", {-1, cv.dh().out, cv.dw().out, cv.cin});
    dx = g.add_op(
        "MaxPoolGrad", {x, dy},
        {{"window", cv.kh}, {"stride", cv.stride}, {"padding", std::string(pad_str(cv.pad))}});
  }
};

std::vector<Conv> pool_cases() {
  std::vector<Conv> cases;
  for (Padding p : {Padding::same, Padding::valid})
    for (I64 win : {1, 2, 3})
      for (I64 s : {1, 2, 3}) cases.push_back({2, 7, 5, 3, win, win, 3, s, p});
  cases.push_back({3, 28, 28, 32, 2, 2, 32, 2, Padding::valid});  // the CNN's pools
  cases.push_back({3, 14, 14, 64, 2, 2, 64, 2, Padding::same});
  return cases;
}

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
