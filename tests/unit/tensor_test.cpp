#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ringflow/tensor/eigen.h"
#include "ringflow/tensor/tensor.h"

namespace ringflow {
namespace {

TEST(Shape, BasicsAndUnknownDims) {
  Shape s{-1, 784};
  EXPECT_EQ(s.rank(), 2);
  EXPECT_EQ(s.dim(-1), 784);
  EXPECT_FALSE(s.is_fully_defined());
  EXPECT_EQ(s.to_string(), "[?, 784]");
  EXPECT_TRUE(s.compatible_with(Shape{32, 784}));
  EXPECT_FALSE(s.compatible_with(Shape{32, 783}));
  EXPECT_FALSE(s.compatible_with(Shape{784}));
  EXPECT_THROW(s.num_elements(), ShapeError);
  EXPECT_EQ(Shape{}.num_elements(), 1);
  EXPECT_EQ((Shape{3, 0, 2}.num_elements()), 0);
}

TEST(Tensor, StorageIs64ByteAlignedAndShared) {
  Tensor t(DType::f32, Shape{3, 5});
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_EQ(t.num_elements(), 15);
  EXPECT_EQ(t.num_bytes(), 60u);
  Tensor alias = t;  // a cheap handle copy
  EXPECT_TRUE(alias.shares_storage_with(t));
  t.fill(2.5f);
  EXPECT_EQ(alias.data<float>()[14], 2.5f);
  Tensor copy = t.clone();
  EXPECT_FALSE(copy.shares_storage_with(t));
  copy.data<float>()[0] = 1.0f;
  EXPECT_EQ(t.data<float>()[0], 2.5f);
}

TEST(Tensor, ZeroSizeIsLegal) {
  Tensor t = Tensor::zeros(DType::f32, Shape{0, 784});
  EXPECT_TRUE(t.valid());
  EXPECT_EQ(t.num_elements(), 0);
  EXPECT_EQ(t.flat<float>().size(), 0u);
  Tensor r = t.reshaped(Shape{784, 0});
  EXPECT_EQ(r.shape(), (Shape{784, 0}));
  EXPECT_EQ(t.clone().num_elements(), 0);
}

TEST(Tensor, DtypeAndShapeChecks) {
  Tensor t = Tensor::from_vector_i32(Shape{2}, {3, 4});
  EXPECT_THROW(t.data<float>(), InternalError);
  EXPECT_EQ(t.data<std::int32_t>()[1], 4);
  EXPECT_THROW(t.scalar_value(), InvalidArgument);  // two elements
}

TEST(Tensor, ScalarValueNeedsOneElement) {
  EXPECT_EQ(Tensor::scalar(4.0f).scalar_value(), 4.0f);
  EXPECT_EQ(Tensor::scalar_i32(7).scalar_value(), 7.0f);
  EXPECT_THROW(Tensor::filled(Shape{2}, 1.0f).scalar_value(), InvalidArgument);
}

TEST(Tensor, ReshapeKeepsStorageAndChecksCount) {
  Tensor t = Tensor::from_vector(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor r = t.reshaped(Shape{3, 2});
  EXPECT_TRUE(r.shares_storage_with(t));
  EXPECT_THROW(t.reshaped(Shape{4, 2}), ShapeError);
  EXPECT_THROW(Tensor(DType::f32, Shape{-1, 2}), ShapeError);
}

TEST(Tensor, EigenViews) {
  Tensor t = Tensor::from_vector(Shape{2, 3}, {1, 2, 3, 4, 5, 6});
  auto m = as_matrix(t);
  EXPECT_EQ(m(1, 0), 4.0f);  // row-major
  m(0, 2) = 9.0f;
  EXPECT_EQ(t.data<float>()[2], 9.0f);
  EXPECT_FLOAT_EQ(as_array(t).sum(), 1 + 2 + 9 + 4 + 5 + 6);
}

TEST(Tensor, StorageStatsCountLiveBuffers) {
  const auto before = Tensor::storage_stats();
  {
    Tensor a(DType::f32, Shape{10});
    Tensor b = a;
    const auto during = Tensor::storage_stats();
    EXPECT_EQ(during.live_buffers, before.live_buffers + 1);
    EXPECT_EQ(during.live_bytes, before.live_bytes + 40);
  }
  EXPECT_EQ(Tensor::storage_stats().live_buffers, before.live_buffers);
}

// A training step frees and allocates the same large intermediates every
// step; small allocations made in between must not take their memory.
TEST(Tensor, LargeBlocksAreReusedBySizeWhateverIsAllocatedBetween) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "no block cache under AddressSanitizer";
#endif
  const Shape big{1 << 20};  // 4 MiB
  const void* first = nullptr;
  std::int64_t cached_before = 0;
  {
    Tensor a(DType::f32, big);
    first = a.data<float>();
    cached_before = Tensor::storage_stats().cached_bytes;
  }
  EXPECT_EQ(Tensor::storage_stats().cached_bytes, cached_before + (4 << 20));
  std::vector<Tensor> small;  // long-lived small tensors, allocated after the free
  for (int i = 0; i < 100; ++i) small.emplace_back(DType::f32, Shape{1000});
  std::vector<std::unique_ptr<char[]>> plain;
  for (int i = 0; i < 100; ++i) plain.emplace_back(new char[3000]);
  {
    // Another size does not take the cached block.
    Tensor other(DType::f32, Shape{(1 << 20) + 16});
    EXPECT_NE(other.data<float>(), first);
  }
  // The same size does, and small blocks are not cached.
  const auto cached = Tensor::storage_stats().cached_bytes;
  Tensor again(DType::f32, big);
  EXPECT_EQ(again.data<float>(), first) << "the freed 4 MiB block was not reused";
  EXPECT_EQ(Tensor::storage_stats().cached_bytes, cached - (4 << 20));
  { Tensor tiny(DType::f32, Shape{100}); }
  EXPECT_EQ(Tensor::storage_stats().cached_bytes, cached - (4 << 20));
}

}  // namespace
}  // namespace ringflow
