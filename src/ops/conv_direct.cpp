// Direct convolution kernels for inputs with few channels (see conv_direct.h).
//
// Words, besides those of conv_ops.cpp:
//   padded   a zero-padded copy of one image, (HP, WP, Cin), big enough that
//            every patch of the image lies inside it: the patch of output
//            pixel (oh, ow) starts at padded row oh * stride, column
//            ow * stride. Padding positions read as 0, as in im2col.
//   offsets  off[k] = (kh * WP + kw) * Cin + ci for the patch's k-th value
//            (in (kh, kw, ci) order): the value is padded[start + off[k]].
//   tile     P consecutive output pixels of one output row, times one packet
//            (a SIMD vector) of output channels: P accumulators in registers.
//
// GCC 12's AVX-512 intrinsics header trips -Wuninitialized (see conv_ops.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "conv_direct.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ringflow/tensor/eigen.h"
#pragma GCC diagnostic pop

namespace ringflow::ops::direct {

namespace {

using window::Geom;
using Packet = Eigen::internal::packet_traits<float>::type;
constexpr std::int64_t kLanes = Eigen::internal::packet_traits<float>::size;

// One image at a time, zero-padded, with the patch offsets.
class PaddedImage {
 public:
  explicit PaddedImage(const Geom& g)
      : g_(g), hp_((g.oh - 1) * g.stride + g.kh), wp_((g.ow - 1) * g.stride + g.kw) {
    data_.assign(static_cast<std::size_t>(hp_ * wp_ * g.cin), 0.0f);
    for (std::int64_t kh = 0; kh < g.kh; ++kh)
      for (std::int64_t kw = 0; kw < g.kw; ++kw)
        for (std::int64_t ci = 0; ci < g.cin; ++ci) off_.push_back((kh * wp_ + kw) * g.cin + ci);
  }

  // Copies image n of x in; the padding stays zero.
  void load(const float* x, std::int64_t n) {
    const Geom& g = g_;
    const float* img = x + n * g.h * g.w * g.cin;
    // padded column j holds input column j - pad_left
    const std::int64_t j0 = std::max<std::int64_t>(0, g.pad_left);
    const std::int64_t j1 = std::min(wp_, g.pad_left + g.w);
    if (j0 >= j1) return;
    for (std::int64_t i = 0; i < hp_; ++i) {
      const std::int64_t ih = i - g.pad_top;
      if (ih < 0 || ih >= g.h) continue;
      std::copy_n(img + (ih * g.w + j0 - g.pad_left) * g.cin, (j1 - j0) * g.cin,
                  data_.data() + (i * wp_ + j0) * g.cin);
    }
  }

  // Where the patch of output pixel (oh, ow) starts.
  const float* patch(std::int64_t oh, std::int64_t ow) const {
    return data_.data() + (oh * g_.stride * wp_ + ow * g_.stride) * g_.cin;
  }
  const std::int64_t* offsets() const { return off_.data(); }

 private:
  const Geom& g_;
  std::int64_t hp_, wp_;
  std::vector<float> data_;
  std::vector<std::int64_t> off_;
};

// y[p, :] for the P pixels whose patches start at xs, xs + step, ...; y rows
// are cout apart. Packets of channels first, then the channels left over.
template <int P>
void forward_tile(const float* xs, std::int64_t step, const std::int64_t* off, std::int64_t k,
                  const float* f, std::int64_t cout, float* y) {
  using namespace Eigen::internal;
  std::int64_t co = 0;
  for (; co + kLanes <= cout; co += kLanes) {
    Packet acc[P];
    for (int p = 0; p < P; ++p) acc[p] = pset1<Packet>(0.0f);
    const float* fk = f + co;
    for (std::int64_t i = 0; i < k; ++i, fk += cout) {
      const Packet fv = ploadu<Packet>(fk);
      const float* xi = xs + off[i];
      for (int p = 0; p < P; ++p) acc[p] = pmadd(pset1<Packet>(xi[p * step]), fv, acc[p]);
    }
    for (int p = 0; p < P; ++p) pstoreu(y + p * cout + co, acc[p]);
  }
  for (; co < cout; ++co) {
    for (int p = 0; p < P; ++p) {
      float acc = 0.0f;
      for (std::int64_t i = 0; i < k; ++i)
        acc = std::fma(xs[p * step + off[i]], f[i * cout + co], acc);
      y[p * cout + co] = acc;
    }
  }
}

// acc[kk * cout + co ...] += sum over the image's rows, in order, of
// padded[patch + off[kk]] * dy[r, co ...] for KB patch values and one packet
// of channels, kept in registers for the whole image.
template <int KB>
void filter_block(const Geom& g, const PaddedImage& img, const std::int64_t* off, const float* dy,
                  std::int64_t co, float* acc) {
  using namespace Eigen::internal;
  Packet a[KB];
  for (int kk = 0; kk < KB; ++kk) a[kk] = ploadu<Packet>(acc + kk * g.cout + co);
  const float* d = dy + co;
  for (std::int64_t oh = 0; oh < g.oh; ++oh) {
    for (std::int64_t ow = 0; ow < g.ow; ++ow, d += g.cout) {
      const float* xs = img.patch(oh, ow);
      const Packet dv = ploadu<Packet>(d);
      for (int kk = 0; kk < KB; ++kk) a[kk] = pmadd(pset1<Packet>(xs[off[kk]]), dv, a[kk]);
    }
  }
  for (int kk = 0; kk < KB; ++kk) pstoreu(acc + kk * g.cout + co, a[kk]);
}

}  // namespace

void conv_forward(const Geom& g, const float* x, const float* f, float* y, std::int64_t n0,
                  std::int64_t n1, const std::function<void(std::int64_t)>& after_image) {
  if (g.oh <= 0 || g.ow <= 0 || n0 >= n1) return;
  PaddedImage img(g);
  const std::int64_t k = g.k(), step = g.stride * g.cin;
  constexpr int kTile = 8;
  for (std::int64_t n = n0; n < n1; ++n) {
    img.load(x, n);
    for (std::int64_t oh = 0; oh < g.oh; ++oh) {
      float* yrow = y + (n * g.oh + oh) * g.ow * g.cout;
      std::int64_t ow = 0;
      for (; ow + kTile <= g.ow; ow += kTile)
        forward_tile<kTile>(img.patch(oh, ow), step, img.offsets(), k, f, g.cout,
                            yrow + ow * g.cout);
      for (; ow < g.ow; ++ow)
        forward_tile<1>(img.patch(oh, ow), step, img.offsets(), k, f, g.cout, yrow + ow * g.cout);
    }
    if (after_image) after_image(n);
  }
}

void conv_filter_grad(const Geom& g, const float* x, const float* dy, float* acc, std::int64_t n0,
                      std::int64_t n1) {
  if (g.oh <= 0 || g.ow <= 0 || n0 >= n1) return;
  PaddedImage img(g);
  const std::int64_t k = g.k();
  const std::int64_t* off = img.offsets();
  for (std::int64_t n = n0; n < n1; ++n) {
    img.load(x, n);
    const float* dyn = dy + n * g.pixels() * g.cout;
    std::int64_t co = 0;
    for (; co + kLanes <= g.cout; co += kLanes) {
      // Patch values in blocks of 8, then 4, 2, 1: K = 25 is 8 + 8 + 8 + 1.
      std::int64_t i = 0;
      for (; i + 8 <= k; i += 8) filter_block<8>(g, img, off + i, dyn, co, acc + i * g.cout);
      if (i + 4 <= k) filter_block<4>(g, img, off + i, dyn, co, acc + i * g.cout), i += 4;
      if (i + 2 <= k) filter_block<2>(g, img, off + i, dyn, co, acc + i * g.cout), i += 2;
      if (i < k) filter_block<1>(g, img, off + i, dyn, co, acc + i * g.cout);
    }
    for (; co < g.cout; ++co) {
      for (std::int64_t i = 0; i < k; ++i) {
        float a = acc[i * g.cout + co];
        const float* d = dyn + co;
        for (std::int64_t oh = 0; oh < g.oh; ++oh)
          for (std::int64_t ow = 0; ow < g.ow; ++ow, d += g.cout)
            a = std::fma(img.patch(oh, ow)[off[i]], *d, a);
        acc[i * g.cout + co] = a;
      }
    }
  }
}

}  // namespace ringflow::ops::direct
