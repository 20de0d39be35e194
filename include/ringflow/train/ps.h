// Parameter-server training (--mode ps): the other reduce architecture,
// beside the allreduce of trainer.h, on the same models and data.
//
// Words: ranks 0..P-1 are *servers*, ranks P..N-1 *workers* (see
// collectives/ps_transport.h for the role map and the messages). The
// trainable variables, concatenated in graph order, form one flat parameter
// vector of S floats; *shard* p is the p-th of P contiguous, equal ranges of
// it (sizes differ by at most one float), owned by server p. Placement is
// therefore balanced by bytes exactly, and a variable that straddles a range
// boundary is split between two servers (a *piece* is the part of one
// variable inside one shard). Each server moves W*S/P floats per step each
// way, whatever the variable sizes; a whole-variable placement would leave
// the MLP's 784x256 first layer (85 % of its bytes) on one server.
//
// A server holds its shard as one variable in a small graph of its own,
// with a gradient placeholder and the optimizer's apply op (the same
// ApplyMomentum / ApplyAdam / ... kernels as allreduce mode; they are
// elementwise, so applying them to a flat range is the same update, and the
// optimizer's slots live on the server). Its *version* counts the updates it
// has applied.
//
// A worker step: pull every shard (the parameters, with the version), run
// forward and backward on the worker's local batch (B/W rows of its shard of
// the data: the data is split over the W workers only), push each shard's
// slice of the gradient, tagged with the version it was computed on.
//
//   sync   a server answers a pull for step t once it has applied t updates;
//          it applies step t when every worker still training has pushed its
//          step-t gradient: their sum in worker order, divided by their
//          count (as the ring's average), so W workers with batch B train
//          the model one rank with batch B trains.
//   async  a server applies each gradient as it arrives (one version per
//          gradient) and answers pulls at once. Staleness of a gradient =
//          version when applied - version it was computed on. The learning
//          rate schedule runs on version / W (W gradients of B/W rows make one
//          global batch).
//   async with --max-staleness k: a server answers a pull only if no
//          gradient it has handed out parameters for could then be applied
//          more than k versions late: with O the outstanding pulls (answered,
//          gradient not yet applied) and v_min the oldest version among them
//          and the new one, it needs version + |O| - v_min <= k (each
//          outstanding gradient adds at most one version before the oldest
//          lands). So staleness <= k is guaranteed, k = 0 serialises the
//          workers, and a worker waits only when it is ahead of the slowest.
//          Workers pull shard by shard in this mode (0, 1, ...), so two
//          workers never hold each other's half-answered pulls.
//
// Checkpoints (--checkpoint-dir): worker:0 asks every server for one after
// step t (every --checkpoint-every steps or seconds, and after the last
// step); each server snapshots its shard and slots once it has applied t
// updates (sync) or at once (async) and sends it to ps:0, which reassembles
// the variables and writes the same file an allreduce run writes (same
// format, names and order). So a checkpoint can be resumed in either mode,
// with any P and N. --resume gives every server its shard of the variables
// and slots back and every worker its data position; the version restarts at
// t (sync) or t * W (async).
//
// Stop signals (SIGTERM, SIGUSR1, as in allreduce mode): a worker that
// receives one flags its pushes (kPsSignal); ps:0, on its own signal or such a
// push, decides a stop step and answers pulls from then on with kPsStop
// instead of parameters. Sync: the stop step is version + 1 when ps:0 learns
// of the signal, so every worker stops before the same step; async: every
// worker stops at its next pull. Workers finish the epoch's sums (all take
// part, so none waits for a stopped one), worker:0 asks for a checkpoint at
// its step, every worker says DONE, and the trainer exits with 75. A signal
// that arrives after the last pull changes nothing: training completed.
//
// Shutdown: a worker sends DONE to every server after its last push; a
// server serves until it has every worker's DONE. Workers may run different
// step counts: a sync server averages over the workers still training.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ringflow/collectives/collectives.h"
#include "ringflow/train/config.h"
#include "ringflow/train/trainer.h"

namespace ringflow::train {

struct PsPiece {
  int var = 0;                    // index into the variables, graph order
  std::int64_t var_offset = 0;    // first float of the piece in the variable
  std::int64_t shard_offset = 0;  // and in the shard
  std::int64_t count = 0;
};

struct PsLayout {
  std::vector<std::int64_t> var_sizes;       // floats, graph order
  std::vector<std::int64_t> shard_begin;     // num_shards + 1 boundaries in [0, S]
  std::vector<std::vector<PsPiece>> pieces;  // of each shard, in flat order
  int num_shards() const { return static_cast<int>(pieces.size()); }
  std::int64_t total() const { return shard_begin.back(); }
  std::int64_t shard_size(int p) const {
    return shard_begin[static_cast<std::size_t>(p) + 1] - shard_begin[static_cast<std::size_t>(p)];
  }
};

// Splits the flat vector of the variables (sizes in floats) into num_shards
// equal contiguous ranges; see the opening comment.
PsLayout make_ps_layout(const std::vector<std::int64_t>& var_sizes, int num_shards);

// Test-only knobs.
struct PsTestHooks {
  // Called on a worker after backward, before the push (e.g. to slow it down).
  std::function<void(int worker, std::int64_t step)> before_push;
};

// One server's figures (all zero on a worker).
struct PsServerStats {
  std::int64_t version = 0;    // updates applied
  std::int64_t gradients = 0;  // gradients received
  std::int64_t staleness_sum = 0;
  std::int64_t staleness_max = 0;
};

// What rank 0 learns about an epoch beyond EpochMetrics.
struct PsEpochExtra {
  double staleness_mean = 0;  // of the gradients ps:0 applied since the last report
  std::int64_t staleness_max = 0;
};

// The whole job's figures, on rank 0 (collective).
struct PsSummary {
  std::int64_t gradients = 0;  // over all servers
  double staleness_mean = 0;
  std::int64_t staleness_max = 0;
  // Per rank per training step, the largest over the ranks of each role.
  double server_bytes_sent = 0, server_bytes_received = 0;
  double worker_bytes_sent = 0, worker_bytes_received = 0;
};

class PsServer;
class PsWorker;

class PsTrainer {
 public:
  // Validates the configuration (every rank, before any message), builds the
  // server's or the worker's graph and loads a worker's shards.
  PsTrainer(const TrainConfig& config, collectives::Communicator& comm, PsTestHooks hooks = {});
  ~PsTrainer();

  const collectives::PsRoles& roles() const { return roles_; }
  bool is_server() const { return roles_.is_server(comm_.rank()); }
  const PsLayout& layout() const { return layout_; }
  std::int64_t steps_per_epoch() const { return steps_per_epoch_; }
  std::int64_t total_steps() const { return total_steps_; }
  int threads() const { return threads_; }

  // Collective, after every rank constructed its PsTrainer: --resume. Raises
  // AgreedError on every rank when the checkpoint directory cannot be used.
  void start();

  // Trains the configured epochs. Rank 0 (ps:0) calls on_epoch as worker:0's
  // reports arrive; workers call it with their own figures.
  using EpochFn = std::function<void(const EpochMetrics&, const PsEpochExtra&)>;
  std::vector<EpochMetrics> run(const EpochFn& on_epoch = {});
  // Workers run n steps (n may differ between workers) and say DONE;
  // servers serve until every worker is done. Once per PsTrainer.
  void train_steps(std::int64_t n);

  // After training (collective): the full flat parameter vector on every rank.
  std::vector<float> gather_parameters();
  // After training (collective): exact test loss and accuracy of the servers'
  // parameters, summed over the workers' test shards.
  std::pair<double, double> evaluate();
  // After training (collective): staleness and traffic over the job, on rank 0.
  PsSummary summarize();

  PsServerStats server_stats() const;
  // After run() (collective): the stop signal that ended training early (0:
  // none; then evaluate() and a normal exit follow) and worker:0's steps.
  std::pair<int, std::int64_t> agree_stop();
  // On rank 0: the last checkpoint written and the one resumed from ("" if none).
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  const std::string& resumed_from() const { return resumed_from_; }
  // The steps done when training starts (after --resume).
  std::int64_t start_step() const { return start_step_; }
  const collectives::PsTraffic& traffic() const { return transport_->traffic(); }

 private:
  TrainConfig config_;
  collectives::Communicator& comm_;
  collectives::PsRoles roles_;
  PsTestHooks hooks_;
  PsLayout layout_;
  std::int64_t steps_per_epoch_ = 0;
  std::int64_t total_steps_ = 0;
  std::int64_t trained_steps_ = 0;  // by this worker (the divisor of per-step traffic)
  int threads_ = 1;
  std::unique_ptr<collectives::Communicator> group_;  // the servers' or the workers' own
  std::unique_ptr<collectives::PsTransport> transport_;
  std::unique_ptr<PsServer> server_;
  std::unique_ptr<PsWorker> worker_;

  // Checkpoints: the variables an allreduce run of this model holds (trainable
  // variables, then slots), and for each the trainable variable and slot it is
  // made of ("" for the variable itself).
  struct CheckpointEntry {
    std::string name;
    std::vector<std::int64_t> shape;
    int var = 0;
    std::string slot;
  };
  std::vector<CheckpointEntry> entries_;
  CheckpointEvery every_;
  std::int64_t start_step_ = 0;
  std::int64_t last_requested_ = -1;  // worker:0: the last checkpoint step asked for
  int stop_signal_ = 0;
  std::string last_checkpoint_, resumed_from_;
  void plan_checkpoints(Graph& model_graph);
  void write_checkpoint_from(std::int64_t step, const std::vector<std::vector<float>>& shards);
  int entry_index(int var, const std::string& slot) const;
  void request_checkpoint(std::int64_t step);
};

}  // namespace ringflow::train
