// The ringflow HDF5 data-set format (version 1), its writer and validator.
//
// One HDF5 file holds two splits, each a group with two data sets:
//   /train/x   uint8 or float32, shape (N, d1, d2, ...), N >= 1, rank >= 2
//   /train/y   int32, shape (N,), every label in [0, num_classes)
//   /test/x, /test/y   the same for the test split
// Root attributes: format = "ringflow-dataset" (string), version = 1 (int32),
// num_classes (int32), source (string, free text).
// x attributes: scale (float32; uint8 x only: feature = stored * scale, 1/255
// for images so that features lie in [0, 1]); /train/x may carry mean and std
// (float32, of the scaled train features over all elements) for mean/std
// normalisation of both splits.
// Both data sets are chunked along rows only (a chunk is a run of whole rows),
// so a contiguous or strided row range is read without touching other chunks'
// bytes twice. Files open in h5dump, h5ls and h5py.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringflow::datasets {

inline constexpr std::string_view kFormatName = "ringflow-dataset";
inline constexpr int kFormatVersion = 1;
// The split names a file holds, in order.
inline constexpr std::string_view kSplitNames[] = {"train", "test"};

enum class XDtype { kUint8, kFloat32 };
std::string_view to_string(XDtype dtype);

// One split to write. x is row-major with shape `shape` = (N, ...); exactly one
// of x_u8 / x_f32 is non-empty. y has N labels.
struct SplitData {
  std::vector<int64_t> shape;
  std::span<const uint8_t> x_u8;
  std::span<const float> x_f32;
  float scale = 1.0f / 255.0f;  // uint8 only
  std::span<const int32_t> y;
};

struct WriteOptions {
  int32_t num_classes = 0;           // labels must lie in [0, num_classes)
  std::string source;                // free text stored in the root attribute `source`
  int deflate_level = 0;             // 0 = uncompressed (fastest strided reads), 1..9 = gzip
  int64_t chunk_bytes = 512 * 1024;  // target bytes of an x chunk (whole rows)
};

// Validates the inputs and writes a version-1 file. The file is written to a
// temporary name beside `path` and renamed, so readers never see half a file.
// Computes mean/std of the scaled train features and stores them on /train/x.
void write_dataset(const std::string& path, const SplitData& train, const SplitData& test,
                   const WriteOptions& options);

// What a file says about one split.
struct SplitInfo {
  std::string name;                    // "train" or "test"
  int64_t rows = 0;                    // N
  std::vector<int64_t> feature_shape;  // x shape without N, e.g. {28, 28}
  int64_t row_size = 0;                // product(feature_shape)
  XDtype x_dtype = XDtype::kFloat32;
  float scale = 1.0f;      // 1 for float32 x
  int64_t chunk_rows = 0;  // rows per x chunk, 0 when not chunked
};

struct DatasetInfo {
  std::string path;
  int version = 0;
  int32_t num_classes = 0;
  std::string source;
  SplitInfo train, test;
  std::optional<float> train_mean, train_std;  // attributes of /train/x, if present
  // The split named `name` ("train"/"test"); InvalidArgument for other names.
  const SplitInfo& split(std::string_view name) const;
};

// Opens `path` and validates its structure: it exists (NotFound), is HDF5, has
// the format name and version, both splits with x and y of an allowed dtype and
// rank, equal non-zero row counts and a positive num_classes. Labels are not
// read here (load_shard checks its rows, label_histogram all rows). Every
// error is an IoError or NotFound naming the file and the data set and saying
// what to do.
DatasetInfo open_dataset(const std::string& path);

// Counts of each label in [0, num_classes) over a whole split; IoError naming
// the row when a label is out of range.
std::vector<int64_t> label_histogram(const std::string& path, std::string_view split);

// Checksums of a split's stored values, read in row blocks: FNV-1a 64 over the
// stored bytes of x (little-endian float32 for float x) and of y, and the plain
// sum of the stored x values (pixel sum for uint8 images).
struct SplitChecksum {
  uint64_t x_fnv1a = 0;
  uint64_t y_fnv1a = 0;
  double x_sum = 0;
};
SplitChecksum split_checksum(const std::string& path, std::string_view split);

}  // namespace ringflow::datasets
