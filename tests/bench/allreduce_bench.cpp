// allreduce_bench: the ring over shared memory, the ring over MPI point-to-point,
// MPI_Allreduce and auto, side by side, as TSV.
//
//   mpirun -np N allreduce_bench [--min-bytes 4K] [--max-bytes 64M] [--iters 20]
//                                [--warmup 3] [--segment-bytes B] [--op sum|average]
//
// For each buffer size (powers of two from min to max): the median over iterations
// of the time per call (the slowest rank's time of each iteration), algbw = bytes /
// time and busbw = algbw * 2(N-1)/N (the nccl-tests definition: the bandwidth each
// rank's link must sustain, comparable across N). Before the table, one line with
// this machine's memcpy bandwidth (every rank copying at once) as the physical
// reference; after each size, busbw ratios against mpi. ring_shm forces the
// shared-memory transport and ring_p2p the point-to-point one (CollectiveOptions::
// ring_transport); auto is what the trainer gets: the ring on its automatic transport
// or MPI_Allreduce, per choose_algorithm. When the ranks span nodes there is no shm
// column value (nan). Measures only: it never fails on time, only on a wrong result.
#include <mpi.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ringflow/collectives/collectives.h"

namespace rc = ringflow::collectives;

namespace {

struct Options {
  std::size_t min_bytes = std::size_t{4} << 10;
  std::size_t max_bytes = std::size_t{64} << 20;
  int iters = 20;
  int warmup = 3;
  std::size_t segment_bytes = 0;  // 0: the communicator's (default or env)
  rc::ReduceOp op = rc::ReduceOp::sum;
};

// "4096", "4K", "64M", "1G" (binary units).
std::size_t parse_bytes(const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  double scale = 1;
  const std::string_view suffix = end;
  if (suffix == "K" || suffix == "k")
    scale = 1 << 10;
  else if (suffix == "M" || suffix == "m")
    scale = 1 << 20;
  else if (suffix == "G" || suffix == "g")
    scale = 1 << 30;
  else
    RF_CHECK(suffix.empty(), "cannot parse '", text, "' as a size (e.g. 4096, 4K, 64M)");
  RF_CHECK(value >= 0, "size '", text, "' is negative");
  return static_cast<std::size_t>(value * scale);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: mpirun -np N allreduce_bench [--min-bytes 4K] [--max-bytes 64M] "
          "[--iters 20] [--warmup 3] [--segment-bytes B] [--op sum|average]\n");
      std::exit(0);
    }
    RF_CHECK(i + 1 < argc, "option ", arg, " needs a value (see --help)");
    const std::string value = argv[++i];
    if (arg == "--min-bytes")
      o.min_bytes = parse_bytes(value);
    else if (arg == "--max-bytes")
      o.max_bytes = parse_bytes(value);
    else if (arg == "--iters")
      o.iters = std::stoi(value);
    else if (arg == "--warmup")
      o.warmup = std::stoi(value);
    else if (arg == "--segment-bytes")
      o.segment_bytes = parse_bytes(value);
    else if (arg == "--op")
      o.op = rc::parse_reduce_op(value);
    else
      RF_THROW(InvalidArgument, "unknown option ", arg, " (see --help)");
  }
  RF_CHECK(o.min_bytes >= sizeof(float) && o.min_bytes <= o.max_bytes,
           "need 4 <= --min-bytes <= --max-bytes");
  RF_CHECK(o.iters >= 1 && o.warmup >= 0, "need --iters >= 1 and --warmup >= 0");
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// The slowest rank's time, so every rank agrees on the sample.
double max_over_ranks(rc::Communicator& comm, double seconds) {
  double slowest = 0;
  RF_MPI_CHECK(MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm.handle()));
  return slowest;
}

// The columns: an algorithm on a ring transport.
struct Variant {
  const char* name;
  rc::Algorithm algorithm;
  rc::RingTransport transport;
};
constexpr Variant kVariants[] = {
    {"ring_shm", rc::Algorithm::ring, rc::RingTransport::shm},
    {"ring_p2p", rc::Algorithm::ring, rc::RingTransport::p2p},
    {"mpi", rc::Algorithm::mpi, rc::RingTransport::automatic},
    {"auto", rc::Algorithm::automatic, rc::RingTransport::automatic},
};
constexpr int kNumVariants = 4;
constexpr int kMpiColumn = 2;

// Median seconds per call of each variant at one size (NaN for a variant this job
// cannot run). The variants take turns within every iteration, in a shuffled
// order, so background noise and each other's after-effects hit them alike. The buffer is refilled
// before every call (untimed), as a fresh gradient buffer would be; the first result is checked so
// the benchmark cannot silently measure a broken algorithm.
std::array<double, kNumVariants> time_allreduce(rc::Communicator& comm, std::vector<float>& buffer,
                                                std::size_t count, const Options& o) {
  std::span<float> data(buffer.data(), count);
  const float expected = o.op == rc::ReduceOp::sum ? static_cast<float>(comm.size()) : 1.0f;
  const bool one_node = comm.local_size() == comm.size();
  std::array<std::vector<double>, kNumVariants> samples;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    // A fresh order every iteration (the same on every rank: a seeded
    // shuffle), so no variant always runs right after another one: MPI's large
    // calls leave caches and page tables cold for whichever comes next.
    std::array<int, kNumVariants> order{};
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<unsigned>(i)));
    for (const int a : order) {
      const Variant& v = kVariants[a];
      if (v.transport == rc::RingTransport::shm && !one_node) continue;
      comm.set_ring_transport(v.transport);
      std::fill(data.begin(), data.end(), 1.0f);
      rc::barrier(comm);
      const double start = MPI_Wtime();
      rc::allreduce(comm, data, o.op, v.algorithm);
      const double seconds = max_over_ranks(comm, MPI_Wtime() - start);
      if (i == 0 &&
          !std::all_of(data.begin(), data.end(), [&](float x) { return x == expected; })) {
        rc::abort_job(comm,
                      "allreduce_bench: wrong result from " + std::string(v.name) + " at " +
                          std::to_string(count * sizeof(float)) + " bytes",
                      "run the collectives_test MPI tests to find the bug");
      }
      if (i >= o.warmup) samples[a].push_back(seconds);
    }
  }
  comm.set_ring_transport(rc::RingTransport::automatic);
  std::array<double, kNumVariants> medians{};
  for (int a = 0; a < kNumVariants; ++a) {
    medians[a] = samples[a].empty() ? std::numeric_limits<double>::quiet_NaN() : median(samples[a]);
  }
  return medians;
}

// One rank's memcpy bandwidth while every rank copies at once (GB/s of bytes copied).
double memcpy_gbps(rc::Communicator& comm, std::size_t bytes, const Options& o,
                   double* seconds_out) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  std::vector<double> samples;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    rc::barrier(comm);
    const double start = MPI_Wtime();
    std::memcpy(dst.data(), src.data(), bytes);
    const double seconds = max_over_ranks(comm, MPI_Wtime() - start);
    if (i >= o.warmup) samples.push_back(seconds);
  }
  *seconds_out = median(samples);
  return static_cast<double>(bytes) / *seconds_out / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  rc::MpiEnvironment env(&argc, &argv);
  rc::Communicator comm;
  try {
    const Options o = parse_args(argc, argv);
    if (o.segment_bytes != 0) comm.set_max_segment_bytes(o.segment_bytes);
    comm.set_check_collectives(false);  // measure the release configuration
    const int n = comm.size();
    const bool root = comm.rank() == 0;
    const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 1.0;
    if (root) {
      std::printf(
          "# allreduce_bench ranks=%d local_ranks=%d op=%s segment_bytes=%zu "
          "auto_ring_transport=%s auto_ring_min_bytes=%zu (p2p) %zu (shm) "
          "auto_ring_max_bytes=%zu iters=%d warmup=%d\n",
          n, comm.local_size(), std::string(rc::to_string(o.op)).c_str(),
          comm.options().max_segment_bytes,
          std::string(rc::to_string(rc::choose_ring_transport(comm))).c_str(),
          comm.options().ring_min_bytes, comm.options().shm_ring_min_bytes,
          comm.options().ring_max_bytes, o.iters, o.warmup);
      std::printf(
          "# time: median us per call (slowest rank); algbw, busbw: GB/s; "
          "busbw = algbw * 2(N-1)/N\n");
    }
    double copy_seconds = 0;
    const double copy_gbps = memcpy_gbps(comm, o.max_bytes, o, &copy_seconds);
    if (root) {
      std::printf("memcpy\t%zu\t%.1f\t%.2f\t# bytes, us, GB/s: every rank copying at once\n",
                  o.max_bytes, copy_seconds * 1e6, copy_gbps);
      std::printf("bytes");
      for (const Variant& v : kVariants)
        std::printf("\t%s_us\t%s_algbw\t%s_busbw", v.name, v.name, v.name);
      std::printf("\tauto_pick");
      for (const Variant& v : kVariants) {
        if (v.algorithm != rc::Algorithm::mpi) std::printf("\t%s/mpi", v.name);
      }
      std::printf("\n");
    }
    std::vector<float> buffer(o.max_bytes / sizeof(float));
    for (std::size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
      const std::size_t count = bytes / sizeof(float);
      const std::array<double, kNumVariants> seconds = time_allreduce(comm, buffer, count, o);
      if (!root) continue;
      std::printf("%zu", count * sizeof(float));
      for (double s : seconds) {
        const double algbw = static_cast<double>(count * sizeof(float)) / s / 1e9;
        std::printf("\t%.1f\t%.2f\t%.2f", s * 1e6, algbw, algbw * bus_factor);
      }
      const rc::Algorithm pick = rc::choose_algorithm(comm, count * sizeof(float));
      const std::string pick_name =
          pick == rc::Algorithm::ring
              ? "ring_" + std::string(rc::to_string(rc::choose_ring_transport(comm)))
              : std::string(rc::to_string(pick));
      std::printf("\t%s", pick_name.c_str());
      for (int a = 0; a < kNumVariants; ++a) {
        // Same bytes, so the busbw ratio is the inverse time ratio.
        if (kVariants[a].algorithm != rc::Algorithm::mpi)
          std::printf("\t%.2f", seconds[kMpiColumn] / seconds[a]);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  } catch (const ringflow::Error& e) {
    rc::abort_job(comm, e.describe(), "see allreduce_bench --help");
  }
  return 0;
}
