// IDX reader/writer. The reader never trusts the header: it checks every
// dimension against the bytes that are really there before it commits memory
// to them (see idx.h).
#include "ringflow/datasets/idx.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>

#include "ringflow/base/error.h"

namespace ringflow::datasets {
namespace {

namespace fs = std::filesystem;

constexpr char kIdxHint[] =
    "check that it is an MNIST-style IDX file (plain or .gz) and re-download it";
// Inflate in pieces of this many bytes so the buffer only grows with data that
// is really present.
constexpr int64_t kInflatePiece = int64_t{1} << 20;

class GzFile {
 public:
  explicit GzFile(gzFile f) : f_(f) {}
  ~GzFile() {
    if (f_ != nullptr) gzclose(f_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  gzFile get() const { return f_; }

 private:
  gzFile f_;
};

// zlib's description of the stream's error state, or "" when there is none.
// zlib prefixes the path, which our messages already start with.
std::string gz_error(gzFile f, const std::string& path) {
  int errnum = Z_OK;
  const char* msg = gzerror(f, &errnum);
  if (errnum == Z_OK) return "";
  std::string s = msg != nullptr ? msg : "unknown zlib error";
  if (s.starts_with(path + ": ")) s.erase(0, path.size() + 2);
  return s;
}

// Reads up to n bytes; raises IoError for a corrupt stream. Returns the count.
int64_t gz_read(gzFile f, const std::string& path, uint8_t* dst, int64_t n) {
  const int got = gzread(f, dst, static_cast<unsigned>(n));
  const std::string err = gz_error(f, path);
  if (got < 0 || !err.empty()) {
    RF_THROW(IoError, path, ": bad gzip stream, the file is corrupt or truncated (zlib: ",
             err.empty() ? "read failed" : err, ") — ", kIdxHint);
  }
  return got;
}

void read_exact(gzFile f, const std::string& path, uint8_t* dst, int64_t n, int64_t offset,
                const char* what) {
  const int64_t got = gz_read(f, path, dst, n);
  if (got != n) {
    RF_THROW(IoError, path, ": truncated: the file ends at byte ", offset + got, " inside the ",
             what, " (", n, " bytes from byte ", offset, ") — ", kIdxHint);
  }
}

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    RF_THROW(NotFound, path, ": no such file — check the path");
  }
  if (fs::is_directory(path, ec)) {
    RF_THROW(IoError, path, ": is a directory, not an IDX file — pass the file itself");
  }
  GzFile file(gzopen(path.c_str(), "rb"));
  RF_CHECK_AS(IoError, file.get() != nullptr, path,
              ": cannot open for reading — check permissions");
  gzbuffer(file.get(), 1 << 17);

  // Magic: 0x00 0x00 <type> <ndims>.
  uint8_t magic[4];
  read_exact(file.get(), path, magic, 4, 0, "4-byte magic");
  if (magic[0] != 0 || magic[1] != 0) {
    RF_THROW(IoError, path, ": bad magic 0x", std::hex, int{magic[0]}, " 0x", int{magic[1]},
             std::dec, " (an IDX file starts with two zero bytes) — ", kIdxHint);
  }
  if (magic[2] != kIdxTypeU8) {
    RF_THROW(IoError, path, ": unsupported IDX element type 0x", std::hex, int{magic[2]}, std::dec,
             " (only unsigned bytes, 0x08, are supported) — ", kIdxHint);
  }
  const int ndims = magic[3];
  if (ndims < 1 || ndims > kIdxMaxDims) {
    RF_THROW(IoError, path, ": bad magic: ", ndims, " dimensions (expected 1..", kIdxMaxDims,
             ") — ", kIdxHint);
  }

  uint8_t dim_bytes[4 * kIdxMaxDims];
  read_exact(file.get(), path, dim_bytes, 4 * ndims, 4, "dimension sizes");
  IdxArray out;
  uint64_t count = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint32_t d = big_endian_u32(dim_bytes + 4 * i);
    if (d == 0) {
      RF_THROW(IoError, path, ": empty data set: dimension ", i, " is 0 — ", kIdxHint);
    }
    if (__builtin_mul_overflow(count, uint64_t{d}, &count) ||
        count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      RF_THROW(IoError, path, ": dimension sizes overflow: the product of the ", ndims,
               " dimensions does not fit in 64 bits — the header is corrupt; ", kIdxHint);
    }
    out.dims.push_back(d);
  }
  const int64_t header_bytes = 4 + 4 * int64_t{ndims};
  const auto data_bytes = static_cast<int64_t>(count);

  if (gzdirect(file.get()) != 0) {
    // A plain file: its size says whether the data is all there.
    const auto file_bytes = static_cast<int64_t>(fs::file_size(path, ec));
    RF_CHECK_AS(IoError, !ec, path, ": cannot stat: ", ec.message());
    if (file_bytes - header_bytes < data_bytes) {
      RF_THROW(IoError, path, ": truncated: the header claims ", data_bytes,
               " data bytes but the file holds only ", file_bytes - header_bytes, " — ", kIdxHint);
    }
    if (file_bytes - header_bytes > data_bytes) {
      RF_THROW(IoError, path, ": ", file_bytes - header_bytes - data_bytes,
               " unexpected bytes after the data the header describes — ", kIdxHint);
    }
    out.data.resize(static_cast<size_t>(data_bytes));
    int64_t done = 0;
    while (done < data_bytes) {
      const int64_t n = std::min(kInflatePiece * 64, data_bytes - done);
      read_exact(file.get(), path, out.data.data() + done, n, header_bytes + done, "data");
      done += n;
    }
    return out;
  }

  // A gzip stream: its uncompressed size is only known by inflating it, so the
  // buffer grows piece by piece (geometric capacity growth, at most twice the
  // bytes actually present) and the header's claim is checked as it goes.
  int64_t done = 0;
  while (done < data_bytes) {
    const int64_t n = std::min(kInflatePiece, data_bytes - done);
    out.data.resize(static_cast<size_t>(done + n));
    const int64_t got = gz_read(file.get(), path, out.data.data() + done, n);
    done += got;
    if (got < n) {
      RF_THROW(IoError, path, ": truncated: the header claims ", data_bytes,
               " data bytes but the decompressed stream ends after ", done, " — ", kIdxHint);
    }
  }
  // Reading past the end lets zlib verify the gzip trailer (CRC and length).
  uint8_t extra[64];
  const int64_t more = gz_read(file.get(), path, extra, sizeof extra);
  if (more > 0) {
    RF_THROW(IoError, path, ": unexpected bytes after the ", data_bytes,
             " data bytes the header describes — ", kIdxHint);
  }
  return out;
}

void write_idx(const std::string& path, std::span<const int64_t> dims,
               std::span<const uint8_t> data, bool gzip) {
  RF_CHECK(!dims.empty() && static_cast<int>(dims.size()) <= kIdxMaxDims, path,
           ": write_idx needs 1..", kIdxMaxDims, " dimensions, got ", dims.size());
  int64_t count = 1;
  std::vector<uint8_t> header = {0, 0, kIdxTypeU8, static_cast<uint8_t>(dims.size())};
  for (const int64_t d : dims) {
    RF_CHECK(d >= 0 && d <= std::numeric_limits<uint32_t>::max(), path, ": IDX dimension ", d,
             " out of range");
    count *= d;
    for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<uint8_t>(d >> shift));
  }
  RF_CHECK(static_cast<int64_t>(data.size()) == count, path, ": write_idx: ", data.size(),
           " bytes for dims whose product is ", count);
  if (gzip) {
    GzFile file(gzopen(path.c_str(), "wb"));
    RF_CHECK_AS(IoError, file.get() != nullptr, path, ": cannot open for writing");
    bool ok = gzwrite(file.get(), header.data(), static_cast<unsigned>(header.size())) ==
              static_cast<int>(header.size());
    size_t done = 0;
    while (ok && done < data.size()) {
      const size_t n = std::min<size_t>(kInflatePiece, data.size() - done);
      ok = gzwrite(file.get(), data.data() + done, static_cast<unsigned>(n)) == static_cast<int>(n);
      done += n;
    }
    RF_CHECK_AS(IoError, ok, path, ": write failed: ", gz_error(file.get(), path));
    return;
  }
  std::ofstream os(path, std::ios::binary | std::ios::trunc);
  RF_CHECK_AS(IoError, os.good(), path, ": cannot open for writing");
  os.write(reinterpret_cast<const char*>(header.data()),
           static_cast<std::streamsize>(header.size()));
  os.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  RF_CHECK_AS(IoError, os.good(), path, ": write failed");
}

}  // namespace ringflow::datasets
