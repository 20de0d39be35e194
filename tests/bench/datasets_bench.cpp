// Benchmarks of ringflow::datasets, printed as TSV (they measure; they never
// fail on time):
//   import       Fashion-MNIST IDX (.gz) -> HDF5, wall time
//   shard_read   load_shard of the train split at 1 and 2 ranks, strided and
//                contiguous; the ranks are forked processes that load their
//                shards at the same time, as under mpirun. MB counts the bytes
//                of x and y as stored in the file (the whole split, over all
//                ranks); mb_per_s = MB / wall time of the slowest rank. The
//                page cache is warm (the file was just written).
//   batches      BatchIterator::next at global batch 256 on one rank, shuffled
// Usage: datasets_bench [--quick] [--fmnist DIR] [--reps N]
//   --quick   a small synthetic IDX set instead of Fashion-MNIST (smoke test)
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../unit/datasets_files.h"
#include "ringflow/base/error.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/datasets/convert.h"
#include "ringflow/datasets/idx.h"
#include "ringflow/datasets/shard.h"

namespace rd = ringflow::datasets;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void row(const char* bench, const std::string& dataset, int ranks, const std::string& mode,
         int64_t rows, double mb, double seconds) {
  std::printf("%s\t%s\t%d\t%s\t%lld\t%.2f\t%.4f\t%.1f\n", bench, dataset.c_str(), ranks,
              mode.c_str(), static_cast<long long>(rows), mb, seconds,
              seconds > 0 ? mb / seconds : 0.0);
  std::fflush(stdout);
}

// Loads the shards of `ranks` ranks in as many forked processes at once and
// returns the wall time until the last one finished (-1 on failure).
double timed_parallel_load(const std::string& path, int ranks, rd::ShardMode mode) {
  std::vector<pid_t> kids;
  const double t0 = now_s();
  for (int r = 0; r < ranks; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      try {
        const rd::Shard s = rd::load_shard(path, "train", r, ranks, mode);
        _exit(s.num_rows() > 0 ? 0 : 3);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        _exit(4);
      }
    }
    if (pid < 0) return -1;
    kids.push_back(pid);
  }
  bool ok = true;
  for (const pid_t pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  const double t = now_s() - t0;
  return ok ? t : -1;
}

// A synthetic MNIST-like IDX directory: n train and n/6 test 28x28 images.
void write_quick_idx(const std::string& dir, int64_t n) {
  auto images = [](int64_t rows) {
    std::vector<uint8_t> v(static_cast<size_t>(rows * 784));
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
    return v;
  };
  auto labels = [](int64_t rows) {
    std::vector<uint8_t> v(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) v[i] = static_cast<uint8_t>(i % 10);
    return v;
  };
  const int64_t t = std::max<int64_t>(n / 6, 2);
  const std::vector<int64_t> a = {n, 28, 28}, b = {n}, c = {t, 28, 28}, d = {t};
  rd::write_idx(dir + "/train-images-idx3-ubyte.gz", a, images(n), true);
  rd::write_idx(dir + "/train-labels-idx1-ubyte.gz", b, labels(n), true);
  rd::write_idx(dir + "/t10k-images-idx3-ubyte.gz", c, images(t), true);
  rd::write_idx(dir + "/t10k-labels-idx1-ubyte.gz", d, labels(t), true);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 3;
  std::string fmnist = "/usr/share/datasets/fashion-mnist";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--fmnist") == 0 && i + 1 < argc) {
      fmnist = argv[++i];
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--fmnist DIR] [--reps N]\n", argv[0]);
      return 2;
    }
  }
  try {
    rftest::TempDir tmp;
    std::string src = fmnist, name = "fashion-mnist";
    if (quick) {
      src = tmp.file("idx");
      std::filesystem::create_directories(src);
      write_quick_idx(src, 3000);
      name = "synthetic-3000";
      reps = 1;
    } else if (!std::filesystem::is_directory(fmnist)) {
      std::fprintf(stderr, "%s missing: install dataset-fashion-mnist or pass --quick\n",
                   fmnist.c_str());
      return 1;
    }
    std::printf("bench\tdataset\tranks\tmode\trows\tmb\tseconds\tmb_per_s\n");

    const std::string h5 = tmp.file("data.h5");
    double best = 1e30;
    rd::ImportResult imported;
    for (int k = 0; k < reps; ++k) {
      const double t0 = now_s();
      imported = rd::import_idx(rd::find_idx_files(src), h5, {});
      best = std::min(best, now_s() - t0);
    }
    const int64_t row_size = imported.feature_shape[0] * imported.feature_shape[1];
    const int64_t rows = imported.train_rows;
    // Bytes as stored: uint8 x and int32 y of both splits for import, train for reads.
    const double import_mb =
        static_cast<double>((rows + imported.test_rows) * (row_size + 4)) / 1e6;
    row("import", name, 1, "-", rows + imported.test_rows, import_mb, best);

    const double train_mb = static_cast<double>(rows * (row_size + 4)) / 1e6;
    for (const rd::ShardMode mode : {rd::ShardMode::kStrided, rd::ShardMode::kContiguous}) {
      for (const int ranks : {1, 2}) {
        best = 1e30;
        for (int k = 0; k < reps; ++k) best = std::min(best, timed_parallel_load(h5, ranks, mode));
        if (best < 0) {
          std::fprintf(stderr, "shard read failed\n");
          return 1;
        }
        row("shard_read", name, ranks, std::string(rd::to_string(mode)), rows, train_mb, best);
      }
    }

    const rd::Shard shard = rd::load_shard(h5, "train", 0, 1);
    rd::BatchIterator it(shard, {.global_batch = 256, .shuffle = true, .seed = 1});
    std::vector<float> x(static_cast<size_t>(256 * row_size));
    std::vector<int32_t> y(256);
    const double t0 = now_s();
    int64_t batches = 0;
    while (it.next(x, y)) ++batches;
    const double t = now_s() - t0;
    row("batches", name, 1, "shuffled-b256", batches * 256,
        static_cast<double>(batches * 256 * row_size * 4) / 1e6, t);
  } catch (const ringflow::Error& e) {
    std::fprintf(stderr, "datasets_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
