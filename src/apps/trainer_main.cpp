// trainer: data-parallel training of a ringflow model.
//
//   mpirun -np 2 trainer --data fmnist.h5 --model mlp --epochs 5
//   trainer --config run.toml            (one rank, no launcher)
//
// Exit codes: 0 success, 1 bad input or a failure while training (the
// message names the file, flag or rank), 2 bad command line, 75 stopped by
// SIGTERM or SIGUSR1 after writing a checkpoint (requeue and --resume).
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>

#include "metrics_writer.h"
#include "ringflow/collectives/collectives.h"
#include "ringflow/train/trainer.h"
#include "trainer_ps.h"

namespace rc = ringflow::collectives;
namespace rt = ringflow::train;

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

void add_flags(CLI::App& app, rt::TrainConfig& c, std::string& hidden) {
  // A flag given twice takes its last value, so a command line can override
  // a wrapper script's defaults.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_config("--config", "",
                 "Read flags from a TOML or INI file (key = value, keys are the long flag names)");
  auto* data = app.add_option_group("Data");
  data->add_option("--data", c.data,
                   "ringflow HDF5 data set (make one with `ringflow-data import-idx`)");
  data->add_option("--shard", c.shard,
                   "How rows are split across ranks: strided (rank r gets rows r, r+N, ...) or "
                   "contiguous blocks")
      ->capture_default_str();
  data->add_flag("--shuffle,!--no-shuffle", c.shuffle,
                 "Shuffle each rank's rows every epoch (seeded by seed, epoch, rank)")
      ->capture_default_str();
  data->add_option("--train-rows", c.train_rows,
                   "Train on only the first N rows of the train split (0 = all)")
      ->capture_default_str();
  auto* model = app.add_option_group("Model");
  model->add_option("--model", c.model.name, "logreg | mlp | cnn | cnn-small")
      ->capture_default_str();
  model->add_option("--hidden", hidden, "MLP hidden layer sizes, comma-separated")
      ->capture_default_str();
  model->add_option("--dropout", c.model.dropout, "Dropout rate before the CNN's last layer")
      ->capture_default_str();
  auto* opt = app.add_option_group("Optimisation");
  opt->add_option("--optimizer", c.optimizer, "sgd | momentum | nesterov | adam")
      ->capture_default_str();
  opt->add_option("--lr", c.lr, "Peak learning rate")->capture_default_str();
  opt->add_option("--momentum", c.momentum, "Momentum for momentum/nesterov")
      ->capture_default_str();
  opt->add_option("--weight-decay", c.weight_decay, "L2 weight decay added to the gradient")
      ->capture_default_str();
  opt->add_option("--schedule", c.schedule,
                  "Learning-rate schedule after warmup: constant | step | cosine")
      ->capture_default_str();
  opt->add_option("--warmup-epochs", c.warmup_epochs,
                  "Linear warmup from 0 to --lr over this many epochs")
      ->capture_default_str();
  opt->add_option("--step-epochs", c.step_epochs,
                  "step schedule: multiply the rate by --step-gamma every this many epochs")
      ->capture_default_str();
  opt->add_option("--step-gamma", c.step_gamma, "step schedule: the decay factor")
      ->capture_default_str();
  opt->add_option("--batch-size", c.batch_size,
                  "Global batch size B; each of N ranks runs B/N rows per step")
      ->capture_default_str();
  opt->add_option("--epochs", c.epochs, "Passes over the train split (fractions allowed)")
      ->capture_default_str();
  opt->add_option("--max-steps", c.max_steps, "Stop after this many steps (0 = no limit)")
      ->capture_default_str();
  opt->add_option("--seed", c.seed, "Seed for initialisation, shuffling and dropout")
      ->capture_default_str();
  auto* ex = app.add_option_group("Execution");
  ex->add_option("--threads", c.threads,
                 "Executor threads per rank (default: the node's cores / its ranks)")
      ->capture_default_str();
  ex->add_option("--allreduce", c.allreduce,
                 "Gradient allreduce: ring | mpi | auto (by message size)")
      ->capture_default_str();
  ex->add_option("--fusion-mb", c.fusion_mb,
                 "Gradient bucket size in MiB (one allreduce per bucket)")
      ->capture_default_str();
  auto* overlap =
      ex->add_option("--overlap", c.overlap,
                     "Allreduce buckets on a communication thread while backward runs: on | off "
                     "(after backward, on the executor thread) | auto (on unless the ranks share "
                     "one node and their threads fill its cores)")
          // true/false: config files written when this was an on/off flag
          ->transform(CLI::Transformer(
              std::map<std::string, std::string>{{"true", "on"}, {"false", "off"}}))
          ->capture_default_str();
  // A separate option: given with --overlap, which one wins would depend on
  // CLI11's order, not the user's, so the two exclude each other.
  ex->add_flag_callback(
        "--no-overlap", [&c] { c.overlap = "off"; }, "Same as --overlap off")
      ->excludes(overlap);
  auto* out = app.add_option_group("Output");
  out->add_option("--metrics", c.metrics,
                  "Per-epoch metrics file: CSV if it ends in .csv, else JSON lines");
  out->add_option("--timeline", c.timeline,
                  "Chrome trace of every rank's ops and allreduces (open in Perfetto)");
  out->add_option("--timeline-steps", c.timeline_steps, "Steps recorded in the timeline")
      ->capture_default_str();
  out->add_option("--log-level", c.log_level, "error | warn | info | debug ([rank r] lines)")
      ->capture_default_str();
  auto* ck = app.add_option_group("Checkpoints and failures");
  ck->add_option("--checkpoint-dir", c.checkpoint_dir,
                 "Write checkpoints here (created if missing); one is always written at the end "
                 "and on SIGTERM/SIGUSR1");
  ck->add_option("--checkpoint-every", c.checkpoint_every,
                 "Also checkpoint every N steps (500) or N seconds of wall time (600s)");
  ck->add_option("--keep-checkpoints", c.keep_checkpoints, "Keep the newest K checkpoints")
      ->capture_default_str();
  ck->add_flag("--resume", c.resume,
               "Continue from the newest valid checkpoint in --checkpoint-dir (start at step 0 "
               "if there is none)");
  ck->add_option("--stall-timeout", c.stall_timeout,
                 "Abort the job when a wait on other ranks lasts longer than this many seconds "
                 "(0 = never)")
      ->capture_default_str();
  // Fault injection for the test suite; hidden from --help.
  ck->add_option("--test-nan-step", c.test_nan_step)->group("");
  ck->add_option("--test-step-delay-ms", c.test_step_delay_ms)->group("");
  ck->add_option("--test-delay-rank", c.test_delay_rank)->group("");
  ck->add_option("--test-crash-in-checkpoint", c.test_crash_in_checkpoint)->group("");
}

std::vector<std::int64_t> parse_hidden(const std::string& s) {
  std::vector<std::int64_t> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    try {
      std::size_t used = 0;
      const long long v = std::stoll(part, &used);
      RF_CHECK(used == part.size(), "");
      out.push_back(v);
    } catch (...) {
      RF_THROW(InvalidArgument, "--hidden: '", s,
               "' is not a comma-separated list of layer sizes, e.g. 256,128");
    }
  }
  return out;
}

std::string fmt_seconds(double s) {
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  else
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  rc::MpiEnvironment env(&argc, &argv);
  rc::Communicator comm;
  // From here on SIGTERM and SIGUSR1 stop the run at a step boundary.
  rt::install_stop_signal_handlers();
  const int rank = comm.rank();

  rt::TrainConfig config;
  std::string hidden = "256,128";
  CLI::App app{
      "ringflow trainer: data-parallel training with a ring allreduce.\n"
      "Run as `mpirun -np N trainer ...` or alone as one rank."};
  app.get_formatter()->column_width(34);
  add_flags(app, config, hidden);
  ringflow::apps::PsFlags ps_flags;
  ringflow::apps::add_ps_flags(app, config, ps_flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parses the same command line, so every rank gets here and
    // exits without entering a collective; only rank 0 prints.
    if (rank == 0) {
      const int code = app.exit(e);
      return code == 0 ? 0 : kExitUsage;
    }
    return e.get_exit_code() == 0 ? 0 : kExitUsage;
  }
  try {
    config.model.hidden = parse_hidden(hidden);
    // 0 is the internal "not given" default (node cores / ranks on the node);
    // given explicitly, the thread count must be positive.
    RF_CHECK(app.count("--threads") == 0 || config.threads > 0, "--threads: ", config.threads,
             " must be > 0; leave it out for the node's cores divided by its ranks");
    ringflow::apps::apply_ps_flags(app, config, ps_flags);
    rt::validate(config, comm.size());
  } catch (const ringflow::Error& e) {
    if (rank == 0) std::cerr << "trainer: error: " << e.what() << "\n";
    return kExitUsage;
  }
  if (config.mode == "ps") return ringflow::apps::run_ps(config, comm);
  const bool quiet = config.log_level == "error" || config.log_level == "warn";
  const bool debug = config.log_level == "debug";

  // Set-up is local to each rank (files, graph); the ranks then agree that
  // all of them succeeded before the first collective that matters.
  std::unique_ptr<rt::Trainer> trainer;
  std::unique_ptr<ringflow::apps::MetricsWriter> metrics;
  int ok = 1;
  try {
    if (rank == 0)
      metrics = std::make_unique<ringflow::apps::MetricsWriter>(
          config.metrics, config.resume, std::vector<std::string>{"allreduce_seconds"});
    trainer = std::make_unique<rt::Trainer>(config, comm);
  } catch (const ringflow::Error& e) {
    std::cerr << (comm.size() > 1 ? "rank " + std::to_string(rank) + ": "
                                  : std::string("trainer: error: "))
              << e.what() << "\n";
    ok = 0;
  }
  int all_ok = ok;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm.handle());
  if (!all_ok) return kExitFailure;

  if (rank == 0 && !quiet) {
    std::cout << "ringflow trainer: " << comm.size() << (comm.size() == 1 ? " rank" : " ranks")
              << " x " << trainer->threads() << (trainer->threads() == 1 ? " thread" : " threads")
              << ", " << trainer->reducer().num_buckets() << " gradient bucket(s), "
              << (comm.size() == 1     ? ""
                  : trainer->overlap() ? "overlapped with backward, "
                                       : "reduced after backward, ")
              << trainer->steps_per_epoch() << " steps per epoch\n# effective configuration\n"
              << rt::to_toml(config) << std::flush;
  }
  if (rank == 0 && !config.metrics.empty()) {
    std::ofstream cfg(config.metrics + ".config.toml");
    cfg << rt::to_toml(config);
  }
  if (debug)
    std::cerr << "[rank " << rank << "] local rank " << comm.local_rank() << "/"
              << comm.local_size() << ", " << trainer->threads() << " threads\n";

  try {
    // A live step counter when a person is watching. mpirun hands rank 0 a
    // pseudo-terminal for stdout even when its own output goes to a file, but
    // forwards stderr through a pipe: require both to be terminals.
    if (rank == 0 && !quiet && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO)) {
      auto last = std::chrono::steady_clock::now();
      trainer->set_progress([last](std::int64_t step, std::int64_t steps) mutable {
        const auto now = std::chrono::steady_clock::now();
        if (step != steps && now - last < std::chrono::milliseconds(100)) return;
        last = now;
        std::printf("\r  step %lld/%lld%s", static_cast<long long>(step),
                    static_cast<long long>(steps), step == steps ? "\r\033[K" : "");
        std::fflush(stdout);
      });
    }
    trainer->run([&](const rt::EpochMetrics& m) {
      if (rank != 0) return;
      if (metrics) metrics->write(m, {m.allreduce_seconds});
      if (quiet) return;
      char line[256];
      std::snprintf(
          line, sizeof line,
          "epoch %d  step %lld  train_loss %.4f  test_loss %.4f  test_acc %.2f%%  samples/s %.0f  "
          "elapsed %s  ETA %s\n",
          m.epoch, static_cast<long long>(m.steps), m.train_loss, m.test_loss,
          100.0 * m.test_accuracy, m.samples_per_second, fmt_seconds(m.elapsed_seconds).c_str(),
          fmt_seconds(m.eta_seconds).c_str());
      std::cout << line << std::flush;
    });
    if (!config.timeline.empty()) trainer->write_timeline(config.timeline);
    if (const int sig = trainer->stop_signal(); sig != 0) {
      if (rank == 0)
        ringflow::apps::print_stopped(sig, trainer->step(), trainer->last_checkpoint());
      return rt::kExitStopped;
    }
    const auto [loss, acc] = trainer->evaluate();
    if (rank == 0) {
      char line[160];
      std::snprintf(line, sizeof line,
                    "final test accuracy: %.2f%% (test loss %.4f)\nmodel checksum: %016llx\n",
                    100.0 * acc, loss, static_cast<unsigned long long>(trainer->variables_hash()));
      std::cout << line << std::flush;
    }
    ringflow::apps::print_allreduce_traffic(comm, trainer->step());
  } catch (const rt::AgreedError& e) {
    // Every rank raised this at the same point: no rank is inside a
    // collective, so exit cleanly instead of aborting the job.
    if (rank == 0) std::cerr << "trainer: error: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    // A failure mid-training may leave other ranks inside a collective: take
    // the whole job down rather than let them hang.
    rc::abort_job(comm, e.what(), "the job was stopped on every rank");
  }
  return 0;
}
