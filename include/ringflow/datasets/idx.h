// IDX files, the format of MNIST and Fashion-MNIST, plain or gzipped.
//
// An IDX file is a 4-byte magic (0x00 0x00, a type code, the number of
// dimensions), then one big-endian uint32 per dimension, then the elements in
// row-major order. Only the unsigned-byte type (0x08) is supported, which is
// what MNIST and Fashion-MNIST use: images u8 (N, H, W), labels u8 (N).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ringflow::datasets {

// The dimension count a reader accepts; MNIST images use 3.
inline constexpr int kIdxMaxDims = 8;
// IDX type code of unsigned bytes.
inline constexpr uint8_t kIdxTypeU8 = 0x08;

// The contents of one IDX file: dims (e.g. {60000, 28, 28}) and the elements,
// row-major, data.size() == product(dims).
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads a plain or gzip-compressed IDX file (detected from its first bytes).
// Validates the magic, the dimension count and that the dimension product
// neither overflows nor disagrees with the bytes actually present before the
// full buffer is allocated (a gzip stream is inflated in pieces and checked
// against the header as it grows). Raises NotFound for a missing file and
// IoError, naming the file, for a bad magic, an unsupported type, a zero or
// overflowing dimension, truncation, trailing bytes or a corrupt gzip stream.
IdxArray read_idx(const std::string& path);

// Writes dims + data as an unsigned-byte IDX file, gzip-compressed when `gzip`.
// Tests and benchmarks use it to make small inputs.
void write_idx(const std::string& path, std::span<const int64_t> dims,
               std::span<const uint8_t> data, bool gzip);

}  // namespace ringflow::datasets
