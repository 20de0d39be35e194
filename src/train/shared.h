// What the allreduce Trainer and parameter-server mode share: choices made
// from the configuration (so both modes build the same optimizer and name the
// same model in their checkpoints), the checkpoint directory, and exact
// evaluation of one rank's test shard.
#pragma once

#include <memory>
#include <string>

#include "ringflow/datasets/batch.h"
#include "ringflow/datasets/shard.h"
#include "ringflow/graph/graph.h"
#include "ringflow/ops/optimizers.h"
#include "ringflow/runtime/session.h"
#include "ringflow/train/config.h"
#include "ringflow/train/models.h"

namespace ringflow::train {

// The optimizer of --optimizer, reading its learning rate from `lr`.
std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& c, Output lr);

// "mlp hidden 256,128, optimizer momentum": what a checkpoint must match.
std::string model_signature(const TrainConfig& c);

// Creates --checkpoint-dir if it is set (rank 0 calls it); raises IoError naming it.
void create_checkpoint_dir(const TrainConfig& c);

// Keeps only the rows of a strided shard whose global index is below `rows`
// (the --train-rows subset; 0 = all) and shrinks the split to it. With
// strided shards those rows are a prefix of each shard (--train-rows with
// contiguous shards is rejected by validation).
void limit_rows(datasets::Shard& s, std::int64_t rows);

// The dropout stream of one rank's batch at a step, step * ranks + rank
// (wrapping at 2^32): masks differ between ranks and steps, and a resumed run
// draws the same ones as an uninterrupted run. ps mode counts workers.
std::int32_t dropout_stream(std::int64_t step, int num_ranks, int rank);

// The next training batch into x and y: starts the epoch on first use
// (skipping resume_position batches of it, then zeroing that), and rolls over
// to the next epoch when this one's steps are done.
void next_batch(datasets::BatchIterator& batches, std::int64_t& epoch, bool& epoch_started,
                std::int64_t& resume_position, Tensor& x, Tensor& y);

// Loss sum, correct count and rows of one rank's test shard, in batches of
// global_batch / shard.num_ranks rows (and a partial last batch).
struct EvalSums {
  double loss_sum = 0;
  double correct = 0;
  double rows = 0;
};
EvalSums evaluate_shard(Session& session, const Model& model, const datasets::Shard& shard,
                        std::int64_t global_batch);

}  // namespace ringflow::train
