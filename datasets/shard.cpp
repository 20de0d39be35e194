// Loading one rank's shard through HDF5 hyperslab selections (shard.h).
#include "ringflow/datasets/shard.h"

#include <algorithm>
#include <cmath>

#include "format_internal.h"
#include "h5_util.h"
#include "ringflow/base/error.h"

namespace ringflow::datasets {
namespace {

// Bytes of the staging buffer one H5Dread fills: bounds the extra memory of a
// load without changing which rows are read.
constexpr int64_t kPieceBytes = int64_t{8} << 20;

}  // namespace

std::string_view to_string(ShardMode mode) {
  return mode == ShardMode::kStrided ? "strided" : "contiguous";
}

ShardMode parse_shard_mode(std::string_view text) {
  if (text == "strided") return ShardMode::kStrided;
  if (text == "contiguous") return ShardMode::kContiguous;
  RF_THROW(InvalidArgument, "unknown shard mode '", text, "' — use strided or contiguous");
}

RowRange shard_rows(int64_t total_rows, int rank, int num_ranks, ShardMode mode) {
  RF_CHECK(num_ranks >= 1, "shard: num_ranks must be >= 1, got ", num_ranks);
  RF_CHECK(rank >= 0 && rank < num_ranks, "shard: rank ", rank, " is outside [0, ", num_ranks, ")");
  RF_CHECK(total_rows >= num_ranks, "shard: ", num_ranks, " ranks but only ", total_rows,
           " rows; every rank needs at least one row — run with at most ", total_rows,
           " ranks or use a bigger data set");
  RowRange r;
  if (mode == ShardMode::kStrided) {
    r.start = rank;
    r.stride = num_ranks;
    r.count = (total_rows - rank + num_ranks - 1) / num_ranks;
  } else {
    // Balanced blocks: sizes differ by at most one row.
    r.start = total_rows * rank / num_ranks;
    r.stride = 1;
    r.count = total_rows * (rank + 1) / num_ranks - r.start;
  }
  return r;
}

Shard load_shard(const std::string& path, std::string_view split, int rank, int num_ranks,
                 ShardMode mode, const NormalizeOptions& normalize) {
  h5::QuietErrors quiet;
  detail::ValidatedFile vf = detail::open_validated(path);
  const SplitInfo& info = vf.info.split(split);

  Shard shard;
  shard.path = path;
  shard.split = std::string(split);
  shard.rank = rank;
  shard.num_ranks = num_ranks;
  shard.mode = mode;
  shard.total_rows = info.rows;
  shard.num_classes = vf.info.num_classes;
  shard.feature_shape = info.feature_shape;
  shard.row_size = info.row_size;
  try {
    shard.rows = shard_rows(info.rows, rank, num_ranks, mode);
  } catch (const InvalidArgument& e) {
    RF_THROW(InvalidArgument, path, ": /", split, ": rank ", rank, ": ", e.what());
  }

  // Affine map applied once: feature = stored * a + b, from scale and
  // optional mean/std: ((stored * scale) - mean) / std.
  double a = info.scale, b = 0;
  if (normalize.standardize) {
    const std::optional<float> mean = normalize.mean ? normalize.mean : vf.info.train_mean;
    const std::optional<float> stddev = normalize.stddev ? normalize.stddev : vf.info.train_std;
    RF_CHECK(mean && stddev, path,
             ": mean/std normalisation needs the mean and std attributes of /train/x, which this "
             "file lacks — pass mean and std explicitly or re-create the file with ringflow-data");
    RF_CHECK(std::isfinite(*stddev) && *stddev > 0, path, ": std must be positive, got ", *stddev);
    a = info.scale / *stddev;
    b = -*mean / *stddev;
  }

  const std::string x_name = detail::ds_path(split, "x");
  const std::string y_name = detail::ds_path(split, "y");
  const std::string x_where = path + ": " + x_name;
  const std::string y_where = path + ": " + y_name;
  h5::Handle x = h5::dataset(H5Dopen2(vf.file.get(), x_name.c_str(), H5P_DEFAULT));
  h5::Handle y = h5::dataset(H5Dopen2(vf.file.get(), y_name.c_str(), H5P_DEFAULT));
  RF_H5_CHECK(x.get(), x_where, ": cannot open");
  RF_H5_CHECK(y.get(), y_where, ": cannot open");

  const int64_t n = shard.rows.count;
  const int64_t row_size = info.row_size;
  shard.x.resize(static_cast<size_t>(n * row_size));
  shard.y.resize(static_cast<size_t>(n));
  const bool u8 = info.x_dtype == XDtype::kUint8;
  const int64_t elem = u8 ? 1 : 4;
  const int64_t stride = shard.rows.stride;
  // Local rows per piece: the staging buffer spans (piece - 1) * stride + 1
  // rows (see detail::read_rows) and stays around kPieceBytes.
  const int64_t piece = std::max<int64_t>(1, kPieceBytes / (row_size * elem * stride));
  std::vector<uint8_t> staging;
  std::vector<int32_t> y_staging;
  const auto fa = static_cast<float>(a), fb = static_cast<float>(b);
  for (int64_t i = 0; i < n; i += piece) {
    const int64_t count = std::min(piece, n - i);
    const int64_t first = shard.rows[i];
    const int64_t span_rows = (count - 1) * stride + 1;
    float* dst = shard.x.data() + i * row_size;
    staging.resize(static_cast<size_t>(span_rows * row_size * elem));
    y_staging.resize(static_cast<size_t>(span_rows));
    shard.selected_x_elements +=
        detail::read_rows(x.get(), u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, first, stride, count,
                          staging.data(), x_where);
    shard.selected_y_elements += detail::read_rows(y.get(), H5T_NATIVE_INT32, first, stride, count,
                                                   y_staging.data(), y_where);
    // Gather staging row k * stride into local row i + k, converting once.
    for (int64_t k = 0; k < count; ++k) {
      float* out = dst + k * row_size;
      if (u8) {
        const uint8_t* in = staging.data() + k * stride * row_size;
        for (int64_t j = 0; j < row_size; ++j) out[j] = static_cast<float>(in[j]) * fa + fb;
      } else {
        const auto* in = reinterpret_cast<const float*>(staging.data()) + k * stride * row_size;
        if (a == 1.0 && b == 0.0) {
          std::copy_n(in, row_size, out);
        } else {
          for (int64_t j = 0; j < row_size; ++j) out[j] = in[j] * fa + fb;
        }
      }
      shard.y[static_cast<size_t>(i + k)] = y_staging[static_cast<size_t>(k * stride)];
    }
  }
  shard.stored_bytes_read = shard.selected_x_elements * elem + shard.selected_y_elements * 4;

  for (int64_t i = 0; i < n; ++i) {
    const int32_t label = shard.y[static_cast<size_t>(i)];
    if (label < 0 || label >= shard.num_classes) {
      RF_THROW(IoError, y_where, ": label ", label, " at row ", shard.rows[i], " is outside [0, ",
               shard.num_classes, ") (rank ", rank,
               ") — fix the labels or the num_classes attribute");
    }
  }
  return shard;
}

}  // namespace ringflow::datasets
