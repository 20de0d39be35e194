#include <gtest/gtest.h>

#include "ringflow/graph/gradients.h"
#include "ringflow/ops/ops.h"

namespace ringflow {
namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Graph, BuilderApiInfersShapesWithUnknownBatch) {
  Graph g;
  auto x = g.placeholder("x", {-1, 784});
  auto w = g.variable("w", {784, 256}, init::glorot_uniform(1));
  auto b = g.variable("b", {256}, init::zeros());
  auto h = relu(matmul(x, w) + b);
  EXPECT_EQ(h.shape(), (Shape{-1, 256}));
  EXPECT_EQ(h.dtype(), DType::f32);
  auto logits = reduce_mean(h, 1);
  EXPECT_EQ(logits.shape(), (Shape{-1}));
  EXPECT_EQ(g.trainable_variables().size(), 2u);
  EXPECT_EQ(matmul(x, w, false, false).shape(), (Shape{-1, 256}));
  EXPECT_EQ(matmul(w, x, true, true).shape(), (Shape{256, -1}));
  EXPECT_EQ(reshape(x, {-1, 28, 28, 1}).shape(), (Shape{-1, 28, 28, 1}));
}

TEST(Graph, ShapeMismatchNamesBothNodesAndShapes) {
  Graph g;
  auto x = g.placeholder("images", {-1, 784});
  auto w = g.variable("weights", {100, 10}, init::zeros());
  const std::string msg = error_of([&] { matmul(x, w); });
  EXPECT_NE(msg.find("'images'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'weights'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[?, 784]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[100, 10]"), std::string::npos) << msg;
  EXPECT_THROW(matmul(x, w), ShapeError);

  auto a = g.placeholder("a", {3, 4});
  auto c = g.placeholder("c", {5});
  const std::string add_msg = error_of([&] { a + c; });
  EXPECT_NE(add_msg.find("'a'"), std::string::npos) << add_msg;
  EXPECT_NE(add_msg.find("'c'"), std::string::npos) << add_msg;
  // A failed node is not added to the graph.
  const int before = g.num_nodes();
  EXPECT_THROW(a + c, ShapeError);
  EXPECT_EQ(g.num_nodes(), before);
}

TEST(Graph, NamesAreUniqueAndScoped) {
  Graph g;
  auto x = g.placeholder("x", {2});
  auto y1 = neg(x);
  auto y2 = neg(x);
  EXPECT_EQ(y1.name(), "Neg");
  EXPECT_EQ(y2.name(), "Neg_1");
  {
    auto s = g.scope("dense1");
    auto w = g.variable("w", {2}, init::zeros());
    EXPECT_EQ(w.name(), "dense1/w");
    EXPECT_EQ(neg(w).name(), "dense1/Neg");
  }
  EXPECT_EQ(g.node_by_name("dense1/w").op, "Variable");
  EXPECT_THROW(g.node_by_name("nope"), NotFound);
  EXPECT_THROW(g.variable("dense1/w", {2}, init::zeros()), InvalidArgument);
  EXPECT_THROW(g.add_op("NoSuchOp", {x}), NotFound);
}

TEST(Gradients, LossMustBeScalar) {
  Graph g;
  auto w = g.variable("w", {3}, init::zeros());
  const std::string msg = error_of([&] { gradients(w * w, {w}); });
  EXPECT_NE(msg.find("scalar"), std::string::npos) << msg;
}

TEST(Gradients, UnrelatedVariableIsAnError) {
  Graph g;
  auto w = g.variable("w", {3}, init::zeros());
  auto v = g.variable("unused", {3}, init::zeros());
  auto loss = reduce_sum(w * w);
  const std::string msg = error_of([&] { gradients(loss, {w, v}); });
  EXPECT_NE(msg.find("'unused'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not depend"), std::string::npos) << msg;
}

TEST(Gradients, SumsSeveralConsumersWithAddN) {
  Graph g;
  auto w = g.variable("w", {3}, init::zeros());
  auto loss = reduce_sum(exp(w) + tanh(w) + sigmoid(w));  // w has three consumers
  gradients(loss, {w});
  int addn = 0;
  for (int i = 0; i < g.num_nodes(); ++i) addn += g.node(i).op == "AddN";
  EXPECT_EQ(addn, 1);
  bool three_inputs = false;
  for (int i = 0; i < g.num_nodes(); ++i)
    if (g.node(i).op == "AddN") three_inputs = g.node(i).inputs.size() == 3;
  EXPECT_TRUE(three_inputs);
}

TEST(Gradients, OpWithoutGradientOnThePathIsAnError) {
  ops::ensure_registered();
  OpRegistry::global().add(
      {.name = "TestNoGradSquare",
       .shape_fn = [](ShapeContext& c) { c.set_output(0, DType::f32, c.in_shape(0)); },
       .kernel = [](KernelContext&) {}});
  Graph g;
  auto w = g.variable("w", {3}, init::zeros());
  auto y = g.add_op("TestNoGradSquare", {w});
  const std::string msg = error_of([&] { gradients(reduce_sum(y), {w}); });
  EXPECT_NE(msg.find("TestNoGradSquare"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no gradient"), std::string::npos) << msg;
}

TEST(Gradients, OpsRegisteredWithoutGradientStopTheFlow) {
  Graph g;
  auto w = g.variable("w", {4}, init::zeros());
  // argmax has no gradient by registration: the only path gives zero.
  auto loss = reduce_sum(cast(argmax(reshape(w, {2, 2})), DType::f32));
  auto grads = gradients(loss, {w});
  EXPECT_EQ(grads[0].node().op, "ZerosLike");
}

}  // namespace
}  // namespace ringflow
