// Choices the allreduce Trainer and the parameter servers make alike from the
// configuration, so that both modes build the same optimizer and name the
// same model in their checkpoints.
#pragma once

#include <memory>
#include <string>

#include "ringflow/graph/graph.h"
#include "ringflow/ops/optimizers.h"
#include "ringflow/train/config.h"

namespace ringflow::train {

// The optimizer of --optimizer, reading its learning rate from `lr`.
std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& c, Output lr);

// "mlp hidden 256,128, optimizer momentum": what a checkpoint must match.
std::string model_signature(const TrainConfig& c);

}  // namespace ringflow::train
