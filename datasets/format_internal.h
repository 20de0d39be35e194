// Private: an opened, validated data-set file and row reads shared by
// format.cpp (checksums, histograms) and shard.cpp (shards).
#pragma once

#include <string>
#include <string_view>

#include "h5_util.h"
#include "ringflow/datasets/format.h"

namespace ringflow::datasets::detail {

struct ValidatedFile {
  h5::Handle file;
  DatasetInfo info;
};

// open_dataset() that keeps the file open. The caller must hold an
// h5::QuietErrors while it uses the file.
ValidatedFile open_validated(const std::string& path);

// "/train/x" etc.
inline std::string ds_path(std::string_view split, std::string_view name) {
  return "/" + std::string(split) + "/" + std::string(name);
}

// Reads the global rows start + i * stride, i < count, of data set `ds`
// (shape (N, ...)) through one hyperslab selection, as mem_type. dst is laid
// out with the same stride: it must hold 1 + (count - 1) * stride rows and
// row i lands in dst row i * stride (the rows between are left untouched);
// with stride 1 it is simply (count, ...). Returns the number of elements the
// file selection covered. `where` names file and data set for errors.
int64_t read_rows(hid_t ds, hid_t mem_type, int64_t start, int64_t stride, int64_t count, void* dst,
                  const std::string& where);

}  // namespace ringflow::datasets::detail
