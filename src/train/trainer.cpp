#include "ringflow/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <thread>

#include "ringflow/datasets/format.h"
#include "ringflow/graph/gradients.h"
#include "ringflow/ops/ops.h"
#include "ringflow/ops/optimizers.h"
#include "shared.h"

namespace ringflow::train {

namespace {

// Sums doubles across ranks in place (exact figures, not averages of averages).
void sum_across_ranks(collectives::Communicator& comm, std::vector<double>& v) {
  if (comm.size() == 1) return;
  RF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE,
                             MPI_SUM, comm.handle()));
}

}  // namespace

bool overlap_backward(const std::string& mode, const collectives::Communicator& comm, int threads,
                      int rank_cores, int node_cores) {
  if (mode != "auto") return mode == "on";
  // Across nodes the allreduce mostly waits on the network: overlap hides
  // that. On one node it is memory copies and adds on the very cores that
  // run backward; when the ranks' threads already fill them, the
  // communication thread only takes turns with backward, and its wake-ups
  // and the ranks' lockstep through the shared-memory ring cost more than
  // they hide (2 cores, 2 ranks x 1 thread, paired runs: MLP exposed
  // allreduce median ~13 % of the step with overlap, ~9 % without; the CNN
  // within noise of 0 either way).
  const bool one_node = comm.local_size() == comm.size();
  if (!one_node) return true;
  return rank_cores < node_cores ? threads < rank_cores : threads * comm.local_size() < node_cores;
}

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

  overlap_ = overlap_backward(config_.overlap, comm_, threads_, available_cores(),
                              static_cast<int>(std::thread::hardware_concurrency()));

  // The graph: identical on every rank.
  ModelSpec spec = config_.model;
  spec.seed = config_.seed;
  model_ = build_model(graph_, spec, info.train.feature_shape, info.num_classes);
  lr_ = graph_.placeholder("learning_rate", {});
  std::unique_ptr<Optimizer> opt = make_optimizer(config_, lr_);
  every_ = parse_checkpoint_every(config_.checkpoint_every);
  if (comm_.rank() == 0) create_checkpoint_dir(config_);
  watch_ = std::make_unique<StallWatch>(comm_, config_.stall_timeout);
  const auto vars = graph_.trainable_variables();
  const auto grads = gradients(model_.loss, vars);
  std::vector<GradAndVar> pairs;
  for (std::size_t i = 0; i < vars.size(); ++i) pairs.push_back({grads[i], vars[i]});
  reducer_ = std::make_unique<GradientReducer>(
      comm_,
      ReducerOptions{.algorithm = collectives::parse_algorithm(config_.allreduce),
                     .fusion_bytes = static_cast<std::size_t>(config_.fusion_mb * 1024 * 1024),
                     .overlap = overlap_,
                     .watch = watch_.get()},
      &timeline_);
  const auto reduced = reducer_->add_to_graph(graph_, pairs);
  train_op_ = opt->apply_gradients(reduced, "train");

  timeline_.set_enabled(!config_.timeline.empty() && config_.timeline_steps > 0);
  SessionOptions so{.num_threads = threads_,
                    .user_context = reducer_->context(),
                    .on_abort = [this] { reducer_->abort_step(); }};
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
  next_batch(*batches_, epoch_, epoch_started_, resume_position_, x_batch_, y_batch_);
  if (config_.test_nan_step == step_ + 1 && comm_.rank() == comm_.size() - 1)
    x_batch_.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  timeline_.set_enabled(!config_.timeline.empty() && step_ < config_.timeline_steps);
  reducer_->set_step(step_);
  const std::int64_t t0 = steady_now_ns();
  const std::int32_t stream = dropout_stream(step_, comm_.size(), comm_.rank());
  auto out = session_->run({model_.loss},
                           {{model_.x, x_batch_},
                            {model_.y, y_batch_},
                            {lr_, Tensor::scalar(learning_rate_at(step_))},
                            {model_.training, Tensor::scalar(1.0f)},
                            {model_.dropout_stream, Tensor::scalar_i32(stream)}},
                           {train_op_});
  if (timeline_.enabled())
    timeline_.add({"step " + std::to_string(step_), "step", t0, steady_now_ns(), 101, ""});
  ++step_;
  const double loss = out[0].scalar_value();
  if (config_.test_step_delay_ms > 0 &&
      (config_.test_delay_rank < 0 || config_.test_delay_rank == comm_.rank()))
    std::this_thread::sleep_for(std::chrono::milliseconds(config_.test_step_delay_ms));
  after_step(loss);
  return loss;
}

void Trainer::after_step(double loss) {
  const auto bad = reducer_->take_nonfinite();
  const StepDecision d = agreement_->agree(step_ - 1, {.nonfinite_loss = !std::isfinite(loss)});
  const std::string kept = last_checkpoint_.empty()
                               ? std::string("no checkpoint was written")
                               : "the last checkpoint, '" + last_checkpoint_ + "', is intact";
  // The averaged gradients are the same on every rank, and the loss flags
  // went through the agreement: every rank raises here, at the same step.
  RF_CHECK_AS(train::AgreedError, bad.empty(), "step ", step_,
              ": the averaged gradient of variable '", bad.empty() ? "" : bad.front(),
              "' is NaN or Inf",
              bad.size() > 1 ? " (" + std::to_string(bad.size()) + " variables affected)" : "",
              "; training stopped before the bad update was saved and ", kept,
              ". Lower --lr, add --warmup-epochs, or check the data for NaN");
  RF_CHECK_AS(train::AgreedError, d.nonfinite_rank < 0, "step ", step_, ": the loss on rank ",
              d.nonfinite_rank, " is NaN or Inf; training stopped and ", kept,
              ". Lower --lr or check the data for NaN");
  const bool due =
      (every_.steps > 0 && step_ % every_.steps == 0) || (every_.seconds > 0 && d.checkpoint_due);
  if (!config_.checkpoint_dir.empty() && (due || d.stop_signal != 0)) save_checkpoint();
  stop_signal_ = d.stop_signal;
}

void Trainer::train_steps(std::int64_t n) {
  start();
  for (std::int64_t i = 0; i < n; ++i) one_step();
}

void Trainer::start() {
  if (started_) return;
  started_ = true;
  agreement_ = std::make_unique<StepAgreement>(comm_, every_.seconds, watch_.get());
  if (config_.resume)
    restore();
  else
    broadcast_variables();
}

void Trainer::log(const std::string& line) const {
  if (comm_.rank() == 0 && config_.log_level != "error") std::cerr << "trainer: " << line << "\n";
}

Checkpoint Trainer::make_checkpoint() {
  Checkpoint c;
  c.step = step_;
  c.epoch = epoch_;
  c.step_in_epoch = epoch_started_ ? batches_->step() : resume_position_;
  c.seed = config_.seed;
  c.model = model_signature(config_);
  c.config = to_toml(config_);
  c.num_ranks = comm_.size();
  for (auto& [name, t] : session_->variables()) {
    CheckpointVariable v{name, t->shape().dims(), {}};
    const float* p = t->data<float>();
    v.values.assign(p, p + t->num_elements());
    c.variables.push_back(std::move(v));
  }
  return c;
}

void Trainer::save_checkpoint() {
  // Rank 0 writes (every replica is the same); the others learn whether it
  // worked, so that all of them go on or stop together.
  int ok = 1;
  std::string error;
  if (comm_.rank() == 0) {
    try {
      const bool crash = ++checkpoints_written_ == config_.test_crash_in_checkpoint;
      last_checkpoint_ =
          write_checkpoint(config_.checkpoint_dir, make_checkpoint(), crash).string();
      prune_checkpoints(config_.checkpoint_dir, config_.keep_checkpoints);
      if (config_.log_level == "debug") log("wrote checkpoint '" + last_checkpoint_ + "'");
    } catch (const Error& e) {
      ok = 0;
      error = e.what();
    }
  }
  if (comm_.size() > 1) RF_MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, comm_.handle()));
  RF_CHECK_AS(train::AgreedError, ok == 1, "step ", step_, ": ",
              comm_.rank() == 0 ? error : std::string("rank 0 could not write a checkpoint"),
              "; the previous checkpoints are intact");
  last_checkpoint_step_ = step_;
  agreement_->checkpoint_written();
}

void Trainer::restore() {
  auto vars = session_->variables();
  std::vector<ExpectedVariable> expected;
  for (auto& [name, t] : vars) expected.push_back({name, t->shape().dims()});
  Resumed r = resume_checkpoint(comm_, config_.checkpoint_dir, expected, model_signature(config_));
  if (!r.found) {
    log("--resume: no checkpoint in '" + config_.checkpoint_dir + "' yet; starting at step 0");
    broadcast_variables();
    return;
  }
  std::size_t off = 0;
  for (auto& [name, t] : vars) {
    std::memcpy(t->data<float>(), r.values.data() + off, t->num_bytes());
    off += static_cast<std::size_t>(t->num_elements());
  }
  step_ = r.step;
  epoch_ = r.epoch;
  resume_position_ = r.step_in_epoch;
  epoch_started_ = false;
  last_checkpoint_step_ = step_;
  resumed_from_ = r.path;
  if (comm_.rank() == 0) last_checkpoint_ = resumed_from_;
  log("resumed from '" + resumed_from_ + "' at step " + std::to_string(step_));
}

std::pair<double, double> Trainer::evaluate() {
  // A larger batch for evaluation: no gradients, so memory is no concern.
  const std::int64_t n = comm_.size();
  const std::int64_t global = std::max<std::int64_t>(config_.batch_size, 1024 / n * n);
  const EvalSums e = evaluate_shard(*session_, model_, test_shard_, global);
  std::vector<double> totals{e.loss_sum, e.correct, e.rows};
  sum_across_ranks(comm_, totals);
  RF_CHECK_AS(InternalError, totals[2] == static_cast<double>(test_shard_.total_rows),
              "evaluation covered ", totals[2], " of ", test_shard_.total_rows, " test rows");
  return {totals[0] / totals[2], totals[1] / totals[2]};
}

std::vector<EpochMetrics> Trainer::run(const std::function<void(const EpochMetrics&)>& on_epoch) {
  start();
  const std::int64_t spe = batches_->steps_per_epoch();
  std::int64_t total_steps =
      static_cast<std::int64_t>(std::llround(config_.epochs * static_cast<double>(spe)));
  if (config_.max_steps > 0) total_steps = std::min(total_steps, config_.max_steps);
  total_steps = std::max<std::int64_t>(total_steps, 1);
  const int epochs = static_cast<int>((total_steps + spe - 1) / spe);
  const std::int64_t first_step = step_;
  std::vector<EpochMetrics> history;
  const auto start_time = std::chrono::steady_clock::now();
  stop_signal_ = 0;
  while (step_ < total_steps && stop_signal_ == 0) {
    // Epoch e holds steps e*spe .. (e+1)*spe - 1; a resumed run may start
    // in the middle of one.
    const std::int64_t e = step_ / spe;
    const std::int64_t end = std::min((e + 1) * spe, total_steps);
    const auto t0 = std::chrono::steady_clock::now();
    const double ar0 = reducer_->stats().allreduce_seconds;
    const std::int64_t from = step_;
    double loss = 0;
    while (step_ < end && stop_signal_ == 0) {
      loss += one_step();
      if (progress_) progress_(step_ - e * spe, end - e * spe);
    }
    if (stop_signal_ != 0) break;
    const std::int64_t steps = step_ - from;
    const auto t1 = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    std::vector<double> totals{loss, static_cast<double>(steps)};
    sum_across_ranks(comm_, totals);
    EpochMetrics m;
    m.epoch = static_cast<int>(e + 1);
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
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
    m.eta_seconds = m.elapsed_seconds / static_cast<double>(step_ - first_step) *
                    static_cast<double>(total_steps - step_);
    m.allreduce_seconds = reducer_->stats().allreduce_seconds - ar0;
    history.push_back(m);
    if (on_epoch) on_epoch(m);
  }
  // The final model, unless this very step was just saved.
  if (stop_signal_ == 0 && !config_.checkpoint_dir.empty() && last_checkpoint_step_ != step_)
    save_checkpoint();
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
