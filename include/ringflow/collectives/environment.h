// RAII ownership of the MPI library for one process.
#pragma once

#include <mpi.h>

namespace ringflow::collectives {

// Initialises MPI with MPI_THREAD_SERIALIZED (the trainer's communication thread
// calls MPI while other threads run, but only one thread calls MPI at a time) and
// finalises it on destruction. If MPI is already initialised (a test main, a host
// program) it only checks the thread level and leaves finalisation to its owner.
// Works without a launcher: a program started without mpirun becomes a one-rank
// job (an MPI "singleton").
//
// Create it first in main() and destroy it last: every Communicator must be gone
// before it is destroyed. Throws CommError if MPI cannot provide the thread level.
class MpiEnvironment {
 public:
  MpiEnvironment(int* argc, char*** argv, int required_level = MPI_THREAD_SERIALIZED);
  // Same, without forwarding the command line to MPI.
  explicit MpiEnvironment(int required_level = MPI_THREAD_SERIALIZED);
  ~MpiEnvironment();

  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  // True if this object called MPI_Init_thread (and so will call MPI_Finalize).
  bool owns_mpi() const { return owns_mpi_; }
  // The thread level MPI provides (>= the required level).
  int provided_level() const { return provided_level_; }

 private:
  bool owns_mpi_ = false;
  int provided_level_ = MPI_THREAD_SINGLE;
};

// "MPI_THREAD_SERIALIZED" etc., for messages.
const char* thread_level_name(int level);

}  // namespace ringflow::collectives
