// Counter-based random numbers: element i of a stream is a pure function of
// (seed, stream, i), so kernels can fill tensors in parallel and the same seed
// gives the same bits on every machine and thread count.
#pragma once

#include <cmath>
#include <cstdint>

namespace ringflow::random {

// splitmix64's finaliser: a good 64-bit mixer.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline std::uint64_t bits(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  return mix64(mix64(seed ^ mix64(stream + 0x632be59bd9b4e019ULL)) + i);
}

// Uniform in [0, 1) with 24 random bits.
inline float uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  return static_cast<float>(bits(seed, stream, i) >> 40) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller on two independent uniforms.
inline float normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t i) {
  const std::uint64_t b = bits(seed, stream, i);
  const double u1 = (static_cast<double>(b >> 40) + 1.0) * (1.0 / 16777217.0);  // (0, 1]
  const double u2 = static_cast<double>(b & 0xffffff) * (1.0 / 16777216.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

}  // namespace ringflow::random
