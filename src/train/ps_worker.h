// One parameter-server worker: the model graph without an optimizer, its
// shards of the data, and the pull / compute / push step (see ringflow/train/ps.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ringflow/collectives/ps_transport.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/runtime/session.h"
#include "ringflow/train/ps.h"
#include "shared.h"

namespace ringflow::train {

class PsWorker {
 public:
  PsWorker(const TrainConfig& config, int worker, const PsLayout& layout, int threads,
           collectives::PsTransport& transport, const PsTestHooks& hooks);
  ~PsWorker();

  // Pulls the parameters, computes the gradient of the next local batch and
  // pushes it. Returns the batch's loss. When ps:0 answers the pull with a
  // stop, runs nothing and sets stopped_by() (see ps.h).
  double step();
  // The stop signal ps:0 relayed (0: none).
  int stopped_by() const { return stopped_by_; }
  // Pulls the current parameters without taking part in staleness
  // accounting (evaluation); in sync mode waits for `after_steps` updates.
  void pull_for_eval(std::int64_t after_steps);
  // Overwrites the parameters with a full flat vector (after training).
  void set_parameters(std::span<const float> flat);
  EvalSums evaluate_shard();
  // Tells every server this worker is done.
  void finish();
  // Continues from a checkpoint: `step` steps done, the next batch is number
  // step_in_epoch of epoch `epoch`.
  void resume_at(std::int64_t step, std::int64_t epoch, std::int64_t step_in_epoch);

  std::int64_t steps_per_epoch() const { return batches_->steps_per_epoch(); }
  std::int64_t steps() const { return step_; }
  std::int64_t test_rows() const { return test_shard_.total_rows; }
  const Model& model() const { return model_; }

 private:
  void pull(std::int64_t flags);
  void unpack(int shard, std::span<const float> values);

  TrainConfig config_;
  int worker_;
  const PsLayout& layout_;
  collectives::PsTransport& transport_;
  PsTestHooks hooks_;
  bool sequential_pulls_;
  datasets::Shard train_shard_, test_shard_;
  std::unique_ptr<datasets::BatchIterator> batches_;
  Graph graph_;
  Model model_;
  std::vector<Output> vars_, grads_;
  std::vector<Tensor*> var_tensors_;
  std::unique_ptr<Session> session_;
  Tensor x_batch_, y_batch_;
  std::vector<std::int64_t> versions_;  // of each shard's last pull
  std::int64_t step_ = 0;
  std::int64_t epoch_ = 0;
  bool epoch_started_ = false;
  std::int64_t resume_position_ = 0;  // batches to skip when the epoch starts
  int stopped_by_ = 0;
};

}  // namespace ringflow::train
