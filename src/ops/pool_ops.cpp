// Max pooling, NHWC: MaxPool2D and MaxPoolGrad (geometry in window.h).
//
// MaxPool2D: y[n, oh, ow, c] = max over the window positions inside x of x.
// Padding positions are ignored (not zeros). On ties the first maximum in
// row-major window order wins; MaxPoolGrad routes dy[n, oh, ow, c] to that
// position, recomputed from x: dx = sum over windows of dy * 1[argmax].
#include <algorithm>
#include <limits>
#include <string>

#include "op_util.h"
#include "window.h"

namespace ringflow::ops {

namespace {

using namespace window;

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
//
// Windows that tile x (stride = window, no padding: the CNNs' 2x2 pools)
// share no pixel, so each zeroes its own dx pixels while they are in cache
// and sets 0 + dy at the argmax (the same bits as += into a zeroed dx),
// instead of a zero fill of all of dx and a scattered read-modify-write.
void max_pool_grad_kernel(KernelContext& c) {
  expect_f32(c, 2);
  const Tensor& xt = c.input(0);
  const Geom g = pool_geom(c, xt.shape(), tensor_desc(c, 0, "input"));
  expect_out_grad(c, 1, g);
  Tensor& dx = c.allocate_output(0, DType::f32, xt.shape());
  const bool tiles = g.stride == g.kh && g.stride == g.kw && g.pad_top == 0 && g.pad_left == 0;
  // Pixels no window covers (the right and bottom edges of VALID) stay 0.
  if (!tiles || g.oh * g.kh != g.h || g.ow * g.kw != g.w) dx.fill(0.0f);
  if (g.rows() == 0 || g.cin == 0) return;
  const std::int64_t ch = g.cin, image = g.h * g.w * ch;
  if (g.kh * g.w * ch >= (std::int64_t{1} << 31))
    c.fail("window rows of ", g.kh * g.w * ch, " floats are too large for int32 offsets");
  const float* x = xt.data<float>();
  const float* dy = c.input(1).data<float>();
  float* pdx = dx.data<float>();
  // relu: x is a relu's output and dx goes on through that relu's gradient:
  // a maximum that is not > 0 passes nothing (ReluGrad fused in, same bits).
  const bool relu = c.attrs().has("relu") && c.attrs().get_bool("relu");
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
                   if (tiles) {
                     // zero the window's pixels (one run per window row), then
                     // set each channel's argmax
                     for (std::int64_t kh = 0; kh < win.kh.hi - win.kh.lo; ++kh)
                       std::fill_n(dx0 + kh * g.w * ch, (win.kw.hi - win.kw.lo) * ch, 0.0f);
                     for (std::int64_t i = 0; i < ch; ++i)
                       dx0[where[i] + i] = 0.0f + (!relu || best[i] > 0.0f ? d[i] : 0.0f);
                   } else if (relu) {
                     for (std::int64_t i = 0; i < ch; ++i)
                       dx0[where[i] + i] += best[i] > 0.0f ? d[i] : 0.0f;
                   } else {
                     for (std::int64_t i = 0; i < ch; ++i) dx0[where[i] + i] += d[i];
                   }
                 });
  });
}

AttrMap pool_attrs(const Node& node) {
  return {{"window", node.attrs.get_int("window")},
          {"stride", node.attrs.get_int("stride")},
          {"padding", node.attrs.get<std::string>("padding")}};
}

}  // namespace

void register_pool_ops(OpRegistry& r) {
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

Output max_pool2d(Output input, int window, int stride, Padding padding) {
  return make_op("MaxPool2D", {input},
                 {{"window", std::int64_t{window}},
                  {"stride", std::int64_t{stride}},
                  {"padding", std::string(ops::window::padding_name(padding))}});
}

}  // namespace ringflow
