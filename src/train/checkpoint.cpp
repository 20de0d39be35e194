#include "ringflow/train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "h5_util.h"
#include "ringflow/base/error.h"

namespace ringflow::train {

namespace fs = std::filesystem;
namespace h5 = datasets::h5;

namespace {

constexpr const char* kPrefix = "ckpt-";
constexpr const char* kSuffix = ".h5";
constexpr const char* kTempPrefix = ".ckpt-";

// FNV-1a 64, fed 8 bytes at a time (a word-wise variant: fast enough to check
// a large model on every load, and any flipped bit changes it).
class Fnv {
 public:
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      std::uint64_t w;
      std::memcpy(&w, b + i, 8);
      h_ = (h_ ^ w) * 1099511628211ULL;
    }
    for (; i < n; ++i) h_ = (h_ ^ b[i]) * 1099511628211ULL;
  }
  void i64(std::int64_t v) { bytes(&v, sizeof v); }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = 1469598103934665603ULL;
};

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// fsync a file or directory by path; raises IoError naming it.
void sync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  RF_CHECK_AS(IoError, fd >= 0, "cannot open '", p.string(),
              "' to flush it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  RF_CHECK_AS(IoError, rc == 0, "cannot flush '", p.string(), "' to disk: ", std::strerror(err));
}

// The step in a checkpoint file name, or -1 when the name is not one.
std::int64_t step_of(const std::string& name) {
  const std::size_t p = std::strlen(kPrefix), s = std::strlen(kSuffix);
  if (name.size() <= p + s || name.compare(0, p, kPrefix) != 0 ||
      name.compare(name.size() - s, s, kSuffix) != 0)
    return -1;
  const std::string digits = name.substr(p, name.size() - p - s);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::int64_t required_int(hid_t f, const char* name, const std::string& where) {
  auto v = h5::read_int_attr(f, name, where);
  RF_CHECK_AS(IoError, v.has_value(), where, ": attribute '", name,
              "' is missing — not a complete checkpoint");
  return *v;
}

std::string required_string(hid_t f, const char* name, const std::string& where) {
  auto v = h5::read_string_attr(f, name, where);
  RF_CHECK_AS(IoError, v.has_value(), where, ": attribute '", name,
              "' is missing — not a complete checkpoint");
  return *v;
}

}  // namespace

std::uint64_t checkpoint_checksum(const Checkpoint& c) {
  Fnv h;
  h.i64(c.step);
  h.i64(c.epoch);
  h.i64(c.step_in_epoch);
  h.i64(static_cast<std::int64_t>(c.seed));
  h.bytes(c.model.data(), c.model.size());
  h.bytes(c.config.data(), c.config.size());
  for (const auto& v : c.variables) {
    h.bytes(v.name.data(), v.name.size());
    for (auto d : v.shape) h.i64(d);
    h.bytes(v.values.data(), v.values.size() * sizeof(float));
  }
  return h.value();
}

std::string checkpoint_file_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%010lld%s", kPrefix, static_cast<long long>(step), kSuffix);
  return buf;
}

fs::path write_checkpoint(const fs::path& dir, const Checkpoint& c, bool test_crash_midway) {
  const fs::path final_path = dir / checkpoint_file_name(c.step);
  const fs::path tmp = dir / (kTempPrefix + std::to_string(c.step) + ".h5.tmp");
  const std::string where = "checkpoint '" + tmp.string() + "'";
  h5::QuietErrors quiet;
  {
    h5::Handle f = h5::file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    RF_H5_CHECK(f.get(), "cannot create ", where,
                "; check that --checkpoint-dir is writable and has space");
    h5::write_string_attr(f.get(), "format", kCheckpointFormat);
    h5::write_int64_attr(f.get(), "version", kCheckpointVersion);
    h5::write_int64_attr(f.get(), "step", c.step);
    h5::write_int64_attr(f.get(), "epoch", c.epoch);
    h5::write_int64_attr(f.get(), "step_in_epoch", c.step_in_epoch);
    h5::write_string_attr(f.get(), "seed", std::to_string(c.seed));
    h5::write_string_attr(f.get(), "model", c.model);
    h5::write_string_attr(f.get(), "config", c.config);
    h5::write_int64_attr(f.get(), "num_ranks", c.num_ranks);
    h5::write_string_attr(f.get(), "checksum", hex(checkpoint_checksum(c)));
    h5::Handle g =
        h5::group(H5Gcreate2(f.get(), "variables", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    RF_H5_CHECK(g.get(), "cannot create /variables in ", where);
    for (std::size_t k = 0; k < c.variables.size(); ++k) {
      if (test_crash_midway && k == c.variables.size() / 2) {
        H5Fflush(f.get(), H5F_SCOPE_GLOBAL);
        ::raise(SIGKILL);
      }
      const auto& v = c.variables[k];
      std::vector<hsize_t> dims(v.shape.begin(), v.shape.end());
      h5::Handle sp = h5::space(
          dims.empty() ? H5Screate(H5S_SCALAR)
                       : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
      const std::string name = "v" + std::to_string(k);
      h5::Handle ds = h5::dataset(H5Dcreate2(g.get(), name.c_str(), H5T_IEEE_F32LE, sp.get(),
                                             H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      RF_H5_CHECK(ds.get(), "cannot create /variables/", name, " in ", where);
      if (!v.values.empty())
        RF_H5_CHECK(
            H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.values.data()),
            "cannot write variable '", v.name, "' to ", where, "; check the disk has space");
      h5::write_string_attr(ds.get(), "name", v.name);
    }
    RF_H5_CHECK(H5Fflush(f.get(), H5F_SCOPE_GLOBAL), "cannot flush ", where);
    f.reset();
  }
  sync_path(tmp, false);
  std::error_code ec;
  fs::rename(tmp, final_path, ec);
  RF_CHECK_AS(IoError, !ec, "cannot rename '", tmp.string(), "' to '", final_path.string(),
              "': ", ec.message());
  sync_path(dir, true);
  return final_path;
}

Checkpoint read_checkpoint(const fs::path& path) {
  const std::string where = "checkpoint '" + path.string() + "'";
  h5::QuietErrors quiet;
  RF_CHECK_AS(IoError, H5Fis_hdf5(path.c_str()) > 0, where,
              " is not a readable HDF5 file (truncated or corrupt)");
  h5::Handle f = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  RF_H5_CHECK(f.get(), where, " cannot be opened (truncated or corrupt)");
  const std::string format = required_string(f.get(), "format", where);
  RF_CHECK_AS(IoError, format == kCheckpointFormat, where, " has format '", format, "', not '",
              kCheckpointFormat, "'");
  const std::int64_t version = required_int(f.get(), "version", where);
  RF_CHECK_AS(IoError, version == kCheckpointVersion, where, " has version ", version,
              "; this trainer reads version ", kCheckpointVersion);
  Checkpoint c;
  c.step = required_int(f.get(), "step", where);
  c.epoch = required_int(f.get(), "epoch", where);
  c.step_in_epoch = required_int(f.get(), "step_in_epoch", where);
  c.seed = std::stoull(required_string(f.get(), "seed", where));
  c.model = required_string(f.get(), "model", where);
  c.config = required_string(f.get(), "config", where);
  c.num_ranks = required_int(f.get(), "num_ranks", where);
  const std::string checksum = required_string(f.get(), "checksum", where);
  h5::Handle g = h5::group(H5Gopen2(f.get(), "variables", H5P_DEFAULT));
  RF_H5_CHECK(g.get(), where, " has no /variables group");
  H5G_info_t info;
  RF_H5_CHECK(H5Gget_info(g.get(), &info), where, ": cannot list /variables");
  for (hsize_t k = 0; k < info.nlinks; ++k) {
    const std::string name = "v" + std::to_string(k);
    h5::Handle ds = h5::dataset(H5Dopen2(g.get(), name.c_str(), H5P_DEFAULT));
    RF_H5_CHECK(ds.get(), where, ": /variables/", name, " is missing or unreadable");
    CheckpointVariable v;
    auto vname = h5::read_string_attr(ds.get(), "name", where);
    RF_CHECK_AS(IoError, vname.has_value(), where, ": /variables/", name, " has no name");
    v.name = *vname;
    h5::Handle sp = h5::space(H5Dget_space(ds.get()));
    v.shape = h5::dims_of(sp.get());
    std::int64_t n = 1;
    for (auto d : v.shape) n *= d;
    v.values.resize(static_cast<std::size_t>(n));
    if (n > 0)
      RF_H5_CHECK(
          H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.values.data()),
          where, ": cannot read variable '", v.name, "' (truncated or corrupt)");
    c.variables.push_back(std::move(v));
  }
  const std::string actual = hex(checkpoint_checksum(c));
  RF_CHECK_AS(IoError, actual == checksum, where, " fails its checksum (stored ", checksum,
              ", content ", actual, "): the file is corrupt");
  return c;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::int64_t step = step_of(e.path().filename().string());
    if (step >= 0 && e.is_regular_file()) found.emplace_back(step, e.path());
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  for (auto& [step, p] : found) out.push_back(p);
  return out;
}

void prune_checkpoints(const fs::path& dir, int keep) {
  const auto all = list_checkpoints(dir);
  std::error_code ec;
  for (std::size_t i = static_cast<std::size_t>(std::max(keep, 1)); i < all.size(); ++i)
    fs::remove(all[i], ec);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(kTempPrefix, 0) == 0 && name.size() > 4 &&
        name.compare(name.size() - 4, 4, ".tmp") == 0)
      fs::remove(e.path(), ec);
  }
}

}  // namespace ringflow::train
