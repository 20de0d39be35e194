// Direct convolution for inputs with few channels (an image's first layer:
// Cin = 1 for Fashion-MNIST). There a patch holds only K = KH * KW * Cin
// values (25 for a 5x5 filter), too short a depth for im2col + GEMM: the GEMM
// spends its time packing and storing rather than multiplying (about 35
// GFLOP/s against 120 at conv2's K = 800). These kernels instead read the
// patch straight from a zero-padded copy of one image, and keep a tile of
// outputs in vector registers across the whole patch.
//
// Words as in conv_ops.cpp and window.h. Each output element is summed over
// its patch in (kh, kw, ci) order, each filter-gradient element over the rows
// in row order, with no dependence on the thread count: bitwise
// deterministic, like the GEMM path.
#pragma once

#include <cstdint>
#include <functional>

#include "window.h"

namespace ringflow::ops::direct {

// Inputs with at most this many channels use the direct kernels.
inline constexpr std::int64_t kMaxCin = 4;

inline bool applies(const window::Geom& g) {
  return g.cin >= 1 && g.cin <= kMaxCin && g.cout >= 1;
}

// y rows of images [n0, n1): y[r, co] = sum over r's patch of x * f[., co].
// f is (K, Cout) row-major; y is (R, Cout). after_image(n), when given, runs
// once image n's rows are written (while they are still in cache).
void conv_forward(const window::Geom& g, const float* x, const float* f, float* y, std::int64_t n0,
                  std::int64_t n1, const std::function<void(std::int64_t)>& after_image = {});

// acc (K, Cout) += the filter gradient of images [n0, n1): for each row r in
// order, patch(r)^T * dy[r, :].
void conv_filter_grad(const window::Geom& g, const float* x, const float* dy, float* acc,
                      std::int64_t n0, std::int64_t n1);

}  // namespace ringflow::ops::direct
