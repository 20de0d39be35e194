// checkpoint_diff A.h5 B.h5 REL_TOL: exits 0 when both checkpoints are valid,
// hold the same variables (names and shapes) at the same step, and every value
// agrees within REL_TOL relative to the variable's largest magnitude; prints
// the largest difference found.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ringflow/base/error.h"
#include "ringflow/train/checkpoint.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: checkpoint_diff A.h5 B.h5 REL_TOL\n");
    return 2;
  }
  try {
    const auto a = ringflow::train::read_checkpoint(argv[1]);
    const auto b = ringflow::train::read_checkpoint(argv[2]);
    const double tol = std::atof(argv[3]);
    if (a.step != b.step || a.variables.size() != b.variables.size()) {
      std::fprintf(stderr, "different runs: step %lld vs %lld, %zu vs %zu variables\n",
                   static_cast<long long>(a.step), static_cast<long long>(b.step),
                   a.variables.size(), b.variables.size());
      return 1;
    }
    double worst = 0;
    std::string worst_name;
    for (std::size_t i = 0; i < a.variables.size(); ++i) {
      const auto& va = a.variables[i];
      const auto& vb = b.variables[i];
      if (va.name != vb.name || va.shape != vb.shape) {
        std::fprintf(stderr, "variable %zu differs: '%s' vs '%s'\n", i, va.name.c_str(),
                     vb.name.c_str());
        return 1;
      }
      double scale = 1e-30, diff = 0;
      for (std::size_t k = 0; k < va.values.size(); ++k) {
        scale = std::max(scale, static_cast<double>(std::fabs(va.values[k])));
        diff = std::max(diff, static_cast<double>(std::fabs(va.values[k] - vb.values[k])));
      }
      if (diff / scale > worst) {
        worst = diff / scale;
        worst_name = va.name;
      }
    }
    std::printf("largest relative difference %.3g (%s)\n", worst, worst_name.c_str());
    return worst <= tol ? 0 : 1;
  } catch (const ringflow::Error& e) {
    std::fprintf(stderr, "checkpoint_diff: %s\n", e.what());
    return 1;
  }
}
