#include "setup.h"

namespace ringflow::train {

std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& c, Output lr) {
  if (c.optimizer == "sgd") return std::make_unique<GradientDescent>(lr, c.weight_decay);
  if (c.optimizer == "momentum" || c.optimizer == "nesterov")
    return std::make_unique<Momentum>(lr, c.momentum, c.optimizer == "nesterov", c.weight_decay);
  return std::make_unique<Adam>(lr, 0.9f, 0.999f, 1e-8f, c.weight_decay);
}

std::string model_signature(const TrainConfig& c) {
  std::string sig = c.model.name;
  if (c.model.name == "mlp") {
    sig += " hidden ";
    for (std::size_t i = 0; i < c.model.hidden.size(); ++i)
      sig += (i ? "," : "") + std::to_string(c.model.hidden[i]);
  }
  return sig + ", optimizer " + c.optimizer;
}

}  // namespace ringflow::train
