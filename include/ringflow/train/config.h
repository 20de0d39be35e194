// Everything a training run is configured by. The trainer CLI fills it from
// flags and an optional config file; validate() checks it on every rank
// before any collective is entered.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringflow/train/models.h"

namespace ringflow::train {

struct TrainConfig {
  // data
  std::string data;               // ringflow HDF5 data set
  std::string shard = "strided";  // strided | contiguous
  bool shuffle = true;
  std::int64_t train_rows = 0;  // use only the first rows of the train split (0 = all)
  // model
  ModelSpec model;
  // optimisation
  std::string optimizer = "momentum";  // sgd | momentum | nesterov | adam
  float lr = 0.05f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  std::string schedule = "constant";  // constant | step | cosine
  double warmup_epochs = 0.0;
  double step_epochs = 10.0;  // step schedule: decay every step_epochs
  float step_gamma = 0.1f;
  std::int64_t batch_size = 128;  // global batch B; each rank runs B / N
  double epochs = 5;
  std::int64_t max_steps = 0;  // stop after this many steps (0 = no limit)
  std::uint64_t seed = 1;
  // execution
  int threads = 0;                 // per rank; 0 = node cores / ranks on the node
  std::string allreduce = "auto";  // ring | mpi | auto
  double fusion_mb = 4.0;
  std::string overlap = "auto";  // auto | on | off (see overlap_backward in trainer.h)
  // output
  std::string metrics;               // CSV (.csv) or JSONL (anything else) per epoch
  std::string timeline;              // Chrome trace
  std::int64_t timeline_steps = 10;  // steps recorded in the timeline
  std::string log_level = "info";    // error | warn | info | debug
  bool eval_each_epoch = true;
  // checkpoints and failures
  std::string checkpoint_dir;    // where checkpoints go ("" = none)
  std::string checkpoint_every;  // "N" steps or "Ns" seconds ("" = only at the end/stop)
  int keep_checkpoints = 3;      // newest K kept
  bool resume = false;           // continue from the newest valid checkpoint
  double stall_timeout = 300;    // seconds a wait on other ranks may last (0 = off)
  // parameter-server mode (see ringflow/train/ps.h); the "not given" values
  // let validate() reject ps flags without --mode ps
  std::string mode = "allreduce";   // allreduce | ps
  int num_ps = 0;                   // ps: ranks 0..num_ps-1 are servers (>= 1 in ps mode)
  std::string ps_update;            // ps: sync (default) | async
  std::int64_t max_staleness = -1;  // ps async: bound on staleness (-1 = none)
  // test-only fault injection (hidden flags)
  std::int64_t test_nan_step = 0;    // feed NaN at this (1-based) step on the last rank
  int test_step_delay_ms = 0;        // sleep this long after every step...
  int test_delay_rank = -1;          // ...on this rank only (-1: every rank)
  int test_crash_in_checkpoint = 0;  // kill rank 0 while writing its k-th checkpoint
};

// --checkpoint-every parsed: a number of steps or of seconds (0 = never).
struct CheckpointEvery {
  std::int64_t steps = 0;
  double seconds = 0;
};
CheckpointEvery parse_checkpoint_every(const std::string& s);

// The number of ranks that compute gradients: N, or N - num_ps in ps mode.
int num_gradient_ranks(const TrainConfig& c, int num_ranks);

// Raises InvalidArgument naming the flag when a value is out of range.
// num_ranks is the job's size (the batch must split evenly across ranks).
void validate(const TrainConfig& c, int num_ranks);

// The learning rate of the schedule at a (0-based) step, with
// steps_per_epoch global steps per epoch.
float scheduled_learning_rate(const TrainConfig& c, std::int64_t step,
                              std::int64_t steps_per_epoch);

// "key = value" lines in TOML style: the effective configuration.
std::string to_toml(const TrainConfig& c);

}  // namespace ringflow::train
