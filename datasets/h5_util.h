// Private helpers for the HDF5 side of ringflow::datasets: an owning handle
// for hid_t, a guard that keeps HDF5 from printing its own error stack (we
// raise ringflow errors that name the file and the data set instead), and
// small attribute readers/writers.
#pragma once

#include <hdf5.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ringflow/base/error.h"

namespace ringflow::datasets::h5 {

// Owns one HDF5 identifier and closes it with the matching H5*close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  // Gives up ownership without closing.
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

inline Handle file(hid_t id) {
  return Handle(id, H5Fclose);
}
inline Handle dataset(hid_t id) {
  return Handle(id, H5Dclose);
}
inline Handle space(hid_t id) {
  return Handle(id, H5Sclose);
}
inline Handle type(hid_t id) {
  return Handle(id, H5Tclose);
}
inline Handle attr(hid_t id) {
  return Handle(id, H5Aclose);
}
inline Handle group(hid_t id) {
  return Handle(id, H5Gclose);
}
inline Handle plist(hid_t id) {
  return Handle(id, H5Pclose);
}

// While alive, HDF5 does not print its error stack to stderr. Serial HDF5 keeps
// this setting process-wide, so the guard restores the previous handler.
class QuietErrors {
 public:
  QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// Dimensions of a data space.
std::vector<int64_t> dims_of(hid_t space_id);

// Attribute helpers. The readers return nullopt when the attribute is absent
// and throw IoError (naming `where`) when it exists with the wrong type.
std::optional<std::string> read_string_attr(hid_t obj, const char* name, const std::string& where);
std::optional<int64_t> read_int_attr(hid_t obj, const char* name, const std::string& where);
std::optional<double> read_float_attr(hid_t obj, const char* name, const std::string& where);
void write_string_attr(hid_t obj, const char* name, const std::string& value);
void write_int32_attr(hid_t obj, const char* name, int32_t value);
void write_int64_attr(hid_t obj, const char* name, int64_t value);
void write_float32_attr(hid_t obj, const char* name, float value);

}  // namespace ringflow::datasets::h5

// RF_H5_CHECK(call, parts...) raises IoError with the parts when an HDF5 call
// returns a negative id or status.
#define RF_H5_CHECK(call, ...)                                                         \
  do {                                                                                 \
    if ((call) < 0)                                                                    \
      ::ringflow::detail::raise<::ringflow::IoError>(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
