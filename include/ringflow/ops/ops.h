// The op builders: the TF1-style API for building graphs.
//
//   Graph g;
//   auto x = g.placeholder("x", {-1, 784});
//   auto w = g.variable("w", {784, 256}, init::glorot_uniform(seed));
//   auto b = g.variable("b", {256}, init::zeros());
//   auto h = relu(matmul(x, w) + b);
//
// Every builder checks shapes at build time; a mismatch raises a ShapeError
// that names both nodes and both shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringflow/graph/graph.h"
#include "ringflow/graph/op_registry.h"

namespace ringflow {

namespace ops {
// Registers every op family with the global registry (idempotent). Builders
// and the Session call it; call it yourself only to look ops up by name.
void ensure_registered();
}  // namespace ops

// --- element-wise, with bias-style broadcasting (shapes aligned from the
// right; each dim equal or 1; e.g. [B, H] + [H], [B, C] * [B, 1], x * scalar)
Output add(Output a, Output b);
Output sub(Output a, Output b);
Output mul(Output a, Output b);
Output div(Output a, Output b);
Output neg(Output x);
Output relu(Output x);
Output sigmoid(Output x);
Output tanh(Output x);
Output exp(Output x);
Output log(Output x);
Output square(Output x);
Output identity(Output x);
// Sums g down to x's run-time shape over the dims broadcasting expanded.
Output sum_like(Output g, Output x);

inline Output operator+(Output a, Output b) {
  return add(a, b);
}
inline Output operator-(Output a, Output b) {
  return sub(a, b);
}
inline Output operator*(Output a, Output b) {
  return mul(a, b);
}
inline Output operator/(Output a, Output b) {
  return div(a, b);
}
inline Output operator-(Output a) {
  return neg(a);
}
Output operator+(Output a, float b);
Output operator-(Output a, float b);
Output operator*(Output a, float b);
Output operator/(Output a, float b);
Output operator*(float a, Output b);
Output operator-(float a, Output b);

// --- matrix
// a: (M, K) (or (K, M) when transpose_a), b: (K, N) (or (N, K)) -> (M, N)
Output matmul(Output a, Output b, bool transpose_a = false, bool transpose_b = false);

// --- reductions. axis = kAllAxes reduces everything to a scalar.
constexpr std::int64_t kAllAxes = INT64_MIN;
Output reduce_sum(Output x, std::int64_t axis = kAllAxes, bool keep_dims = false);
Output reduce_mean(Output x, std::int64_t axis = kAllAxes, bool keep_dims = false);
// Index of the largest element along axis (the first on ties), as i32.
Output argmax(Output x, std::int64_t axis = -1);

// --- array
// shape may contain one -1, resolved from the element count at run time.
Output reshape(Output x, std::vector<std::int64_t> shape);
Output cast(Output x, DType dtype);
// 1 where a == b, else 0; i32 output.
Output equal(Output a, Output b);
// A placeholder that yields `value` when not fed (e.g. the training switch).
Output placeholder_with_default(Graph& g, const std::string& name, Tensor value);

// --- neural network
// softmax over the last axis
Output softmax(Output logits);
// logits: (B, C) f32, labels: (B) i32 in [0, C) -> per-example loss (B).
// Numerically stable: log-sum-exp with the row max subtracted.
Output sparse_softmax_cross_entropy_with_logits(Output logits, Output labels);
// Inverted dropout: when training != 0 each element is kept with probability
// 1 - rate and scaled by 1 / (1 - rate); otherwise y = x. The mask is a
// function of (seed, stream, element): stream is an optional i32 scalar (the
// trainer feeds one per step and rank, so a resumed run draws the same masks
// and ranks draw different ones); without it, the number of times the node
// ran. Either way runs are reproducible.
Output dropout(Output x, float rate, Output training, std::uint64_t seed, Output stream = {});

// --- convolution, NHWC; filter (KH, KW, Cin, Cout)
enum class Padding { same, valid };
Output conv2d(Output input, Output filter, int stride = 1, Padding padding = Padding::same);
// relu(conv2d(input, filter) + bias) (relu = false: without the relu) as one
// node: the bias and activation are applied to each block of the output right
// after it is computed. The same values and gradients as the separate ops.
Output fused_conv2d(Output input, Output filter, Output bias, bool relu, int stride = 1,
                    Padding padding = Padding::same);
Output max_pool2d(Output input, int window = 2, int stride = 2, Padding padding = Padding::valid);

// --- state
// Writes value into var; returns var (after the write).
Output assign(Output var, Output value);

}  // namespace ringflow
