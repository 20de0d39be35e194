// One parameter server: its shard as a variable of a small graph with the
// optimizer's apply op, and the serving loop (see ringflow/train/ps.h).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ringflow/collectives/ps_transport.h"
#include "ringflow/runtime/session.h"
#include "ringflow/train/ps.h"

namespace ringflow::train {

class PsServer {
 public:
  // initial: the shard's initial values (shard_size floats).
  PsServer(const TrainConfig& config, int shard, std::int64_t steps_per_epoch, int threads,
           collectives::PsTransport& transport, std::span<const float> initial);
  ~PsServer();

  // Serves until every worker has said DONE. on_report receives worker:0's
  // epoch reports (only ps:0 gets them).
  void serve(const std::function<void(const collectives::PsMessage&, const PsEpochExtra&)>&
                 on_report = {});

  std::span<const float> values();
  const PsServerStats& stats() const { return stats_; }

  // The shard's whole state: every variable of the server's graph (the shard,
  // then the optimizer's slots), concatenated in graph order. restore() is the
  // inverse and also sets the version (resume).
  std::vector<float> snapshot();
  void restore(std::span<const float> state, std::int64_t version);
  // Those variables ("ps/shard", "ps/shard/momentum", ...): shard-sized, or
  // scalars (Adam's step count adam_t).
  struct StateVar {
    std::string name;
    bool scalar = false;
  };
  const std::vector<StateVar>& state_layout() const { return state_layout_; }

  // Checkpoints: worker:0 asks every server for a checkpoint after step t; a
  // server takes its snapshot once it has applied t updates (sync) or at once
  // (async) and sends it to ps:0, which calls `fn` with every shard's
  // snapshot (indexed by shard) and its own version.
  using CheckpointFn = std::function<void(std::int64_t step, std::int64_t version,
                                          const std::vector<std::vector<float>>& shards)>;
  void set_checkpoint_writer(CheckpointFn fn) { writer_ = std::move(fn); }

 private:
  struct Pull {
    int worker;
    collectives::PsHeader header;
  };
  void on_push(const collectives::PsMessage& m, int worker);
  void try_apply_sync();
  void apply(std::int64_t schedule_step);
  bool stops(const Pull& p) const;
  bool answerable(const Pull& p) const;
  void answer(const Pull& p);
  void answer_pending();
  void take_snapshots();
  void on_snapshot(std::int64_t step, int shard, std::span<const float> state,
                   std::int64_t version);

  TrainConfig config_;
  int shard_;
  std::int64_t steps_per_epoch_;
  collectives::PsTransport& transport_;
  int num_workers_;
  bool sync_;
  std::int64_t max_staleness_;  // -1: unbounded
  Graph graph_;
  Output var_, grad_, lr_, train_op_;
  std::unique_ptr<Session> session_;
  Tensor grad_feed_;
  // sync: each worker's gradient for the step being gathered
  std::vector<std::vector<float>> grads_;
  std::vector<std::int64_t> pushed_step_;  // -1: none
  std::vector<bool> done_;
  int num_done_ = 0;
  // async with a bound: the version each outstanding pull was answered at
  std::vector<std::int64_t> outstanding_;  // -1: none
  std::deque<Pull> pending_;
  PsServerStats stats_;
  std::vector<StateVar> state_layout_;
  std::deque<std::int64_t> checkpoint_requests_;  // steps asked for, not yet snapshot
  struct Collecting {                             // ps:0: a checkpoint's shards so far
    std::vector<std::vector<float>> shards;
    int count = 0;
    std::int64_t version = 0;
  };
  std::map<std::int64_t, Collecting> collecting_;
  CheckpointFn writer_;
  // Stop signals (ps:0 only): the signal, and the first step whose pulls are
  // answered with kPsStop (-1: not decided).
  int stop_signal_ = 0;
  std::int64_t stop_at_ = -1;
  void note_stop_signal(int signo);
  std::int64_t window_count_ = 0, window_sum_ = 0, window_max_ = 0;  // since the last report
};

}  // namespace ringflow::train
