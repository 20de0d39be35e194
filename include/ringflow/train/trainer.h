// Data-parallel training: every rank builds the same graph, rank 0's initial
// variables are broadcast, and each step runs forward and backward on the
// rank's local batch, averages the gradients in buckets on the
// communication thread, and applies the same update on every replica.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ringflow/collectives/collectives.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/graph/graph.h"
#include "ringflow/runtime/session.h"
#include "ringflow/train/checkpoint.h"
#include "ringflow/train/config.h"
#include "ringflow/train/control.h"
#include "ringflow/train/models.h"
#include "ringflow/train/reducer.h"
#include "ringflow/train/timeline.h"

namespace ringflow::train {

// Raised on every rank at the same point of the run, after the ranks agreed
// on it (a non-finite gradient, an unusable checkpoint directory): the caller
// can report it and exit without aborting the job.
class AgreedError : public Error {
  using Error::Error;
};

struct EpochMetrics {
  int epoch = 0;           // 1-based
  std::int64_t steps = 0;  // steps so far
  double train_loss = 0;   // mean over the epoch's steps and ranks
  double test_loss = 0;    // exact mean over the whole test split
  double test_accuracy = 0;
  std::int64_t test_rows = 0;
  double samples_per_second = 0;  // global samples in this epoch / its wall time
  double elapsed_seconds = 0;
  double eta_seconds = 0;
  double allreduce_seconds = 0;  // time in collectives, this epoch
};

// --overlap resolved: "on" and "off" as given; "auto" overlaps unless every
// rank is on one node and the ranks' threads leave it no core to spare:
// threads >= rank_cores for a rank bound to fewer cores than the node has
// (its affinity mask), else threads x ranks on the node >= node_cores.
bool overlap_backward(const std::string& mode, const collectives::Communicator& comm, int threads,
                      int rank_cores, int node_cores);

class Trainer {
 public:
  // Validates the configuration, loads this rank's shards, builds the graph
  // and the session, and broadcasts rank 0's initial variables.
  Trainer(const TrainConfig& config, collectives::Communicator& comm);
  ~Trainer();

  // Runs the configured epochs (or max_steps), from the newest checkpoint
  // with --resume. on_epoch is called on every rank after each epoch's
  // evaluation. Returns early, after writing a checkpoint, when a stop signal
  // arrived (see stop_signal()).
  std::vector<EpochMetrics> run(const std::function<void(const EpochMetrics&)>& on_epoch = {});
  // Called after every training step with (step within the epoch, steps in
  // the epoch), e.g. for a live progress line.
  void set_progress(std::function<void(std::int64_t, std::int64_t)> fn) {
    progress_ = std::move(fn);
  }
  // Runs exactly n training steps (equivalence tests).
  void train_steps(std::int64_t n);
  // The signal that stopped run() early (0: it ran to the end).
  int stop_signal() const { return stop_signal_; }
  // The checkpoint this run resumed from and the last one it wrote ("" if none).
  const std::string& resumed_from() const { return resumed_from_; }
  const std::string& last_checkpoint() const { return last_checkpoint_; }
  // Exact test-set evaluation, summed across ranks: {mean loss, accuracy}.
  std::pair<double, double> evaluate();

  // Variables in graph order, by name.
  std::vector<std::pair<std::string, Tensor*>> variables() { return session_->variables(); }
  // FNV-1a 64 over every trainable variable's bytes, in graph order.
  std::uint64_t variables_hash();
  const Timeline& timeline() const { return timeline_; }
  const GradientReducer& reducer() const { return *reducer_; }
  Graph& graph() { return graph_; }
  const Model& model() const { return model_; }
  std::int64_t steps_per_epoch() const { return batches_->steps_per_epoch(); }
  std::int64_t step() const { return step_; }
  int threads() const { return threads_; }
  // Whether bucket allreduces overlap backward (--overlap, auto resolved).
  bool overlap() const { return overlap_; }
  // The learning rate the schedule gives for a (0-based) step.
  float learning_rate_at(std::int64_t step) const;
  // Writes the timeline file (collective: every rank must call it).
  void write_timeline(const std::string& path);

 private:
  // Collective, once before the first step: the step agreement's
  // communicator, then the initial variables (rank 0's, or a checkpoint's).
  void start();
  void broadcast_variables();
  void restore();
  void save_checkpoint();
  Checkpoint make_checkpoint();
  // Rank 0's messages (to stderr unless --log-level error).
  void log(const std::string& line) const;
  double one_step();
  // After every step: non-finite checks, the step agreement, checkpoints.
  void after_step(double loss);

  TrainConfig config_;
  collectives::Communicator& comm_;
  datasets::Shard train_shard_, test_shard_;
  std::unique_ptr<datasets::BatchIterator> batches_;
  Graph graph_;
  Model model_;
  Output lr_;
  Output train_op_;
  Timeline timeline_;
  std::unique_ptr<StallWatch> watch_;
  std::unique_ptr<StepAgreement> agreement_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<Session> session_;
  Tensor x_batch_, y_batch_;
  int threads_ = 1;
  bool overlap_ = true;
  std::int64_t step_ = 0;
  std::int64_t epoch_ = 0;
  bool epoch_started_ = false;
  std::int64_t resume_position_ = 0;  // step within epoch_ to seek to when it starts
  bool started_ = false;
  CheckpointEvery every_;
  std::int64_t last_checkpoint_step_ = -1;
  int checkpoints_written_ = 0;
  int stop_signal_ = 0;
  std::string resumed_from_, last_checkpoint_;
  std::function<void(std::int64_t, std::int64_t)> progress_;
};

}  // namespace ringflow::train
