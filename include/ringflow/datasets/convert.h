// IDX (MNIST / Fashion-MNIST) to the ringflow HDF5 format: what
// `ringflow-data import-idx` does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringflow/datasets/format.h"

namespace ringflow::datasets {

// The four IDX files of an MNIST-style data set.
struct IdxFiles {
  std::string train_images, train_labels, test_images, test_labels;
};

// The standard names inside `dir`: train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each with or without ".gz"
// (the plain file wins). NotFound naming the directory and the missing name.
IdxFiles find_idx_files(const std::string& dir);

struct ImportResult {
  int64_t train_rows = 0;
  int64_t test_rows = 0;
  std::vector<int64_t> feature_shape;  // e.g. {28, 28}
};

// Reads the four files, checks that images are (N, H, W) and labels (N) with
// the same N, that both splits have the same H, W, and that labels lie in
// [0, options.num_classes) (10 when 0), then writes `out` as uint8 x with
// scale 1/255 and int32 y.
ImportResult import_idx(const IdxFiles& files, const std::string& out, WriteOptions options);

}  // namespace ringflow::datasets
