#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "ps_server.h"
#include "ps_worker.h"
#include "ringflow/datasets/format.h"
#include "ringflow/train/ps.h"

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
  const auto start = std::chrono::steady_clock::now();
  for (int e = 0; e < epochs; ++e) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t steps = std::min(spe, total_steps_ - worker_->steps());
    double loss = 0;
    for (std::int64_t s = 0; s < steps; ++s) loss += worker_->step();
    trained_steps_ += steps;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<double> totals{loss, static_cast<double>(steps), 0, 0, 0};
    EpochMetrics m;
    m.epoch = e + 1;
    m.steps = worker_->steps();
    const bool eval = config_.eval_each_epoch || e + 1 == epochs;
    if (eval) {
      worker_->pull_for_eval(worker_->steps());
      const EvalSums s = worker_->evaluate_shard();
      totals[2] = s.loss_sum;
      totals[3] = s.correct;
      totals[4] = s.rows;
    }
    sum_over(group_->handle(), totals);
    m.train_loss = totals[0] / std::max(1.0, totals[1]);
    if (eval) {
      m.test_loss = totals[2] / std::max(1.0, totals[4]);
      m.test_accuracy = totals[3] / std::max(1.0, totals[4]);
      m.test_rows = static_cast<std::int64_t>(totals[4]);
    }
    m.samples_per_second = static_cast<double>(steps * config_.batch_size) / secs;
    m.elapsed_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    m.eta_seconds =
        m.elapsed_seconds / static_cast<double>(e + 1) * static_cast<double>(epochs - e - 1);
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
