// Optimizers as graph ops, in the TF1 style: minimize(loss) adds the
// gradient nodes and one apply op per variable, and returns a target that
// groups them. Slot variables (momentum, Adam moments) are ordinary
// non-trainable variables named "<var>/<slot>", so checkpoints and
// broadcasts carry them.
#pragma once

#include <string>
#include <vector>

#include "ringflow/graph/graph.h"

namespace ringflow {

struct GradAndVar {
  Output grad;
  Output var;
};

class Optimizer {
 public:
  // learning_rate: a scalar f32 tensor; a placeholder (fed each step) allows schedules.
  Optimizer(Output learning_rate, float weight_decay);
  virtual ~Optimizer() = default;

  // gradients(loss, vars) followed by apply_gradients. vars defaults to every
  // trainable variable.
  Output minimize(Output loss, std::vector<Output> vars = {}, const std::string& name = "train");
  // One apply op per pair, grouped into one run target.
  Output apply_gradients(const std::vector<GradAndVar>& grads_and_vars,
                         const std::string& name = "train");
  // The apply op for one pair (for callers that wire their own dependencies).
  virtual Output apply(Output grad, Output var) = 0;

  Output learning_rate() const { return lr_; }

 protected:
  Output slot(Output var, const std::string& slot_name, const Shape& shape);

  Output lr_;
  float weight_decay_;
};

class GradientDescent : public Optimizer {
 public:
  explicit GradientDescent(Output learning_rate, float weight_decay = 0.0f)
      : Optimizer(learning_rate, weight_decay) {}
  Output apply(Output grad, Output var) override;
};

class Momentum : public Optimizer {
 public:
  Momentum(Output learning_rate, float momentum, bool nesterov = false, float weight_decay = 0.0f)
      : Optimizer(learning_rate, weight_decay), momentum_(momentum), nesterov_(nesterov) {}
  Output apply(Output grad, Output var) override;

 private:
  float momentum_;
  bool nesterov_;
};

class Adam : public Optimizer {
 public:
  Adam(Output learning_rate, float beta1 = 0.9f, float beta2 = 0.999f, float epsilon = 1e-8f,
       float weight_decay = 0.0f)
      : Optimizer(learning_rate, weight_decay), beta1_(beta1), beta2_(beta2), epsilon_(epsilon) {}
  Output apply(Output grad, Output var) override;

 private:
  float beta1_, beta2_, epsilon_;
};

}  // namespace ringflow
