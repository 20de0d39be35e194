// Small synthetic classification sets for tests and demos, fully determined by
// their options (SplitMix64 and Box-Muller, no std:: distributions).
#pragma once

#include <cstdint>
#include <vector>

namespace ringflow::datasets {

// x: (rows, dims) float32 row-major, y: (rows) int32 in [0, num_classes).
struct SynthData {
  std::vector<int64_t> shape;  // {rows, dims}
  std::vector<float> x;
  std::vector<int32_t> y;
  int32_t num_classes = 0;
};

// Gaussian blobs: class centres uniform in [-center_box, center_box]^dims
// (drawn first, so they depend only on seed, classes and dims), then each row
// gets a uniform random label and centre + spread * N(0, 1) per coordinate.
struct BlobsOptions {
  int64_t rows = 1000;
  int32_t classes = 3;
  int32_t dims = 2;
  float spread = 1.0f;
  float center_box = 5.0f;
  uint64_t seed = 0;
};
SynthData make_blobs(const BlobsOptions& options);

// Interleaved spirals in 2-D: a row of class k at t ~ U(0, 1) lies at radius
// t and angle 2*pi*(turns * t + k / classes), plus noise * N(0, 1) per axis.
struct SpiralsOptions {
  int64_t rows = 1000;
  int32_t classes = 3;
  float turns = 1.0f;
  float noise = 0.05f;
  uint64_t seed = 0;
};
SynthData make_spirals(const SpiralsOptions& options);

}  // namespace ringflow::datasets
