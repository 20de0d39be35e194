#include <mutex>

#include "op_util.h"

namespace ringflow::ops {

void ensure_registered() {
  static std::once_flag once;
  std::call_once(once, [] {
    OpRegistry& r = OpRegistry::global();
    register_math_ops(r);
    register_matmul_ops(r);
    register_reduce_ops(r);
    register_array_ops(r);
    register_nn_ops(r);
    register_conv_ops(r);
    register_pool_ops(r);
    register_state_ops(r);
  });
}

}  // namespace ringflow::ops
