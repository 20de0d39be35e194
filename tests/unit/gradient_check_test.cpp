// Every differentiable op's gradient against central finite differences,
// driven from one table. Each case builds y = op(inputs) from variables, and
// checks d/dx of loss = sum(y * r), r a fixed random tensor (so every entry
// of the Jacobian counts), against (loss(x + eps) - loss(x - eps)) / 2 eps.
#include <cmath>
#include <functional>
#include <set>

#include "ringflow/graph/gradients.h"
#include "ringflow/ops/ops.h"
#include "test_util.h"

namespace ringflow {
namespace {

struct InputSpec {
  Shape shape;
  float lo, hi;
  // Keep values at least this far from 0 (for kinks such as relu's).
  float avoid_zero = 0.0f;
};

struct GradCase {
  std::string name;
  std::vector<InputSpec> inputs;
  std::function<Output(Graph&, const std::vector<Output>&)> build;
  bool distinct = false;  // make all inputs distinct (max-pool ties)
};

std::vector<GradCase> grad_cases() {
  ops::ensure_registered();  // runs during static initialisation, before any builder
  auto labels = [](Graph& g) {
    return g.constant(Tensor::from_vector_i32(Shape{4}, {0, 2, 1, 2}));
  };
  std::vector<GradCase> cases = {
      {"Add_same", {{{3, 4}, -1, 1}, {{3, 4}, -1, 1}}, [](Graph&, auto& x) { return x[0] + x[1]; }},
      {"Add_bias", {{{3, 4}, -1, 1}, {{4}, -1, 1}}, [](Graph&, auto& x) { return x[0] + x[1]; }},
      {"Add_scalar", {{{3, 4}, -1, 1}, {{}, -1, 1}}, [](Graph&, auto& x) { return x[0] + x[1]; }},
      {"Sub_column",
       {{{3, 4}, -1, 1}, {{3, 1}, -1, 1}},
       [](Graph&, auto& x) { return x[0] - x[1]; }},
      {"Sub_left_bias",
       {{{4}, -1, 1}, {{2, 4}, -1, 1}},
       [](Graph&, auto& x) { return x[0] - x[1]; }},
      {"Mul_same", {{{3, 4}, -1, 1}, {{3, 4}, -1, 1}}, [](Graph&, auto& x) { return x[0] * x[1]; }},
      {"Mul_3d",
       {{{2, 3, 4}, -1, 1}, {{3, 1}, -1, 1}},
       [](Graph&, auto& x) { return x[0] * x[1]; }},
      {"Div_bias", {{{3, 4}, -1, 1}, {{4}, 1, 2}}, [](Graph&, auto& x) { return x[0] / x[1]; }},
      {"Div_same", {{{2, 3}, -1, 1}, {{2, 3}, 1, 2}}, [](Graph&, auto& x) { return x[0] / x[1]; }},
      {"Neg", {{{2, 5}, -1, 1}}, [](Graph&, auto& x) { return -x[0]; }},
      {"Relu", {{{3, 5}, -1, 1, 0.1f}}, [](Graph&, auto& x) { return relu(x[0]); }},
      {"Sigmoid", {{{3, 5}, -3, 3}}, [](Graph&, auto& x) { return sigmoid(x[0]); }},
      {"Tanh", {{{3, 5}, -2, 2}}, [](Graph&, auto& x) { return tanh(x[0]); }},
      {"Exp", {{{3, 5}, -1, 1}}, [](Graph&, auto& x) { return exp(x[0]); }},
      {"Log", {{{3, 5}, 0.5f, 2}}, [](Graph&, auto& x) { return log(x[0]); }},
      {"Square", {{{3, 5}, -1, 1}}, [](Graph&, auto& x) { return square(x[0]); }},
      {"Identity", {{{3}, -1, 1}}, [](Graph&, auto& x) { return identity(x[0]); }},
      {"AddN",
       {{{2, 3}, -1, 1}, {{2, 3}, -1, 1}, {{2, 3}, -1, 1}},
       [](Graph&, auto& x) {
         return add_n({x[0], x[1], x[2]});
       }},
      {"MatMul",
       {{{3, 4}, -1, 1}, {{4, 5}, -1, 1}},
       [](Graph&, auto& x) { return matmul(x[0], x[1]); }},
      {"MatMul_ta",
       {{{4, 3}, -1, 1}, {{4, 5}, -1, 1}},
       [](Graph&, auto& x) { return matmul(x[0], x[1], true, false); }},
      {"MatMul_tb",
       {{{3, 4}, -1, 1}, {{5, 4}, -1, 1}},
       [](Graph&, auto& x) { return matmul(x[0], x[1], false, true); }},
      {"MatMul_ta_tb",
       {{{4, 3}, -1, 1}, {{5, 4}, -1, 1}},
       [](Graph&, auto& x) { return matmul(x[0], x[1], true, true); }},
      {"ReduceSum_all", {{{3, 4}, -1, 1}}, [](Graph&, auto& x) { return reduce_sum(x[0]); }},
      {"ReduceSum_axis0", {{{3, 4}, -1, 1}}, [](Graph&, auto& x) { return reduce_sum(x[0], 0); }},
      {"ReduceSum_axis1_keep",
       {{{2, 3, 4}, -1, 1}},
       [](Graph&, auto& x) { return reduce_sum(x[0], 1, true); }},
      {"ReduceMean_all", {{{3, 4}, -1, 1}}, [](Graph&, auto& x) { return reduce_mean(x[0]); }},
      {"ReduceMean_last", {{{3, 4}, -1, 1}}, [](Graph&, auto& x) { return reduce_mean(x[0], -1); }},
      {"Reshape",
       {{{3, 4}, -1, 1}},
       [](Graph&, auto& x) {
         return reshape(x[0], {2, -1}) * 1.5f;
       }},
      {"Softmax", {{{3, 5}, -2, 2}}, [](Graph&, auto& x) { return softmax(x[0]); }},
      {"SparseSoftmaxCrossEntropy",
       {{{4, 3}, -2, 2}},
       [labels](Graph& g, auto& x) {
         return sparse_softmax_cross_entropy_with_logits(x[0], labels(g));
       }},
      {"Dropout_eval",
       {{{3, 4}, -1, 1}},
       [](Graph& g, auto& x) { return dropout(x[0], 0.5f, g.scalar(0.0f), 1); }},
  };
  if (OpRegistry::global().find("Conv2D")) {
    for (auto pad : {Padding::same, Padding::valid})
      for (int stride : {1, 2}) {
        const std::string name = std::string("Conv2D_") +
                                 (pad == Padding::same ? "same" : "valid") + "_s" +
                                 std::to_string(stride);
        cases.push_back(
            {name, {{{2, 5, 6, 3}, -1, 1}, {{3, 3, 3, 2}, -1, 1}}, [pad, stride](Graph&, auto& x) {
               return conv2d(x[0], x[1], stride, pad);
             }});
      }
    // The relu variant is tested bitwise against the separate ops
    // (conv2d_test.cpp); finite differences would straddle its kink.
    cases.push_back({"FusedConv2D_bias",
                     {{{2, 5, 6, 3}, -1, 1}, {{3, 3, 3, 2}, -1, 1}, {{2}, -1, 1}},
                     [](Graph&, auto& x) {
                       return fused_conv2d(x[0], x[1], x[2], /*relu=*/false, 2, Padding::same);
                     }});
    cases.push_back({"MaxPool2D_valid",
                     {{{2, 4, 6, 3}, -1, 1}},
                     [](Graph&, auto& x) { return max_pool2d(x[0], 2, 2, Padding::valid); },
                     true});
    cases.push_back({"MaxPool2D_same",
                     {{{1, 5, 5, 2}, -1, 1}},
                     [](Graph&, auto& x) { return max_pool2d(x[0], 3, 2, Padding::same); },
                     true});
  }
  return cases;
}

class GradientCheck : public ::testing::TestWithParam<GradCase> {};

TEST_P(GradientCheck, MatchesCentralFiniteDifferences) {
  const GradCase& gc = GetParam();
  Graph g;
  std::vector<Output> vars;
  for (std::size_t i = 0; i < gc.inputs.size(); ++i)
    vars.push_back(g.variable("x" + std::to_string(i), gc.inputs[i].shape, init::zeros()));
  Output y = gc.build(g, vars);
  ASSERT_TRUE(y.shape().is_fully_defined());
  Output r = g.constant(testing_util::random_tensor(y.shape(), -1, 1, 99));
  Output loss = reduce_sum(y * r);
  std::vector<Output> grads = gradients(loss, vars);

  Session s(g, {.num_threads = 2});
  for (std::size_t i = 0; i < vars.size(); ++i) {
    const InputSpec& spec = gc.inputs[i];
    Tensor init = testing_util::random_tensor(spec.shape, spec.lo, spec.hi, 10 + i);
    auto f = init.flat<float>();
    for (std::size_t k = 0; k < f.size(); ++k) {
      if (spec.avoid_zero > 0 && std::abs(f[k]) < spec.avoid_zero)
        f[k] = f[k] < 0 ? -spec.avoid_zero - 0.05f : spec.avoid_zero + 0.05f;
      // A permutation of evenly spaced values: no two closer than 2 eps.
      if (gc.distinct)
        f[k] = static_cast<float>((k * 7919) % f.size()) * (2.0f / static_cast<float>(f.size())) -
               1.0f;
    }
    s.variable(vars[i]).copy_from(init);
  }
  const std::vector<Tensor> analytic = s.run(grads);
  const float eps = 1e-2f;
  for (std::size_t i = 0; i < vars.size(); ++i) {
    Tensor& v = s.variable(vars[i]);
    ASSERT_EQ(analytic[i].shape(), v.shape()) << gc.name << " input " << i;
    auto f = v.flat<float>();
    for (std::size_t k = 0; k < f.size(); ++k) {
      const float saved = f[k];
      f[k] = saved + eps;
      const double up = s.run({loss})[0].scalar_value();
      f[k] = saved - eps;
      const double down = s.run({loss})[0].scalar_value();
      f[k] = saved;
      const double numeric = (up - down) / (2.0 * eps);
      const double got = analytic[i].flat<float>()[k];
      EXPECT_NEAR(got, numeric, 5e-3 + 1e-2 * std::abs(numeric))
          << gc.name << ": d loss / d input " << i << " element " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllOps, GradientCheck, ::testing::ValuesIn(grad_cases()),
                         [](const ::testing::TestParamInfo<GradCase>& param_info) {
                           return param_info.param.name;
                         });

TEST(GradientCheckTable, CoversEveryDifferentiableOp) {
  // Every registered op with a gradient builder appears in the table (by op
  // type, found in the graph each case builds), so a new op can't skip it.
  ops::ensure_registered();
  std::set<std::string> covered;
  for (const auto& gc : grad_cases()) {
    Graph g;
    std::vector<Output> vars;
    for (std::size_t i = 0; i < gc.inputs.size(); ++i)
      vars.push_back(g.variable("x" + std::to_string(i), gc.inputs[i].shape, init::zeros()));
    gc.build(g, vars);
    for (int n = 0; n < g.num_nodes(); ++n) covered.insert(g.node(n).op);
  }
  for (const auto& name : OpRegistry::global().names()) {
    const OpDef* def = OpRegistry::global().find(name);
    if (def->grad && name.rfind("Test", 0) != 0) {
      EXPECT_TRUE(covered.count(name))
          << "op " << name << " has a gradient but no finite-difference case";
    }
  }
}

TEST(GradientCheckDropout, GradientIsTheMaskOfTheSameRun) {
  Graph g;
  auto x = g.variable("x", {50}, init::uniform(1.0f, 3));
  auto y = dropout(x, 0.3f, g.scalar(1.0f), 11);
  auto grads = gradients(reduce_sum(y * 2.0f), {x});
  Session s(g, {.num_threads = 1});
  auto out = s.run({y, grads[0]});
  auto xv = testing_util::values(s.variable(x));
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const float mask = out[0].flat<float>()[i] / xv[i];
    EXPECT_NEAR(out[1].flat<float>()[i], 2.0f * mask, 1e-4f);
  }
}

}  // namespace
}  // namespace ringflow
