#include "ringflow/train/control.h"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "ringflow/collectives/collectives.h"
#include "ringflow/train/timeline.h"

namespace ringflow::train {

namespace {

std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free flag");

void on_stop_signal(int sig) {
  g_stop_signal.store(sig, std::memory_order_relaxed);
}

// Message tags on the agreement's own communicator.
constexpr int kTagFlags = 1;
constexpr int kTagDecision = 2;

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
}

int stop_signal_received() {
  return g_stop_signal.load(std::memory_order_relaxed);
}

StallWatch::StallWatch(const collectives::Communicator& comm, double timeout_seconds)
    : comm_(comm), timeout_(timeout_seconds) {
  if (enabled()) thread_ = std::thread([this] { loop(); });
}

StallWatch::~StallWatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StallWatch::begin(Channel c, std::string what, double patience) {
  if (!enabled()) return;
  std::lock_guard<std::mutex> lock(mu_);
  since_ns_[c] = steady_now_ns();
  patience_[c] = patience;
  what_[c] = std::move(what);
}

void StallWatch::update(Channel c, std::string what) {
  if (!enabled()) return;
  std::lock_guard<std::mutex> lock(mu_);
  what_[c] = std::move(what);
}

void StallWatch::end(Channel c) {
  if (!enabled()) return;
  std::lock_guard<std::mutex> lock(mu_);
  since_ns_[c] = 0;
}

void StallWatch::loop() {
  const auto period = std::chrono::duration<double>(std::min(1.0, timeout_ / 10));
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, period, [&] { return stop_; })) {
    const std::int64_t now = steady_now_ns();
    for (int c = 0; c < 2; ++c) {
      if (since_ns_[c] == 0) continue;
      const double waited = static_cast<double>(now - since_ns_[c]) * 1e-9;
      if (waited < timeout_ * patience_[c]) continue;
      char secs[64];
      std::snprintf(secs, sizeof secs, "%.1f s (--stall-timeout %.1f)", waited, timeout_);
      // Aborting takes every rank down: the stalled one cannot be waited out.
      collectives::abort_job(comm_, "stalled: " + what_[c] + " has waited " + secs,
                             "a rank is hung, overloaded or dead; the job was aborted on every "
                             "rank (raise --stall-timeout if steps are legitimately that slow)");
    }
  }
}

StepAgreement::StepAgreement(const collectives::Communicator& comm, double checkpoint_seconds,
                             StallWatch* watch)
    : comm_(comm.size() > 1 ? collectives::Communicator(comm.handle())
                            : collectives::Communicator(MPI_COMM_SELF)),
      checkpoint_seconds_(checkpoint_seconds),
      watch_(watch),
      last_checkpoint_ns_(steady_now_ns()) {}

void StepAgreement::checkpoint_written() {
  last_checkpoint_ns_ = steady_now_ns();
}

StepDecision StepAgreement::agree(std::int64_t step, const StepFlags& mine) {
  const int n = comm_.size();
  const int me = comm_.rank();
  // flags on the wire: {signal, nonfinite loss}
  const int local[2] = {stop_signal_received(), mine.nonfinite_loss ? 1 : 0};
  int decision[3] = {0, 0, -1};  // {stop signal, checkpoint due, nonfinite rank}
  const std::string at = " at step " + std::to_string(step + 1);
  if (me == 0) {
    std::vector<int> flags(2 * static_cast<std::size_t>(n), 0);
    flags[0] = local[0];
    flags[1] = local[1];
    std::vector<MPI_Request> reqs(static_cast<std::size_t>(n - 1), MPI_REQUEST_NULL);
    for (int r = 1; r < n; ++r)
      RF_MPI_CHECK(MPI_Irecv(&flags[2 * static_cast<std::size_t>(r)], 2, MPI_INT, r, kTagFlags,
                             comm_.handle(), &reqs[static_cast<std::size_t>(r - 1)]));
    if (n > 1 && watch_ != nullptr && watch_->enabled()) {
      // Wait for ranks as they come, keeping the watchdog's list of the
      // missing ones current.
      std::vector<char> arrived(static_cast<std::size_t>(n), 0);
      arrived[0] = 1;
      int left = n - 1;
      std::vector<int> idx(static_cast<std::size_t>(n));
      auto describe = [&] {
        std::string missing;
        for (int r = 0; r < n; ++r)
          if (!arrived[static_cast<std::size_t>(r)])
            missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        return "rank 0's step agreement" + at + " (waiting for rank(s) " + missing + ")";
      };
      watch_->begin(StallWatch::kMain, describe());
      while (left > 0) {
        int got = 0;
        RF_MPI_CHECK(MPI_Waitsome(n - 1, reqs.data(), &got, idx.data(), MPI_STATUSES_IGNORE));
        if (got == MPI_UNDEFINED) break;
        for (int k = 0; k < got; ++k)
          arrived[static_cast<std::size_t>(idx[static_cast<std::size_t>(k)] + 1)] = 1;
        left -= got;
        if (left > 0) watch_->update(StallWatch::kMain, describe());
      }
      watch_->end(StallWatch::kMain);
    } else if (n > 1) {
      RF_MPI_CHECK(MPI_Waitall(n - 1, reqs.data(), MPI_STATUSES_IGNORE));
    }
    for (int r = 0; r < n; ++r) {
      decision[0] = std::max(decision[0], flags[2 * static_cast<std::size_t>(r)]);
      if (flags[2 * static_cast<std::size_t>(r) + 1] != 0 && decision[2] < 0) decision[2] = r;
    }
    decision[1] =
        checkpoint_seconds_ > 0 &&
        static_cast<double>(steady_now_ns() - last_checkpoint_ns_) * 1e-9 >= checkpoint_seconds_;
    for (int r = 1; r < n; ++r)
      RF_MPI_CHECK(MPI_Send(decision, 3, MPI_INT, r, kTagDecision, comm_.handle()));
  } else {
    MPI_Request reqs[2];
    RF_MPI_CHECK(MPI_Isend(local, 2, MPI_INT, 0, kTagFlags, comm_.handle(), &reqs[0]));
    RF_MPI_CHECK(MPI_Irecv(decision, 3, MPI_INT, 0, kTagDecision, comm_.handle(), &reqs[1]));
    if (watch_ != nullptr && watch_->enabled())
      watch_->begin(StallWatch::kMain, "the step agreement" + at + " (waiting for rank 0)", 2.0);
    RF_MPI_CHECK(MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE));
    if (watch_ != nullptr) watch_->end(StallWatch::kMain);
  }
  return {.stop_signal = decision[0],
          .checkpoint_due = decision[1] != 0,
          .nonfinite_rank = decision[2]};
}

}  // namespace ringflow::train
