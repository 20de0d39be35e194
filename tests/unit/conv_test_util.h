// Shared by the convolution-family tests: naive nested-loop references
// written from the TF definitions (accumulating in double), small graph
// builders and the test cases.
#pragma once

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

namespace ringflow::conv_test {

using I64 = std::int64_t;

// --- helpers ---------------------------------------------------------------

inline Tensor random_tensor(Shape shape, std::uint64_t seed) {
  Tensor t(DType::f32, std::move(shape));
  auto v = t.flat<float>();
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = 2.0f * random::uniform01(seed, 7, i) - 1.0f;  // [-1, 1)
  return t;
}

inline const char* pad_str(Padding p) {
  return p == Padding::same ? "SAME" : "VALID";
}

// TF output size and leading pad along one dim, written independently of the op.
struct Dim {
  I64 out, pad;
};
inline Dim tf_dim(I64 in, I64 k, I64 stride, Padding p) {
  if (p == Padding::valid) return {(in - k + stride) / stride, 0};  // ceil((in - k + 1) / s)
  const I64 out = (in + stride - 1) / stride;
  const I64 total = std::max<I64>((out - 1) * stride + k - in, 0);
  return {out, total / 2};
}

// Row-major NHWC / HWIO indexing.
inline I64 at4(const Shape& s, I64 a, I64 b, I64 c, I64 d) {
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
inline std::vector<double> ref_conv(const Conv& cv, const Tensor& x, const Tensor& f) {
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
inline std::vector<double> ref_conv_dx(const Conv& cv, const Tensor& f, const Tensor& dy) {
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
inline std::vector<double> ref_conv_df(const Conv& cv, const Tensor& x, const Tensor& dy) {
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
inline PoolRef ref_pool(const Conv& cv, const Tensor& x) {
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

inline void expect_near_all(const Tensor& got, const std::vector<double>& want, double tol,
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

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.num_bytes()) == 0;
}

inline AttrMap conv_attrs(I64 stride, Padding p) {
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

// Cin = 3 takes the direct kernels of conv_direct.h, Cin = 5 im2col + GEMM.
inline std::vector<Conv> small_cases() {
  std::vector<Conv> cases;
  const I64 kernels[][2] = {{3, 3}, {5, 5}, {2, 4}, {1, 1}};
  for (I64 cin : {3, 5})
    for (Padding p : {Padding::same, Padding::valid})
      for (I64 s : {1, 2, 3})
        for (const auto& k : kernels) cases.push_back({2, 7, 5, cin, k[0], k[1], 4, s, p});
  return cases;
}

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

inline std::vector<Conv> pool_cases() {
  std::vector<Conv> cases;
  for (Padding p : {Padding::same, Padding::valid})
    for (I64 win : {1, 2, 3})
      for (I64 s : {1, 2, 3}) cases.push_back({2, 7, 5, 3, win, win, 3, s, p});
  cases.push_back({3, 28, 28, 32, 2, 2, 32, 2, Padding::valid});  // the CNN's pools
  cases.push_back({3, 14, 14, 64, 2, 2, 64, 2, Padding::same});
  return cases;
}

}  // namespace ringflow::conv_test
