// Synthetic blobs and spirals (synth.h).
#include "ringflow/datasets/synth.h"

#include <cmath>
#include <numbers>

#include "ringflow/base/error.h"
#include "ringflow/datasets/batch.h"

namespace ringflow::datasets {
namespace {

// Standard normal by Box-Muller from two uniforms; log and cos/sin of glibc
// are deterministic for a given build.
double normal(SplitMix64& rng) {
  const double u1 = 1.0 - rng.uniform();  // (0, 1]
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

void check_common(int64_t rows, int32_t classes) {
  RF_CHECK(rows >= 1, "synth: rows must be >= 1, got ", rows);
  RF_CHECK(classes >= 1, "synth: classes must be >= 1, got ", classes);
}

}  // namespace

SynthData make_blobs(const BlobsOptions& o) {
  check_common(o.rows, o.classes);
  RF_CHECK(o.dims >= 1, "synth blobs: dims must be >= 1, got ", o.dims);
  RF_CHECK(o.spread >= 0 && o.center_box >= 0, "synth blobs: spread and center_box must be >= 0");
  SplitMix64 rng(o.seed);
  // centres: (classes, dims)
  std::vector<double> centres(static_cast<size_t>(o.classes) * o.dims);
  for (double& c : centres) c = (2.0 * rng.uniform() - 1.0) * o.center_box;
  SynthData d;
  d.num_classes = o.classes;
  d.shape = {o.rows, o.dims};
  d.x.resize(static_cast<size_t>(o.rows * o.dims));
  d.y.resize(static_cast<size_t>(o.rows));
  for (int64_t i = 0; i < o.rows; ++i) {
    const auto k = static_cast<int32_t>(rng.below(static_cast<uint64_t>(o.classes)));
    d.y[static_cast<size_t>(i)] = k;
    for (int32_t j = 0; j < o.dims; ++j) {
      d.x[static_cast<size_t>(i * o.dims + j)] =
          static_cast<float>(centres[static_cast<size_t>(k) * o.dims + j] + o.spread * normal(rng));
    }
  }
  return d;
}

SynthData make_spirals(const SpiralsOptions& o) {
  check_common(o.rows, o.classes);
  RF_CHECK(o.noise >= 0, "synth spirals: noise must be >= 0, got ", o.noise);
  SplitMix64 rng(o.seed);
  SynthData d;
  d.num_classes = o.classes;
  d.shape = {o.rows, 2};
  d.x.resize(static_cast<size_t>(o.rows * 2));
  d.y.resize(static_cast<size_t>(o.rows));
  for (int64_t i = 0; i < o.rows; ++i) {
    const auto k = static_cast<int32_t>(rng.below(static_cast<uint64_t>(o.classes)));
    const double t = rng.uniform();
    const double angle =
        2.0 * std::numbers::pi * (o.turns * t + static_cast<double>(k) / o.classes);
    d.y[static_cast<size_t>(i)] = k;
    d.x[static_cast<size_t>(2 * i)] =
        static_cast<float>(t * std::cos(angle) + o.noise * normal(rng));
    d.x[static_cast<size_t>(2 * i + 1)] =
        static_cast<float>(t * std::sin(angle) + o.noise * normal(rng));
  }
  return d;
}

}  // namespace ringflow::datasets
