// pingpong_bench: the alpha-beta model of this machine's MPI, as TSV.
//
//   mpirun -np 2 pingpong_bench [--min-bytes 8] [--max-bytes 64M] [--iters 20]
//
// Rank 0 sends a message of b bytes to rank 1, which sends it back; one-way
// time = half the median round trip. A message of b bytes is modelled as
// t(b) = alpha + beta * b: alpha (latency) is the one-way time of the
// smallest message, beta (seconds per byte, 1 / bandwidth) the slope from it
// to the largest. The last line, "# alpha_us=... beta_ns_per_byte=...
// bandwidth_GBps=...", is what jobs/compare_modes.sh projects with. Measures
// only: it never fails on time, only on a corrupted message.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ringflow/collectives/collectives.h"

namespace rc = ringflow::collectives;

namespace {

std::size_t parse_bytes(const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  const std::string suffix = end;
  double scale = 1;
  if (suffix == "K") scale = 1 << 10;
  if (suffix == "M") scale = 1 << 20;
  RF_CHECK(value > 0 && (suffix.empty() || scale > 1), "cannot parse '", text,
           "' as a size (e.g. 8, 4K, 64M)");
  return static_cast<std::size_t>(value * scale);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  rc::MpiEnvironment env(&argc, &argv);
  rc::Communicator comm;
  std::size_t min_bytes = 8, max_bytes = std::size_t{64} << 20;
  int iters = 20;
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string arg = argv[i], value = argv[i + 1];
      if (arg == "--min-bytes") {
        min_bytes = parse_bytes(value);
      } else if (arg == "--max-bytes") {
        max_bytes = parse_bytes(value);
      } else if (arg == "--iters") {
        iters = std::max(1, std::atoi(value.c_str()));
      } else {
        RF_THROW(InvalidArgument, "unknown flag ", arg, "; use --min-bytes, --max-bytes, --iters");
      }
    }
    RF_CHECK(comm.size() >= 2, "pingpong_bench needs 2 ranks (mpirun -np 2)");
    RF_CHECK(min_bytes <= max_bytes, "--min-bytes must be <= --max-bytes");
  } catch (const ringflow::Error& e) {
    if (comm.rank() == 0) std::fprintf(stderr, "pingpong_bench: %s\n", e.what());
    return 2;
  }
  const int rank = comm.rank();
  std::vector<char> buf(max_bytes);
  double alpha = 0, t_max = 0, b_max = 0;
  if (rank == 0) std::printf("bytes\tone_way_us\tbandwidth_GBps\n");
  for (std::size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    std::vector<double> times;
    for (int it = -2; it < iters; ++it) {  // two warm-up round trips
      if (rank == 0)
        std::fill(buf.begin(), buf.begin() + static_cast<long>(bytes), char(it & 0x7f));
      const double t0 = MPI_Wtime();
      const int n = static_cast<int>(bytes);
      if (rank == 0) {
        RF_MPI_CHECK(MPI_Send(buf.data(), n, MPI_CHAR, 1, 7, comm.handle()));
        RF_MPI_CHECK(MPI_Recv(buf.data(), n, MPI_CHAR, 1, 7, comm.handle(), MPI_STATUS_IGNORE));
        if (buf[bytes - 1] != char(it & 0x7f)) {
          std::fprintf(stderr, "pingpong_bench: corrupted message of %zu bytes\n", bytes);
          MPI_Abort(MPI_COMM_WORLD, 1);
        }
      } else if (rank == 1) {
        RF_MPI_CHECK(MPI_Recv(buf.data(), n, MPI_CHAR, 0, 7, comm.handle(), MPI_STATUS_IGNORE));
        RF_MPI_CHECK(MPI_Send(buf.data(), n, MPI_CHAR, 0, 7, comm.handle()));
      }
      if (it >= 0) times.push_back((MPI_Wtime() - t0) / 2);
    }
    if (rank != 0) continue;
    const double t = median(times);
    if (bytes == min_bytes) alpha = t;
    t_max = t;
    b_max = static_cast<double>(bytes);
    std::printf("%zu\t%.3f\t%.3f\n", bytes, t * 1e6, static_cast<double>(bytes) / t * 1e-9);
  }
  if (rank == 0) {
    const double beta = b_max > static_cast<double>(min_bytes)
                            ? (t_max - alpha) / (b_max - static_cast<double>(min_bytes))
                            : t_max / b_max;
    std::printf("# alpha_us=%.3f beta_ns_per_byte=%.5f bandwidth_GBps=%.3f\n", alpha * 1e6,
                beta * 1e9, 1e-9 / beta);
  }
  rc::barrier(comm);
  return 0;
}
