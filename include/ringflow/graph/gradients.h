// Symbolic reverse-mode autodiff, like tf.gradients: adds gradient nodes to
// the graph and returns d(loss)/d(x) for each x.
#pragma once

#include <vector>

#include "ringflow/graph/graph.h"

namespace ringflow {

// loss must be a scalar. Raises when loss does not depend on some x, or when
// the path from an x to loss crosses an op that has no gradient builder.
std::vector<Output> gradients(Output loss, const std::vector<Output>& xs);

}  // namespace ringflow
