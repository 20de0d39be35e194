// Probe for the fatal-error invariant: the last rank calls abort_job while the
// others wait in a barrier that would otherwise never complete. CTest checks the
// message format and that the job exits non-zero (collectives.cmake).
#include <cstdio>

#include "ringflow/collectives/collectives.h"

int main(int argc, char** argv) {
  using namespace ringflow::collectives;
  MpiEnvironment env(&argc, &argv);
  Communicator comm;
  if (comm.rank() == comm.size() - 1) {
    abort_job(comm, "probe failure", "this abort is expected by the test");
  }
  barrier(comm);  // the other ranks would hang here without MPI_Abort
  std::printf("rank %d: barrier completed, abort_job did not end the job\n", comm.rank());
  return 0;
}
