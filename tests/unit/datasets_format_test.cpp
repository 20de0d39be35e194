// Unit tests of ringflow::datasets files on small inputs generated in a temp
// dir: IDX reading, the HDF5 format and its validation (every bad input of
// issue 4), and the IDX converter.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "datasets_files.h"
#include "expect_error.h"
#include "ringflow/base/error.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/datasets/convert.h"
#include "ringflow/datasets/format.h"
#include "ringflow/datasets/idx.h"
#include "ringflow/datasets/shard.h"
#include "ringflow/datasets/synth.h"

namespace rd = ringflow::datasets;
using rftest::expect_error;
using rftest::TempDir;

namespace {

// ---------------------------------------------------------------- IDX

TEST(Idx, RoundTripPlainAndGzip) {
  TempDir dir;
  std::vector<uint8_t> data(5 * 3 * 4);
  std::iota(data.begin(), data.end(), uint8_t{0});
  const std::vector<int64_t> dims = {5, 3, 4};
  for (const bool gz : {false, true}) {
    const std::string path = dir.file(gz ? "a.idx.gz" : "a.idx");
    rd::write_idx(path, dims, data, gz);
    const rd::IdxArray a = rd::read_idx(path);
    EXPECT_EQ(a.dims, dims);
    EXPECT_EQ(a.data, data);
  }
  // A gzip file is really compressed (starts with the gzip magic).
  const auto bytes = rftest::read_bytes(dir.file("a.idx.gz"));
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(bytes[0], 0x1f);
  EXPECT_EQ(bytes[1], 0x8b);
}

TEST(Idx, LargerThanOneInflatePiece) {
  TempDir dir;
  std::vector<uint8_t> data(3 * 1024 * 1024 + 17);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 % 253);
  const std::vector<int64_t> dims = {static_cast<int64_t>(data.size())};
  rd::write_idx(dir.file("big.gz"), dims, data, true);
  EXPECT_EQ(rd::read_idx(dir.file("big.gz")).data, data);
}

TEST(Idx, EveryBadInputNamesFileAndProblem) {
  TempDir dir;
  int n = 0;
  for (const rftest::BadCase& c : rftest::write_bad_inputs(dir.path())) {
    if (c.kind != "idx") continue;
    SCOPED_TRACE(c.name);
    const std::string path = dir.file(c.name);
    expect_error([&] { rd::read_idx(path); }, {path, c.expect});
    ++n;
  }
  EXPECT_GE(n, 14);
}

TEST(Idx, MissingFileIsNotFound) {
  EXPECT_THROW(rd::read_idx("/nonexistent/x.idx"), ringflow::NotFound);
}

// ---------------------------------------------------------------- format

TEST(Format, WriteAndOpenUint8) {
  TempDir dir;
  const std::string path = dir.file("u8.h5");
  rftest::write_small_dataset(path, 50, 20, 6, 4, /*u8=*/true, /*chunk_bytes=*/60);
  const rd::DatasetInfo info = rd::open_dataset(path);
  EXPECT_EQ(info.version, rd::kFormatVersion);
  EXPECT_EQ(info.num_classes, 4);
  EXPECT_EQ(info.source, "test");
  EXPECT_EQ(info.train.rows, 50);
  EXPECT_EQ(info.test.rows, 20);
  EXPECT_EQ(info.train.feature_shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(info.train.row_size, 6);
  EXPECT_EQ(info.train.x_dtype, rd::XDtype::kUint8);
  EXPECT_FLOAT_EQ(info.train.scale, 1.0f / 255.0f);
  EXPECT_EQ(info.train.chunk_rows, 10);  // 60 bytes / 6 bytes per row
  ASSERT_TRUE(info.train_mean && info.train_std);
  // mean/std of the scaled train features, computed here independently.
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < 50; ++i) {
    for (int64_t j = 0; j < 6; ++j) {
      const double v = rftest::row_byte(i, j) / 255.0;
      sum += v;
      sq += v * v;
    }
  }
  const double mean = sum / 300, sd = std::sqrt(sq / 300 - mean * mean);
  EXPECT_NEAR(*info.train_mean, mean, 1e-6);
  EXPECT_NEAR(*info.train_std, sd, 1e-6);
  EXPECT_EQ(rd::label_histogram(path, "train"), (std::vector<int64_t>{13, 13, 12, 12}));
  EXPECT_EQ(rd::label_histogram(path, "test"), (std::vector<int64_t>{5, 5, 5, 5}));
  EXPECT_THROW(info.split("valid"), ringflow::InvalidArgument);
}

TEST(Format, WriteAndOpenFloat32WithCompression) {
  TempDir dir;
  const std::string path = dir.file("f.h5");
  std::vector<float> x(30 * 3);
  std::vector<int32_t> y(30);
  for (int i = 0; i < 30; ++i) {
    for (int j = 0; j < 3; ++j) x[i * 3 + j] = rftest::row_value(i, j);
    y[i] = i % 2;
  }
  rd::SplitData tr{.shape = {20, 3},
                   .x_u8 = {},
                   .x_f32 = std::span(x).first(60),
                   .scale = 1,
                   .y = std::span(y).first(20)};
  rd::SplitData te{.shape = {10, 3},
                   .x_u8 = {},
                   .x_f32 = std::span(x).subspan(60),
                   .scale = 1,
                   .y = std::span(y).subspan(20)};
  rd::write_dataset(path, tr, te, {.num_classes = 2, .source = "f", .deflate_level = 6});
  const rd::DatasetInfo info = rd::open_dataset(path);
  EXPECT_EQ(info.train.x_dtype, rd::XDtype::kFloat32);
  EXPECT_EQ(info.test.rows, 10);
  const rd::Shard s = rd::load_shard(path, "test", 0, 1);
  ASSERT_EQ(s.x.size(), 30u);
  EXPECT_EQ(s.x[4], x[(20 + 1) * 3 + 1]);  // test row 1 is row 21 of the array
  // Checksums are stable across calls and differ between splits.
  const rd::SplitChecksum a = rd::split_checksum(path, "train");
  const rd::SplitChecksum b = rd::split_checksum(path, "train");
  EXPECT_EQ(a.x_fnv1a, b.x_fnv1a);
  EXPECT_EQ(a.y_fnv1a, b.y_fnv1a);
  EXPECT_NE(a.x_fnv1a, rd::split_checksum(path, "test").x_fnv1a);
}

TEST(Format, WriteLeavesNoTempFileAndReplacesAtomically) {
  TempDir dir;
  const std::string path = dir.file("d.h5");
  rftest::write_small_dataset(path, 5, 5, 2, 2, false);
  rftest::write_small_dataset(path, 7, 5, 2, 2, false);
  EXPECT_EQ(rd::open_dataset(path).train.rows, 7);
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 1);
}

TEST(Format, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.h5");
  std::vector<float> x(8, 0.f);
  std::vector<int32_t> y = {0, 1, 2, 1};
  rd::SplitData ok{.shape = {4, 2}, .x_u8 = {}, .x_f32 = x, .scale = 1, .y = y};
  expect_error([&] { rd::write_dataset(path, ok, ok, {.num_classes = 2}); },
               {path, "/train/y", "label 2 at row 2"});
  rd::SplitData short_y = ok;
  short_y.y = std::span(y).first(3);
  expect_error([&] { rd::write_dataset(path, ok, short_y, {.num_classes = 3}); },
               {"/test/y", "x has 4 rows but y has 3"});
  rd::SplitData empty{.shape = {0, 2}, .x_u8 = {}, .x_f32 = {}, .scale = 1, .y = {}};
  expect_error([&] { rd::write_dataset(path, empty, ok, {.num_classes = 3}); }, {"empty"});
  rd::SplitData flat{.shape = {8}, .x_u8 = {}, .x_f32 = x, .scale = 1, .y = y};
  expect_error([&] { rd::write_dataset(path, flat, ok, {.num_classes = 3}); }, {"(N, features"});
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Format, EveryBadFileNamesFileDataSetAndProblem) {
  TempDir dir;
  int n = 0;
  for (const rftest::BadCase& c : rftest::write_bad_inputs(dir.path())) {
    if (c.kind != "info") continue;
    SCOPED_TRACE(c.name);
    const std::string path = dir.file(c.name);
    // Labels are checked when read: by label_histogram (all rows) and by
    // load_shard (the shard's rows); the rest already by open_dataset.
    const bool label_case = c.name.find("label") != std::string::npos;
    if (label_case) {
      EXPECT_NO_THROW(rd::open_dataset(path));
      const std::string split = c.name.find("negative") != std::string::npos ? "train" : "test";
      expect_error([&] { rd::label_histogram(path, split); }, {path, c.expect});
      expect_error([&] { rd::load_shard(path, split, 0, 1); }, {path, c.expect, "rank 0"});
    } else {
      expect_error([&] { rd::open_dataset(path); }, {path, c.expect});
      expect_error([&] { rd::load_shard(path, "train", 0, 1); }, {path, c.expect});
    }
    ++n;
  }
  EXPECT_GE(n, 15);
}

TEST(Format, ErrorTypes) {
  TempDir dir;
  rftest::write_bad_inputs(dir.path());
  EXPECT_THROW(rd::open_dataset(dir.file("does_not_exist.h5")), ringflow::NotFound);
  EXPECT_THROW(rd::open_dataset(dir.file("missing_dataset.h5")), ringflow::NotFound);
  EXPECT_THROW(rd::open_dataset(dir.file("not_hdf5.h5")), ringflow::IoError);
  EXPECT_THROW(rd::open_dataset(dir.file("wrong_dtype_x.h5")), ringflow::IoError);
  EXPECT_THROW(rd::open_dataset(dir.path()), ringflow::IoError);  // a directory
}

TEST(Format, FixedLengthStringAttributesAreAccepted) {
  // The raw writer stores `format` as a fixed-length string (as h5py can).
  TempDir dir;
  const std::string path = dir.file("fixed.h5");
  {
    rftest::RawH5 h(path);
    rftest::write_raw_valid(h, 2);
    const std::vector<float> x(6, 1.f);
    const std::vector<int32_t> y = {0, 1, 1};
    for (const std::string g : {"/train", "/test"}) {
      h.group(g);
      h.dataset(g + "/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {3, 2}, x.data());
      h.dataset(g + "/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {3}, y.data());
    }
  }
  const rd::DatasetInfo info = rd::open_dataset(path);
  EXPECT_EQ(info.train.chunk_rows, 0);  // contiguous layout still reads
  EXPECT_FALSE(info.train_mean.has_value());
  const rd::Shard s = rd::load_shard(path, "train", 1, 2);
  EXPECT_EQ(s.y, (std::vector<int32_t>{1}));
  // Standardising needs stats the file lacks, unless given.
  expect_error(
      [&] { rd::load_shard(path, "train", 0, 1, rd::ShardMode::kStrided, {.standardize = true}); },
      {path, "mean and std"});
  const rd::Shard z = rd::load_shard(path, "train", 0, 1, rd::ShardMode::kStrided,
                                     {.standardize = true, .mean = 0.5f, .stddev = 2.0f});
  EXPECT_FLOAT_EQ(z.x[0], 0.25f);
}

// ---------------------------------------------------------------- convert

void write_mnist_like(const std::string& dir, int64_t train, int64_t test, bool gz) {
  const std::string ext = gz ? ".gz" : "";
  auto images = [](int64_t n) {
    std::vector<uint8_t> v(static_cast<size_t>(n * 4 * 3));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(i % 256);
    return v;
  };
  auto labels = [](int64_t n) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i % 10);
    return v;
  };
  const std::vector<int64_t> trd = {train, 4, 3}, ted = {test, 4, 3}, trl = {train}, tel = {test};
  rd::write_idx(dir + "/train-images-idx3-ubyte" + ext, trd, images(train), gz);
  rd::write_idx(dir + "/train-labels-idx1-ubyte" + ext, trl, labels(train), gz);
  rd::write_idx(dir + "/t10k-images-idx3-ubyte" + ext, ted, images(test), gz);
  rd::write_idx(dir + "/t10k-labels-idx1-ubyte" + ext, tel, labels(test), gz);
}

TEST(Convert, ImportIdxDirectoryPlainAndGzip) {
  for (const bool gz : {false, true}) {
    TempDir dir;
    write_mnist_like(dir.path(), 30, 12, gz);
    const rd::IdxFiles files = rd::find_idx_files(dir.path());
    EXPECT_NE(files.train_images.find("train-images"), std::string::npos);
    const std::string out = dir.file("out.h5");
    const rd::ImportResult r = rd::import_idx(files, out, {});
    EXPECT_EQ(r.train_rows, 30);
    EXPECT_EQ(r.test_rows, 12);
    EXPECT_EQ(r.feature_shape, (std::vector<int64_t>{4, 3}));
    const rd::DatasetInfo info = rd::open_dataset(out);
    EXPECT_EQ(info.num_classes, 10);
    EXPECT_EQ(info.train.x_dtype, rd::XDtype::kUint8);
    EXPECT_EQ(rd::label_histogram(out, "train"),
              (std::vector<int64_t>{3, 3, 3, 3, 3, 3, 3, 3, 3, 3}));
    const rd::Shard s = rd::load_shard(out, "train", 0, 1);
    EXPECT_FLOAT_EQ(s.x[13], 13 / 255.0f);
    EXPECT_FLOAT_EQ(s.x[255], 1.0f);
  }
}

TEST(Convert, ImportRejectsInconsistentInputs) {
  TempDir dir;
  write_mnist_like(dir.path(), 30, 12, false);
  rd::IdxFiles files = rd::find_idx_files(dir.path());
  // Labels and images of different lengths.
  rd::IdxFiles mixed = files;
  mixed.test_labels = files.train_labels;
  expect_error([&] { rd::import_idx(mixed, dir.file("o.h5"), {}); },
               {files.test_images, "has 12 images", "30 labels"});
  // Swapped images and labels.
  rd::IdxFiles swapped = files;
  std::swap(swapped.train_images, swapped.train_labels);
  expect_error([&] { rd::import_idx(swapped, dir.file("o.h5"), {}); }, {"3 dimensions (N, H, W)"});
  // Labels beyond num_classes.
  rd::WriteOptions five;
  five.num_classes = 5;
  expect_error([&] { rd::import_idx(files, dir.file("o.h5"), five); },
               {files.train_labels, "label 5 at row 5", "[0, 5)"});
  // A corrupt input file names that file.
  rftest::write_bytes(files.test_images, {0, 0, 8, 3, 0, 0});
  expect_error([&] { rd::import_idx(files, dir.file("o.h5"), {}); },
               {files.test_images, "truncated"});
  EXPECT_FALSE(std::filesystem::exists(dir.file("o.h5")));
  expect_error([&] { rd::find_idx_files(dir.file("nope")); }, {"no such directory"});
  TempDir empty;
  expect_error([&] { rd::find_idx_files(empty.path()); }, {"train-images-idx3-ubyte"});
}

}  // namespace
