#include "ringflow/collectives/environment.h"

#include "ringflow/base/error.h"

namespace ringflow::collectives {

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "unknown MPI thread level";
  }
}

MpiEnvironment::MpiEnvironment(int required_level)
    : MpiEnvironment(nullptr, nullptr, required_level) {}

MpiEnvironment::MpiEnvironment(int* argc, char*** argv, int required_level) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  RF_CHECK_AS(CommError, !finalized,
              "MPI was already finalised in this process and cannot be initialised again — "
              "create one MpiEnvironment at the start of main() and keep it to the end");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    // Someone else (a test main, a host program) owns MPI: only check the level.
    MPI_Query_thread(&provided_level_);
  } else {
    const int rc = MPI_Init_thread(argc, argv, required_level, &provided_level_);
    RF_CHECK_AS(CommError, rc == MPI_SUCCESS, "MPI_Init_thread failed with code ", rc,
                " — check the MPI installation and the launcher (mpirun) environment");
    owns_mpi_ = true;
  }
  if (provided_level_ < required_level) {
    if (owns_mpi_) MPI_Finalize();
    owns_mpi_ = false;
    RF_THROW(CommError, "MPI provides thread level ", thread_level_name(provided_level_),
             " but ringflow needs ", thread_level_name(required_level),
             " (its communication thread calls MPI while other threads compute) — use an "
             "MPI library built with thread support");
  }
}

MpiEnvironment::~MpiEnvironment() {
  if (!owns_mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace ringflow::collectives
