// Run control: stop signals, the per-step agreement between ranks, and the
// stall watchdog.
//
// A batch system asks a job to stop with SIGTERM (cancel, time limit) or an
// early-warning signal (Slurm's --signal=USR1@T). The handler only records the
// signal. After every step the ranks agree, through rank 0, on what the signals
// and checks of all of them mean for that step: stop (and checkpoint), write a
// time-based checkpoint, or fail on a non-finite loss. Every rank then does
// the same thing at the same step, so no rank is ever left inside a
// collective that the others have abandoned.
//
// The stall watchdog is Horovod's stall check: a thread that watches the
// waits that need other ranks (the step agreement, each gradient bucket's
// allreduce) and, when one has lasted longer than --stall-timeout seconds,
// says which ranks it is waiting for, where it can tell, and aborts the job.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "ringflow/collectives/communicator.h"

namespace ringflow::train {

// The trainer's exit code after a stop signal: it finished the step it was in,
// wrote a checkpoint (with --checkpoint-dir) and exited so that a batch script
// can requeue it (EX_TEMPFAIL from sysexits.h: "try again later").
inline constexpr int kExitStopped = 75;

// Installs handlers for SIGTERM and SIGUSR1 that record the signal.
void install_stop_signal_handlers();
// The stop signal received so far (0: none).
int stop_signal_received();

// Watches waits on other ranks. One wait per channel at a time; channels are
// the main thread's and the communication thread's.
class StallWatch {
 public:
  enum Channel { kMain = 0, kComm = 1 };
  // timeout_seconds <= 0 disables the watchdog (begin/end cost nothing).
  StallWatch(const collectives::Communicator& comm, double timeout_seconds);
  ~StallWatch();
  StallWatch(const StallWatch&) = delete;
  StallWatch& operator=(const StallWatch&) = delete;

  bool enabled() const { return timeout_ > 0; }
  // A wait begins; `what` says what is awaited, e.g. "allreduce of gradient
  // bucket 2 at step 17 (waiting for rank 1)". patience scales the timeout
  // for this wait: a rank that can only say "waiting for rank 0" waits
  // longer, so that rank 0, which can name the missing ranks, reports first.
  void begin(Channel c, std::string what, double patience = 1.0);
  // Refines the description of the running wait (e.g. fewer ranks missing).
  void update(Channel c, std::string what);
  void end(Channel c);

 private:
  void loop();

  const collectives::Communicator& comm_;
  double timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::int64_t since_ns_[2] = {0, 0};  // 0: not waiting
  double patience_[2] = {1.0, 1.0};
  std::string what_[2];
  std::thread thread_;
};

struct StepFlags {
  bool nonfinite_loss = false;  // this rank's loss was NaN or Inf
};

struct StepDecision {
  int stop_signal = 0;          // stop after this step (the signal's number)
  bool checkpoint_due = false;  // --checkpoint-every in seconds has elapsed on rank 0
  int nonfinite_rank = -1;      // the lowest rank whose loss was not finite
};

// The per-step agreement, on its own duplicate communicator so its messages
// never mix with the gradients'. Every rank sends its flags to rank 0, which
// combines them with its own clock and sends the decision back.
class StepAgreement {
 public:
  StepAgreement(const collectives::Communicator& comm, double checkpoint_seconds,
                StallWatch* watch);
  // Collective: every rank calls it after every step.
  StepDecision agree(std::int64_t step, const StepFlags& mine);
  // Restarts the checkpoint clock (a checkpoint was just written).
  void checkpoint_written();

 private:
  collectives::Communicator comm_;
  double checkpoint_seconds_;
  StallWatch* watch_;
  std::int64_t last_checkpoint_ns_;
};

}  // namespace ringflow::train
