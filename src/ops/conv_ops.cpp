// Convolution ops, NHWC: Conv2D with its two backprops (Conv2DBackpropInput,
// Conv2DBackpropFilter), and FusedConv2D (bias and activation applied as each
// block of the output is computed). Pooling is in pool_ops.cpp; the geometry
// both share is in window.h. Inputs with at most 4 channels take the direct
// kernels of conv_direct.cpp for y and df instead of im2col + GEMM.
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
// GCC 12's AVX-512 intrinsics header initialises a variable from itself
// (`__m512 __Y = __Y;`, GCC bug 105593); once Eigen's packet transposes are
// inlined into the GEMMs below, -Wuninitialized flags it. The pragma covers the
// headers only: it must be in force where the intrinsics header is first read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <algorithm>
#include <string>

#include "conv_direct.h"
#include "op_util.h"
#include "ringflow/tensor/eigen.h"
#include "window.h"
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

using namespace window;  // Geom, conv_geom, for_each_row, ... (window.h)

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

// FusedConv2D: (x, f, bias) -> act(conv(x, f) + bias), bias: (Cout).
void fused_conv2d_shape(ShapeContext& c) {
  c.expect_inputs(3);
  for (int i = 0; i < 3; ++i) c.expect_dtype(i, DType::f32);
  const Geom g = conv_geom(c, c.in_shape(0), c.in_shape(1), c.in_desc(0), c.in_desc(1));
  if (!c.in_shape(2).compatible_with(Shape{g.cout}))
    c.fail(c.in_desc(2), " must be the bias of the ", g.cout, " output channels: shape (", g.cout,
           ")");
  const std::string act = c.attrs().get<std::string>("activation");
  if (act != "none" && act != "relu") c.fail("activation '", act, "' is not one of none, relu");
  c.set_output(0, DType::f32, Shape{g.n, g.oh, g.ow, g.cout});
}

// y: (R, Cout) = cols: (R, K) * f: (K, Cout), one GEMM per chunk. The chunks
// write disjoint rows of y, so all of them run in parallel. FusedConv2D adds
// its bias and applies its activation to each chunk's rows right after their
// GEMM, while they are still in cache: the same arithmetic, in the same
// order, as separate Add and Relu nodes, without their two passes over y.
void bias_activation(float* __restrict y, std::int64_t rows, std::int64_t cout,
                     const float* __restrict bias, bool relu) {
  for (std::int64_t r = 0; r < rows; ++r, y += cout) {
    if (relu) {
      for (std::int64_t j = 0; j < cout; ++j) {
        const float v = y[j] + bias[j];
        y[j] = v > 0.0f ? v : 0.0f;
      }
    } else {
      for (std::int64_t j = 0; j < cout; ++j) y[j] += bias[j];
    }
  }
}

void conv2d_kernel(KernelContext& c) {
  const bool fused = c.num_inputs() == 3;
  expect_f32(c, fused ? 3 : 2);
  const Geom g = conv_geom(c);
  const float* bias = nullptr;
  bool relu = false;
  if (fused) {
    if (c.input(2).num_elements() != g.cout)
      c.fail(tensor_desc(c, 2, "bias"), " must hold one value per output channel (", g.cout, ")");
    bias = c.input(2).data<float>();
    relu = c.attrs().get<std::string>("activation") == "relu";
  }
  Tensor& y = c.allocate_output(0, DType::f32, Shape{g.n, g.oh, g.ow, g.cout});
  if (y.num_elements() == 0) return;
  float* py = y.data<float>();
  if (g.k() == 0) {  // Cin == 0: an empty sum (then the bias and activation)
    y.fill(0.0f);
    if (bias) bias_activation(py, g.rows(), g.cout, bias, relu);
    return;
  }
  const float* x = c.input(0).data<float>();
  const ConstMatrixMap f = as_matrix(c.input(1), g.k(), g.cout);
  if (direct::applies(g)) {  // few input channels: no im2col (conv_direct.h)
    const std::int64_t image = g.pixels() * g.cout;
    parallel_blocks(c, g.n, 1, [&](std::int64_t n0, std::int64_t n1) {
      direct::conv_forward(g, x, f.data(), py, n0, n1, [&](std::int64_t n) {
        if (bias) bias_activation(py + n * image, g.pixels(), g.cout, bias, relu);
      });
    });
    return;
  }
  const Plan plan = make_plan(g);
  parallel_blocks(c, plan.ngroups * plan.chunks, 1, [&](std::int64_t b0, std::int64_t b1) {
    RowMatrix cols(plan.max_rows, g.k());  // scratch of this task, reused by its chunks
    for (std::int64_t b = b0; b < b1; ++b) {
      const Range rows = chunk_rows(g, plan, b / plan.chunks, b % plan.chunks);
      const std::int64_t m = rows.hi - rows.lo;
      im2col(g, x, rows.lo, rows.hi, cols.data());
      UnalignedMatrixMap y_rows(py + rows.lo * g.cout, m, g.cout);
      y_rows.noalias() = cols.topRows(m) * f;
      if (bias) bias_activation(py + rows.lo * g.cout, m, g.cout, bias, relu);
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
  // The direct kernel (few input channels) takes one image per group.
  const bool use_direct = direct::applies(g);
  const Plan plan =
      use_direct ? Plan{.group = 1, .ngroups = g.n, .chunks = 1, .max_rows = 0} : make_plan(g);
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
      if (use_direct) {
        direct::conv_filter_grad(g, x, dy.data(), acc.data(), s * per_slab, gi_end);
        continue;
      }
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

AttrMap conv_attrs(const Node& node) {
  return {{"stride", node.attrs.get_int("stride")},
          {"padding", node.attrs.get<std::string>("padding")}};
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
  // act(conv(x, f) + bias): dz = dy * act'(y); the bias gets dz summed over
  // (N, OH, OW), x and f the convolution's gradients of dz. With the same
  // ReluGrad, SumLike and backprop nodes as the unfused graph, so the
  // gradients are the same bits.
  r.add({.name = "FusedConv2D",
         .shape_fn = fused_conv2d_shape,
         .kernel = conv2d_kernel,
         .grad = [](GradContext& gc) {
           const AttrMap a = conv_attrs(gc.node);
           Output dz = gc.grad();
           if (gc.node.attrs.get<std::string>("activation") == "relu") {
             // conv -> relu -> max pool (the CNNs): the pool's gradient and the
             // relu's are one pass over dx (MaxPoolGrad with relu), else ReluGrad.
             const Node& from = dz.node();
             if (from.op == "MaxPoolGrad" && from.inputs.at(0) == gc.output() &&
                 !from.attrs.has("relu")) {
               AttrMap pa = from.attrs;
               pa.set("relu", true);
               dz = make_op("MaxPoolGrad", {from.inputs.at(0), from.inputs.at(1)}, pa);
             } else {
               dz = make_op("ReluGrad", {dz, gc.output()});
             }
           }
           return std::vector<Output>{
               make_op("Conv2DBackpropInput", {gc.input(0), gc.input(1), dz}, a),
               make_op("Conv2DBackpropFilter", {gc.input(0), gc.input(1), dz}, a),
               make_op("SumLike", {dz, gc.input(2)})};
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
}

}  // namespace ringflow::ops

namespace ringflow {

using ops::make_op;

Output conv2d(Output input, Output filter, int stride, Padding padding) {
  return make_op("Conv2D", {input, filter},
                 {{"stride", std::int64_t{stride}},
                  {"padding", std::string(ops::window::padding_name(padding))}});
}

Output fused_conv2d(Output input, Output filter, Output bias, bool relu, int stride,
                    Padding padding) {
  return make_op("FusedConv2D", {input, filter, bias},
                 {{"stride", std::int64_t{stride}},
                  {"padding", std::string(ops::window::padding_name(padding))},
                  {"activation", std::string(relu ? "relu" : "none")}});
}

}  // namespace ringflow
