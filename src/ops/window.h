// Geometry shared by the sliding-window ops, NHWC: convolutions
// (conv_ops.cpp) and pooling (pool_ops.cpp). Words as in conv_ops.cpp: a row
// is one output pixel (n, oh, ow); its window (patch) starts at
// ih = oh * stride - pad_top, iw = ow * stride - pad_left; sizes and pads
// follow TensorFlow's SAME and VALID rules.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "op_util.h"

namespace ringflow::ops::window {

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// Geometry of one convolution or pooling: the input, window, output and pads.
struct Geom {
  std::int64_t n = 0, h = 0, w = 0, cin = 0;  // x: (N, H, W, Cin)
  std::int64_t kh = 0, kw = 0, cout = 0;      // f: (KH, KW, Cin, Cout); pooling: Cout = Cin
  std::int64_t oh = 0, ow = 0;                // y: (N, OH, OW, Cout)
  std::int64_t stride = 1;
  std::int64_t pad_top = 0, pad_left = 0;

  std::int64_t k() const { return kh * kw * cin; }
  std::int64_t pixels() const { return oh * ow; }  // rows per image
  std::int64_t rows() const { return n * oh * ow; }
};

template <class Ctx>
bool same_padding(const Ctx& c) {
  const auto& p = c.attrs().template get<std::string>("padding");
  if (p == "SAME") return true;
  if (p == "VALID") return false;
  c.fail("attribute padding must be \"SAME\" or \"VALID\", not \"", p, "\"");
}

template <class Ctx>
std::int64_t positive_attr(const Ctx& c, const char* name) {
  const std::int64_t v = c.attrs().get_int(name);
  if (v < 1) c.fail("attribute ", name, " must be at least 1, not ", v);
  return v;
}

// TF output size and leading pad along one spatial dim of size `in` with a
// window of `k`. An unknown `in` (-1, build time only) gives out = -1.
template <class Ctx>
void spatial_dim(const Ctx& c, const char* dim_name, std::int64_t in, std::int64_t k,
                 std::int64_t stride, bool same, std::int64_t& out, std::int64_t& pad) {
  pad = 0;
  if (in < 0 || k < 0) {
    out = -1;
  } else if (same) {
    out = ceil_div(in, stride);
    pad = std::max<std::int64_t>((out - 1) * stride + k - in, 0) / 2;
  } else {
    if (in < k)
      c.fail("with VALID padding the window (", k, ") must fit the input's ", dim_name, " (", in,
             "); use SAME padding or a smaller window");
    out = (in - k) / stride + 1;
  }
}

// The geometry of a convolution of x by f; `c` raises on bad shapes (a
// ShapeContext at build time, where dims may be -1; a KernelContext at run
// time). x_name / f_name describe the inputs in messages.
template <class Ctx>
Geom conv_geom(const Ctx& c, const Shape& x, const Shape& f, const std::string& x_name,
               const std::string& f_name) {
  if (x.rank() != 4 || f.rank() != 4)
    c.fail(x_name, " must be NHWC (N, H, W, Cin) and ", f_name,
           " must be (KH, KW, Cin, Cout): both of rank 4");
  if (x.dim(3) >= 0 && f.dim(2) >= 0 && x.dim(3) != f.dim(2))
    c.fail(x_name, " has Cin = ", x.dim(3), " channels but ", f_name, " expects Cin = ", f.dim(2),
           " (filter dims are KH, KW, Cin, Cout)");
  Geom g;
  g.n = x.dim(0);
  g.h = x.dim(1);
  g.w = x.dim(2);
  g.cin = x.dim(3);
  g.kh = f.dim(0);
  g.kw = f.dim(1);
  g.cout = f.dim(3);
  g.stride = positive_attr(c, "stride");
  const bool same = same_padding(c);
  spatial_dim(c, "height", g.h, g.kh, g.stride, same, g.oh, g.pad_top);
  spatial_dim(c, "width", g.w, g.kw, g.stride, same, g.ow, g.pad_left);
  return g;
}

// The geometry of a pooling window over x: (N, H, W, C).
template <class Ctx>
Geom pool_geom(const Ctx& c, const Shape& x, const std::string& x_name) {
  if (x.rank() != 4) c.fail(x_name, " must be NHWC (N, H, W, C): rank 4");
  Geom g;
  g.n = x.dim(0);
  g.h = x.dim(1);
  g.w = x.dim(2);
  g.cin = g.cout = x.dim(3);
  g.kh = g.kw = positive_attr(c, "window");
  g.stride = positive_attr(c, "stride");
  const bool same = same_padding(c);
  spatial_dim(c, "height", g.h, g.kh, g.stride, same, g.oh, g.pad_top);
  spatial_dim(c, "width", g.w, g.kw, g.stride, same, g.ow, g.pad_left);
  return g;
}

inline std::string tensor_desc(const KernelContext& c, int i, const char* role) {
  return std::string(role) + " (input " + std::to_string(i) + ", '" +
         c.node().inputs.at(static_cast<std::size_t>(i)).name() + "') " + describe(c.input(i));
}

inline void expect_f32(const KernelContext& c, int n) {
  for (int i = 0; i < n; ++i)
    if (c.input(i).dtype() != DType::f32)
      c.fail("input ", i, " must be f32, got ", describe(c.input(i)));
}

// The run-time geometry of a Conv2D-family node: inputs 0 and 1 are x and f.
inline Geom conv_geom(const KernelContext& c) {
  return conv_geom(c, c.input(0).shape(), c.input(1).shape(), tensor_desc(c, 0, "input"),
                   tensor_desc(c, 1, "filter"));
}

// dy must have y's shape (N, OH, OW, C).
inline void expect_out_grad(const KernelContext& c, int i, const Geom& g) {
  const Shape want{g.n, g.oh, g.ow, g.cout};
  if (c.input(i).shape() != want)
    c.fail(tensor_desc(c, i, "output gradient"), " must have the op's output shape ",
           want.to_string());
}

// The valid kw range [lo, hi) of a window starting at column i0 of a row of
// width w (the segment), or [lo, lo) when none of it is inside.
struct Range {
  std::int64_t lo, hi;
};
inline Range valid_range(std::int64_t i0, std::int64_t k, std::int64_t w) {
  const std::int64_t lo = std::clamp<std::int64_t>(-i0, 0, k);
  const std::int64_t hi = std::clamp<std::int64_t>(w - i0, lo, k);
  return {lo, hi};
}

// Calls f(r, n, oh, ow) for the rows r in [r0, r1), in order.
template <class F>
void for_each_row(const Geom& g, std::int64_t r0, std::int64_t r1, F&& f) {
  if (r0 >= r1) return;
  std::int64_t ow = r0 % g.ow, t = r0 / g.ow;
  std::int64_t oh = t % g.oh, n = t / g.oh;
  for (std::int64_t r = r0; r < r1; ++r) {
    f(r, n, oh, ow);
    if (++ow == g.ow) {
      ow = 0;
      if (++oh == g.oh) {
        oh = 0;
        ++n;
      }
    }
  }
}

inline const char* padding_name(Padding p) {
  return p == Padding::same ? "SAME" : "VALID";
}

}  // namespace ringflow::ops::window
