#include "ringflow/train/models.h"

#include <algorithm>
#include <numeric>

#include "ringflow/ops/ops.h"
#include "ringflow/tensor/random.h"

namespace ringflow::train {

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"logreg", "mlp", "cnn", "cnn-small"};
  return names;
}

namespace {

// Builds layers with deterministic per-variable seeds derived from spec.seed.
class Builder {
 public:
  Builder(Graph& g, std::uint64_t seed) : g_(g), seed_(seed) {}

  // x: (B, in) -> (B, units) = x W + b, W: (in, units) Glorot-uniform, b: zeros
  Output dense(const std::string& name, Output x, std::int64_t units) {
    auto scope = g_.scope(name);
    const std::int64_t in = x.shape().dim(-1);
    auto w = g_.variable("kernel", {in, units}, init::glorot_uniform(next_seed()));
    auto b = g_.variable("bias", {units}, init::zeros());
    return matmul(x, w) + b;
  }

  // x: (B, H, W, Cin) -> relu(conv + bias): (B, H, W, filters), SAME padding,
  // stride 1, as one FusedConv2D node
  Output conv_relu(const std::string& name, Output x, std::int64_t filters, std::int64_t k) {
    auto scope = g_.scope(name);
    const std::int64_t cin = x.shape().dim(-1);
    auto w = g_.variable("kernel", {k, k, cin, filters}, init::glorot_uniform(next_seed()));
    auto b = g_.variable("bias", {filters}, init::zeros());
    return fused_conv2d(x, w, b, /*relu=*/true, 1, Padding::same);
  }

  std::uint64_t next_seed() { return random::mix64(seed_ + 0x51ed * ++count_); }

 private:
  Graph& g_;
  std::uint64_t seed_;
  std::uint64_t count_ = 0;
};

std::int64_t product(const std::vector<std::int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), std::int64_t{1}, std::multiplies<>());
}

}  // namespace

Model build_model(Graph& g, const ModelSpec& spec, const std::vector<std::int64_t>& feature_shape,
                  int num_classes) {
  const auto& names = model_names();
  RF_CHECK(std::find(names.begin(), names.end(), spec.name) != names.end(),
           "--model: unknown model '", spec.name, "'; choose one of logreg, mlp, cnn, cnn-small");
  RF_CHECK(num_classes >= 2, "the data set has ", num_classes,
           " classes; a classifier needs at least 2");
  RF_CHECK(!feature_shape.empty() && product(feature_shape) > 0,
           "the data set's rows have no features");
  Model m;
  std::vector<std::int64_t> x_shape{-1};
  x_shape.insert(x_shape.end(), feature_shape.begin(), feature_shape.end());
  m.x = g.placeholder("x", Shape(x_shape));
  m.y = g.placeholder("y", {-1}, DType::i32);
  m.training = placeholder_with_default(g, "training", Tensor::scalar(0.0f));
  m.dropout_stream = placeholder_with_default(g, "dropout_stream", Tensor::scalar_i32(0));
  Builder b(g, spec.seed);
  const std::int64_t features = product(feature_shape);
  Output flat = reshape(m.x, {-1, features});

  if (spec.name == "logreg") {
    m.logits = b.dense("logits", flat, num_classes);
  } else if (spec.name == "mlp") {
    RF_CHECK(!spec.hidden.empty(),
             "--hidden: the mlp needs at least one hidden layer, e.g. --hidden 256,128");
    Output h = flat;
    int i = 1;
    for (auto units : spec.hidden) {
      RF_CHECK(units > 0, "--hidden: layer sizes must be positive, got ", units);
      h = relu(b.dense("dense" + std::to_string(i++), h, units));
    }
    m.logits = b.dense("logits", h, num_classes);
  } else {
    const bool small = spec.name == "cnn-small";
    RF_CHECK(feature_shape.size() == 2 || feature_shape.size() == 3, "--model ", spec.name,
             " needs image rows (H, W) or (H, W, C); the data set's rows are ",
             Shape(feature_shape).to_string());
    const std::int64_t h = feature_shape[0], w = feature_shape[1];
    const std::int64_t c = feature_shape.size() == 3 ? feature_shape[2] : 1;
    RF_CHECK(h % 4 == 0 && w % 4 == 0, "--model ", spec.name,
             " pools twice by 2 and needs H and W divisible by 4; the data set's images are ", h,
             "x", w);
    Output img = reshape(m.x, {-1, h, w, c});
    Output h1 = max_pool2d(b.conv_relu("conv1", img, small ? 16 : 32, 5), 2, 2, Padding::valid);
    Output h2 = max_pool2d(b.conv_relu("conv2", h1, small ? 32 : 64, 5), 2, 2, Padding::valid);
    Output f = reshape(h2, {-1, (h / 4) * (w / 4) * (small ? 32 : 64)});
    Output d = relu(b.dense("dense", f, small ? 128 : 1024));
    if (!small && spec.dropout > 0)
      d = dropout(d, spec.dropout, m.training, b.next_seed(), m.dropout_stream);
    m.logits = b.dense("logits", d, num_classes);
  }
  Output xent = sparse_softmax_cross_entropy_with_logits(m.logits, m.y);
  m.loss = reduce_mean(xent);
  m.loss_sum = reduce_sum(xent);
  m.correct = reduce_sum(cast(equal(argmax(m.logits), m.y), DType::f32));
  return m;
}

}  // namespace ringflow::train
