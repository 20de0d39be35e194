#include "ps_server.h"

#include <algorithm>
#include <cstring>

#include "ringflow/train/control.h"
#include "shared.h"

namespace ringflow::train {

namespace rc = collectives;

PsServer::PsServer(const TrainConfig& config, int shard, std::int64_t steps_per_epoch, int threads,
                   rc::PsTransport& transport, std::span<const float> initial)
    : config_(config),
      shard_(shard),
      steps_per_epoch_(steps_per_epoch),
      transport_(transport),
      num_workers_(transport.roles().num_workers()),
      sync_(config.ps_update != "async"),
      max_staleness_(config.max_staleness) {
  const auto n = static_cast<std::int64_t>(initial.size());
  // shard: (n), grad: (n); the apply op is elementwise, so a flat range of
  // several variables updates exactly as the variables would one by one.
  var_ = graph_.variable("ps/shard", Shape{n}, init::zeros());
  grad_ = graph_.placeholder("ps/grad", Shape{n});
  lr_ = graph_.placeholder("learning_rate", {});
  train_op_ = make_optimizer(config_, lr_)->apply_gradients({{grad_, var_}}, "ps/apply");
  session_ = std::make_unique<Session>(graph_, SessionOptions{.num_threads = threads});
  // The slots start from their initialisers (zeros).
  for (auto& [name, t] : session_->variables())
    state_layout_.push_back({name, t->shape().rank() == 0});
  Tensor& v = session_->variable(var_);
  if (n > 0) std::memcpy(v.data<float>(), initial.data(), initial.size_bytes());
  grad_feed_ = Tensor::zeros(DType::f32, Shape{n});
  const auto w = static_cast<std::size_t>(num_workers_);
  if (sync_) grads_.assign(w, std::vector<float>(static_cast<std::size_t>(n)));
  pushed_step_.assign(w, -1);
  done_.assign(w, false);
  outstanding_.assign(w, -1);
}

PsServer::~PsServer() = default;

std::span<const float> PsServer::values() {
  Tensor& v = session_->variable(var_);
  return {v.data<float>(), static_cast<std::size_t>(v.num_elements())};
}

std::vector<float> PsServer::snapshot() {
  std::vector<float> state;
  for (auto& [name, t] : session_->variables()) {
    const float* p = t->data<float>();
    state.insert(state.end(), p, p + t->num_elements());
  }
  return state;
}

void PsServer::restore(std::span<const float> state, std::int64_t version) {
  std::size_t off = 0;
  for (auto& [name, t] : session_->variables()) {
    const auto n = static_cast<std::size_t>(t->num_elements());
    RF_CHECK_AS(InternalError, off + n <= state.size(), "a server state of ", state.size(),
                " floats is too short");
    std::memcpy(t->data<float>(), state.data() + off, n * sizeof(float));
    off += n;
  }
  RF_CHECK_AS(InternalError, off == state.size(), "a server state of ", state.size(),
              " floats, expected ", off);
  stats_.version = version;
}

void PsServer::take_snapshots() {
  const rc::PsRoles& roles = transport_.roles();
  while (!checkpoint_requests_.empty() &&
         (!sync_ || stats_.version >= checkpoint_requests_.front())) {
    const std::int64_t t = checkpoint_requests_.front();
    checkpoint_requests_.pop_front();
    // Sync: worker:0 asks after its push of step t-1 and before that of step
    // t, so no update past t can have been applied yet.
    RF_CHECK_AS(InternalError, !sync_ || stats_.version == t, roles.name(shard_),
                ": checkpoint of step ", t, " asked for at version ", stats_.version);
    const std::vector<float> state = snapshot();
    if (shard_ == 0) {
      on_snapshot(t, 0, state, stats_.version);
    } else {
      rc::PsHeader h;
      h.step = t;
      h.version = stats_.version;
      transport_.send(roles.server_rank(0), rc::PsKind::snapshot, shard_, h,
                      std::as_bytes(std::span(state)));
    }
  }
}

void PsServer::on_snapshot(std::int64_t step, int shard, std::span<const float> state,
                           std::int64_t version) {
  Collecting& c = collecting_[step];
  c.shards.resize(static_cast<std::size_t>(transport_.roles().num_servers()));
  c.shards[static_cast<std::size_t>(shard)].assign(state.begin(), state.end());
  if (shard == 0) c.version = version;
  if (++c.count < transport_.roles().num_servers()) return;
  if (writer_) writer_(step, c.version, c.shards);
  collecting_.erase(step);
}

void PsServer::serve(
    const std::function<void(const rc::PsMessage&, const PsEpochExtra&)>& on_report) {
  const rc::PsRoles& roles = transport_.roles();
  // Past the workers' DONE, a checkpoint asked for may still be in progress.
  while (num_done_ < num_workers_ || !checkpoint_requests_.empty() || !collecting_.empty()) {
    const rc::PsMessage m = transport_.receive_any();
    if (m.kind == rc::PsKind::snapshot) {
      RF_CHECK_AS(CommError, shard_ == 0 && roles.is_server(m.source), roles.name(shard_),
                  ": a snapshot from ", roles.name(m.source));
      on_snapshot(m.header.step, m.shard, m.floats(), m.header.version);
      continue;
    }
    RF_CHECK_AS(CommError, !roles.is_server(m.source) && m.shard == shard_, roles.name(shard_),
                ": a message for shard ", m.shard, " from ", roles.name(m.source));
    const int w = roles.worker_index(m.source);
    const auto wi = static_cast<std::size_t>(w);
    RF_CHECK_AS(CommError, !done_[wi], roles.name(shard_), ": a message from ",
                roles.name(m.source), " after it said DONE");
    switch (m.kind) {
      case rc::PsKind::pull:
        pending_.push_back({w, m.header});
        break;
      case rc::PsKind::push:
        on_push(m, w);
        break;
      case rc::PsKind::done:
        // A worker stopped by a signal abandons the parameters it pulled last.
        RF_CHECK_AS(CommError, outstanding_[wi] < 0 || (m.header.flags & rc::kPsStop),
                    roles.name(m.source), " said DONE with a gradient outstanding");
        outstanding_[wi] = -1;
        done_[wi] = true;
        ++num_done_;
        if (sync_) try_apply_sync();  // the others may have been waiting for it only
        break;
      case rc::PsKind::checkpoint:
        checkpoint_requests_.push_back(m.header.step);
        break;
      case rc::PsKind::report: {
        PsEpochExtra extra;
        extra.staleness_mean = window_count_ > 0 ? static_cast<double>(window_sum_) /
                                                       static_cast<double>(window_count_)
                                                 : 0.0;
        extra.staleness_max = window_max_;
        window_count_ = window_sum_ = window_max_ = 0;
        if (on_report) on_report(m, extra);
        break;
      }
      default:
        RF_THROW(CommError, roles.name(shard_), ": unexpected message kind ",
                 static_cast<int>(m.kind), " from ", roles.name(m.source));
    }
    if (shard_ == 0) note_stop_signal(stop_signal_received());
    take_snapshots();
    answer_pending();
    RF_CHECK_AS(InternalError, num_done_ < num_workers_ || checkpoint_requests_.empty(),
                roles.name(shard_), ": every worker is done, but the checkpoint of step ",
                checkpoint_requests_.front(), " cannot be taken at version ", stats_.version);
  }
  RF_CHECK_AS(InternalError, pending_.empty(), roles.name(shard_), ": ", pending_.size(),
              " pulls unanswered at shutdown");
  transport_.wait_sends();
}

void PsServer::note_stop_signal(int signo) {
  if (signo == 0 || stop_at_ >= 0) return;
  // Sync: pulls for step `version` may already have been answered, those
  // for version + 1 cannot have been; so every worker stops before the same
  // step. Async: every pull from now on is answered with a stop.
  stop_signal_ = signo;
  stop_at_ = sync_ ? stats_.version + 1 : 0;
}

void PsServer::on_push(const rc::PsMessage& m, int w) {
  const auto wi = static_cast<std::size_t>(w);
  if (shard_ == 0 && (m.header.flags & rc::kPsSignal))
    note_stop_signal(static_cast<int>(m.header.reserved));
  const std::span<const float> g = m.floats();
  RF_CHECK_AS(CommError, static_cast<std::int64_t>(g.size()) == grad_feed_.num_elements(),
              transport_.roles().name(shard_), ": a gradient of ", g.size(), " floats from ",
              transport_.roles().name(transport_.roles().worker_rank(w)), ", expected ",
              grad_feed_.num_elements());
  ++stats_.gradients;
  outstanding_[wi] = -1;
  if (sync_) {
    RF_CHECK_AS(CommError, m.header.step == stats_.version && pushed_step_[wi] < m.header.step,
                transport_.roles().name(shard_), ": a sync gradient for step ", m.header.step,
                " while gathering step ", stats_.version);
    std::copy(g.begin(), g.end(), grads_[wi].begin());
    pushed_step_[wi] = m.header.step;
    try_apply_sync();
    return;
  }
  // async: apply it now. staleness = version now - version it was computed on
  const std::int64_t staleness = stats_.version - m.header.version;
  RF_CHECK_AS(CommError, staleness >= 0, "a gradient from the future (version ", m.header.version,
              " > ", stats_.version, ")");
  stats_.staleness_sum += staleness;
  stats_.staleness_max = std::max(stats_.staleness_max, staleness);
  ++window_count_;
  window_sum_ += staleness;
  window_max_ = std::max(window_max_, staleness);
  std::copy(g.begin(), g.end(), grad_feed_.data<float>());
  // W gradients of B/W rows make one global step of the schedule.
  apply(stats_.version / num_workers_);
}

void PsServer::try_apply_sync() {
  const std::int64_t t = stats_.version;
  int count = 0;
  for (int w = 0; w < num_workers_; ++w) {
    const auto wi = static_cast<std::size_t>(w);
    if (pushed_step_[wi] == t) {
      ++count;
    } else if (!done_[wi]) {
      return;  // a worker still training has not pushed step t
    }
  }
  if (count == 0) return;
  // Deterministic average: sum in worker order, then divide by the count.
  float* __restrict out = grad_feed_.data<float>();
  const auto n = static_cast<std::size_t>(grad_feed_.num_elements());
  bool first = true;
  for (int w = 0; w < num_workers_; ++w) {
    const auto wi = static_cast<std::size_t>(w);
    if (pushed_step_[wi] != t) continue;
    const float* __restrict g = grads_[wi].data();
    if (first) {
      std::copy(g, g + n, out);
    } else {
      for (std::size_t i = 0; i < n; ++i) out[i] += g[i];
    }
    first = false;
  }
  if (count > 1) {
    const auto divisor = static_cast<float>(count);
    for (std::size_t i = 0; i < n; ++i) out[i] /= divisor;
  }
  apply(t);
}

void PsServer::apply(std::int64_t schedule_step) {
  const float lr = scheduled_learning_rate(config_, schedule_step, steps_per_epoch_);
  session_->run({}, {{grad_, grad_feed_}, {lr_, Tensor::scalar(lr)}}, {train_op_});
  ++stats_.version;
}

bool PsServer::stops(const Pull& p) const {
  return stop_at_ >= 0 && !(p.header.flags & rc::kPsEvalPull) && p.header.step >= stop_at_;
}

bool PsServer::answerable(const Pull& p) const {
  if (stops(p)) return true;
  if (p.header.flags & rc::kPsEvalPull) return !sync_ || stats_.version >= p.header.step;
  if (sync_) return stats_.version >= p.header.step;
  if (max_staleness_ < 0) return true;
  // Bounded: version + |O| - v_min <= k, v_min over the outstanding pulls
  // and this one (see ps.h).
  std::int64_t outstanding = 0, v_min = stats_.version;
  for (std::int64_t v : outstanding_) {
    if (v < 0) continue;
    ++outstanding;
    v_min = std::min(v_min, v);
  }
  return stats_.version + outstanding - v_min <= max_staleness_;
}

void PsServer::answer(const Pull& p) {
  const rc::PsRoles& roles = transport_.roles();
  const int dest = roles.worker_rank(p.worker);
  const auto vals = values();
  auto buf = transport_.send_buffer(dest, vals.size());
  std::copy(vals.begin(), vals.end(), buf.begin());
  rc::PsHeader h;
  h.step = p.header.step;
  h.version = stats_.version;
  h.flags = p.header.flags;
  if (stops(p)) {
    h.flags |= rc::kPsStop;
    h.reserved = stop_signal_;
    transport_.post(dest, rc::PsKind::params, shard_, h);
    return;
  }
  transport_.post(dest, rc::PsKind::params, shard_, h);
  if (!(p.header.flags & rc::kPsEvalPull) && !sync_)
    outstanding_[static_cast<std::size_t>(p.worker)] = stats_.version;
}

void PsServer::answer_pending() {
  // In arrival order; one answer can make a later pull unanswerable (a new
  // outstanding gradient), so re-test each in turn.
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (answerable(*it)) {
      answer(*it);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace ringflow::train
