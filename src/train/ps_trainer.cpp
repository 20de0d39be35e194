#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "ps_server.h"
#include "ps_worker.h"
#include "ringflow/datasets/format.h"
#include "ringflow/train/checkpoint.h"
#include "ringflow/train/ps.h"
#include "shared.h"

namespace ringflow::train {

namespace rc = collectives;

namespace {

void sum_over(MPI_Comm comm, std::vector<double>& v, MPI_Op op = MPI_SUM) {
  RF_MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, op, comm));
}

// worker:0's epoch report to ps:0, as doubles.
constexpr int kReportFields = 9;
std::vector<double> to_report(const EpochMetrics& m) {
  return {static_cast<double>(m.epoch),
          static_cast<double>(m.steps),
          m.train_loss,
          m.test_loss,
          m.test_accuracy,
          static_cast<double>(m.test_rows),
          m.samples_per_second,
          m.elapsed_seconds,
          m.eta_seconds};
}
EpochMetrics from_report(std::span<const std::byte> bytes) {
  RF_CHECK_AS(CommError, bytes.size() == kReportFields * sizeof(double), "an epoch report of ",
              bytes.size(), " bytes");
  double v[kReportFields];
  std::memcpy(v, bytes.data(), sizeof v);
  EpochMetrics m;
  m.epoch = static_cast<int>(v[0]);
  m.steps = static_cast<std::int64_t>(v[1]);
  m.train_loss = v[2];
  m.test_loss = v[3];
  m.test_accuracy = v[4];
  m.test_rows = static_cast<std::int64_t>(v[5]);
  m.samples_per_second = v[6];
  m.elapsed_seconds = v[7];
  m.eta_seconds = v[8];
  return m;
}

}  // namespace

PsLayout make_ps_layout(const std::vector<std::int64_t>& var_sizes, int num_shards) {
  RF_CHECK(num_shards >= 1, "a parameter-server layout needs at least one shard");
  PsLayout l;
  l.var_sizes = var_sizes;
  std::int64_t total = 0;
  for (auto n : var_sizes) total += n;
  for (int p = 0; p <= num_shards; ++p) l.shard_begin.push_back(total * p / num_shards);
  l.pieces.resize(static_cast<std::size_t>(num_shards));
  for (int p = 0; p < num_shards; ++p) {
    const std::int64_t b = l.shard_begin[static_cast<std::size_t>(p)];
    const std::int64_t e = l.shard_begin[static_cast<std::size_t>(p) + 1];
    std::int64_t o = 0;  // the variable's first float in the flat vector
    for (std::size_t v = 0; v < var_sizes.size(); o += var_sizes[v], ++v) {
      const std::int64_t lo = std::max(b, o), hi = std::min(e, o + var_sizes[v]);
      if (lo >= hi) continue;
      l.pieces[static_cast<std::size_t>(p)].push_back(
          {static_cast<int>(v), lo - o, lo - b, hi - lo});
    }
  }
  return l;
}

PsTrainer::PsTrainer(const TrainConfig& config, rc::Communicator& comm, PsTestHooks hooks)
    : config_(config),
      comm_(comm),
      roles_((validate(config, comm.size()), comm.size()), config.num_ps),
      hooks_(std::move(hooks)) {
  RF_CHECK(config_.mode == "ps", "PsTrainer needs --mode ps");
  RF_CHECK(config_.train_rows == 0 || config_.shard == "strided",
           "--train-rows needs --shard strided");
  const auto info = datasets::open_dataset(config_.data);
  RF_CHECK(config_.train_rows == 0 || config_.train_rows >= config_.batch_size, "--train-rows ",
           config_.train_rows, " is smaller than one global batch (", config_.batch_size, ")");
  RF_CHECK(info.train.rows >= config_.batch_size, "--batch-size ", config_.batch_size,
           " is larger than the ", info.train.rows, " train rows of '", config_.data, "'");
  const std::int64_t rows = config_.train_rows > 0
                                ? std::min<std::int64_t>(config_.train_rows, info.train.rows)
                                : info.train.rows;
  steps_per_epoch_ = datasets::steps_per_epoch(rows, config_.batch_size);
  total_steps_ = static_cast<std::int64_t>(
      std::llround(config_.epochs * static_cast<double>(steps_per_epoch_)));
  if (config_.max_steps > 0) total_steps_ = std::min(total_steps_, config_.max_steps);
  total_steps_ = std::max<std::int64_t>(total_steps_, 1);
  threads_ = config_.threads > 0 ? config_.threads
                                 : std::max(1, available_cores() / std::max(1, comm_.local_size()));

  // The model as every rank builds it: its variables' sizes give the layout,
  // and its initialisers (seeded, the same everywhere) the servers' start.
  Graph g;
  ModelSpec spec = config_.model;
  spec.seed = config_.seed;
  build_model(g, spec, info.train.feature_shape, info.num_classes);
  std::vector<std::int64_t> sizes;
  for (const auto& v : g.trainable_variables()) sizes.push_back(v.shape().num_elements());
  layout_ = make_ps_layout(sizes, roles_.num_servers());
  plan_checkpoints(g);
  every_ = parse_checkpoint_every(config_.checkpoint_every);
  if (comm_.rank() == 0) create_checkpoint_dir(config_);

  transport_ = std::make_unique<rc::PsTransport>(comm_, roles_);
  if (is_server()) {
    const int p = comm_.rank();
    Session init(g, SessionOptions{.num_threads = 1});
    std::vector<float> flat;
    flat.reserve(static_cast<std::size_t>(layout_.total()));
    for (const auto& v : g.trainable_variables()) {
      const auto f = init.variable(v).flat<float>();
      flat.insert(flat.end(), f.begin(), f.end());
    }
    const auto b = static_cast<std::size_t>(layout_.shard_begin[static_cast<std::size_t>(p)]);
    server_ = std::make_unique<PsServer>(
        config_, p, steps_per_epoch_, threads_, *transport_,
        std::span<const float>(flat).subspan(b, static_cast<std::size_t>(layout_.shard_size(p))));
    if (p == 0 && !config_.checkpoint_dir.empty()) {
      server_->set_checkpoint_writer(
          [this](std::int64_t step, std::int64_t, const std::vector<std::vector<float>>& shards) {
            write_checkpoint_from(step, shards);
          });
    }
  } else {
    worker_ = std::make_unique<PsWorker>(config_, roles_.worker_index(comm_.rank()), layout_,
                                         threads_, *transport_, hooks_);
  }
}

PsTrainer::~PsTrainer() = default;

void PsTrainer::train_steps(std::int64_t n) {
  if (server_) {
    server_->serve();
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) worker_->step();
  trained_steps_ += n;
  worker_->finish();
}

std::vector<EpochMetrics> PsTrainer::run(const EpochFn& on_epoch) {
  // The servers' and the workers' own communicators (every rank splits):
  // the workers sum losses and evaluation counts over theirs at epoch ends.
  if (!group_) {
    MPI_Comm split = MPI_COMM_NULL;
    RF_MPI_CHECK(MPI_Comm_split(comm_.handle(), server_ ? 0 : 1, comm_.rank(), &split));
    group_ = std::make_unique<rc::Communicator>(split);
    MPI_Comm_free(&split);
  }
  std::vector<EpochMetrics> history;
  if (server_) {
    server_->serve([&](const rc::PsMessage& m, const PsEpochExtra& extra) {
      history.push_back(from_report(m.payload));
      if (on_epoch) on_epoch(history.back(), extra);
    });
    return history;
  }
  const std::int64_t spe = steps_per_epoch_;
  const int epochs = static_cast<int>((total_steps_ + spe - 1) / spe);
  const int first_epoch = static_cast<int>(worker_->steps() / spe);
  const auto start = std::chrono::steady_clock::now();
  // worker:0 asks for the checkpoints (see ps.h).
  const bool asks = !config_.checkpoint_dir.empty() && roles_.worker_index(comm_.rank()) == 0;
  auto last_asked = start;
  for (int e = first_epoch; e < epochs && worker_->steps() < total_steps_; ++e) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t steps =
        std::min<std::int64_t>((e + 1) * spe, total_steps_) - worker_->steps();
    double loss = 0;
    std::int64_t done = 0;
    for (std::int64_t s = 0; s < steps; ++s) {
      const double step_loss = worker_->step();
      if (worker_->stopped_by() != 0) break;
      loss += step_loss;
      ++done;
      if (config_.test_step_delay_ms > 0 &&
          (config_.test_delay_rank < 0 || config_.test_delay_rank == comm_.rank()))
        std::this_thread::sleep_for(std::chrono::milliseconds(config_.test_step_delay_ms));
      if (!asks) continue;
      const std::int64_t t = worker_->steps();
      const auto now = std::chrono::steady_clock::now();
      if ((every_.steps > 0 && t % every_.steps == 0) ||
          (every_.seconds > 0 &&
           std::chrono::duration<double>(now - last_asked).count() >= every_.seconds) ||
          t == total_steps_) {
        request_checkpoint(t);
        last_asked = now;
      }
    }
    trained_steps_ += done;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Every worker takes part in the epoch's sums, stopped or not, so none
    // waits for one that stopped (async workers stop at different steps).
    const bool stopped = worker_->stopped_by() != 0;
    std::vector<double> totals{loss, static_cast<double>(done), 0, 0, 0};
    std::vector<double> stop{static_cast<double>(worker_->stopped_by())};
    EpochMetrics m;
    m.epoch = e + 1;
    m.steps = worker_->steps();
    const bool eval = !stopped && (config_.eval_each_epoch || e + 1 == epochs);
    if (eval) {
      worker_->pull_for_eval(worker_->steps());
      const EvalSums s = worker_->evaluate_shard();
      totals[2] = s.loss_sum;
      totals[3] = s.correct;
      totals[4] = s.rows;
    }
    sum_over(group_->handle(), totals);
    sum_over(group_->handle(), stop, MPI_MAX);
    if (stop[0] != 0) {  // stop after this partial epoch (see ps.h)
      stop_signal_ = static_cast<int>(stop[0]);
      if (asks && last_requested_ != worker_->steps()) request_checkpoint(worker_->steps());
      break;
    }
    m.train_loss = totals[0] / std::max(1.0, totals[1]);
    if (eval) {
      m.test_loss = totals[2] / std::max(1.0, totals[4]);
      m.test_accuracy = totals[3] / std::max(1.0, totals[4]);
      m.test_rows = static_cast<std::int64_t>(totals[4]);
    }
    m.samples_per_second = static_cast<double>(done * config_.batch_size) / secs;
    m.elapsed_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m.eta_seconds = m.elapsed_seconds / static_cast<double>(e + 1 - first_epoch) *
                    static_cast<double>(epochs - e - 1);
    history.push_back(m);
    if (roles_.worker_index(comm_.rank()) == 0) {
      const auto r = to_report(m);
      rc::PsHeader h;
      h.step = m.epoch;
      transport_->send(roles_.server_rank(0), rc::PsKind::report, 0, h,
                       std::as_bytes(std::span(r)));
    }
    if (on_epoch) on_epoch(m, {});
  }
  worker_->finish();
  return history;
}

void PsTrainer::plan_checkpoints(Graph& g) {
  // The variables an allreduce run of this model holds, in its order: the
  // model's, then the optimizer's slots (named <variable>/<slot>).
  const auto vars = g.trainable_variables();
  Output lr = g.placeholder("ps/checkpoint/learning_rate", {});
  std::vector<GradAndVar> pairs;
  for (const auto& v : vars)
    pairs.push_back({g.placeholder(v.name() + "/ps/checkpoint/grad", v.shape()), v});
  make_optimizer(config_, lr)->apply_gradients(pairs, "train");
  for (const auto& v : g.variables()) {
    CheckpointEntry e{v.name(), v.shape().dims(), -1, ""};
    std::size_t matched = 0;
    for (std::size_t k = 0; k < vars.size(); ++k) {
      const std::string& base = vars[k].name();
      if (v.name() == base) {
        e.var = static_cast<int>(k);
        e.slot.clear();
        break;
      }
      if (v.name().size() > base.size() + 1 &&
          v.name().compare(0, base.size() + 1, base + "/") == 0 && base.size() > matched) {
        matched = base.size();
        e.var = static_cast<int>(k);
        e.slot = v.name().substr(base.size() + 1);
      }
    }
    RF_CHECK_AS(InternalError, e.var >= 0, "ps checkpoints: variable '", v.name(),
                "' is neither a model variable nor one of its slots");
    entries_.push_back(std::move(e));
  }
}

int PsTrainer::entry_index(int var, const std::string& slot) const {
  for (std::size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].var == var && entries_[i].slot == slot) return static_cast<int>(i);
  RF_THROW(InternalError, "ps checkpoints: no slot '", slot, "' of variable ", var);
}

namespace {

// The slot a server variable holds: "" for the shard itself (ps/shard).
std::string server_slot(const std::string& name) {
  const std::string base = "ps/shard";
  return name == base ? std::string() : name.substr(base.size() + 1);
}

}  // namespace

void PsTrainer::request_checkpoint(std::int64_t step) {
  last_requested_ = step;
  rc::PsHeader h;
  h.step = step;
  for (int p = 0; p < roles_.num_servers(); ++p)
    transport_->send(roles_.server_rank(p), rc::PsKind::checkpoint, p, h);
}

void PsTrainer::write_checkpoint_from(std::int64_t step,
                                      const std::vector<std::vector<float>>& shards) {
  Checkpoint c;
  c.step = step;
  c.epoch = step / steps_per_epoch_;
  c.step_in_epoch = step % steps_per_epoch_;
  c.seed = config_.seed;
  c.model = model_signature(config_);
  c.config = to_toml(config_);
  c.num_ranks = comm_.size();
  const auto& state = server_->state_layout();
  for (const auto& e : entries_) {
    CheckpointVariable v{
        e.name, e.shape,
        std::vector<float>(static_cast<std::size_t>(Shape(e.shape).num_elements()))};
    for (int p = 0; p < roles_.num_servers(); ++p) {
      // The slot's place in shard p's snapshot: shard-sized variables, scalars.
      std::size_t off = 0;
      std::size_t j = 0;
      for (; j < state.size() && server_slot(state[j].name) != e.slot; ++j)
        off += state[j].scalar ? 1 : static_cast<std::size_t>(layout_.shard_size(p));
      RF_CHECK_AS(InternalError, j < state.size(), "ps checkpoints: the servers hold no '", e.slot,
                  "' slot");
      const auto& snap = shards[static_cast<std::size_t>(p)];
      if (state[j].scalar) {
        // A per-server counter (adam_t): the same on every server in sync
        // mode; async servers count gradients, and ps:0's count is taken.
        if (p == 0) v.values[0] = snap[off];
        continue;
      }
      for (const PsPiece& piece : layout_.pieces[static_cast<std::size_t>(p)]) {
        if (piece.var != e.var) continue;
        std::memcpy(v.values.data() + piece.var_offset, snap.data() + off + piece.shard_offset,
                    static_cast<std::size_t>(piece.count) * sizeof(float));
      }
    }
    c.variables.push_back(std::move(v));
  }
  try {
    last_checkpoint_ = write_checkpoint(config_.checkpoint_dir, c).string();
    prune_checkpoints(config_.checkpoint_dir, config_.keep_checkpoints);
  } catch (const Error& e) {
    RF_THROW(IoError, "step ", step, ": ", e.what(), "; the previous checkpoints are intact");
  }
  if (config_.log_level == "debug")
    std::cerr << "trainer: wrote checkpoint '" << last_checkpoint_ << "'\n";
}

void PsTrainer::start() {
  if (config_.checkpoint_dir.empty() || !config_.resume) return;
  std::vector<ExpectedVariable> expected;
  for (const auto& e : entries_) expected.push_back({e.name, e.shape});
  const Resumed r =
      resume_checkpoint(comm_, config_.checkpoint_dir, expected, model_signature(config_));
  const bool log = comm_.rank() == 0 && config_.log_level != "error";
  if (!r.found) {
    if (log)
      std::cerr << "trainer: --resume: no checkpoint in '" << config_.checkpoint_dir
                << "' yet; starting at step 0\n";
    return;
  }
  RF_CHECK_AS(train::AgreedError, r.step <= total_steps_, "--resume: checkpoint '",
              comm_.rank() == 0 ? r.path : std::string("of rank 0"), "' is at step ", r.step,
              ", past this run's ", total_steps_, " steps; raise --epochs or --max-steps");
  start_step_ = r.step;
  if (comm_.rank() == 0) resumed_from_ = last_checkpoint_ = r.path;
  if (worker_) {
    worker_->resume_at(r.step, r.epoch, r.step_in_epoch);
  } else {
    // This server's shard of every variable and slot, in its own order.
    std::vector<std::size_t> begin;  // of each entry in r.values
    std::size_t off = 0;
    for (const auto& e : entries_) {
      begin.push_back(off);
      off += static_cast<std::size_t>(Shape(e.shape).num_elements());
    }
    const int p = comm_.rank();
    std::vector<float> state;
    for (const auto& sv : server_->state_layout()) {
      const std::string slot = server_slot(sv.name);
      if (sv.scalar) {
        state.push_back(r.values[begin[static_cast<std::size_t>(entry_index(0, slot))]]);
        continue;
      }
      const std::size_t at = state.size();
      state.resize(at + static_cast<std::size_t>(layout_.shard_size(p)));
      for (const PsPiece& piece : layout_.pieces[static_cast<std::size_t>(p)]) {
        const std::size_t from = begin[static_cast<std::size_t>(entry_index(piece.var, slot))] +
                                 static_cast<std::size_t>(piece.var_offset);
        std::memcpy(state.data() + at + piece.shard_offset, r.values.data() + from,
                    static_cast<std::size_t>(piece.count) * sizeof(float));
      }
    }
    const bool sync = config_.ps_update != "async";
    server_->restore(state, sync ? r.step : r.step * roles_.num_workers());
  }
  if (log) std::cerr << "trainer: resumed from '" << r.path << "' at step " << r.step << "\n";
}

std::vector<float> PsTrainer::gather_parameters() {
  const int n = comm_.size();
  std::vector<int> counts(static_cast<std::size_t>(n), 0), displs(static_cast<std::size_t>(n), 0);
  for (int p = 0; p < roles_.num_servers(); ++p) {
    counts[static_cast<std::size_t>(p)] = static_cast<int>(layout_.shard_size(p));
    displs[static_cast<std::size_t>(p)] =
        static_cast<int>(layout_.shard_begin[static_cast<std::size_t>(p)]);
  }
  std::vector<float> all(static_cast<std::size_t>(layout_.total()));
  std::span<const float> mine;
  if (server_) mine = server_->values();
  RF_MPI_CHECK(MPI_Allgatherv(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, all.data(),
                              counts.data(), displs.data(), MPI_FLOAT, comm_.handle()));
  return all;
}

std::pair<double, double> PsTrainer::evaluate() {
  const auto params = gather_parameters();
  std::vector<double> totals{0, 0, 0};
  std::int64_t expected = 0;
  if (worker_) {
    worker_->set_parameters(params);
    const EvalSums s = worker_->evaluate_shard();
    totals = {s.loss_sum, s.correct, s.rows};
    expected = worker_->test_rows();
  }
  sum_over(comm_.handle(), totals);
  std::vector<double> rows{static_cast<double>(expected)};
  sum_over(comm_.handle(), rows, MPI_MAX);
  RF_CHECK_AS(InternalError, totals[2] == rows[0], "evaluation covered ", totals[2], " of ",
              rows[0], " test rows");
  return {totals[0] / totals[2], totals[1] / totals[2]};
}

std::pair<int, std::int64_t> PsTrainer::agree_stop() {
  std::vector<double> v{
      static_cast<double>(stop_signal_),
      roles_.worker_index(comm_.rank()) == 0 ? static_cast<double>(worker_->steps()) : 0.0};
  sum_over(comm_.handle(), v, MPI_MAX);
  stop_signal_ = static_cast<int>(v[0]);
  return {stop_signal_, static_cast<std::int64_t>(v[1])};
}

PsServerStats PsTrainer::server_stats() const {
  return server_ ? server_->stats() : PsServerStats{};
}

PsSummary PsTrainer::summarize() {
  const PsServerStats s = server_stats();
  std::vector<double> sums{static_cast<double>(s.gradients), static_cast<double>(s.staleness_sum)};
  sum_over(comm_.handle(), sums);
  std::vector<double> steps{static_cast<double>(trained_steps_)};
  sum_over(comm_.handle(), steps, MPI_MAX);
  const double per = std::max(1.0, steps[0]);
  const auto& t = traffic();
  const double sent = static_cast<double>(t.bytes_sent) / per;
  const double recv = static_cast<double>(t.bytes_received) / per;
  std::vector<double> maxes{static_cast<double>(s.staleness_max), server_ ? sent : 0,
                            server_ ? recv : 0, worker_ ? sent : 0, worker_ ? recv : 0};
  sum_over(comm_.handle(), maxes, MPI_MAX);
  PsSummary out;
  out.gradients = static_cast<std::int64_t>(sums[0]);
  out.staleness_mean = sums[0] > 0 ? sums[1] / sums[0] : 0.0;
  out.staleness_max = static_cast<std::int64_t>(maxes[0]);
  out.server_bytes_sent = maxes[1];
  out.server_bytes_received = maxes[2];
  out.worker_bytes_sent = maxes[3];
  out.worker_bytes_received = maxes[4];
  return out;
}

}  // namespace ringflow::train
