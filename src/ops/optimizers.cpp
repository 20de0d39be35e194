#include "ringflow/ops/optimizers.h"

#include "op_util.h"
#include "ringflow/graph/gradients.h"

namespace ringflow {

Optimizer::Optimizer(Output learning_rate, float weight_decay)
    : lr_(learning_rate), weight_decay_(weight_decay) {
  RF_CHECK(lr_.valid(), "optimizer: the learning rate is an empty Output");
  RF_CHECK(lr_.shape().rank() == 0 && lr_.dtype() == DType::f32, "optimizer: learning rate ",
           lr_.describe(), " must be an f32 scalar");
  RF_CHECK(weight_decay >= 0.0f, "optimizer: weight decay ", weight_decay, " must be >= 0");
}

Output Optimizer::minimize(Output loss, std::vector<Output> vars, const std::string& name) {
  if (vars.empty()) vars = loss.graph().trainable_variables();
  RF_CHECK(!vars.empty(), "minimize: the graph has no trainable variables");
  const std::vector<Output> grads = gradients(loss, vars);
  std::vector<GradAndVar> pairs;
  for (std::size_t i = 0; i < vars.size(); ++i) pairs.push_back({grads[i], vars[i]});
  return apply_gradients(pairs, name);
}

Output Optimizer::apply_gradients(const std::vector<GradAndVar>& grads_and_vars,
                                  const std::string& name) {
  RF_CHECK(!grads_and_vars.empty(), "apply_gradients: nothing to apply");
  std::vector<Output> applies;
  for (const auto& gv : grads_and_vars) applies.push_back(apply(gv.grad, gv.var));
  return grads_and_vars[0].var.graph().group(applies, name);
}

Output Optimizer::slot(Output var, const std::string& slot_name, const Shape& shape) {
  return var.graph().variable(var.name() + "/" + slot_name, shape, init::zeros(), false);
}

Output GradientDescent::apply(Output grad, Output var) {
  return ops::make_op("ApplyGradientDescent", {var, lr_, grad},
                      {{"weight_decay", static_cast<double>(weight_decay_)}},
                      var.name() + "/ApplyGradientDescent");
}

Output Momentum::apply(Output grad, Output var) {
  Output accum = slot(var, "momentum", var.shape());
  return ops::make_op("ApplyMomentum", {var, accum, lr_, grad},
                      {{"momentum", static_cast<double>(momentum_)},
                       {"nesterov", nesterov_},
                       {"weight_decay", static_cast<double>(weight_decay_)}},
                      var.name() + "/ApplyMomentum");
}

Output Adam::apply(Output grad, Output var) {
  Output m = slot(var, "adam_m", var.shape());
  Output v = slot(var, "adam_v", var.shape());
  Output t = slot(var, "adam_t", Shape{});
  return ops::make_op("ApplyAdam", {var, m, v, t, lr_, grad},
                      {{"beta1", static_cast<double>(beta1_)},
                       {"beta2", static_cast<double>(beta2_)},
                       {"epsilon", static_cast<double>(epsilon_)},
                       {"weight_decay", static_cast<double>(weight_decay_)}},
                      var.name() + "/ApplyAdam");
}

}  // namespace ringflow
