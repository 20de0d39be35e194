#include "ringflow/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "ringflow/datasets/format.h"
#include "ringflow/graph/gradients.h"
#include "ringflow/ops/ops.h"
#include "ringflow/ops/optimizers.h"

namespace ringflow::train {

namespace {

// Sums doubles across ranks in place (exact figures, not averages of averages).
void sum_across_ranks(collectives::Communicator& comm, std::vector<double>& v) {
  if (comm.size() == 1) return;
  RF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE,
                             MPI_SUM, comm.handle()));
}

// Keeps only the rows of a strided or contiguous shard whose global index
// is below `rows` (the --train-rows subset) and shrinks the split to it.
void limit_rows(datasets::Shard& s, std::int64_t rows) {
  if (rows <= 0 || rows >= s.total_rows) return;
  // With strided shards the rows below `rows` are a prefix of each shard
  // (the constructor rejects --train-rows with contiguous shards).
  s.rows = datasets::shard_rows(rows, s.rank, s.num_ranks, s.mode);
  s.total_rows = rows;
  s.x.resize(static_cast<std::size_t>(s.rows.count * s.row_size));
  s.y.resize(static_cast<std::size_t>(s.rows.count));
}

}  // namespace

Trainer::Trainer(const TrainConfig& config, collectives::Communicator& comm)
    : config_(config), comm_(comm) {
  validate(config_, comm_.size());
  RF_CHECK(config_.train_rows == 0 || config_.shard == "strided",
           "--train-rows needs --shard strided");
  const auto info = datasets::open_dataset(config_.data);
  const auto mode = datasets::parse_shard_mode(config_.shard);
  RF_CHECK(config_.train_rows == 0 || config_.train_rows >= config_.batch_size, "--train-rows ",
           config_.train_rows, " is smaller than one global batch (", config_.batch_size, ")");
  RF_CHECK(info.train.rows >= config_.batch_size, "--batch-size ", config_.batch_size,
           " is larger than the ", info.train.rows, " train rows of '", config_.data, "'");
  train_shard_ = datasets::load_shard(config_.data, "train", comm_.rank(), comm_.size(), mode);
  limit_rows(train_shard_, config_.train_rows);
  test_shard_ = datasets::load_shard(config_.data, "test", comm_.rank(), comm_.size(), mode);
  batches_ = std::make_unique<datasets::BatchIterator>(
      train_shard_,
      datasets::BatchOptions{
          .global_batch = config_.batch_size, .shuffle = config_.shuffle, .seed = config_.seed});

  threads_ = config_.threads > 0 ? config_.threads
                                 : std::max(1, available_cores() / std::max(1, comm_.local_size()));

  // The graph: identical on every rank.
  ModelSpec spec = config_.model;
  spec.seed = config_.seed;
  model_ = build_model(graph_, spec, info.train.feature_shape, info.num_classes);
  lr_ = graph_.placeholder("learning_rate", {});
  std::unique_ptr<Optimizer> opt;
  if (config_.optimizer == "sgd") {
    opt = std::make_unique<GradientDescent>(lr_, config_.weight_decay);
  } else if (config_.optimizer == "momentum" || config_.optimizer == "nesterov") {
    opt = std::make_unique<Momentum>(lr_, config_.momentum, config_.optimizer == "nesterov",
                                     config_.weight_decay);
  } else {
    opt = std::make_unique<Adam>(lr_, 0.9f, 0.999f, 1e-8f, config_.weight_decay);
  }
  const auto vars = graph_.trainable_variables();
  const auto grads = gradients(model_.loss, vars);
  std::vector<GradAndVar> pairs;
  for (std::size_t i = 0; i < vars.size(); ++i) pairs.push_back({grads[i], vars[i]});
  reducer_ = std::make_unique<GradientReducer>(
      comm_,
      ReducerOptions{.algorithm = collectives::parse_algorithm(config_.allreduce),
                     .fusion_bytes = static_cast<std::size_t>(config_.fusion_mb * 1024 * 1024),
                     .overlap = config_.overlap},
      &timeline_);
  const auto reduced = reducer_->add_to_graph(graph_, pairs);
  train_op_ = opt->apply_gradients(reduced, "train");

  timeline_.set_enabled(!config_.timeline.empty() && config_.timeline_steps > 0);
  SessionOptions so{.num_threads = threads_, .user_context = reducer_->context()};
  if (timeline_.enabled()) {
    so.on_node = [this](const NodeEvent& e) {
      if (!timeline_.enabled()) return;
      const Node& n = graph_.node(e.node_id);
      const bool backward = n.name.rfind("gradients/", 0) == 0;
      timeline_.add({n.name, backward ? "backward" : "op", e.begin_ns,
                     std::max(e.end_ns, e.begin_ns + 1), std::max(0, e.thread),
                     "\"op\":\"" + n.op + "\""});
    };
  }
  session_ = std::make_unique<Session>(graph_, std::move(so));

  std::vector<std::int64_t> xs{batches_->local_batch()};
  xs.insert(xs.end(), info.train.feature_shape.begin(), info.train.feature_shape.end());
  x_batch_ = Tensor(DType::f32, Shape(xs));
  y_batch_ = Tensor(DType::i32, Shape{batches_->local_batch()});
  session_->variables();  // create every variable before the broadcast
}

Trainer::~Trainer() = default;

void Trainer::broadcast_variables() {
  auto vars = session_->variables();
  std::size_t total = 0;
  for (auto& [name, t] : vars) total += static_cast<std::size_t>(t->num_elements());
  std::vector<float> packed(total);
  std::size_t off = 0;
  for (auto& [name, t] : vars) {
    std::memcpy(packed.data() + off, t->data<float>(), t->num_bytes());
    off += static_cast<std::size_t>(t->num_elements());
  }
  if (comm_.size() > 1) collectives::broadcast(comm_, std::span<float>(packed), 0);
  off = 0;
  for (auto& [name, t] : vars) {
    std::memcpy(t->data<float>(), packed.data() + off, t->num_bytes());
    off += static_cast<std::size_t>(t->num_elements());
  }
}

float Trainer::learning_rate_at(std::int64_t step) const {
  return scheduled_learning_rate(config_, step, batches_->steps_per_epoch());
}

double Trainer::one_step() {
  if (!epoch_started_) {
    batches_->start_epoch(epoch_);
    epoch_started_ = true;
  }
  if (!batches_->next(x_batch_.flat<float>(), y_batch_.flat<std::int32_t>())) {
    ++epoch_;
    batches_->start_epoch(epoch_);
    RF_CHECK_AS(InternalError,
                batches_->next(x_batch_.flat<float>(), y_batch_.flat<std::int32_t>()),
                "an epoch with no steps");
  }
  timeline_.set_enabled(!config_.timeline.empty() && step_ < config_.timeline_steps);
  const std::int64_t t0 = steady_now_ns();
  auto out = session_->run({model_.loss},
                           {{model_.x, x_batch_},
                            {model_.y, y_batch_},
                            {lr_, Tensor::scalar(learning_rate_at(step_))},
                            {model_.training, Tensor::scalar(1.0f)}},
                           {train_op_});
  if (timeline_.enabled())
    timeline_.add({"step " + std::to_string(step_), "step", t0, steady_now_ns(), 101, ""});
  ++step_;
  return out[0].scalar_value();
}

void Trainer::train_steps(std::int64_t n) {
  if (step_ == 0) broadcast_variables();
  for (std::int64_t i = 0; i < n; ++i) one_step();
}

std::pair<double, double> Trainer::evaluate() {
  // A larger batch for evaluation: no gradients, so memory is no concern.
  const std::int64_t n = comm_.size();
  const std::int64_t global = std::max<std::int64_t>(config_.batch_size, 1024 / n * n);
  datasets::EvalIterator it(test_shard_, global);
  const std::int64_t b = it.local_batch();
  std::vector<std::int64_t> xs{b};
  xs.insert(xs.end(), test_shard_.feature_shape.begin(), test_shard_.feature_shape.end());
  Tensor x(DType::f32, Shape(xs));
  Tensor y(DType::i32, Shape{b});
  double loss_sum = 0, correct = 0, rows = 0;
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
    auto out = session_->run({model_.loss_sum, model_.correct}, {{model_.x, xf}, {model_.y, yf}});
    loss_sum += out[0].scalar_value();
    correct += out[1].scalar_value();
    rows += static_cast<double>(got);
  }
  std::vector<double> totals{loss_sum, correct, rows};
  sum_across_ranks(comm_, totals);
  RF_CHECK_AS(InternalError, totals[2] == static_cast<double>(test_shard_.total_rows),
              "evaluation covered ", totals[2], " of ", test_shard_.total_rows, " test rows");
  return {totals[0] / totals[2], totals[1] / totals[2]};
}

std::vector<EpochMetrics> Trainer::run(const std::function<void(const EpochMetrics&)>& on_epoch) {
  if (step_ == 0) broadcast_variables();
  const std::int64_t spe = batches_->steps_per_epoch();
  std::int64_t total_steps =
      static_cast<std::int64_t>(std::llround(config_.epochs * static_cast<double>(spe)));
  if (config_.max_steps > 0) total_steps = std::min(total_steps, config_.max_steps);
  total_steps = std::max<std::int64_t>(total_steps, 1);
  const int epochs = static_cast<int>((total_steps + spe - 1) / spe);
  std::vector<EpochMetrics> history;
  const auto start = std::chrono::steady_clock::now();
  for (int e = 0; e < epochs; ++e) {
    const auto t0 = std::chrono::steady_clock::now();
    const double ar0 = reducer_->stats().allreduce_seconds;
    const std::int64_t steps = std::min(spe, total_steps - step_);
    double loss = 0;
    for (std::int64_t s = 0; s < steps; ++s) {
      loss += one_step();
      if (progress_) progress_(s + 1, steps);
    }
    const auto t1 = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    std::vector<double> totals{loss, static_cast<double>(steps)};
    sum_across_ranks(comm_, totals);
    EpochMetrics m;
    m.epoch = e + 1;
    m.steps = step_;
    m.train_loss = totals[0] / std::max(1.0, totals[1]);
    if (config_.eval_each_epoch || e + 1 == epochs) {
      const auto [tl, acc] = evaluate();
      m.test_loss = tl;
      m.test_accuracy = acc;
      m.test_rows = test_shard_.total_rows;
    }
    m.samples_per_second = static_cast<double>(steps * config_.batch_size) / secs;
    m.elapsed_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m.eta_seconds =
        m.elapsed_seconds / static_cast<double>(e + 1) * static_cast<double>(epochs - e - 1);
    m.allreduce_seconds = reducer_->stats().allreduce_seconds - ar0;
    history.push_back(m);
    if (on_epoch) on_epoch(m);
  }
  return history;
}

std::uint64_t Trainer::variables_hash() {
  std::uint64_t h = 1469598103934665603ULL;
  for (const auto& v : graph_.trainable_variables()) {
    const Tensor& t = session_->variable(v);
    const auto* p = static_cast<const unsigned char*>(t.raw());
    for (std::size_t i = 0; i < t.num_bytes(); ++i) h = (h ^ p[i]) * 1099511628211ULL;
  }
  return h;
}

void Trainer::write_timeline(const std::string& path) {
  const std::string mine = timeline_.to_json_lines(comm_.rank());
  // Gather every rank's JSON lines on rank 0: sizes first, then the bytes.
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<std::size_t>(comm_.size()));
  RF_MPI_CHECK(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, comm_.handle()));
  std::vector<int> displs(lens.size(), 0);
  int total = 0;
  for (std::size_t i = 0; i < lens.size(); ++i) {
    displs[i] = total;
    total += lens[i];
  }
  std::string all(comm_.rank() == 0 ? static_cast<std::size_t>(total) : 0, '\0');
  RF_MPI_CHECK(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(),
                           MPI_CHAR, 0, comm_.handle()));
  if (comm_.rank() != 0) return;
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < lens.size(); ++i)
    parts.push_back(
        all.substr(static_cast<std::size_t>(displs[i]), static_cast<std::size_t>(lens[i])));
  Timeline::write_trace(path, parts);
}

}  // namespace ringflow::train
