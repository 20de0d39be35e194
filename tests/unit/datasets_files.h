// Test-only helpers shared by the datasets unit, MPI, e2e and bench programs:
// a temp directory, a raw HDF5 writer (to build deliberately broken files),
// small valid data sets whose values encode their row, and a table of bad
// inputs with the words their error must contain.
#pragma once

#include <hdf5.h>
#include <stdlib.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringflow/datasets/format.h"
#include "ringflow/datasets/idx.h"

namespace rftest {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/rf_datasets_XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  explicit TempDir(std::string existing) : path_(std::move(existing)), owned_(false) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    if (owned_) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
  bool owned_ = true;
};

// Writes an HDF5 file piece by piece with no validation at all, so tests can
// build files that break any rule of the format.
class RawH5 {
 public:
  explicit RawH5(const std::string& path)
      : f_(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)) {
    if (f_ < 0) throw std::runtime_error("cannot create " + path);
  }
  ~RawH5() { H5Fclose(f_); }
  RawH5(const RawH5&) = delete;
  RawH5& operator=(const RawH5&) = delete;

  void group(const std::string& name) {
    H5Gclose(H5Gcreate2(f_, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  }
  // data may be null (then nothing is written, e.g. for 0 rows).
  void dataset(const std::string& name, hid_t file_type, hid_t mem_type,
               const std::vector<hsize_t>& dims, const void* data) {
    hid_t sp = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t ds = H5Dcreate2(f_, name.c_str(), file_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (data != nullptr) H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    H5Sclose(sp);
  }
  void attr_string(const std::string& obj, const char* name, const std::string& value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, value.size() + 1);  // fixed-length, as some writers do
    attr(obj, name, t, t, value.c_str());
    H5Tclose(t);
  }
  void attr_int(const std::string& obj, const char* name, int32_t v) {
    attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &v);
  }
  void attr_float(const std::string& obj, const char* name, float v) {
    attr(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &v);
  }

 private:
  void attr(const std::string& obj, const char* name, hid_t ft, hid_t mt, const void* v) {
    hid_t o = H5Oopen(f_, obj.c_str(), H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(o, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, mt, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Oclose(o);
  }
  hid_t f_;
};

// The value of feature j of global row i in the files below: exact in
// float32 and uint8-friendly, so a test can tell which row it got.
inline float row_value(int64_t i, int64_t j) {
  return static_cast<float>(i) + j / 16.0f;
}
inline uint8_t row_byte(int64_t i, int64_t j) {
  return static_cast<uint8_t>((i * 7 + j) % 251);
}
inline int32_t row_label(int64_t i, int32_t classes) {
  return static_cast<int32_t>(i % classes);
}

// A valid data set with train_rows / test_rows rows of `features` values each
// (x shape (N, features) for float32, (N, 2, features/2) for uint8 when
// features is even, to exercise rank 3), built with write_dataset.
inline void write_small_dataset(const std::string& path, int64_t train_rows, int64_t test_rows,
                                int64_t features, int32_t classes, bool u8,
                                int64_t chunk_bytes = 512 * 1024) {
  std::vector<std::vector<uint8_t>> xb(2);
  std::vector<std::vector<float>> xf(2);
  std::vector<std::vector<int32_t>> y(2);
  ringflow::datasets::SplitData s[2];
  const int64_t rows[2] = {train_rows, test_rows};
  for (int k = 0; k < 2; ++k) {
    for (int64_t i = 0; i < rows[k]; ++i) {
      for (int64_t j = 0; j < features; ++j) {
        if (u8)
          xb[k].push_back(row_byte(i, j));
        else
          xf[k].push_back(row_value(i, j));
      }
      y[k].push_back(row_label(i, classes));
    }
    s[k].shape = (u8 && features % 2 == 0) ? std::vector<int64_t>{rows[k], 2, features / 2}
                                           : std::vector<int64_t>{rows[k], features};
    if (u8)
      s[k].x_u8 = xb[k];
    else
      s[k].x_f32 = xf[k];
    s[k].y = y[k];
  }
  ringflow::datasets::WriteOptions o;
  o.num_classes = classes;
  o.source = "test";
  o.chunk_bytes = chunk_bytes;
  ringflow::datasets::write_dataset(path, s[0], s[1], o);
}

// A bad input: file name, which ringflow-data command reads it ("info" for an
// HDF5 file, "idx" for an IDX file), and words its error message must contain.
struct BadCase {
  std::string name;
  std::string kind;
  std::string expect;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream os(path, std::ios::binary | std::ios::trunc);
  os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(is), std::istreambuf_iterator<char>()};
}

// Root attributes of a valid file, then /train and /test; `skip` names a data
// set to leave out; x/y of each split come from the callbacks.
inline void write_raw_valid(RawH5& h, int32_t num_classes = 10) {
  h.attr_string("/", "format", "ringflow-dataset");
  h.attr_int("/", "version", 1);
  h.attr_int("/", "num_classes", num_classes);
}

// Writes every bad input into `dir` and returns the table. Files:
// HDF5 (checked by open_dataset / load_shard / label_histogram) and IDX
// (checked by read_idx).
inline std::vector<BadCase> write_bad_inputs(const std::string& dir) {
  std::vector<BadCase> cases;
  const std::vector<float> xf(40, 0.5f);  // 10 rows x 4
  std::vector<int32_t> y10(10);
  for (int i = 0; i < 10; ++i) y10[i] = i % 3;
  const std::vector<int16_t> x16(40, 1);
  const std::vector<float> yf(10, 1.0f);
  auto split = [&](RawH5& h, const std::string& g, bool with_x = true, bool with_y = true) {
    h.group(g);
    if (with_x) h.dataset(g + "/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10, 4}, xf.data());
    if (with_y) h.dataset(g + "/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {10}, y10.data());
  };
  auto h5case = [&](const std::string& name, const std::string& expect, auto&& build) {
    {
      RawH5 h(dir + "/" + name);
      build(h);
    }
    cases.push_back({name, "info", expect});
  };

  write_bytes(dir + "/not_hdf5.h5", {'h', 'e', 'l', 'l', 'o', '\n'});
  cases.push_back({"not_hdf5.h5", "info", "not an HDF5 file"});
  cases.push_back({"does_not_exist.h5", "info", "no such file"});
  h5case("missing_dataset.h5", "data set /test/y is missing", [&](RawH5& h) {
    write_raw_valid(h);
    split(h, "/train");
    split(h, "/test", true, false);
  });
  h5case("missing_group.h5", "group /test is missing", [&](RawH5& h) {
    write_raw_valid(h);
    split(h, "/train");
  });
  h5case("no_format.h5", "not a ringflow data set", [&](RawH5& h) {
    h.attr_int("/", "version", 1);
    split(h, "/train");
    split(h, "/test");
  });
  h5case("bad_version.h5", "format version 2", [&](RawH5& h) {
    h.attr_string("/", "format", "ringflow-dataset");
    h.attr_int("/", "version", 2);
    h.attr_int("/", "num_classes", 3);
    split(h, "/train");
    split(h, "/test");
  });
  h5case("wrong_dtype_x.h5", "/train/x has dtype int16", [&](RawH5& h) {
    write_raw_valid(h);
    h.group("/train");
    h.dataset("/train/x", H5T_STD_I16LE, H5T_NATIVE_INT16, {10, 4}, x16.data());
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {10}, y10.data());
    split(h, "/test");
  });
  h5case("wrong_dtype_y.h5", "/test/y has dtype float32", [&](RawH5& h) {
    write_raw_valid(h);
    split(h, "/train");
    h.group("/test");
    h.dataset("/test/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10, 4}, xf.data());
    h.dataset("/test/y", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10}, yf.data());
  });
  h5case("wrong_rank_x.h5", "/train/x has rank 1", [&](RawH5& h) {
    write_raw_valid(h);
    h.group("/train");
    h.dataset("/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10}, xf.data());
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {10}, y10.data());
    split(h, "/test");
  });
  h5case("wrong_rank_y.h5", "/train/y has rank 2", [&](RawH5& h) {
    write_raw_valid(h);
    h.group("/train");
    h.dataset("/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10, 4}, xf.data());
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {5, 2}, y10.data());
    split(h, "/test");
  });
  h5case("length_mismatch.h5", "has 10 rows but /train/y has 9", [&](RawH5& h) {
    write_raw_valid(h);
    h.group("/train");
    h.dataset("/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10, 4}, xf.data());
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {9}, y10.data());
    split(h, "/test");
  });
  h5case("label_out_of_range.h5", "label 7 at row 2 is outside [0, 3)", [&](RawH5& h) {
    write_raw_valid(h, 3);
    split(h, "/train");
    std::vector<int32_t> bad = y10;
    bad[2] = 7;
    h.group("/test");
    h.dataset("/test/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10, 4}, xf.data());
    h.dataset("/test/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {10}, bad.data());
  });
  h5case("negative_label.h5", "label -1 at row 0 is outside [0, 3)", [&](RawH5& h) {
    write_raw_valid(h, 3);
    h.group("/train");
    std::vector<int32_t> bad = y10;
    bad[0] = -1;
    h.dataset("/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {10, 4}, xf.data());
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {10}, bad.data());
    split(h, "/test");
  });
  h5case("empty.h5", "/train/x is empty (0 rows)", [&](RawH5& h) {
    write_raw_valid(h);
    h.group("/train");
    h.dataset("/train/x", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {0, 4}, nullptr);
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {0}, nullptr);
    split(h, "/test");
  });
  h5case("missing_scale.h5", "need a float attribute `scale`", [&](RawH5& h) {
    write_raw_valid(h);
    const std::vector<uint8_t> xb(40, 3);
    h.group("/train");
    h.dataset("/train/x", H5T_STD_U8LE, H5T_NATIVE_UINT8, {10, 4}, xb.data());
    h.dataset("/train/y", H5T_STD_I32LE, H5T_NATIVE_INT32, {10}, y10.data());
    split(h, "/test");
  });
  h5case("bad_num_classes.h5", "num_classes is 0", [&](RawH5& h) {
    h.attr_string("/", "format", "ringflow-dataset");
    h.attr_int("/", "version", 1);
    h.attr_int("/", "num_classes", 0);
    split(h, "/train");
    split(h, "/test");
  });

  // IDX inputs. A valid 3x2x2 header: 00 00 08 03, dims 3, 2, 2.
  const std::vector<uint8_t> good = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2,  0,  0,
                                     0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  auto idxcase = [&](const std::string& name, const std::vector<uint8_t>& bytes,
                     const std::string& expect) {
    write_bytes(dir + "/" + name, bytes);
    cases.push_back({name, "idx", expect});
  };
  idxcase("bad_magic.idx", {1, 2, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2}, "bad magic");
  idxcase("bad_type.idx", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0}, "unsupported IDX element type");
  idxcase("zero_dims.idx", {0, 0, 8, 0}, "0 dimensions");
  idxcase("overflow_dims.idx",
          {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
          "overflow");
  // Claims 65535*65535*65535 bytes (about 281 TB) and holds 4.
  idxcase("huge_claim.idx",
          {0, 0, 8, 3, 0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4},
          "truncated");
  idxcase("zero_dim.idx", {0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 5}, "empty data set");
  std::vector<uint8_t> trunc(good.begin(), good.end() - 3);
  idxcase("truncated.idx", trunc, "truncated");
  idxcase("truncated_header.idx", {0, 0, 8, 3, 0, 0, 0, 3, 0}, "truncated");
  std::vector<uint8_t> trailing = good;
  trailing.push_back(99);
  idxcase("trailing.idx", trailing, "unexpected bytes");
  idxcase("empty_file.idx", {}, "truncated");
  cases.push_back({"does_not_exist.idx", "idx", "no such file"});

  // gzip: a valid stream of a bigger array, then cut or damaged.
  std::vector<uint8_t> big(4 + 4 * 3 + 64 * 28 * 28);
  big = {0, 0, 8, 3, 0, 0, 0, 64, 0, 0, 0, 28, 0, 0, 0, 28};
  for (int i = 0; i < 64 * 28 * 28; ++i) big.push_back(static_cast<uint8_t>((i * i) % 251));
  {
    gzFile g = gzopen((dir + "/whole.idx.gz").c_str(), "wb");
    gzwrite(g, big.data(), static_cast<unsigned>(big.size()));
    gzclose(g);
  }
  std::vector<uint8_t> gz = read_bytes(dir + "/whole.idx.gz");
  idxcase("truncated.idx.gz", std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2),
          "bad gzip stream");
  std::vector<uint8_t> corrupt = gz;
  for (size_t i = gz.size() / 3; i < gz.size() / 3 + 16; ++i) corrupt[i] ^= 0x5A;
  idxcase("corrupt.idx.gz", corrupt, "bad gzip stream");
  std::vector<uint8_t> bad_crc = gz;
  bad_crc[gz.size() - 6] ^= 0xFF;  // inside the CRC32 of the trailer
  idxcase("bad_crc.idx.gz", bad_crc, "bad gzip stream");
  {
    // A gzip stream whose header claims far more than the stream holds.
    const std::vector<uint8_t> claim = {0, 0,  8, 3, 0, 0,  0xFF, 0xFF, 0, 0,
                                        0, 28, 0, 0, 0, 28, 1,    2,    3};
    gzFile g = gzopen((dir + "/huge_claim.idx.gz").c_str(), "wb");
    gzwrite(g, claim.data(), static_cast<unsigned>(claim.size()));
    gzclose(g);
    cases.push_back({"huge_claim.idx.gz", "idx", "truncated"});
  }
  return cases;
}

}  // namespace rftest
