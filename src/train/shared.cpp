#include "shared.h"

#include <cstring>
#include <filesystem>
#include <utility>

#include "ringflow/datasets/batch.h"

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

void create_checkpoint_dir(const TrainConfig& c) {
  if (c.checkpoint_dir.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(c.checkpoint_dir, ec);
  RF_CHECK_AS(IoError, !ec && std::filesystem::is_directory(c.checkpoint_dir),
              "--checkpoint-dir: cannot create directory '", c.checkpoint_dir, "': ", ec.message());
}

void limit_rows(datasets::Shard& s, std::int64_t rows) {
  if (rows <= 0 || rows >= s.total_rows) return;
  s.rows = datasets::shard_rows(rows, s.rank, s.num_ranks, s.mode);
  s.total_rows = rows;
  s.x.resize(static_cast<std::size_t>(s.rows.count * s.row_size));
  s.y.resize(static_cast<std::size_t>(s.rows.count));
}

std::int32_t dropout_stream(std::int64_t step, int num_ranks, int rank) {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(
      static_cast<std::uint64_t>(step) * static_cast<std::uint64_t>(num_ranks) +
      static_cast<std::uint64_t>(rank)));
}

void next_batch(datasets::BatchIterator& batches, std::int64_t& epoch, bool& epoch_started,
                std::int64_t& resume_position, Tensor& x, Tensor& y) {
  if (!epoch_started) {
    batches.start_epoch(epoch);
    batches.seek(std::exchange(resume_position, 0));
    epoch_started = true;
  }
  if (!batches.next(x.flat<float>(), y.flat<std::int32_t>())) {
    ++epoch;
    batches.start_epoch(epoch);
    RF_CHECK_AS(InternalError, batches.next(x.flat<float>(), y.flat<std::int32_t>()),
                "an epoch with no steps");
  }
}

EvalSums evaluate_shard(Session& session, const Model& model, const datasets::Shard& shard,
                        std::int64_t global_batch) {
  datasets::EvalIterator it(shard, global_batch);
  const std::int64_t b = it.local_batch();
  std::vector<std::int64_t> xs{b};
  xs.insert(xs.end(), shard.feature_shape.begin(), shard.feature_shape.end());
  Tensor x(DType::f32, Shape(xs));
  Tensor y(DType::i32, Shape{b});
  EvalSums sums;
  for (;;) {
    const std::int64_t got = it.next(x.flat<float>(), y.flat<std::int32_t>());
    if (got == 0) break;
    Tensor xf = x, yf = y;
    if (got < b) {  // the partial last batch
      xs[0] = got;
      xf = Tensor(DType::f32, Shape(xs));
      std::memcpy(xf.data<float>(), x.data<float>(), xf.num_bytes());
      yf = Tensor(DType::i32, Shape{got});
      std::memcpy(yf.data<std::int32_t>(), y.data<std::int32_t>(), yf.num_bytes());
    }
    auto out = session.run({model.loss_sum, model.correct}, {{model.x, xf}, {model.y, yf}});
    sums.loss_sum += out[0].scalar_value();
    sums.correct += out[1].scalar_value();
    sums.rows += static_cast<double>(got);
  }
  return sums;
}

}  // namespace ringflow::train
