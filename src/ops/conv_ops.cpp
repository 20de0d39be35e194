// Convolution and pooling ops, NHWC: Conv2D with its two backprops
// (Conv2DBackpropInput, Conv2DBackpropFilter), MaxPool2D and MaxPoolGrad.
//
// Shapes: input x (N, H, W, Cin), filter f (KH, KW, Cin, Cout), output y
// (N, OH, OW, Cout). Sizes follow TensorFlow:
//   SAME:  OH = ceil(H / stride), pad_total = max((OH - 1) * stride + KH - H, 0),
//          pad_top = pad_total / 2 (the extra pad goes to the bottom);
//   VALID: OH = ceil((H - KH + 1) / stride), no padding;
// and the same along W (pad_left).
//
// Words used below:
//   row      one output pixel (n, oh, ow), numbered r = (n * OH + oh) * OW + ow.
//            NHWC is row-major, so r is also the pixel's row in y seen as an
//            (R, Cout) matrix, R = N * OH * OW.
//   patch    the KH x KW x Cin window of x that row r reads: ih = oh * stride -
//            pad_top + kh, iw = ow * stride - pad_left + kw. Positions outside x
//            are padding and read as 0.
//   K        KH * KW * Cin, the length of a patch.
//   im2col   writes the patches of a range of rows as the rows of a matrix
//            cols: (rows, K), each laid out (kh, kw, ci): the order of f seen
//            as a (K, Cout) matrix, so the convolution is one GEMM.
//   col2im   the adjoint of im2col: adds each row of a (rows, K) matrix back
//            into the patch positions it came from (padding positions dropped).
//   segment  the valid part kw in [kw_lo, kw_hi) of one patch row kh. It is
//            contiguous in x (pixels are adjacent along W, Cin floats each), so
//            im2col and col2im move a segment with one copy (or one add loop)
//            and zero-fill the padding beside it: no per-element branches.
//   group    a run of whole images one task handles: several images when they
//            are small, one image otherwise. Groups never share input pixels,
//            so col2im into different groups cannot race.
//   chunk    a range of a group's rows that fits the scratch matrix (about
//            kScratchFloats floats); one GEMM each.
//   slab     a run of groups whose filter-gradient contributions are summed
//            in order into one partial sum; the partials are then added in
//            slab order.
// Groups, chunks and slabs depend only on the shapes, never on the thread
// count, and no kernel uses atomics, so every result is bitwise the same for
// any number of threads.
//
// Maths, with cols = im2col(x): (R, K), f as (K, Cout), y and dy as (R, Cout):
//   y     = cols * f
//   dL/dx = col2im(dy * f^T)
//   dL/df = cols^T * dy = sum over slabs s (in order) of sum over the chunks c of s
//           (in order) of cols_c^T * dy_c
//
// MaxPool2D: y[n, oh, ow, c] = max over the window positions inside x of x.
// Padding positions are ignored (not zeros). On ties the first maximum in
// row-major window order wins; MaxPoolGrad routes dy[n, oh, ow, c] to that
// position, recomputed from x: dx = sum over windows of dy * 1[argmax].
// GCC 12's AVX-512 intrinsics header initialises a variable from itself
// (`__m512 __Y = __Y;`, GCC bug 105593); once Eigen's packet transposes are
// inlined into the GEMMs below, -Wuninitialized flags it. The pragma covers the
// headers only: it must be in force where the intrinsics header is first read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <string>

#include "op_util.h"
#include "ringflow/tensor/eigen.h"
#pragma GCC diagnostic pop

namespace ringflow::ops {

namespace {

// Scratch budget of one im2col chunk, in floats (1 MiB: it and the filter
// stay in L2 while the GEMM runs).
constexpr std::int64_t kScratchFloats = 1 << 18;
// Fewest rows in a chunk: a GEMM shorter than this wastes the microkernel.
constexpr std::int64_t kMinChunkRows = 64;
// At most this many filter-gradient partial sums (slabs), and at most this
// many floats in all of them together.
constexpr std::int64_t kMaxSlabs = 16;
constexpr std::int64_t kPartialFloats = 1 << 22;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
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

std::string tensor_desc(const KernelContext& c, int i, const char* role) {
  return std::string(role) + " (input " + std::to_string(i) + ", '" +
         c.node().inputs.at(static_cast<std::size_t>(i)).name() + "') " + describe(c.input(i));
}

void expect_f32(const KernelContext& c, int n) {
  for (int i = 0; i < n; ++i)
    if (c.input(i).dtype() != DType::f32)
      c.fail("input ", i, " must be f32, got ", describe(c.input(i)));
}

// The run-time geometry of a Conv2D-family node: inputs 0 and 1 are x and f.
Geom conv_geom(const KernelContext& c) {
  return conv_geom(c, c.input(0).shape(), c.input(1).shape(), tensor_desc(c, 0, "input"),
                   tensor_desc(c, 1, "filter"));
}

// dy must have y's shape (N, OH, OW, C).
void expect_out_grad(const KernelContext& c, int i, const Geom& g) {
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
Range valid_range(std::int64_t i0, std::int64_t k, std::int64_t w) {
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

// cols: (r1 - r0, K) <- the patches of rows [r0, r1) of x.
void im2col(const Geom& g, const float* x, std::int64_t r0, std::int64_t r1, float* cols) {
  const std::int64_t k = g.k(), patch_row = g.kw * g.cin, c = g.cin;
  for_each_row(g, r0, r1, [&](std::int64_t r, std::int64_t n, std::int64_t oh, std::int64_t ow) {
    float* dst = cols + (r - r0) * k;
    const float* img = x + n * g.h * g.w * c;
    const std::int64_t ih0 = oh * g.stride - g.pad_top, iw0 = ow * g.stride - g.pad_left;
    const Range seg = valid_range(iw0, g.kw, g.w);
    for (std::int64_t kh = 0; kh < g.kh; ++kh) {
      float* d = dst + kh * patch_row;
      const std::int64_t ih = ih0 + kh;
      if (ih < 0 || ih >= g.h || seg.lo == seg.hi) {
        std::fill_n(d, patch_row, 0.0f);
        continue;
      }
      std::fill_n(d, seg.lo * c, 0.0f);
      std::copy_n(img + (ih * g.w + iw0 + seg.lo) * c, (seg.hi - seg.lo) * c, d + seg.lo * c);
      std::fill_n(d + seg.hi * c, (g.kw - seg.hi) * c, 0.0f);
    }
  });
}

// dx += col2im(cols) for the rows [r0, r1); cols: (r1 - r0, K).
void col2im_add(const Geom& g, const float* cols, std::int64_t r0, std::int64_t r1, float* dx) {
  const std::int64_t k = g.k(), patch_row = g.kw * g.cin, c = g.cin;
  for_each_row(g, r0, r1, [&](std::int64_t r, std::int64_t n, std::int64_t oh, std::int64_t ow) {
    const float* src = cols + (r - r0) * k;
    float* img = dx + n * g.h * g.w * c;
    const std::int64_t ih0 = oh * g.stride - g.pad_top, iw0 = ow * g.stride - g.pad_left;
    const Range seg = valid_range(iw0, g.kw, g.w);
    const std::int64_t len = (seg.hi - seg.lo) * c;
    for (std::int64_t kh = 0; kh < g.kh; ++kh) {
      const std::int64_t ih = ih0 + kh;
      if (ih < 0 || ih >= g.h) continue;
      const float* s = src + kh * patch_row + seg.lo * c;
      float* d = img + (ih * g.w + iw0 + seg.lo) * c;
      for (std::int64_t i = 0; i < len; ++i) d[i] += s[i];
    }
  });
}

// How the rows are cut into groups and chunks (see the opening comment).
struct Plan {
  std::int64_t group = 1;     // images per group (the last group may have fewer)
  std::int64_t ngroups = 0;   // ceil(N / group)
  std::int64_t chunks = 1;    // chunks per group; > 1 only when group == 1
  std::int64_t max_rows = 0;  // the most rows in one chunk: the scratch height
};

Plan make_plan(const Geom& g) {
  const std::int64_t p = g.pixels();
  const std::int64_t target =
      std::max(kMinChunkRows, kScratchFloats / std::max<std::int64_t>(g.k(), 1));
  Plan plan;
  if (p >= target) {
    plan.group = 1;
    plan.chunks = ceil_div(p, target);
    plan.max_rows = ceil_div(p, plan.chunks);
  } else {
    plan.group = std::max<std::int64_t>(1, target / p);
    plan.chunks = 1;
    plan.max_rows = plan.group * p;
  }
  plan.ngroups = ceil_div(g.n, plan.group);
  return plan;
}

// The images [n0, n1) of group gi.
Range group_images(const Geom& g, const Plan& plan, std::int64_t gi) {
  return {gi * plan.group, std::min(g.n, (gi + 1) * plan.group)};
}

// The rows [r0, r1) of chunk ci of group gi: the group's rows cut into
// plan.chunks near-equal parts.
Range chunk_rows(const Geom& g, const Plan& plan, std::int64_t gi, std::int64_t ci) {
  const Range imgs = group_images(g, plan, gi);
  const std::int64_t begin = imgs.lo * g.pixels(), len = (imgs.hi - imgs.lo) * g.pixels();
  return {begin + len * ci / plan.chunks, begin + len * (ci + 1) / plan.chunks};
}

// ---------------------------------------------------------------------------
// Conv2D: (x, f) -> y

void conv2d_shape(ShapeContext& c) {
  c.expect_inputs(2);
  c.expect_dtype(0, DType::f32);
  c.expect_dtype(1, DType::f32);
  const Geom g = conv_geom(c, c.in_shape(0), c.in_shape(1), c.in_desc(0), c.in_desc(1));
  c.set_output(0, DType::f32, Shape{g.n, g.oh, g.ow, g.cout});
}

// y: (R, Cout) = cols: (R, K) * f: (K, Cout), one GEMM per chunk. The chunks
// write disjoint rows of y, so all of them run in parallel.
void conv2d_kernel(KernelContext& c) {
  expect_f32(c, 2);
  const Geom g = conv_geom(c);
  Tensor& y = c.allocate_output(0, DType::f32, Shape{g.n, g.oh, g.ow, g.cout});
  if (y.num_elements() == 0) return;
  if (g.k() == 0) {  // Cin == 0: an empty sum
    y.fill(0.0f);
    return;
  }
  const float* x = c.input(0).data<float>();
  const ConstMatrixMap f = as_matrix(c.input(1), g.k(), g.cout);
  float* py = y.data<float>();
  const Plan plan = make_plan(g);
  parallel_blocks(c, plan.ngroups * plan.chunks, 1, [&](std::int64_t b0, std::int64_t b1) {
    RowMatrix cols(plan.max_rows, g.k());  // scratch of this task, reused by its chunks
    for (std::int64_t b = b0; b < b1; ++b) {
      const Range rows = chunk_rows(g, plan, b / plan.chunks, b % plan.chunks);
      const std::int64_t m = rows.hi - rows.lo;
      im2col(g, x, rows.lo, rows.hi, cols.data());
      UnalignedMatrixMap y_rows(py + rows.lo * g.cout, m, g.cout);
      y_rows.noalias() = cols.topRows(m) * f;
    }
  });
}

// ---------------------------------------------------------------------------
// Conv2DBackpropInput: (x, f, dy) -> dx; x gives only its run-time shape.

// Shared by both backprops: inputs (x, f, dy), dy of y's shape.
void conv_backprop_check(ShapeContext& c) {
  c.expect_inputs(3);
  for (int i = 0; i < 3; ++i) c.expect_dtype(i, DType::f32);
  const Geom g = conv_geom(c, c.in_shape(0), c.in_shape(1), c.in_desc(0), c.in_desc(1));
  const Shape want{g.n, g.oh, g.ow, g.cout};
  if (!c.in_shape(2).compatible_with(want))
    c.fail(c.in_desc(2), " must have the convolution's output shape ", want.to_string());
}

// dcols: (rows, K) = dy: (rows, Cout) * f^T: (Cout, K), then dx += col2im(dcols).
// Neighbouring rows share input pixels, so tasks take whole groups (which
// share none) and each walks its chunks in order.
void conv2d_backprop_input_kernel(KernelContext& c) {
  expect_f32(c, 3);
  const Geom g = conv_geom(c);
  expect_out_grad(c, 2, g);
  Tensor& dx = c.allocate_output(0, DType::f32, c.input(0).shape());
  if (dx.num_elements() == 0) return;
  if (g.rows() == 0 || g.cout == 0) {
    dx.fill(0.0f);
    return;
  }
  const ConstMatrixMap f = as_matrix(c.input(1), g.k(), g.cout);
  const ConstMatrixMap dy = as_matrix(c.input(2), g.rows(), g.cout);
  float* pdx = dx.data<float>();
  const Plan plan = make_plan(g);
  const std::int64_t image = g.h * g.w * g.cin;
  parallel_blocks(c, plan.ngroups, 1, [&](std::int64_t g0, std::int64_t g1) {
    RowMatrix dcols(plan.max_rows, g.k());
    for (std::int64_t gi = g0; gi < g1; ++gi) {
      const Range imgs = group_images(g, plan, gi);
      std::fill(pdx + imgs.lo * image, pdx + imgs.hi * image, 0.0f);
      for (std::int64_t ci = 0; ci < plan.chunks; ++ci) {
        const Range rows = chunk_rows(g, plan, gi, ci);
        const std::int64_t m = rows.hi - rows.lo;
        dcols.topRows(m).noalias() = dy.middleRows(rows.lo, m) * f.transpose();
        col2im_add(g, dcols.data(), rows.lo, rows.hi, pdx);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Conv2DBackpropFilter: (x, f, dy) -> df; f gives only its shape.

// df: (K, Cout) = sum over chunks of cols_c^T: (K, rows) * dy_c: (rows, Cout),
// summed per slab in chunk order, then over slabs in slab order. Slab 0 sums
// straight into df.
void conv2d_backprop_filter_kernel(KernelContext& c) {
  expect_f32(c, 3);
  const Geom g = conv_geom(c);
  expect_out_grad(c, 2, g);
  Tensor& df = c.allocate_output(0, DType::f32, c.input(1).shape());
  df.fill(0.0f);
  const std::int64_t kc = g.k() * g.cout;
  if (kc == 0 || g.rows() == 0) return;
  const float* x = c.input(0).data<float>();
  const ConstMatrixMap dy = as_matrix(c.input(2), g.rows(), g.cout);
  const Plan plan = make_plan(g);
  const std::int64_t max_slabs =
      std::clamp<std::int64_t>(std::min(kMaxSlabs, kPartialFloats / kc), 1, plan.ngroups);
  const std::int64_t per_slab = ceil_div(plan.ngroups, max_slabs);
  const std::int64_t slabs = ceil_div(plan.ngroups, per_slab);
  // partials for slabs 1.., each (K, Cout), zeroed
  std::vector<float> partials(static_cast<std::size_t>((slabs - 1) * kc), 0.0f);
  auto partial = [&](std::int64_t s) {
    return UnalignedMatrixMap(s == 0 ? df.data<float>() : partials.data() + (s - 1) * kc, g.k(),
                              g.cout);
  };
  parallel_blocks(c, slabs, 1, [&](std::int64_t s0, std::int64_t s1) {
    RowMatrix cols(plan.max_rows, g.k());
    for (std::int64_t s = s0; s < s1; ++s) {
      UnalignedMatrixMap acc = partial(s);
      const std::int64_t gi_end = std::min(plan.ngroups, (s + 1) * per_slab);
      for (std::int64_t gi = s * per_slab; gi < gi_end; ++gi) {
        for (std::int64_t ci = 0; ci < plan.chunks; ++ci) {
          const Range rows = chunk_rows(g, plan, gi, ci);
          const std::int64_t m = rows.hi - rows.lo;
          im2col(g, x, rows.lo, rows.hi, cols.data());
          acc.noalias() += cols.topRows(m).transpose() * dy.middleRows(rows.lo, m);
        }
      }
    }
  });
  // df += partial 1 + partial 2 + ..., each element in slab order.
  if (slabs > 1) {
    float* pdf = df.data<float>();
    parallel_blocks(c, kc, 1 << 14, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t s = 1; s < slabs; ++s) {
        const float* p = partials.data() + (s - 1) * kc;
        for (std::int64_t i = i0; i < i1; ++i) pdf[i] += p[i];
      }
    });
  }
}

// ---------------------------------------------------------------------------
// MaxPool2D: x -> y; MaxPoolGrad: (x, dy) -> dx

void max_pool_shape(ShapeContext& c) {
  c.expect_inputs(1);
  c.expect_dtype(0, DType::f32);
  const Geom g = pool_geom(c, c.in_shape(0), c.in_desc(0));
  c.set_output(0, DType::f32, Shape{g.n, g.oh, g.ow, g.cout});
}

void max_pool_grad_shape(ShapeContext& c) {
  c.expect_inputs(2);
  c.expect_dtype(0, DType::f32);
  c.expect_dtype(1, DType::f32);
  const Geom g = pool_geom(c, c.in_shape(0), c.in_desc(0));
  const Shape want{g.n, g.oh, g.ow, g.cout};
  if (!c.in_shape(1).compatible_with(want))
    c.fail(c.in_desc(1), " must have the pooling's output shape ", want.to_string(), " for ",
           c.in_desc(0));
  c.set_output(0, DType::f32, c.in_shape(0));
}

// The window of row (oh, ow): rows [kh.lo, kh.hi) and columns [kw.lo, kw.hi)
// inside x, counted from the window's corner (ih0, iw0). Never empty: with
// TF's SAME pads every window overlaps x.
struct Window {
  std::int64_t ih0, iw0;
  Range kh, kw;
};
Window window_of(const Geom& g, std::int64_t oh, std::int64_t ow) {
  Window win;
  win.ih0 = oh * g.stride - g.pad_top;
  win.iw0 = ow * g.stride - g.pad_left;
  win.kh = valid_range(win.ih0, g.kh, g.h);
  win.kw = valid_range(win.iw0, g.kw, g.w);
  return win;
}

// y[r, :] = the window's first pixel, then y = v > y ? v : y over the window in
// row-major order (strict, so the first maximum stays): a branch-free
// per-channel select.
void max_pool_kernel(KernelContext& c) {
  expect_f32(c, 1);
  const Tensor& xt = c.input(0);
  const Geom g = pool_geom(c, xt.shape(), tensor_desc(c, 0, "input"));
  Tensor& y = c.allocate_output(0, DType::f32, Shape{g.n, g.oh, g.ow, g.cout});
  if (y.num_elements() == 0) return;
  const float* x = xt.data<float>();
  float* py = y.data<float>();
  const std::int64_t ch = g.cin;
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 15) / (ch * g.kh * g.kw));
  parallel_blocks(c, g.rows(), grain, [&](std::int64_t r0, std::int64_t r1) {
    for_each_row(g, r0, r1, [&](std::int64_t r, std::int64_t n, std::int64_t oh, std::int64_t ow) {
      const Window win = window_of(g, oh, ow);
      const float* img = x + n * g.h * g.w * ch;
      float* out = py + r * ch;
      std::copy_n(img + ((win.ih0 + win.kh.lo) * g.w + win.iw0 + win.kw.lo) * ch, ch, out);
      for (std::int64_t kh = win.kh.lo; kh < win.kh.hi; ++kh)
        for (std::int64_t kw = win.kw.lo; kw < win.kw.hi; ++kw) {
          const float* v = img + ((win.ih0 + kh) * g.w + win.iw0 + kw) * ch;
          for (std::int64_t i = 0; i < ch; ++i) out[i] = v[i] > out[i] ? v[i] : out[i];
        }
    });
  });
}

// dx[argmax of window r, c] += dy[r, c]. The argmax is tracked as an int32
// offset from the window's first valid pixel, beside the running max, with
// the same branch-free strict select as the forward (so the same first
// maximum wins). Windows may overlap (stride < window), so tasks take whole
// images and each walks its rows in order.
void max_pool_grad_kernel(KernelContext& c) {
  expect_f32(c, 2);
  const Tensor& xt = c.input(0);
  const Geom g = pool_geom(c, xt.shape(), tensor_desc(c, 0, "input"));
  expect_out_grad(c, 1, g);
  Tensor& dx = c.allocate_output(0, DType::f32, xt.shape());
  dx.fill(0.0f);
  if (g.rows() == 0 || g.cin == 0) return;
  const std::int64_t ch = g.cin, image = g.h * g.w * ch;
  if (g.kh * g.w * ch >= (std::int64_t{1} << 31))
    c.fail("window rows of ", g.kh * g.w * ch, " floats are too large for int32 offsets");
  const float* x = xt.data<float>();
  const float* dy = c.input(1).data<float>();
  float* pdx = dx.data<float>();
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 16) / image);
  parallel_blocks(c, g.n, grain, [&](std::int64_t n0, std::int64_t n1) {
    // per-task scratch: the running max and its offset, per channel
    std::vector<float> best_v(static_cast<std::size_t>(ch));
    std::vector<std::int32_t> best_o(static_cast<std::size_t>(ch));
    float* best = best_v.data();
    std::int32_t* where = best_o.data();
    for_each_row(g, n0 * g.pixels(), n1 * g.pixels(),
                 [&](std::int64_t r, std::int64_t n, std::int64_t oh, std::int64_t ow) {
                   const Window win = window_of(g, oh, ow);
                   // first: the window's first valid pixel, as an offset into x
                   const std::int64_t first =
                       n * image + ((win.ih0 + win.kh.lo) * g.w + win.iw0 + win.kw.lo) * ch;
                   const float* x0 = x + first;
                   std::copy_n(x0, ch, best);
                   std::fill_n(where, ch, 0);
                   for (std::int64_t kh = 0; kh < win.kh.hi - win.kh.lo; ++kh)
                     for (std::int64_t kw = 0; kw < win.kw.hi - win.kw.lo; ++kw) {
                       const auto off = static_cast<std::int32_t>((kh * g.w + kw) * ch);
                       const float* v = x0 + off;
                       for (std::int64_t i = 0; i < ch; ++i) {
                         const bool more = v[i] > best[i];
                         best[i] = more ? v[i] : best[i];
                         where[i] = more ? off : where[i];
                       }
                     }
                   const float* d = dy + r * ch;
                   float* dx0 = pdx + first;
                   for (std::int64_t i = 0; i < ch; ++i) dx0[where[i] + i] += d[i];
                 });
  });
}

AttrMap conv_attrs(const Node& node) {
  return {{"stride", node.attrs.get_int("stride")},
          {"padding", node.attrs.get<std::string>("padding")}};
}

AttrMap pool_attrs(const Node& node) {
  return {{"window", node.attrs.get_int("window")},
          {"stride", node.attrs.get_int("stride")},
          {"padding", node.attrs.get<std::string>("padding")}};
}

const char* padding_name(Padding p) {
  return p == Padding::same ? "SAME" : "VALID";
}

}  // namespace

void register_conv_ops(OpRegistry& r) {
  r.add({.name = "Conv2D",
         .shape_fn = conv2d_shape,
         .kernel = conv2d_kernel,
         .grad = [](GradContext& gc) {
           const AttrMap a = conv_attrs(gc.node);
           return std::vector<Output>{
               make_op("Conv2DBackpropInput", {gc.input(0), gc.input(1), gc.grad()}, a),
               make_op("Conv2DBackpropFilter", {gc.input(0), gc.input(1), gc.grad()}, a)};
         }});
  r.add({.name = "Conv2DBackpropInput",
         .shape_fn =
             [](ShapeContext& c) {
               conv_backprop_check(c);
               c.set_output(0, DType::f32, c.in_shape(0));
             },
         .kernel = conv2d_backprop_input_kernel,
         .grad = {}});  // no second derivatives
  r.add({.name = "Conv2DBackpropFilter",
         .shape_fn =
             [](ShapeContext& c) {
               conv_backprop_check(c);
               c.set_output(0, DType::f32, c.in_shape(1));
             },
         .kernel = conv2d_backprop_filter_kernel,
         .grad = {}});
  r.add({.name = "MaxPool2D",
         .shape_fn = max_pool_shape,
         .kernel = max_pool_kernel,
         .grad = [](GradContext& gc) {
           return std::vector<Output>{
               make_op("MaxPoolGrad", {gc.input(0), gc.grad()}, pool_attrs(gc.node))};
         }});
  r.add({.name = "MaxPoolGrad",
         .shape_fn = max_pool_grad_shape,
         .kernel = max_pool_grad_kernel,
         .grad = {}});
}

}  // namespace ringflow::ops

namespace ringflow {

using ops::make_op;

Output conv2d(Output input, Output filter, int stride, Padding padding) {
  return make_op(
      "Conv2D", {input, filter},
      {{"stride", std::int64_t{stride}}, {"padding", std::string(ops::padding_name(padding))}});
}

Output max_pool2d(Output input, int window, int stride, Padding padding) {
  return make_op("MaxPool2D", {input},
                 {{"window", std::int64_t{window}},
                  {"stride", std::int64_t{stride}},
                  {"padding", std::string(ops::padding_name(padding))}});
}

}  // namespace ringflow
