// Eigen views of Tensor storage for the kernels. Storage is row-major and
// 64-byte aligned, so a whole-tensor map may claim Aligned64.
#pragma once

#include <Eigen/Core>

#include "ringflow/tensor/tensor.h"

namespace ringflow {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix, Eigen::Aligned64>;
using ConstMatrixMap = Eigen::Map<const RowMatrix, Eigen::Aligned64>;
using UnalignedMatrixMap = Eigen::Map<RowMatrix>;
using ConstUnalignedMatrixMap = Eigen::Map<const RowMatrix>;
using VectorMap = Eigen::Map<Eigen::VectorXf, Eigen::Aligned64>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf, Eigen::Aligned64>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf, Eigen::Aligned64>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf, Eigen::Aligned64>;

// t viewed as a (rows, cols) matrix; rows * cols must equal its element count.
inline MatrixMap as_matrix(Tensor& t, std::int64_t rows, std::int64_t cols) {
  RF_CHECK_AS(InternalError, rows * cols == t.num_elements(), "matrix view ", rows, "x", cols,
              " of ", describe(t));
  return MatrixMap(t.data<float>(), rows, cols);
}
inline ConstMatrixMap as_matrix(const Tensor& t, std::int64_t rows, std::int64_t cols) {
  RF_CHECK_AS(InternalError, rows * cols == t.num_elements(), "matrix view ", rows, "x", cols,
              " of ", describe(t));
  return ConstMatrixMap(t.data<float>(), rows, cols);
}
// A rank-2 tensor as a matrix.
inline MatrixMap as_matrix(Tensor& t) {
  return as_matrix(t, t.dim(0), t.dim(1));
}
inline ConstMatrixMap as_matrix(const Tensor& t) {
  return as_matrix(t, t.dim(0), t.dim(1));
}
inline ArrayMap as_array(Tensor& t) {
  return ArrayMap(t.data<float>(), t.num_elements());
}
inline ConstArrayMap as_array(const Tensor& t) {
  return ConstArrayMap(t.data<float>(), t.num_elements());
}

}  // namespace ringflow
