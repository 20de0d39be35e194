#include <filesystem>
#include <iostream>

#include "ringflow/base/error.h"
#include "ringflow/collectives/collectives.h"
#include "ringflow/tensor/tensor.h"
#include "ringflow/train/checkpoint.h"
#include "ringflow/train/trainer.h"

namespace ringflow::train {

namespace {

// Rank 0's choice: status 1 found, 0 none yet, -1 refused (with the reason).
struct Pick {
  int status = 0;
  Checkpoint checkpoint;
  std::string path;
  std::string refusal;
};

Pick pick_checkpoint(const std::string& dir, const std::vector<ExpectedVariable>& expected,
                     const std::string& signature) {
  // Newest first. A corrupt or truncated file is renamed out of the way (kept
  // for inspection, no longer counted) and an older one is tried; a checkpoint
  // of another model or optimizer is refused: the directory belongs to
  // another run.
  Pick pick;
  std::size_t corrupt = 0;
  for (const auto& f : list_checkpoints(dir)) {
    try {
      pick.checkpoint = read_checkpoint(f);
    } catch (const IoError& e) {
      const std::string moved = f.string() + ".corrupt";
      std::error_code ec;
      std::filesystem::rename(f, moved, ec);
      std::cerr << "trainer: warning: " << e.what() << "; "
                << (ec ? "" : "renamed it to '" + moved + "' and ") << "trying an older one\n";
      ++corrupt;
      continue;
    }
    const Checkpoint& c = pick.checkpoint;
    try {
      RF_CHECK_AS(IoError, c.variables.size() == expected.size(), "--resume: checkpoint '",
                  f.string(), "' (", c.model, ") holds ", c.variables.size(),
                  " variables; this run (", signature, ") has ", expected.size());
      for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto& v = c.variables[i];
        const auto& e = expected[i];
        RF_CHECK_AS(IoError, v.name == e.name && v.shape == e.shape, "--resume: checkpoint '",
                    f.string(), "' (", c.model, ") does not fit this run (", signature,
                    "): it holds '", v.name, "' ", Shape(v.shape).to_string(),
                    " where this run has '", e.name, "' ", Shape(e.shape).to_string());
      }
    } catch (const IoError& e) {
      pick.status = -1;
      pick.refusal = std::string(e.what()) +
                     ". Resume with the configuration that wrote it, or give this run another "
                     "--checkpoint-dir";
      return pick;
    }
    pick.status = 1;
    pick.path = f.string();
    return pick;
  }
  if (corrupt > 0) {
    pick.status = -1;
    pick.refusal = "--resume: none of the " + std::to_string(corrupt) + " checkpoints in '" + dir +
                   "' can be read (see the warnings above); refusing to start over from step 0 — "
                   "remove the directory to start a new run";
  }
  return pick;
}

}  // namespace

Resumed resume_checkpoint(collectives::Communicator& comm, const std::string& dir,
                          const std::vector<ExpectedVariable>& expected,
                          const std::string& signature) {
  // meta: {status, step, epoch, step in epoch}
  std::int64_t meta[4] = {0, 0, 0, 0};
  Resumed r;
  Pick pick;
  if (comm.rank() == 0) {
    pick = pick_checkpoint(dir, expected, signature);
    meta[0] = pick.status;
    if (pick.status == 1) {
      meta[1] = pick.checkpoint.step;
      meta[2] = pick.checkpoint.epoch;
      meta[3] = pick.checkpoint.step_in_epoch;
      for (const auto& v : pick.checkpoint.variables)
        r.values.insert(r.values.end(), v.values.begin(), v.values.end());
      r.path = pick.path;
    }
  }
  if (comm.size() > 1) RF_MPI_CHECK(MPI_Bcast(meta, 4, MPI_INT64_T, 0, comm.handle()));
  RF_CHECK_AS(train::AgreedError, meta[0] >= 0,
              comm.rank() == 0 ? pick.refusal : std::string("rank 0 found no usable checkpoint"));
  if (meta[0] == 0) return r;
  std::size_t total = 0;
  for (const auto& e : expected) total += static_cast<std::size_t>(Shape(e.shape).num_elements());
  r.values.resize(total);
  if (comm.size() > 1) collectives::broadcast(comm, std::span<float>(r.values), 0);
  r.found = true;
  r.step = meta[1];
  r.epoch = meta[2];
  r.step_in_epoch = meta[3];
  return r;
}

}  // namespace ringflow::train
