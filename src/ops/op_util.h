// Helpers shared by the op families (private to src/ops).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include "ringflow/graph/op_registry.h"
#include "ringflow/ops/ops.h"

namespace ringflow::ops {

// Each family's registration, called once by ensure_registered().
void register_math_ops(OpRegistry& r);
void register_matmul_ops(OpRegistry& r);
void register_reduce_ops(OpRegistry& r);
void register_array_ops(OpRegistry& r);
void register_nn_ops(OpRegistry& r);
void register_conv_ops(OpRegistry& r);
void register_pool_ops(OpRegistry& r);
void register_state_ops(OpRegistry& r);

// Adds a node after making sure the op families are registered.
inline Output make_op(const std::string& op, std::vector<Output> inputs, AttrMap attrs = {},
                      const std::string& name = "") {
  ensure_registered();
  RF_CHECK(!inputs.empty(), "op ", op, " needs inputs");
  return inputs[0].graph().add_op(op, std::move(inputs), std::move(attrs), name);
}

// Splits [0, n) into blocks of at least `grain` and runs f(begin, end) on
// them, in parallel when the session allows more than one thread.
template <class F>
void parallel_blocks(const KernelContext& c, std::int64_t n, std::int64_t grain, F&& f) {
  if (n <= grain || c.intra_op_threads() <= 1) {
    if (n > 0) f(std::int64_t{0}, n);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, grain),
                    [&](const tbb::blocked_range<std::int64_t>& r) { f(r.begin(), r.end()); });
}

// Static broadcast of two shapes aligned from the right; fails naming both.
Shape broadcast_shape(const ShapeContext& c, const Shape& a, const Shape& b);
// Run-time broadcast of two fully defined shapes; raises on a mismatch.
Shape broadcast_shape(const KernelContext& c, const Shape& a, const Shape& b);

// Normalises a possibly negative axis against a rank.
inline int norm_axis(std::int64_t axis, int rank) {
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

}  // namespace ringflow::ops
