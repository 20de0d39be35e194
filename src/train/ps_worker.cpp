#include "ps_worker.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "ringflow/datasets/format.h"
#include "ringflow/graph/gradients.h"
#include "ringflow/train/control.h"

namespace ringflow::train {

namespace rc = collectives;

PsWorker::PsWorker(const TrainConfig& config, int worker, const PsLayout& layout, int threads,
                   rc::PsTransport& transport, const PsTestHooks& hooks)
    : config_(config),
      worker_(worker),
      layout_(layout),
      transport_(transport),
      hooks_(hooks),
      sequential_pulls_(config.ps_update == "async" && config.max_staleness >= 0) {
  const int num_workers = transport_.roles().num_workers();
  const auto info = datasets::open_dataset(config_.data);
  const auto mode = datasets::parse_shard_mode(config_.shard);
  // The data is split over the workers only: worker w is shard w of W.
  train_shard_ = datasets::load_shard(config_.data, "train", worker_, num_workers, mode);
  limit_rows(train_shard_, config_.train_rows);
  test_shard_ = datasets::load_shard(config_.data, "test", worker_, num_workers, mode);
  batches_ = std::make_unique<datasets::BatchIterator>(
      train_shard_,
      datasets::BatchOptions{
          .global_batch = config_.batch_size, .shuffle = config_.shuffle, .seed = config_.seed});

  ModelSpec spec = config_.model;
  spec.seed = config_.seed;
  model_ = build_model(graph_, spec, info.train.feature_shape, info.num_classes);
  vars_ = graph_.trainable_variables();
  grads_ = gradients(model_.loss, vars_);
  session_ = std::make_unique<Session>(graph_, SessionOptions{.num_threads = threads});
  for (const auto& v : vars_) var_tensors_.push_back(&session_->variable(v));
  RF_CHECK_AS(InternalError, var_tensors_.size() == layout_.var_sizes.size(), "worker graph has ",
              var_tensors_.size(), " variables, the layout ", layout_.var_sizes.size());
  std::vector<std::int64_t> xs{batches_->local_batch()};
  xs.insert(xs.end(), info.train.feature_shape.begin(), info.train.feature_shape.end());
  x_batch_ = Tensor(DType::f32, Shape(xs));
  y_batch_ = Tensor(DType::i32, Shape{batches_->local_batch()});
  versions_.assign(static_cast<std::size_t>(layout_.num_shards()), 0);
}

PsWorker::~PsWorker() = default;

void PsWorker::unpack(int shard, std::span<const float> values) {
  for (const PsPiece& piece : layout_.pieces[static_cast<std::size_t>(shard)]) {
    float* dst = var_tensors_[static_cast<std::size_t>(piece.var)]->data<float>();
    std::memcpy(dst + piece.var_offset, values.data() + piece.shard_offset,
                static_cast<std::size_t>(piece.count) * sizeof(float));
  }
}

void PsWorker::pull(std::int64_t flags) {
  const rc::PsRoles& roles = transport_.roles();
  rc::PsHeader h;
  h.step = step_;
  h.flags = flags;
  const int num_shards = layout_.num_shards();
  auto request = [&](int p) {
    const int server = roles.server_rank(p);
    transport_.expect(server, rc::PsKind::params, p,
                      static_cast<std::size_t>(layout_.shard_size(p)));
    transport_.send(server, rc::PsKind::pull, p, h);
  };
  auto take = [&](int p) {
    const int server = roles.server_rank(p);
    const rc::PsHeader& reply = transport_.header(server);
    if (reply.flags & rc::kPsStop) stopped_by_ = static_cast<int>(reply.reserved);
    versions_[static_cast<std::size_t>(p)] = reply.version;
    unpack(p, transport_.payload(server));
  };
  if (sequential_pulls_ && !(flags & rc::kPsEvalPull)) {
    // Bounded staleness: one shard at a time, in shard order (see ps.h);
    // after a stop from ps:0 the other shards are not needed.
    for (int p = 0; p < num_shards && stopped_by_ == 0; ++p) {
      request(p);
      transport_.wait_receives();
      take(p);
    }
    return;
  }
  for (int p = 0; p < num_shards; ++p) request(p);
  transport_.wait_receives();
  for (int p = 0; p < num_shards; ++p) take(p);
}

double PsWorker::step() {
  next_batch(*batches_, epoch_, epoch_started_, resume_position_, x_batch_, y_batch_);
  pull(0);
  if (stopped_by_ != 0) return 0.0;  // ps:0 says stop before this step
  std::vector<Output> fetches{model_.loss};
  fetches.insert(fetches.end(), grads_.begin(), grads_.end());
  const int num_workers = transport_.roles().num_workers();
  const auto out = session_->run(
      fetches,
      {{model_.x, x_batch_},
       {model_.y, y_batch_},
       {model_.training, Tensor::scalar(1.0f)},
       {model_.dropout_stream, Tensor::scalar_i32(dropout_stream(step_, num_workers, worker_))}});
  if (hooks_.before_push) hooks_.before_push(worker_, step_);
  const rc::PsRoles& roles = transport_.roles();
  for (int p = 0; p < layout_.num_shards(); ++p) {
    const int server = roles.server_rank(p);
    auto buf = transport_.send_buffer(server, static_cast<std::size_t>(layout_.shard_size(p)));
    for (const PsPiece& piece : layout_.pieces[static_cast<std::size_t>(p)]) {
      const Tensor& g = out[static_cast<std::size_t>(piece.var) + 1];
      std::memcpy(buf.data() + piece.shard_offset, g.data<float>() + piece.var_offset,
                  static_cast<std::size_t>(piece.count) * sizeof(float));
    }
    rc::PsHeader h;
    h.step = step_;
    h.version = versions_[static_cast<std::size_t>(p)];
    if (const int sig = stop_signal_received(); sig != 0) {
      h.flags |= rc::kPsSignal;  // ps:0 decides when every worker stops
      h.reserved = sig;
    }
    transport_.post(server, rc::PsKind::push, p, h);
  }
  ++step_;
  return out[0].scalar_value();
}

void PsWorker::pull_for_eval(std::int64_t after_steps) {
  const std::int64_t mine = step_;
  step_ = after_steps;  // the header's step: sync servers answer after that many updates
  pull(rc::kPsEvalPull);
  step_ = mine;
}

void PsWorker::set_parameters(std::span<const float> flat) {
  std::size_t off = 0;
  for (std::size_t i = 0; i < var_tensors_.size(); ++i) {
    const auto n = static_cast<std::size_t>(layout_.var_sizes[i]);
    RF_CHECK_AS(InternalError, off + n <= flat.size(), "parameter vector too short");
    std::memcpy(var_tensors_[i]->data<float>(), flat.data() + off, n * sizeof(float));
    off += n;
  }
}

EvalSums PsWorker::evaluate_shard() {
  // As the Trainer: a larger batch for evaluation, split over the workers.
  const std::int64_t n = test_shard_.num_ranks;
  return train::evaluate_shard(*session_, model_, test_shard_,
                               std::max<std::int64_t>(config_.batch_size, 1024 / n * n));
}

void PsWorker::resume_at(std::int64_t step, std::int64_t epoch, std::int64_t step_in_epoch) {
  step_ = step;
  epoch_ = epoch;
  resume_position_ = step_in_epoch;
  epoch_started_ = false;
}

void PsWorker::finish() {
  transport_.wait_sends();
  const rc::PsRoles& roles = transport_.roles();
  rc::PsHeader h;
  h.step = step_;
  if (stopped_by_ != 0) h.flags |= rc::kPsStop;  // its last pull is abandoned
  for (int p = 0; p < layout_.num_shards(); ++p)
    transport_.send(roles.server_rank(p), rc::PsKind::done, p, h);
}

}  // namespace ringflow::train
