#include "ringflow/tensor/tensor.h"

#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

namespace ringflow {

namespace {

constexpr std::size_t kAlignment = 64;
std::atomic<std::int64_t> g_live_buffers{0};
std::atomic<std::int64_t> g_live_bytes{0};

}  // namespace

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::i32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::i32:
      return "i32";
  }
  return "?";
}

std::int64_t Shape::dim(int i) const {
  const int r = rank();
  const int k = i < 0 ? i + r : i;
  RF_CHECK_AS(InternalError, k >= 0 && k < r, "dim ", i, " of shape ", to_string());
  return dims_[static_cast<std::size_t>(k)];
}

bool Shape::is_fully_defined() const {
  for (auto d : dims_)
    if (d < 0) return false;
  return true;
}

std::int64_t Shape::num_elements() const {
  RF_CHECK_AS(ShapeError, is_fully_defined(), "shape ", to_string(),
              " has unknown dims; feed a tensor to fix them");
  std::int64_t n = 1;
  for (auto d : dims_) n *= d;
  return n;
}

bool Shape::compatible_with(const Shape& other) const {
  if (rank() != other.rank()) return false;
  for (int i = 0; i < rank(); ++i) {
    const auto a = dims_[static_cast<std::size_t>(i)];
    const auto b = other.dims_[static_cast<std::size_t>(i)];
    if (a >= 0 && b >= 0 && a != b) return false;
  }
  return true;
}

std::string Shape::to_string() const {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < dims_.size(); ++i) {
    if (i) os << ", ";
    if (dims_[i] < 0)
      os << '?';
    else
      os << dims_[i];
  }
  os << ']';
  return os.str();
}

// Intermediate tensors of a step are allocated and freed every step, with
// the same sizes every step. Two things keep that from costing page faults:
//  - glibc serves blocks above its mmap threshold with mmap/munmap, which
//    would fault every page in afresh each step: raise the threshold.
//  - Large blocks (>= kCacheMinBytes) are recycled by exact size instead of
//    going back to malloc. Otherwise small long-lived allocations made
//    between steps (a timeline's events, say) land in the freed holes, the
//    next step's large blocks no longer fit there, and the heap grows by a
//    step's worth of fresh, faulting pages every step.
// The cache holds at most kCacheMaxBytes: to take in a block beyond that, it
// frees blocks of other sizes (ones a past step or evaluation used). Under
// AddressSanitizer nothing is cached, so a use after free stays visible.
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr std::size_t kCacheMinBytes = SIZE_MAX;
#else
constexpr std::size_t kCacheMinBytes = 256 << 10;
#endif
constexpr std::size_t kCacheMaxBytes = std::size_t{1} << 30;

class BlockCache {
 public:
  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }
  // False when the block alone exceeds the cap: the caller frees it.
  bool give(void* p, std::size_t bytes) {
    if (bytes > kCacheMaxBytes) return false;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = free_.begin(); cached_ + bytes > kCacheMaxBytes && it != free_.end(); ++it) {
      if (it->first == bytes) continue;  // keep blocks of the size being used
      for (; !it->second.empty() && cached_ + bytes > kCacheMaxBytes; it->second.pop_back()) {
        std::free(it->second.back());
        cached_ -= it->first;
      }
    }
    if (cached_ + bytes > kCacheMaxBytes) return false;
    free_[bytes].push_back(p);
    cached_ += bytes;
    return true;
  }
  std::int64_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<std::int64_t>(cached_);
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::size_t cached_ = 0;
};

// Never destroyed: tensors in static objects may be freed after main().
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache;
  return *cache;
}

void tune_allocator_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  });
}

}  // namespace

struct Tensor::Storage {
  explicit Storage(std::size_t n)
      : bytes(n), rounded((n + kAlignment - 1) / kAlignment * kAlignment) {
    tune_allocator_once();
    data = rounded >= kCacheMinBytes ? block_cache().take(rounded) : nullptr;
    if (!data) data = std::aligned_alloc(kAlignment, rounded);
    if (!data) throw std::bad_alloc();
    g_live_buffers.fetch_add(1, std::memory_order_relaxed);
    g_live_bytes.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  }
  ~Storage() {
    if (rounded < kCacheMinBytes || !block_cache().give(data, rounded)) std::free(data);
    g_live_buffers.fetch_sub(1, std::memory_order_relaxed);
    g_live_bytes.fetch_sub(static_cast<std::int64_t>(bytes), std::memory_order_relaxed);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data;
  std::size_t bytes;
  std::size_t rounded;
};

Tensor::Tensor(DType dtype, Shape shape)
    : shape_(std::move(shape)), dtype_(dtype), has_shape_(true) {
  RF_CHECK_AS(ShapeError, shape_.is_fully_defined(), "cannot allocate a tensor of shape ",
              shape_.to_string(), ": every dim must be known");
  for (auto d : shape_.dims())
    RF_CHECK_AS(ShapeError, d >= 0, "negative dim in shape ", shape_.to_string());
  num_elements_ = shape_.num_elements();
  if (num_elements_ > 0) storage_ = std::make_shared<Storage>(num_bytes());
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t(dtype, std::move(shape));
  if (t.num_elements_ > 0) std::memset(t.raw(), 0, t.num_bytes());
  return t;
}

Tensor Tensor::filled(Shape shape, float value) {
  Tensor t(DType::f32, std::move(shape));
  t.fill(value);
  return t;
}

Tensor Tensor::scalar(float value) {
  return filled(Shape{}, value);
}

Tensor Tensor::scalar_i32(std::int32_t value) {
  Tensor t(DType::i32, Shape{});
  t.data<std::int32_t>()[0] = value;
  return t;
}

Tensor Tensor::from_vector(Shape shape, const std::vector<float>& values) {
  Tensor t(DType::f32, std::move(shape));
  RF_CHECK(static_cast<std::int64_t>(values.size()) == t.num_elements(),
           "from_vector: ", values.size(), " values for shape ", t.shape().to_string());
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.num_bytes());
  return t;
}

Tensor Tensor::from_vector_i32(Shape shape, const std::vector<std::int32_t>& values) {
  Tensor t(DType::i32, std::move(shape));
  RF_CHECK(static_cast<std::int64_t>(values.size()) == t.num_elements(),
           "from_vector_i32: ", values.size(), " values for shape ", t.shape().to_string());
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.num_bytes());
  return t;
}

void* Tensor::raw() const {
  return storage_ ? storage_->data : nullptr;
}

float Tensor::scalar_value() const {
  RF_CHECK(num_elements_ == 1, "expected a tensor with one element, got ", describe(*this));
  return dtype_ == DType::f32 ? *static_cast<const float*>(raw())
                              : static_cast<float>(*static_cast<const std::int32_t*>(raw()));
}

Tensor Tensor::reshaped(Shape shape) const {
  RF_CHECK_AS(ShapeError, shape.is_fully_defined() && shape.num_elements() == num_elements_,
              "cannot reshape ", describe(*this), " to ", shape.to_string());
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (num_elements_ > 0) std::memcpy(t.raw(), raw(), num_bytes());
  return t;
}

void Tensor::fill(float value) {
  if (dtype_ == DType::f32) {
    for (auto& v : flat<float>()) v = value;
  } else {
    for (auto& v : flat<std::int32_t>()) v = static_cast<std::int32_t>(value);
  }
}

void Tensor::copy_from(const Tensor& src) {
  RF_CHECK(src.dtype_ == dtype_ && src.num_elements_ == num_elements_, "cannot copy ",
           describe(src), " into ", describe(*this));
  if (num_elements_ > 0 && raw() != src.raw()) std::memcpy(raw(), src.raw(), num_bytes());
}

bool Tensor::shares_storage_with(const Tensor& other) const {
  return storage_ && storage_ == other.storage_;
}

StorageStats Tensor::storage_stats() {
  return {g_live_buffers.load(std::memory_order_relaxed),
          g_live_bytes.load(std::memory_order_relaxed), block_cache().cached_bytes()};
}

void Tensor::check_dtype(DType want) const {
  RF_CHECK_AS(InternalError, has_shape_, "access to an empty tensor handle");
  RF_CHECK_AS(InternalError, want == dtype_, "tensor ", describe(*this), " accessed as ",
              dtype_name(want));
}

std::string describe(const Tensor& t) {
  if (!t.valid()) return "<empty tensor>";
  return std::string(dtype_name(t.dtype())) + t.shape().to_string();
}

}  // namespace ringflow
