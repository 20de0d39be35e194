// Helpers shared by the MPI tests: the world's rank and size, and a
// temporary file that rank 0 writes and every rank reads.
#pragma once

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace ringflow::mpi_test {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// Collective: rank 0's temporary path rf_<tag>_<pid>.h5, on every rank.
inline std::string shared_temp_path(const char* tag) {
  char name[256] = {0};
  if (world_rank() == 0)
    std::snprintf(name, sizeof name, "%s/rf_%s_%d.h5",
                  std::filesystem::temp_directory_path().c_str(), tag, static_cast<int>(getpid()));
  MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD);
  return name;
}

// Collective: rank 0 removes the file once every rank is done with it.
inline void remove_shared(const std::string& path) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) std::filesystem::remove(path);
}

}  // namespace ringflow::mpi_test
