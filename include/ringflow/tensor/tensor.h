// Tensor: a dtype, a shape and a cheap shared handle to 64-byte-aligned,
// contiguous, row-major storage. Copying a Tensor copies the handle, not the
// data; clone() copies the data. Zero-size tensors are legal (no allocation).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ringflow/base/error.h"

namespace ringflow {

enum class DType : std::uint8_t { f32, i32 };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::i32;
}

// A shape of int64 dims. In a graph's static shapes a dim may be -1
// (unknown until run time, typically the batch); a Tensor's shape is always
// fully defined.
class Shape {
 public:
  static constexpr std::int64_t kUnknown = -1;

  Shape() = default;  // a scalar
  Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) {}

  int rank() const { return static_cast<int>(dims_.size()); }
  std::int64_t dim(int i) const;  // negative i counts from the back
  std::int64_t operator[](int i) const { return dim(i); }
  const std::vector<std::int64_t>& dims() const { return dims_; }
  bool is_fully_defined() const;
  // Product of the dims; the shape must be fully defined.
  std::int64_t num_elements() const;
  // True when every known dim agrees (an unknown dim agrees with anything).
  bool compatible_with(const Shape& other) const;
  std::string to_string() const;  // "[?, 784]"

  bool operator==(const Shape& other) const = default;

 private:
  std::vector<std::int64_t> dims_;
};

// Live storage accounting, for tests and the executor's memory invariant.
struct StorageStats {
  std::int64_t live_buffers;
  std::int64_t live_bytes;
  std::int64_t cached_bytes;  // freed large blocks kept for reuse (tensor.cpp)
};

class Tensor {
 public:
  Tensor() = default;  // an empty handle: valid() is false
  // Allocates uninitialised storage for a fully defined shape.
  Tensor(DType dtype, Shape shape);

  static Tensor zeros(DType dtype, Shape shape);
  static Tensor filled(Shape shape, float value);
  static Tensor scalar(float value);
  static Tensor scalar_i32(std::int32_t value);
  static Tensor from_vector(Shape shape, const std::vector<float>& values);
  static Tensor from_vector_i32(Shape shape, const std::vector<std::int32_t>& values);

  bool valid() const { return has_shape_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  std::int64_t dim(int i) const { return shape_.dim(i); }
  std::int64_t num_elements() const { return num_elements_; }
  std::size_t num_bytes() const {
    return static_cast<std::size_t>(num_elements_) * dtype_size(dtype_);
  }

  template <class T>
  T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(raw());
  }
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(raw());
  }
  template <class T>
  std::span<T> flat() {
    return {data<T>(), static_cast<std::size_t>(num_elements_)};
  }
  template <class T>
  std::span<const T> flat() const {
    return {data<T>(), static_cast<std::size_t>(num_elements_)};
  }
  void* raw() const;

  // The value of a one-element tensor as float (i32 is converted).
  float scalar_value() const;

  // A tensor with the same storage and a new shape of the same element count.
  Tensor reshaped(Shape shape) const;
  // A deep copy with its own storage.
  Tensor clone() const;
  void fill(float value);
  // Copies the elements of src (same dtype and element count) into this storage.
  void copy_from(const Tensor& src);
  bool shares_storage_with(const Tensor& other) const;
  // How many handles share this tensor's storage (0 for zero-size tensors).
  long use_count() const { return storage_.use_count(); }

  static StorageStats storage_stats();

 private:
  void check_dtype(DType want) const;

  struct Storage;
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  DType dtype_ = DType::f32;
  std::int64_t num_elements_ = 0;
  bool has_shape_ = false;
};

std::string describe(const Tensor& t);  // "f32[2, 3]"

}  // namespace ringflow
