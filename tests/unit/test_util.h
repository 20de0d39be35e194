// Helpers for the engine tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "ringflow/runtime/session.h"
#include "ringflow/tensor/random.h"

namespace ringflow::testing_util {

inline std::vector<float> values(const Tensor& t) {
  auto f = t.flat<float>();
  return {f.begin(), f.end()};
}

inline std::vector<std::int32_t> ivalues(const Tensor& t) {
  auto f = t.flat<std::int32_t>();
  return {f.begin(), f.end()};
}

// Uniform values in [lo, hi), reproducible from seed.
inline Tensor random_tensor(Shape shape, float lo, float hi, std::uint64_t seed) {
  Tensor t(DType::f32, std::move(shape));
  auto f = t.flat<float>();
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = lo + (hi - lo) * random::uniform01(seed, 7, i);
  return t;
}

inline Tensor eval(Graph& g, Output y, const FeedList& feeds = {}, int threads = 1) {
  Session s(g, {.num_threads = threads});
  return s.run({y}, feeds)[0];
}

inline void expect_near(const std::vector<float>& got, const std::vector<float>& want,
                        float tol = 1e-5f) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1.0f + std::abs(want[i]))) << "at element " << i;
}

}  // namespace ringflow::testing_util
