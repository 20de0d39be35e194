// MatMul with transpose flags. C = op(A) op(B), op(X) = X or X^T.
//   a: (M, K) or (K, M) when transpose_a;  b: (K, N) or (N, K) when transpose_b
// The GEMM is Eigen's (vectorised for the -march the build targets); large
// products are split over row blocks of C when the session has threads.
#include "op_util.h"
#include "ringflow/tensor/eigen.h"

namespace ringflow::ops {

namespace {

void matmul_shape(ShapeContext& c) {
  c.expect_inputs(2);
  c.expect_dtype(0, DType::f32);
  c.expect_dtype(1, DType::f32);
  c.expect_rank(0, 2);
  c.expect_rank(1, 2);
  const bool ta = c.attrs().get_bool("transpose_a"), tb = c.attrs().get_bool("transpose_b");
  const Shape& a = c.in_shape(0);
  const Shape& b = c.in_shape(1);
  const std::int64_t m = ta ? a.dim(1) : a.dim(0), ka = ta ? a.dim(0) : a.dim(1);
  const std::int64_t kb = tb ? b.dim(1) : b.dim(0), n = tb ? b.dim(0) : b.dim(1);
  if (ka >= 0 && kb >= 0 && ka != kb)
    c.fail("inner dimensions differ: ", c.in_desc(0), ta ? " (transposed)" : "", " vs ",
           c.in_desc(1), tb ? " (transposed)" : "", " (", ka, " != ", kb, ")");
  c.set_output(0, DType::f32, Shape{m, n});
}

void matmul_kernel(KernelContext& c) {
  const Tensor& a = c.input(0);
  const Tensor& b = c.input(1);
  const bool ta = c.attrs().get_bool("transpose_a"), tb = c.attrs().get_bool("transpose_b");
  const std::int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const std::int64_t kb = tb ? b.dim(1) : b.dim(0), n = tb ? b.dim(0) : b.dim(1);
  if (k != kb) c.fail("inner dimensions differ at run time: ", describe(a), " vs ", describe(b));
  Tensor& y = c.allocate_output(0, DType::f32, Shape{m, n});
  if (m == 0 || n == 0) return;
  MatrixMap C = as_matrix(y);
  if (k == 0) {
    C.setZero();
    return;
  }
  ConstMatrixMap A = as_matrix(a);
  ConstMatrixMap B = as_matrix(b);
  // Rows [lo, hi) of C; each block is an independent GEMM, so the result does
  // not depend on how the rows are split (bitwise).
  auto rows = [&](std::int64_t lo, std::int64_t hi) {
    auto Cb = C.middleRows(lo, hi - lo);
    if (!ta && !tb) Cb.noalias() = A.middleRows(lo, hi - lo) * B;
    if (!ta && tb) Cb.noalias() = A.middleRows(lo, hi - lo) * B.transpose();
    if (ta && !tb) Cb.noalias() = A.middleCols(lo, hi - lo).transpose() * B;
    if (ta && tb) Cb.noalias() = A.middleCols(lo, hi - lo).transpose() * B.transpose();
  };
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int threads = c.intra_op_threads();
  if (threads <= 1 || flops < 4e6 || m < 32) {
    rows(0, m);
    return;
  }
  // Row blocks in multiples of 16 so each keeps Eigen's register blocking.
  std::int64_t block = (m + threads - 1) / threads;
  block = std::max<std::int64_t>(16, (block + 15) / 16 * 16);
  parallel_blocks(c, m, block, rows);
}

}  // namespace

void register_matmul_ops(OpRegistry& r) {
  // C = A B:      dA = G B^T,    dB = A^T G
  // C = A B^T:    dA = G B,      dB = G^T A
  // C = A^T B:    dA = B G^T,    dB = A G
  // C = A^T B^T:  dA = B^T G^T,  dB = G^T A^T
  r.add({.name = "MatMul",
         .shape_fn = matmul_shape,
         .kernel = matmul_kernel,
         .grad = [](GradContext& g) {
           const bool ta = g.node.attrs.get_bool("transpose_a");
           const bool tb = g.node.attrs.get_bool("transpose_b");
           Output a = g.input(0), b = g.input(1), G = g.grad();
           Output da, db;
           if (!ta && !tb) {
             da = matmul(G, b, false, true);
             db = matmul(a, G, true, false);
           } else if (!ta && tb) {
             da = matmul(G, b, false, false);
             db = matmul(G, a, true, false);
           } else if (ta && !tb) {
             da = matmul(b, G, false, true);
             db = matmul(a, G, false, false);
           } else {
             da = matmul(b, G, true, true);
             db = matmul(G, a, true, true);
           }
           return std::vector<Output>{da, db};
         }});
}

}  // namespace ringflow::ops

namespace ringflow {

Output matmul(Output a, Output b, bool transpose_a, bool transpose_b) {
  return ops::make_op("MatMul", {a, b},
                      {{"transpose_a", transpose_a}, {"transpose_b", transpose_b}});
}

}  // namespace ringflow
