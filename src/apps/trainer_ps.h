// The trainer's parameter-server mode (--mode ps) and the per-step traffic
// line both modes print for the comparison (jobs/compare_modes.sh).
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "ringflow/collectives/communicator.h"
#include "ringflow/train/config.h"

namespace ringflow::apps {

struct PsFlags {
  bool sync = false;
  bool async = false;
};

// The "Parameter server" option group.
void add_ps_flags(CLI::App& app, train::TrainConfig& c, PsFlags& flags);
// After parsing: folds --ps-sync/--ps-async into the config; InvalidArgument
// for contradictory or out-of-range values (validate() checks the rest).
void apply_ps_flags(const CLI::App& app, train::TrainConfig& c, const PsFlags& flags);

// Runs a validated ps-mode configuration on every rank; returns the exit code.
int run_ps(const train::TrainConfig& c, collectives::Communicator& comm);

// Rank 0 prints "traffic per rank per step: ..." for an allreduce run of
// `steps` steps: the largest figures over the ranks (collective).
void print_allreduce_traffic(collectives::Communicator& comm, std::int64_t steps);

// Rank 0's line after a stop signal ended training: the signal, the step,
// the checkpoint written ("" = none) and the exit code.
void print_stopped(int sig, std::int64_t step, const std::string& checkpoint);

}  // namespace ringflow::apps
