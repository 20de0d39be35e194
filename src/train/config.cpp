#include "ringflow/train/config.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "ringflow/base/error.h"

namespace ringflow::train {

namespace {

bool one_of(const std::string& v, std::initializer_list<const char*> options) {
  return std::any_of(options.begin(), options.end(), [&](const char* o) { return v == o; });
}

}  // namespace

CheckpointEvery parse_checkpoint_every(const std::string& s) {
  CheckpointEvery e;
  if (s.empty()) return e;
  const bool secs = s.back() == 's';
  const std::string num = secs ? s.substr(0, s.size() - 1) : s;
  std::size_t used = 0;
  double v = -1;
  try {
    v = std::stod(num, &used);
  } catch (...) {
    used = 0;
  }
  RF_CHECK(used == num.size() && !num.empty() && v > 0 && (secs || v == std::floor(v)),
           "--checkpoint-every: '", s,
           "' is not a positive number of steps (e.g. 500) or seconds (e.g. 600s)");
  if (secs)
    e.seconds = v;
  else
    e.steps = static_cast<std::int64_t>(v);
  return e;
}

int num_gradient_ranks(const TrainConfig& c, int num_ranks) {
  return c.mode == "ps" ? num_ranks - c.num_ps : num_ranks;
}

namespace {

void validate_ps(const TrainConfig& c, int n) {
  RF_CHECK(one_of(c.mode, {"allreduce", "ps"}), "--mode: '", c.mode, "' is not allreduce or ps");
  if (c.mode != "ps") {
    RF_CHECK(c.num_ps == 0, "--num-ps: parameter servers need --mode ps");
    RF_CHECK(c.ps_update.empty(), "--ps-", c.ps_update, ": needs --mode ps");
    RF_CHECK(c.max_staleness == -1, "--max-staleness: needs --mode ps --ps-async");
    return;
  }
  RF_CHECK(c.num_ps >= 1,
           "--num-ps: ps mode needs at least one parameter server (--num-ps P, P >= 1)",
           c.num_ps != 0 ? ", got " + std::to_string(c.num_ps) : std::string());
  RF_CHECK(c.num_ps < n, "--num-ps: ", c.num_ps, " parameter servers leave no worker among the ", n,
           " ranks; use at most ", n - 1, " (ranks 0..P-1 serve, the rest compute)");
  RF_CHECK(c.ps_update.empty() || one_of(c.ps_update, {"sync", "async"}), "--ps-update: '",
           c.ps_update, "' is not sync or async");
  RF_CHECK(c.max_staleness >= -1, "--max-staleness: ", c.max_staleness, " must be >= 0");
  RF_CHECK(c.max_staleness == -1 || c.ps_update == "async",
           "--max-staleness: bounded staleness needs --ps-async (sync updates are never stale)");
  RF_CHECK(c.timeline.empty(), "--timeline: not recorded in ps mode; use --mode allreduce");
}

}  // namespace

void validate(const TrainConfig& c, int num_ranks) {
  validate_ps(c, num_ranks);
  // The ranks the global batch is split over: every rank, or the workers.
  const int n = num_gradient_ranks(c, num_ranks);
  const char* who = c.mode == "ps" ? " workers" : " ranks";
  RF_CHECK(!c.data.empty(),
           "--data: no data set given; import one with `ringflow-data import-idx` and pass the .h5 "
           "file");
  RF_CHECK(one_of(c.shard, {"strided", "contiguous"}), "--shard: '", c.shard,
           "' is not strided or contiguous");
  const auto& names = model_names();
  RF_CHECK(std::find(names.begin(), names.end(), c.model.name) != names.end(),
           "--model: unknown model '", c.model.name,
           "'; choose one of logreg, mlp, cnn, cnn-small");
  for (auto h : c.model.hidden) RF_CHECK(h > 0, "--hidden: layer sizes must be positive, got ", h);
  RF_CHECK(c.model.dropout >= 0.0f && c.model.dropout < 1.0f, "--dropout: ", c.model.dropout,
           " must be in [0, 1)");
  RF_CHECK(one_of(c.optimizer, {"sgd", "momentum", "nesterov", "adam"}), "--optimizer: '",
           c.optimizer, "' is not sgd, momentum, nesterov or adam");
  RF_CHECK(c.lr > 0.0f, "--lr: the learning rate must be > 0, got ", c.lr);
  RF_CHECK(c.momentum >= 0.0f && c.momentum < 1.0f, "--momentum: ", c.momentum,
           " must be in [0, 1)");
  RF_CHECK(c.weight_decay >= 0.0f, "--weight-decay: ", c.weight_decay, " must be >= 0");
  RF_CHECK(one_of(c.schedule, {"constant", "step", "cosine"}), "--schedule: '", c.schedule,
           "' is not constant, step or cosine");
  RF_CHECK(c.warmup_epochs >= 0, "--warmup-epochs: ", c.warmup_epochs, " must be >= 0");
  RF_CHECK(c.step_epochs > 0, "--step-epochs: ", c.step_epochs, " must be > 0");
  RF_CHECK(c.step_gamma > 0.0f && c.step_gamma <= 1.0f, "--step-gamma: ", c.step_gamma,
           " must be in (0, 1]");
  RF_CHECK(c.batch_size >= n, "--batch-size: the global batch ", c.batch_size,
           " is smaller than the ", n, who, "; each needs at least one row per step");
  RF_CHECK(c.batch_size % n == 0, "--batch-size: the global batch ", c.batch_size,
           " is not divisible by the ", n, who, "; use a multiple of ", n);
  RF_CHECK(c.epochs > 0, "--epochs: ", c.epochs, " must be > 0");
  RF_CHECK(c.max_steps >= 0, "--max-steps: ", c.max_steps, " must be >= 0");
  RF_CHECK(c.train_rows >= 0, "--train-rows: ", c.train_rows, " must be >= 0");
  RF_CHECK(c.threads >= 0, "--threads: ", c.threads,
           " must be > 0 (or 0 for the node's cores divided by its ranks)");
  RF_CHECK(one_of(c.allreduce, {"ring", "mpi", "auto"}), "--allreduce: '", c.allreduce,
           "' is not ring, mpi or auto");
  RF_CHECK(one_of(c.overlap, {"auto", "on", "off"}), "--overlap: '", c.overlap,
           "' is not auto, on or off");
  RF_CHECK(c.fusion_mb > 0, "--fusion-mb: ", c.fusion_mb, " must be > 0");
  RF_CHECK(c.timeline_steps >= 0, "--timeline-steps: ", c.timeline_steps, " must be >= 0");
  RF_CHECK(one_of(c.log_level, {"error", "warn", "info", "debug"}), "--log-level: '", c.log_level,
           "' is not error, warn, info or debug");
  parse_checkpoint_every(c.checkpoint_every);
  RF_CHECK(c.checkpoint_dir.empty() == false || c.checkpoint_every.empty(),
           "--checkpoint-every needs --checkpoint-dir");
  RF_CHECK(!c.resume || !c.checkpoint_dir.empty(),
           "--resume needs --checkpoint-dir (the directory to resume from)");
  RF_CHECK(c.keep_checkpoints >= 1, "--keep-checkpoints: ", c.keep_checkpoints, " must be >= 1");
  RF_CHECK(c.stall_timeout >= 0, "--stall-timeout: ", c.stall_timeout,
           " must be >= 0 seconds (0 turns the watchdog off)");
}

std::string to_toml(const TrainConfig& c) {
  std::ostringstream os;
  auto str = [&](const char* k, const std::string& v) { os << k << " = \"" << v << "\"\n"; };
  auto num = [&](const char* k, auto v) { os << k << " = " << v << "\n"; };
  auto flag = [&](const char* k, bool v) { os << k << " = " << (v ? "true" : "false") << "\n"; };
  str("data", c.data);
  str("shard", c.shard);
  flag("shuffle", c.shuffle);
  num("train-rows", c.train_rows);
  str("model", c.model.name);
  std::string hidden;
  for (std::size_t i = 0; i < c.model.hidden.size(); ++i)
    hidden += (i ? "," : "") + std::to_string(c.model.hidden[i]);
  str("hidden", hidden);
  num("dropout", c.model.dropout);
  str("optimizer", c.optimizer);
  num("lr", c.lr);
  num("momentum", c.momentum);
  num("weight-decay", c.weight_decay);
  str("schedule", c.schedule);
  num("warmup-epochs", c.warmup_epochs);
  num("step-epochs", c.step_epochs);
  num("step-gamma", c.step_gamma);
  num("batch-size", c.batch_size);
  num("epochs", c.epochs);
  num("max-steps", c.max_steps);
  num("seed", c.seed);
  if (c.threads > 0) {
    num("threads", c.threads);
  } else {
    os << "# threads: the node's cores divided by its ranks\n";
  }
  str("allreduce", c.allreduce);
  num("fusion-mb", c.fusion_mb);
  str("overlap", c.overlap);
  str("metrics", c.metrics);
  str("timeline", c.timeline);
  num("timeline-steps", c.timeline_steps);
  str("log-level", c.log_level);
  str("checkpoint-dir", c.checkpoint_dir);
  str("checkpoint-every", c.checkpoint_every);
  num("keep-checkpoints", c.keep_checkpoints);
  flag("resume", c.resume);
  num("stall-timeout", c.stall_timeout);
  str("mode", c.mode);
  if (c.mode == "ps") {
    num("num-ps", c.num_ps);
    flag(c.ps_update == "async" ? "ps-async" : "ps-sync", true);
    if (c.max_staleness >= 0) num("max-staleness", c.max_staleness);
  }
  return os.str();
}

float scheduled_learning_rate(const TrainConfig& c, std::int64_t step,
                              std::int64_t steps_per_epoch) {
  const double spe = static_cast<double>(steps_per_epoch);
  const double warmup = c.warmup_epochs * spe;
  const double total =
      std::max(1.0, c.max_steps > 0 ? static_cast<double>(c.max_steps) : c.epochs * spe);
  const double s = static_cast<double>(step);
  const double lr = c.lr;
  if (s < warmup) return static_cast<float>(lr * (s + 1.0) / warmup);
  if (c.schedule == "step")
    return static_cast<float>(lr * std::pow(c.step_gamma, std::floor(s / spe / c.step_epochs)));
  if (c.schedule == "cosine") {
    const double p = std::clamp((s - warmup) / std::max(1.0, total - warmup), 0.0, 1.0);
    return static_cast<float>(0.5 * lr * (1.0 + std::cos(M_PI * p)));
  }
  return static_cast<float>(lr);
}

}  // namespace ringflow::train
