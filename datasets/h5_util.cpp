#include "h5_util.h"

#include <cstring>

namespace ringflow::datasets::h5 {

std::vector<int64_t> dims_of(hid_t space_id) {
  const int rank = H5Sget_simple_extent_ndims(space_id);
  if (rank <= 0) return {};
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space_id, dims.data(), nullptr);
  return {dims.begin(), dims.end()};
}

namespace {

// Opens attribute `name` of `obj`, or returns an invalid handle when absent.
Handle open_attr(hid_t obj, const char* name) {
  if (H5Aexists(obj, name) <= 0) return {};
  return attr(H5Aopen(obj, name, H5P_DEFAULT));
}

void check_single_element(hid_t a, const char* name, const std::string& where) {
  Handle sp = space(H5Aget_space(a));
  RF_CHECK_AS(IoError, sp.valid() && H5Sget_simple_extent_npoints(sp.get()) == 1, where,
              ": attribute ", name, " must hold exactly one value — re-create the file");
}

}  // namespace

std::optional<std::string> read_string_attr(hid_t obj, const char* name, const std::string& where) {
  Handle a = open_attr(obj, name);
  if (!a.valid()) return std::nullopt;
  check_single_element(a.get(), name, where);
  Handle ft = type(H5Aget_type(a.get()));
  RF_CHECK_AS(IoError, H5Tget_class(ft.get()) == H5T_STRING, where, ": attribute ", name,
              " must be a string — re-create the file");
  Handle mt = type(H5Tcopy(H5T_C_S1));
  // HDF5 does not convert between character sets: read in the file's.
  H5Tset_cset(mt.get(), H5Tget_cset(ft.get()));
  if (H5Tis_variable_str(ft.get()) > 0) {
    H5Tset_size(mt.get(), H5T_VARIABLE);
    char* buf = nullptr;
    RF_H5_CHECK(H5Aread(a.get(), mt.get(), &buf), where, ": cannot read attribute ", name);
    std::string s = buf != nullptr ? buf : "";
    H5free_memory(buf);
    return s;
  }
  const size_t size = H5Tget_size(ft.get());
  H5Tset_size(mt.get(), size + 1);
  H5Tset_strpad(mt.get(), H5T_STR_NULLTERM);
  std::string s(size + 1, '\0');
  RF_H5_CHECK(H5Aread(a.get(), mt.get(), s.data()), where, ": cannot read attribute ", name);
  s.resize(std::strlen(s.c_str()));
  return s;
}

std::optional<int64_t> read_int_attr(hid_t obj, const char* name, const std::string& where) {
  Handle a = open_attr(obj, name);
  if (!a.valid()) return std::nullopt;
  check_single_element(a.get(), name, where);
  Handle ft = type(H5Aget_type(a.get()));
  RF_CHECK_AS(IoError, H5Tget_class(ft.get()) == H5T_INTEGER, where, ": attribute ", name,
              " must be an integer — re-create the file");
  int64_t v = 0;
  RF_H5_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &v), where, ": cannot read attribute ", name);
  return v;
}

std::optional<double> read_float_attr(hid_t obj, const char* name, const std::string& where) {
  Handle a = open_attr(obj, name);
  if (!a.valid()) return std::nullopt;
  check_single_element(a.get(), name, where);
  Handle ft = type(H5Aget_type(a.get()));
  const H5T_class_t cls = H5Tget_class(ft.get());
  RF_CHECK_AS(IoError, cls == H5T_FLOAT || cls == H5T_INTEGER, where, ": attribute ", name,
              " must be a number — re-create the file");
  double v = 0;
  RF_H5_CHECK(H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v), where, ": cannot read attribute ", name);
  return v;
}

namespace {

void write_scalar_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type,
                       const void* value) {
  Handle sp = space(H5Screate(H5S_SCALAR));
  Handle a = attr(H5Acreate2(obj, name, file_type, sp.get(), H5P_DEFAULT, H5P_DEFAULT));
  RF_H5_CHECK(a.get(), "cannot create attribute ", name);
  RF_H5_CHECK(H5Awrite(a.get(), mem_type, value), "cannot write attribute ", name);
}

}  // namespace

void write_string_attr(hid_t obj, const char* name, const std::string& value) {
  // Variable-length UTF-8, which h5py reads as str and h5dump prints as text.
  Handle t = type(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  const char* p = value.c_str();
  write_scalar_attr(obj, name, t.get(), t.get(), &p);
}

void write_int32_attr(hid_t obj, const char* name, int32_t value) {
  write_scalar_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &value);
}

void write_int64_attr(hid_t obj, const char* name, int64_t value) {
  write_scalar_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void write_float32_attr(hid_t obj, const char* name, float value) {
  write_scalar_attr(obj, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &value);
}

}  // namespace ringflow::datasets::h5
