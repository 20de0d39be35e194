// Writer and validator of the version-1 HDF5 data-set format (format.h).
#include "ringflow/datasets/format.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "format_internal.h"
#include "h5_util.h"
#include "ringflow/base/error.h"

namespace ringflow::datasets {
namespace {

namespace fs = std::filesystem;

constexpr char kRecreate[] = "re-create it with ringflow-data import-idx or ringflow-data synth";
// Rows per piece when a whole split is scanned (histogram, checksum).
constexpr int64_t kScanBytes = int64_t{16} << 20;

// "uint8", "int32", "float64", "string", ... for error messages.
std::string describe_type(hid_t t) {
  const size_t bits = H5Tget_size(t) * 8;
  switch (H5Tget_class(t)) {
    case H5T_INTEGER:
      return std::string(H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int")
          .append(std::to_string(bits));
    case H5T_FLOAT:
      return std::string("float").append(std::to_string(bits));
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    default:
      return "a non-numeric type";
  }
}

std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s.append(", ");
    s.append(std::to_string(dims[i]));
  }
  s.append(")");
  return s;
}

void check_split_input(const std::string& path, std::string_view split, const SplitData& s,
                       int32_t num_classes) {
  const std::string where = path + ": " + detail::ds_path(split, "x");
  RF_CHECK(s.shape.size() >= 2, where, ": x needs shape (N, features...), got ",
           shape_str(s.shape));
  for (const int64_t d : s.shape) {
    RF_CHECK(d > 0, where, ": empty data set: shape ", shape_str(s.shape), " has a zero dimension");
  }
  const int64_t count =
      std::accumulate(s.shape.begin(), s.shape.end(), int64_t{1}, std::multiplies<>());
  RF_CHECK(s.x_u8.empty() != s.x_f32.empty(), where,
           ": give exactly one of uint8 or float32 features");
  const auto have = static_cast<int64_t>(s.x_u8.empty() ? s.x_f32.size() : s.x_u8.size());
  RF_CHECK(have == count, where, ": ", have, " values for shape ", shape_str(s.shape));
  if (!s.x_u8.empty()) {
    RF_CHECK(std::isfinite(s.scale) && s.scale > 0, where, ": scale must be positive, got ",
             s.scale);
  }
  RF_CHECK(static_cast<int64_t>(s.y.size()) == s.shape[0], path, ": ", detail::ds_path(split, "y"),
           ": x has ", s.shape[0], " rows but y has ", s.y.size());
  for (size_t i = 0; i < s.y.size(); ++i) {
    RF_CHECK(s.y[i] >= 0 && s.y[i] < num_classes, path, ": ", detail::ds_path(split, "y"),
             ": label ", s.y[i], " at row ", i, " is outside [0, ", num_classes,
             ") — fix the labels or num_classes");
  }
}

void write_split(hid_t file, const std::string& path, std::string_view split, const SplitData& s,
                 const WriteOptions& options) {
  const std::string where = path + ": /" + std::string(split);
  h5::Handle g = h5::group(
      H5Gcreate2(file, ("/" + std::string(split)).c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  RF_H5_CHECK(g.get(), where, ": cannot create group");

  const int64_t rows = s.shape[0];
  const bool u8 = !s.x_u8.empty();
  const int64_t row_bytes =
      (s.shape.size() > 1
           ? std::accumulate(s.shape.begin() + 1, s.shape.end(), int64_t{1}, std::multiplies<>())
           : 1) *
      (u8 ? 1 : 4);
  // A chunk is a run of whole rows of about chunk_bytes.
  const int64_t chunk_rows = std::clamp<int64_t>(options.chunk_bytes / row_bytes, 1, rows);

  {
    std::vector<hsize_t> dims(s.shape.begin(), s.shape.end());
    std::vector<hsize_t> chunk = dims;
    chunk[0] = static_cast<hsize_t>(chunk_rows);
    h5::Handle sp =
        h5::space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    h5::Handle dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
    RF_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), where,
                "/x: cannot set chunking");
    if (options.deflate_level > 0) H5Pset_deflate(dcpl.get(), options.deflate_level);
    h5::Handle ds = h5::dataset(H5Dcreate2(g.get(), "x", u8 ? H5T_STD_U8LE : H5T_IEEE_F32LE,
                                           sp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
    RF_H5_CHECK(ds.get(), where, "/x: cannot create data set");
    const void* src = u8 ? static_cast<const void*>(s.x_u8.data()) : s.x_f32.data();
    RF_H5_CHECK(H5Dwrite(ds.get(), u8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                         H5P_DEFAULT, src),
                where, "/x: write failed — is the disk full?");
    if (u8) h5::write_float32_attr(ds.get(), "scale", s.scale);
    if (split == "train") {
      // Statistics of the scaled train features over all elements, for
      // mean/std normalisation of both splits (the same on every rank).
      double sum = 0, sum_sq = 0;
      const double scale = u8 ? s.scale : 1.0;
      const size_t n = u8 ? s.x_u8.size() : s.x_f32.size();
      for (size_t i = 0; i < n; ++i) {
        const double v =
            (u8 ? static_cast<double>(s.x_u8[i]) : static_cast<double>(s.x_f32[i])) * scale;
        sum += v;
        sum_sq += v * v;
      }
      const double mean = sum / static_cast<double>(n);
      const double var = std::max(0.0, sum_sq / static_cast<double>(n) - mean * mean);
      h5::write_float32_attr(ds.get(), "mean", static_cast<float>(mean));
      h5::write_float32_attr(ds.get(), "std", static_cast<float>(std::sqrt(var)));
    }
  }
  {
    const hsize_t dims[1] = {static_cast<hsize_t>(rows)};
    const hsize_t chunk[1] = {static_cast<hsize_t>(std::min<int64_t>(rows, 1 << 16))};
    h5::Handle sp = h5::space(H5Screate_simple(1, dims, nullptr));
    h5::Handle dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(dcpl.get(), 1, chunk);
    if (options.deflate_level > 0) H5Pset_deflate(dcpl.get(), options.deflate_level);
    h5::Handle ds = h5::dataset(
        H5Dcreate2(g.get(), "y", H5T_STD_I32LE, sp.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
    RF_H5_CHECK(ds.get(), where, "/y: cannot create data set");
    RF_H5_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.y.data()),
                where, "/y: write failed — is the disk full?");
  }
}

// Checks one split of an opened file and fills its SplitInfo.
SplitInfo validate_split(hid_t file, const std::string& path, std::string_view split) {
  SplitInfo info;
  info.name = std::string(split);
  const std::string group = "/" + info.name;
  const std::string x_name = detail::ds_path(split, "x");
  const std::string y_name = detail::ds_path(split, "y");
  if (H5Lexists(file, group.c_str(), H5P_DEFAULT) <= 0) {
    RF_THROW(NotFound, path, ": group ", group, " is missing (a data set needs ", x_name, " and ",
             y_name, ") — ", kRecreate);
  }
  for (const std::string& name : {x_name, y_name}) {
    if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) {
      RF_THROW(NotFound, path, ": data set ", name, " is missing — ", kRecreate);
    }
  }

  h5::Handle x = h5::dataset(H5Dopen2(file, x_name.c_str(), H5P_DEFAULT));
  RF_H5_CHECK(x.get(), path, ": ", x_name, " cannot be opened as a data set — ", kRecreate);
  h5::Handle xt = h5::type(H5Dget_type(x.get()));
  const H5T_class_t x_class = H5Tget_class(xt.get());
  if (x_class == H5T_INTEGER && H5Tget_size(xt.get()) == 1 &&
      H5Tget_sign(xt.get()) == H5T_SGN_NONE) {
    info.x_dtype = XDtype::kUint8;
  } else if (x_class == H5T_FLOAT && H5Tget_size(xt.get()) == 4) {
    info.x_dtype = XDtype::kFloat32;
  } else {
    RF_THROW(IoError, path, ": ", x_name, " has dtype ", describe_type(xt.get()),
             "; expected uint8 or float32 — convert the features or ", kRecreate);
  }
  h5::Handle xs = h5::space(H5Dget_space(x.get()));
  const std::vector<int64_t> x_dims = h5::dims_of(xs.get());
  if (x_dims.size() < 2) {
    RF_THROW(IoError, path, ": ", x_name, " has rank ", x_dims.size(), " shape ", shape_str(x_dims),
             "; expected rank >= 2, (N, features...) — reshape it or ", kRecreate);
  }
  if (x_dims[0] == 0) {
    RF_THROW(IoError, path, ": ", x_name, " is empty (0 rows) — ", kRecreate,
             " from non-empty inputs");
  }
  for (size_t i = 1; i < x_dims.size(); ++i) {
    if (x_dims[i] == 0) {
      RF_THROW(IoError, path, ": ", x_name, " has shape ", shape_str(x_dims),
               " with an empty feature dimension — ", kRecreate);
    }
  }
  info.rows = x_dims[0];
  info.feature_shape.assign(x_dims.begin() + 1, x_dims.end());
  info.row_size = std::accumulate(info.feature_shape.begin(), info.feature_shape.end(), int64_t{1},
                                  std::multiplies<>());
  {
    h5::Handle dcpl = h5::plist(H5Dget_create_plist(x.get()));
    if (H5Pget_layout(dcpl.get()) == H5D_CHUNKED) {
      std::vector<hsize_t> chunk(x_dims.size());
      H5Pget_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
      info.chunk_rows = static_cast<int64_t>(chunk[0]);
    }
  }
  const std::string x_where = path + ": " + x_name;
  if (info.x_dtype == XDtype::kUint8) {
    const auto scale = h5::read_float_attr(x.get(), "scale", x_where);
    if (!scale) {
      RF_THROW(IoError, x_where, ": uint8 features need a float attribute `scale` (e.g. 1/255) — ",
               kRecreate);
    }
    if (!(std::isfinite(*scale) && *scale > 0)) {
      RF_THROW(IoError, x_where, ": attribute scale is ", *scale, "; it must be positive — ",
               kRecreate);
    }
    info.scale = static_cast<float>(*scale);
  }

  h5::Handle y = h5::dataset(H5Dopen2(file, y_name.c_str(), H5P_DEFAULT));
  RF_H5_CHECK(y.get(), path, ": ", y_name, " cannot be opened as a data set — ", kRecreate);
  h5::Handle yt = h5::type(H5Dget_type(y.get()));
  if (!(H5Tget_class(yt.get()) == H5T_INTEGER && H5Tget_size(yt.get()) == 4 &&
        H5Tget_sign(yt.get()) == H5T_SGN_2)) {
    RF_THROW(IoError, path, ": ", y_name, " has dtype ", describe_type(yt.get()),
             "; expected int32 labels — convert them or ", kRecreate);
  }
  h5::Handle ys = h5::space(H5Dget_space(y.get()));
  const std::vector<int64_t> y_dims = h5::dims_of(ys.get());
  if (y_dims.size() != 1) {
    RF_THROW(IoError, path, ": ", y_name, " has rank ", y_dims.size(), " shape ", shape_str(y_dims),
             "; expected rank 1, (N) — ", kRecreate);
  }
  if (y_dims[0] != info.rows) {
    RF_THROW(IoError, path, ": ", x_name, " has ", info.rows, " rows but ", y_name, " has ",
             y_dims[0], "; they must be equal — ", kRecreate);
  }
  return info;
}

}  // namespace

std::string_view to_string(XDtype dtype) {
  return dtype == XDtype::kUint8 ? "uint8" : "float32";
}

const SplitInfo& DatasetInfo::split(std::string_view name) const {
  if (name == "train") return train;
  if (name == "test") return test;
  RF_THROW(InvalidArgument, "unknown split '", name, "' — use train or test");
}

namespace detail {

ValidatedFile open_validated(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) RF_THROW(NotFound, path, ": no such file — check the path");
  if (fs::is_directory(path, ec)) {
    RF_THROW(IoError, path, ": is a directory, not an HDF5 data set — pass the .h5 file");
  }
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    RF_THROW(IoError, path, ": not an HDF5 file (or unreadable) — ", kRecreate);
  }
  ValidatedFile vf;
  // A larger chunk cache than HDF5's 1 MiB default, so strided shards of
  // files with big chunks still read each chunk from disk once.
  h5::Handle fapl = h5::plist(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_cache(fapl.get(), 0, 1021, size_t{32} << 20, 1.0);
  vf.file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()));
  RF_H5_CHECK(vf.file.get(), path, ": HDF5 cannot open the file (corrupt?) — ", kRecreate);
  const hid_t f = vf.file.get();
  DatasetInfo& info = vf.info;
  info.path = path;

  h5::Handle root = h5::group(H5Gopen2(f, "/", H5P_DEFAULT));
  const std::string where = path + ": /";
  const auto format = h5::read_string_attr(root.get(), "format", where);
  if (!format || *format != kFormatName) {
    RF_THROW(IoError, path, ": not a ringflow data set: the root attribute format is ",
             format ? "'" + *format + "'" : std::string("missing"), ", expected '", kFormatName,
             "' — ", kRecreate);
  }
  const auto version = h5::read_int_attr(root.get(), "version", where);
  if (!version) RF_THROW(IoError, path, ": the root attribute version is missing — ", kRecreate);
  if (*version != kFormatVersion) {
    RF_THROW(IoError, path, ": format version ", *version, "; this ringflow reads version ",
             kFormatVersion, " — ", kRecreate, " with this version of ringflow");
  }
  info.version = static_cast<int>(*version);
  const auto num_classes = h5::read_int_attr(root.get(), "num_classes", where);
  if (!num_classes || *num_classes < 1 || *num_classes > (int64_t{1} << 30)) {
    RF_THROW(IoError, path, ": the root attribute num_classes is ",
             num_classes ? std::to_string(*num_classes) : std::string("missing"),
             "; it must be a positive integer — ", kRecreate);
  }
  info.num_classes = static_cast<int32_t>(*num_classes);
  info.source = h5::read_string_attr(root.get(), "source", where).value_or("");

  info.train = validate_split(f, path, "train");
  info.test = validate_split(f, path, "test");
  {
    h5::Handle x = h5::dataset(H5Dopen2(f, "/train/x", H5P_DEFAULT));
    const std::string x_where = path + ": /train/x";
    if (auto m = h5::read_float_attr(x.get(), "mean", x_where))
      info.train_mean = static_cast<float>(*m);
    if (auto s = h5::read_float_attr(x.get(), "std", x_where))
      info.train_std = static_cast<float>(*s);
  }
  return vf;
}

int64_t read_rows(hid_t ds, hid_t mem_type, int64_t start, int64_t stride, int64_t count, void* dst,
                  const std::string& where) {
  h5::Handle fs_id = h5::space(H5Dget_space(ds));
  const std::vector<int64_t> dims = h5::dims_of(fs_id.get());
  const size_t rank = dims.size();
  // One hyperslab: `count` blocks of one whole row, `stride` rows apart.
  std::vector<hsize_t> h_start(rank, 0), h_stride(rank, 1), h_count(rank, 1), h_block(rank);
  h_start[0] = static_cast<hsize_t>(start);
  h_stride[0] = static_cast<hsize_t>(stride);
  h_count[0] = static_cast<hsize_t>(count);
  h_block[0] = 1;
  for (size_t i = 1; i < rank; ++i) h_block[i] = static_cast<hsize_t>(dims[i]);
  RF_H5_CHECK(H5Sselect_hyperslab(fs_id.get(), H5S_SELECT_SET, h_start.data(), h_stride.data(),
                                  h_count.data(), h_block.data()),
              where, ": cannot select rows ", start, " + i*", stride, ", i < ", count);
  // The memory selection has the same shape as the file's (same count,
  // stride and block, offset 0): HDF5 then maps whole chunks at once instead
  // of element by element, which is many times faster. Rows not selected stay
  // untouched, so dst holds only this selection's rows.
  std::vector<hsize_t> mem_dims = h_block;
  mem_dims[0] = static_cast<hsize_t>(1 + (count - 1) * stride);
  h5::Handle ms = h5::space(H5Screate_simple(static_cast<int>(rank), mem_dims.data(), nullptr));
  h_start[0] = 0;
  RF_H5_CHECK(H5Sselect_hyperslab(ms.get(), H5S_SELECT_SET, h_start.data(), h_stride.data(),
                                  h_count.data(), h_block.data()),
              where, ": cannot select the memory rows");
  RF_H5_CHECK(H5Dread(ds, mem_type, ms.get(), fs_id.get(), H5P_DEFAULT, dst), where,
              ": read of rows ", start, " + i*", stride, ", i < ", count,
              " failed (file truncated or corrupt?) — re-create the file");
  return static_cast<int64_t>(H5Sget_select_npoints(fs_id.get()));
}

}  // namespace detail

void write_dataset(const std::string& path, const SplitData& train, const SplitData& test,
                   const WriteOptions& options) {
  RF_CHECK(options.num_classes > 0, path, ": num_classes must be positive, got ",
           options.num_classes);
  RF_CHECK(options.deflate_level >= 0 && options.deflate_level <= 9, path,
           ": deflate level must be 0..9, got ", options.deflate_level);
  RF_CHECK(options.chunk_bytes > 0, path, ": chunk_bytes must be positive");
  check_split_input(path, "train", train, options.num_classes);
  check_split_input(path, "test", test, options.num_classes);
  RF_CHECK(std::equal(train.shape.begin() + 1, train.shape.end(), test.shape.begin() + 1,
                      test.shape.end()),
           path, ": train features have shape ", shape_str(train.shape), " but test ",
           shape_str(test.shape), "; they must agree after N");

  h5::QuietErrors quiet;
  const std::string tmp = path + ".tmp" + std::to_string(getpid());
  try {
    {
      h5::Handle f = h5::file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
      RF_H5_CHECK(f.get(), tmp,
                  ": cannot create the file — check that the directory exists and is writable");
      h5::Handle root = h5::group(H5Gopen2(f.get(), "/", H5P_DEFAULT));
      h5::write_string_attr(root.get(), "format", std::string(kFormatName));
      h5::write_int32_attr(root.get(), "version", kFormatVersion);
      h5::write_int32_attr(root.get(), "num_classes", options.num_classes);
      h5::write_string_attr(root.get(), "source", options.source);
      write_split(f.get(), path, "train", train, options);
      write_split(f.get(), path, "test", test, options);
      root.reset();
      const hid_t id = f.release();
      RF_H5_CHECK(H5Fclose(id), tmp, ": closing the file failed — is the disk full?");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    RF_CHECK_AS(IoError, !ec, path, ": cannot rename ", tmp, " to it: ", ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

DatasetInfo open_dataset(const std::string& path) {
  h5::QuietErrors quiet;
  return detail::open_validated(path).info;
}

std::vector<int64_t> label_histogram(const std::string& path, std::string_view split) {
  h5::QuietErrors quiet;
  detail::ValidatedFile vf = detail::open_validated(path);
  const SplitInfo& info = vf.info.split(split);
  const std::string y_name = detail::ds_path(split, "y");
  const std::string where = path + ": " + y_name;
  h5::Handle y = h5::dataset(H5Dopen2(vf.file.get(), y_name.c_str(), H5P_DEFAULT));
  std::vector<int64_t> hist(static_cast<size_t>(vf.info.num_classes), 0);
  std::vector<int32_t> buf;
  const int64_t piece = kScanBytes / 4;
  for (int64_t row = 0; row < info.rows; row += piece) {
    const int64_t n = std::min(piece, info.rows - row);
    buf.resize(static_cast<size_t>(n));
    detail::read_rows(y.get(), H5T_NATIVE_INT32, row, 1, n, buf.data(), where);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t label = buf[static_cast<size_t>(i)];
      if (label < 0 || label >= vf.info.num_classes) {
        RF_THROW(IoError, where, ": label ", label, " at row ", row + i, " is outside [0, ",
                 vf.info.num_classes, ") — fix the labels or the num_classes attribute");
      }
      ++hist[static_cast<size_t>(label)];
    }
  }
  return hist;
}

namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t fnv1a(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnvPrime;
  return h;
}

}  // namespace

SplitChecksum split_checksum(const std::string& path, std::string_view split) {
  h5::QuietErrors quiet;
  detail::ValidatedFile vf = detail::open_validated(path);
  const SplitInfo& info = vf.info.split(split);
  SplitChecksum sum;
  sum.x_fnv1a = kFnvOffset;
  sum.y_fnv1a = kFnvOffset;
  const bool u8 = info.x_dtype == XDtype::kUint8;
  const int64_t elem = u8 ? 1 : 4;
  const int64_t piece = std::max<int64_t>(1, kScanBytes / (info.row_size * elem));
  const std::string x_name = detail::ds_path(split, "x");
  const std::string y_name = detail::ds_path(split, "y");
  h5::Handle x = h5::dataset(H5Dopen2(vf.file.get(), x_name.c_str(), H5P_DEFAULT));
  h5::Handle y = h5::dataset(H5Dopen2(vf.file.get(), y_name.c_str(), H5P_DEFAULT));
  std::vector<uint8_t> xb;
  std::vector<int32_t> yb;
  for (int64_t row = 0; row < info.rows; row += piece) {
    const int64_t n = std::min(piece, info.rows - row);
    xb.resize(static_cast<size_t>(n * info.row_size * elem));
    yb.resize(static_cast<size_t>(n));
    // Floats are hashed as little-endian bytes: ringflow targets x86-64.
    detail::read_rows(x.get(), u8 ? H5T_NATIVE_UINT8 : H5T_IEEE_F32LE, row, 1, n, xb.data(),
                      path + ": " + x_name);
    detail::read_rows(y.get(), H5T_STD_I32LE, row, 1, n, yb.data(), path + ": " + y_name);
    sum.x_fnv1a = fnv1a(sum.x_fnv1a, xb.data(), xb.size());
    sum.y_fnv1a = fnv1a(sum.y_fnv1a, reinterpret_cast<const uint8_t*>(yb.data()), yb.size() * 4);
    if (u8) {
      uint64_t s = 0;
      for (const uint8_t v : xb) s += v;
      sum.x_sum += static_cast<double>(s);
    } else {
      const auto* f = reinterpret_cast<const float*>(xb.data());
      for (size_t i = 0; i < xb.size() / 4; ++i) sum.x_sum += f[i];
    }
  }
  return sum;
}

}  // namespace ringflow::datasets
