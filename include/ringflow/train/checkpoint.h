// Training checkpoints: one HDF5 file per checkpoint, written atomically.
//
// Format "ringflow-checkpoint", version 1 (file name ckpt-<step, 10 digits>.h5):
//   /                attributes
//     format         "ringflow-checkpoint"
//     version        1
//     step           global steps done (the next step to run)
//     epoch          the epoch that step belongs to
//     step_in_epoch  its position in that epoch (the data loader's position)
//     seed           the run's seed
//     model          the model's signature: name and hidden sizes
//     config         the effective configuration (TOML), for the record
//     num_ranks      the rank count that wrote it (informative only)
//     checksum       16 hex digits: FNV-1a 64 over the step fields, seed,
//                    model, config, and every variable's name, shape and bytes
//   /variables/v<k>  float32 data set, the k-th variable in graph order, with
//                    attribute "name" (e.g. dense1/kernel, dense1/kernel/momentum):
//                    trainable variables and optimizer slots alike.
// Random state: initialisers, dropout masks and shuffling are counter-based,
// keyed by (seed, step, rank) and (seed, epoch, rank), so seed and step are
// the whole random state. Nothing is stored per rank: a checkpoint can be
// resumed with another rank count.
//
// Writing: the file is written as .ckpt-<step>.h5.tmp in the same directory,
// flushed and fsync'ed, then renamed over the final name, and the directory is
// fsync'ed: a crash mid-write leaves the previous checkpoints intact. Reading
// validates format, version, checksum and every variable's name and shape
// against the running model; a file that fails any check is reported by name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ringflow/collectives/communicator.h"

namespace ringflow::train {

inline constexpr const char* kCheckpointFormat = "ringflow-checkpoint";
inline constexpr std::int64_t kCheckpointVersion = 1;

struct CheckpointVariable {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

struct Checkpoint {
  std::int64_t step = 0;
  std::int64_t epoch = 0;
  std::int64_t step_in_epoch = 0;
  std::uint64_t seed = 0;
  std::string model;
  std::string config;
  std::int64_t num_ranks = 1;
  std::vector<CheckpointVariable> variables;
};

// The content checksum stored in (and checked against) the file.
std::uint64_t checkpoint_checksum(const Checkpoint& c);

// "ckpt-0000001234.h5"
std::string checkpoint_file_name(std::int64_t step);

// Writes dir/ckpt-<step>.h5 atomically (see above) and returns its path.
// test_crash_midway: kill this process after half of the variables are
// written (tests of crash safety).
std::filesystem::path write_checkpoint(const std::filesystem::path& dir, const Checkpoint& c,
                                       bool test_crash_midway = false);

// Reads and validates one file; raises IoError naming the file and the reason
// (unreadable, wrong format or version, checksum mismatch).
Checkpoint read_checkpoint(const std::filesystem::path& path);

// The checkpoint files in dir, newest (highest step) first; ignores
// temporaries and other files.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);

// Keeps the newest `keep` checkpoints in dir, removes the older ones and any
// temporaries left by a crash.
void prune_checkpoints(const std::filesystem::path& dir, int keep);

// --resume, collectively: what a run expects to find in a checkpoint.
struct ExpectedVariable {
  std::string name;
  std::vector<std::int64_t> shape;
};

// What --resume found, on every rank.
struct Resumed {
  bool found = false;  // false: the directory has no checkpoint yet (start at step 0)
  std::int64_t step = 0, epoch = 0, step_in_epoch = 0;
  std::string path;           // on rank 0: the file resumed from
  std::vector<float> values;  // every expected variable's values, in order, concatenated
};

// Rank 0 picks the newest usable checkpoint in dir and broadcasts it. A
// corrupt or truncated file is renamed *.corrupt (with a warning) and an older
// one is tried; a checkpoint whose variables' names and shapes differ from
// `expected` belongs to another run and is refused. Raises AgreedError on every
// rank (no rank is left inside a collective) when the directory holds only
// unreadable checkpoints or one of another run; `signature` (the running
// model and optimizer) goes into those messages.
Resumed resume_checkpoint(collectives::Communicator& comm, const std::string& dir,
                          const std::vector<ExpectedVariable>& expected,
                          const std::string& signature);

}  // namespace ringflow::train
