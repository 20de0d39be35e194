// Per-rank shards of a ringflow HDF5 data set.
//
// Words: a split has `total_rows` rows; rank r of N ranks owns a shard, a set
// of global row indices described by a RowRange (start, stride, count):
//   strided     (default) rows r, r+N, r+2N, ...   count = ceil((total - r) / N)
//   contiguous  rows [floor(total*r/N), floor(total*(r+1)/N))
// In both modes shard sizes differ by at most one row and the shards of ranks
// 0..N-1 partition the split. A rank reads its shard through one HDF5
// hyperslab selection per piece; it never reads other ranks' rows into memory.
// (With strided shards every chunk holds rows of every rank, so the file bytes
// of a chunk pass through the HDF5 chunk cache, but only the selected rows are
// copied out.)
//
// Features are converted to float32 once, at load: uint8 x becomes
// stored * scale (so images lie in [0, 1]); with standardize,
// (feature - mean) / std, where mean/std default to the /train/x attributes,
// i.e. statistics of the whole train split, the same on every rank.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringflow::datasets {

enum class ShardMode { kStrided, kContiguous };
std::string_view to_string(ShardMode mode);
// "strided" / "contiguous"; InvalidArgument for anything else.
ShardMode parse_shard_mode(std::string_view text);

// Global rows start + i * stride for i in [0, count).
struct RowRange {
  int64_t start = 0;
  int64_t stride = 1;
  int64_t count = 0;
  int64_t operator[](int64_t i) const { return start + i * stride; }
};

// The rows rank `rank` of `num_ranks` owns. InvalidArgument when num_ranks < 1,
// rank is outside [0, num_ranks) or num_ranks > total_rows (a rank would get no
// rows at all).
RowRange shard_rows(int64_t total_rows, int rank, int num_ranks, ShardMode mode);

struct NormalizeOptions {
  bool standardize = false;     // also apply (x - mean) / std after scaling
  std::optional<float> mean;    // override the file's /train/x mean
  std::optional<float> stddev;  // override the file's /train/x std
};

// One rank's rows of one split, as float32 features and int32 labels.
struct Shard {
  std::string path;
  std::string split;
  int rank = 0;
  int num_ranks = 1;
  ShardMode mode = ShardMode::kStrided;
  int64_t total_rows = 0;  // rows of the split over all ranks
  int32_t num_classes = 0;
  std::vector<int64_t> feature_shape;  // e.g. {28, 28}
  int64_t row_size = 0;                // product(feature_shape)
  RowRange rows;                       // the global rows held, in order
  std::vector<float> x;                // (rows.count, row_size), row-major
  std::vector<int32_t> y;              // (rows.count)
  // What the HDF5 selections of this load covered in the file, counted from
  // the selections themselves: tests check it equals rows.count * row_size.
  int64_t selected_x_elements = 0;
  int64_t selected_y_elements = 0;
  int64_t stored_bytes_read = 0;  // bytes of x and y as stored in the file

  int64_t num_rows() const { return rows.count; }
  int64_t global_row(int64_t i) const { return rows[i]; }
};

// Opens and validates `path` (see open_dataset), then reads rank `rank`'s
// shard of `split` ("train" or "test"). Labels of the shard are checked to lie
// in [0, num_classes). Errors name the file, the data set and the rank.
// Serial HDF5 is not thread-safe: call the datasets functions that touch files
// from one thread at a time (e.g. load before starting the executor).
Shard load_shard(const std::string& path, std::string_view split, int rank, int num_ranks,
                 ShardMode mode = ShardMode::kStrided, const NormalizeOptions& normalize = {});

}  // namespace ringflow::datasets
