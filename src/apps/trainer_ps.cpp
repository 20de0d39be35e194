#include "trainer_ps.h"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "metrics_writer.h"
#include "ringflow/train/control.h"
#include "ringflow/train/ps.h"

namespace ringflow::apps {

namespace rc = collectives;
namespace rt = train;

namespace {

constexpr int kExitFailure = 1;

}  // namespace

void add_ps_flags(CLI::App& app, rt::TrainConfig& c, PsFlags& flags) {
  auto* ps = app.add_option_group("Parameter server");
  ps->add_option("--mode", c.mode,
                 "allreduce: every rank computes and averages gradients; ps: ranks 0..P-1 are "
                 "parameter servers, the rest workers")
      ->capture_default_str();
  ps->add_option("--num-ps", c.num_ps, "ps: the number of parameter servers P (1 <= P < N)");
  ps->add_flag("--ps-sync", flags.sync,
               "ps: servers average every worker's gradient of step t, then serve t+1 (default)");
  ps->add_flag("--ps-async", flags.async,
               "ps: servers apply each gradient as it arrives; staleness is reported");
  ps->add_option("--max-staleness", c.max_staleness,
                 "ps async: a server delays a worker's pull so no gradient is applied more than "
                 "k versions late");
}

void apply_ps_flags(const CLI::App& app, rt::TrainConfig& c, const PsFlags& flags) {
  RF_CHECK(!(flags.sync && flags.async), "--ps-sync and --ps-async exclude each other");
  if (flags.sync) c.ps_update = "sync";
  if (flags.async) c.ps_update = "async";
  RF_CHECK(app.count("--max-staleness") == 0 || c.max_staleness >= 0,
           "--max-staleness: ", c.max_staleness, " must be >= 0 (leave it out for no bound)");
}

void print_stopped(int sig, std::int64_t step, const std::string& checkpoint) {
  std::cout << "stopped by " << (sig == SIGTERM ? "SIGTERM" : "SIGUSR1") << " after step " << step
            << "; "
            << (checkpoint.empty() ? std::string("no --checkpoint-dir, nothing saved")
                                   : "checkpoint '" + checkpoint + "' written")
            << "; exit " << rt::kExitStopped << " (run again with --resume to continue)\n"
            << std::flush;
}

void print_allreduce_traffic(rc::Communicator& comm, std::int64_t steps) {
  const double per = static_cast<double>(std::max<std::int64_t>(steps, 1));
  double v[2] = {static_cast<double>(comm.bytes_sent()) / per,
                 static_cast<double>(comm.bytes_received()) / per};
  RF_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, comm.handle()));
  if (comm.rank() != 0) return;
  std::printf("traffic per rank per step: sent %.0f B, received %.0f B (largest over %d ranks)\n",
              v[0], v[1], comm.size());
  std::fflush(stdout);
}

int run_ps(const rt::TrainConfig& config, rc::Communicator& comm) {
  const int rank = comm.rank();
  const bool quiet = config.log_level == "error" || config.log_level == "warn";
  std::unique_ptr<rt::PsTrainer> trainer;
  std::unique_ptr<MetricsWriter> metrics;
  int ok = 1;
  try {
    if (rank == 0)
      metrics = std::make_unique<MetricsWriter>(
          config.metrics, config.resume,
          std::vector<std::string>{"staleness_mean", "staleness_max"});
    trainer = std::make_unique<rt::PsTrainer>(config, comm);
  } catch (const Error& e) {
    std::cerr << "rank " << rank << ": " << e.what() << "\n";
    ok = 0;
  }
  int all_ok = ok;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm.handle());
  if (!all_ok) return kExitFailure;

  const bool async = config.ps_update == "async";
  if (rank == 0) {
    // The role map in a TF cluster's words (job:task), printed even when quiet.
    for (int r = 0; r < comm.size(); ++r)
      std::cout << "rank " << r << " = " << trainer->roles().name(r) << "\n";
    if (!quiet) {
      const auto& l = trainer->layout();
      std::cout << "ringflow trainer (parameter servers, "
                << (async ? (config.max_staleness >= 0
                                 ? "async, max staleness " + std::to_string(config.max_staleness)
                                 : std::string("async"))
                          : std::string("sync"))
                << "): " << trainer->roles().num_servers() << " ps x "
                << trainer->roles().num_workers() << " workers, " << trainer->threads()
                << " thread(s) each, " << l.total() << " parameters in " << l.num_shards()
                << " shard(s) of " << l.shard_size(0) << ", " << trainer->steps_per_epoch()
                << " steps per epoch\n# effective configuration\n"
                << rt::to_toml(config);
    }
    std::cout << std::flush;
  }
  if (rank == 0 && !config.metrics.empty()) {
    std::ofstream cfg(config.metrics + ".config.toml");
    cfg << rt::to_toml(config);
  }

  try {
    trainer->start();
  } catch (const rt::AgreedError& e) {
    if (rank == 0) std::cerr << "trainer: error: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    // Other ranks may be inside the resume broadcast: take the job down.
    rc::abort_job(comm, e.what(), "the job was stopped on every rank");
  }
  try {
    trainer->run([&](const rt::EpochMetrics& m, const rt::PsEpochExtra& x) {
      if (rank != 0) return;
      if (metrics) metrics->write(m, {x.staleness_mean, static_cast<double>(x.staleness_max)});
      if (quiet) return;
      char line[320];
      std::snprintf(line, sizeof line,
                    "epoch %d  step %lld  train_loss %.4f  test_loss %.4f  test_acc %.2f%%  "
                    "samples/s %.0f  elapsed %.1fs",
                    m.epoch, static_cast<long long>(m.steps), m.train_loss, m.test_loss,
                    100.0 * m.test_accuracy, m.samples_per_second, m.elapsed_seconds);
      std::string out = line;
      if (async) {
        std::snprintf(line, sizeof line, "  staleness mean %.2f max %lld", x.staleness_mean,
                      static_cast<long long>(x.staleness_max));
        out += line;
      }
      std::cout << out << "\n" << std::flush;
    });
    if (const auto [sig, step] = trainer->agree_stop(); sig != 0) {
      if (rank == 0) print_stopped(sig, step, trainer->last_checkpoint());
      return rt::kExitStopped;
    }
    const auto [loss, acc] = trainer->evaluate();
    const rt::PsSummary s = trainer->summarize();
    if (rank == 0) {
      std::cout << std::flush;
      std::printf("final test accuracy: %.2f%% (test loss %.4f)\n", 100.0 * acc, loss);
      if (!trainer->last_checkpoint().empty())
        std::printf("last checkpoint: '%s'\n", trainer->last_checkpoint().c_str());
      if (async)
        std::printf("staleness: mean %.2f, max %lld versions over %lld gradients\n",
                    s.staleness_mean, static_cast<long long>(s.staleness_max),
                    static_cast<long long>(s.gradients));
      std::printf(
          "traffic per rank per step: ps sent %.0f B, received %.0f B; worker sent %.0f B, "
          "received %.0f B (largest over each role)\n",
          s.server_bytes_sent, s.server_bytes_received, s.worker_bytes_sent,
          s.worker_bytes_received);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    rc::abort_job(comm, e.what(), "the job was stopped on every rank");
  }
  return 0;
}

}  // namespace ringflow::apps
