// ringflow-data: converts, generates and inspects ringflow HDF5 data sets.
//
//   ringflow-data import-idx --dir /usr/share/datasets/fashion-mnist -o fmnist.h5
//   ringflow-data synth blobs --train 1000 --test 200 --classes 3 --seed 1 -o blobs.h5
//   ringflow-data info fmnist.h5 [--checksum] [--ranks 4 --batch 256]
//
// Exit codes: 0 success, 1 bad input (the message names the file and the
// problem), 2 bad command line.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ringflow/base/error.h"
#include "ringflow/datasets/batch.h"
#include "ringflow/datasets/convert.h"
#include "ringflow/datasets/format.h"
#include "ringflow/datasets/shard.h"
#include "ringflow/datasets/synth.h"

namespace rd = ringflow::datasets;

namespace {

constexpr int kExitBadInput = 1;
constexpr int kExitUsage = 2;

std::string shape_str(int64_t rows, const std::vector<int64_t>& features) {
  std::string s = "(" + std::to_string(rows);
  for (const int64_t d : features) s += ", " + std::to_string(d);
  return s + ")";
}

struct ImportArgs {
  std::string dir, train_images, train_labels, test_images, test_labels, out;
  int num_classes = 10;
  int deflate = 0;
};

int run_import(const ImportArgs& a) {
  rd::IdxFiles files;
  if (!a.dir.empty()) files = rd::find_idx_files(a.dir);
  // Explicit files override the directory's.
  if (!a.train_images.empty()) files.train_images = a.train_images;
  if (!a.train_labels.empty()) files.train_labels = a.train_labels;
  if (!a.test_images.empty()) files.test_images = a.test_images;
  if (!a.test_labels.empty()) files.test_labels = a.test_labels;
  for (const auto& [flag, value] : {std::pair{"--train-images", files.train_images},
                                    {"--train-labels", files.train_labels},
                                    {"--test-images", files.test_images},
                                    {"--test-labels", files.test_labels}}) {
    RF_CHECK(!value.empty(), "import-idx: ", flag, " is missing — pass --dir DIR or ", flag,
             " FILE");
  }
  const auto t0 = std::chrono::steady_clock::now();
  rd::WriteOptions opts;
  opts.num_classes = a.num_classes;
  opts.deflate_level = a.deflate;
  opts.source = "idx import of " + files.train_images;
  const rd::ImportResult r = rd::import_idx(files, a.out, opts);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %s: train x uint8 %s, test x uint8 %s, %d classes, in %.2f s\n", a.out.c_str(),
              shape_str(r.train_rows, r.feature_shape).c_str(),
              shape_str(r.test_rows, r.feature_shape).c_str(), a.num_classes, secs);
  return 0;
}

struct SynthArgs {
  std::string kind, out;
  int64_t train = 1000, test = 200;
  int classes = 3, dims = 2;
  float spread = 1.0f, center_box = 5.0f, noise = 0.05f, turns = 1.0f;
  uint64_t seed = 0;
};

int run_synth(const SynthArgs& a) {
  // One draw of train + test rows, split in order, so both splits share the
  // blob centres; the result depends only on the flags.
  const int64_t rows = a.train + a.test;
  RF_CHECK(a.train >= 1 && a.test >= 1, "synth: --train and --test must be >= 1");
  rd::SynthData d;
  if (a.kind == "blobs") {
    d = rd::make_blobs({.rows = rows,
                        .classes = a.classes,
                        .dims = a.dims,
                        .spread = a.spread,
                        .center_box = a.center_box,
                        .seed = a.seed});
  } else {
    d = rd::make_spirals(
        {.rows = rows, .classes = a.classes, .turns = a.turns, .noise = a.noise, .seed = a.seed});
  }
  const int64_t dims = d.shape[1];
  const std::span<const float> x(d.x);
  const std::span<const int32_t> y(d.y);
  rd::SplitData tr{.shape = {a.train, dims},
                   .x_u8 = {},
                   .x_f32 = x.first(a.train * dims),
                   .scale = 1.0f,
                   .y = y.first(a.train)};
  rd::SplitData te{.shape = {a.test, dims},
                   .x_u8 = {},
                   .x_f32 = x.subspan(a.train * dims),
                   .scale = 1.0f,
                   .y = y.subspan(a.train)};
  rd::WriteOptions opts;
  opts.num_classes = d.num_classes;
  opts.source = "synth " + a.kind + " seed=" + std::to_string(a.seed);
  rd::write_dataset(a.out, tr, te, opts);
  std::printf(
      "wrote %s: %s, train x float32 (%lld, %lld), test x float32 (%lld, %lld), %d classes\n",
      a.out.c_str(), opts.source.c_str(), static_cast<long long>(a.train),
      static_cast<long long>(dims), static_cast<long long>(a.test), static_cast<long long>(dims),
      d.num_classes);
  return 0;
}

struct InfoArgs {
  std::string path, split = "all", shard_mode = "strided";
  bool checksum = false;
  int ranks = 0;
  int64_t batch = 0;
};

int run_info(const InfoArgs& a) {
  const rd::DatasetInfo info = rd::open_dataset(a.path);
  std::printf("file        %s\n", a.path.c_str());
  std::printf("format      %s version %d\n", std::string(rd::kFormatName).c_str(), info.version);
  std::printf("num_classes %d\n", info.num_classes);
  std::printf("source      %s\n", info.source.c_str());
  const rd::ShardMode mode = rd::parse_shard_mode(a.shard_mode);
  for (const std::string_view name : rd::kSplitNames) {
    if (a.split != "all" && a.split != name) continue;
    const rd::SplitInfo& s = info.split(name);
    const std::string n(name);
    std::printf("%s/x %*s%s %s", n.c_str(), static_cast<int>(6 - n.size()), "",
                std::string(rd::to_string(s.x_dtype)).c_str(),
                shape_str(s.rows, s.feature_shape).c_str());
    if (s.x_dtype == rd::XDtype::kUint8) std::printf("  scale=%.9g", s.scale);
    std::printf("  chunk_rows=%lld", static_cast<long long>(s.chunk_rows));
    if (name == "train" && info.train_mean && info.train_std) {
      std::printf("  mean=%.6f std=%.6f", *info.train_mean, *info.train_std);
    }
    std::printf("\n%s/y %*sint32 (%lld)\n", n.c_str(), static_cast<int>(6 - n.size()), "",
                static_cast<long long>(s.rows));
    const std::vector<int64_t> hist = rd::label_histogram(a.path, name);
    std::printf("%s labels", n.c_str());
    for (size_t k = 0; k < hist.size(); ++k) {
      std::printf(" %zu:%lld", k, static_cast<long long>(hist[k]));
    }
    std::printf("\n");
    if (a.checksum) {
      const rd::SplitChecksum c = rd::split_checksum(a.path, name);
      std::printf("%s checksum x_fnv1a=%016llx y_fnv1a=%016llx x_sum=%.17g\n", n.c_str(),
                  static_cast<unsigned long long>(c.x_fnv1a),
                  static_cast<unsigned long long>(c.y_fnv1a), c.x_sum);
    }
    if (a.ranks > 0) {
      // The shard plan each rank would get; shard_rows rejects ranks > rows.
      for (int r = 0; r < a.ranks; ++r) {
        rd::RowRange rows;
        try {
          rows = rd::shard_rows(s.rows, r, a.ranks, mode);
        } catch (const ringflow::InvalidArgument& e) {
          RF_THROW(InvalidArgument, a.path, ": /", n, ": ", e.what());
        }
        std::printf("%s shard rank=%d mode=%s start=%lld stride=%lld rows=%lld\n", n.c_str(), r,
                    std::string(rd::to_string(mode)).c_str(), static_cast<long long>(rows.start),
                    static_cast<long long>(rows.stride), static_cast<long long>(rows.count));
      }
      if (a.batch > 0) {
        RF_CHECK(a.batch % a.ranks == 0, "info: --batch ", a.batch,
                 " is not a multiple of --ranks ", a.ranks);
        std::printf(
            "%s steps_per_epoch=%lld global_batch=%lld local_batch=%lld dropped_rows=%lld\n",
            n.c_str(), static_cast<long long>(rd::steps_per_epoch(s.rows, a.batch)),
            static_cast<long long>(a.batch), static_cast<long long>(a.batch / a.ranks),
            static_cast<long long>(s.rows % a.batch));
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ringflow-data: import, generate and inspect ringflow HDF5 data sets"};
  app.require_subcommand(1);

  ImportArgs imp;
  CLI::App* import_cmd =
      app.add_subcommand("import-idx", "Convert MNIST-style IDX files (plain or .gz) to HDF5");
  import_cmd->add_option(
      "--dir", imp.dir,
      "Directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
      "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]");
  import_cmd->add_option("--train-images", imp.train_images, "Train images IDX file");
  import_cmd->add_option("--train-labels", imp.train_labels, "Train labels IDX file");
  import_cmd->add_option("--test-images", imp.test_images, "Test images IDX file");
  import_cmd->add_option("--test-labels", imp.test_labels, "Test labels IDX file");
  import_cmd->add_option("-o,--output", imp.out, "Output HDF5 file")->required();
  import_cmd->add_option("--num-classes", imp.num_classes, "Number of classes")
      ->check(CLI::Range(1, 1 << 20));
  import_cmd->add_option("--deflate", imp.deflate, "gzip level 1-9 for the HDF5 data, 0 = none")
      ->check(CLI::Range(0, 9));

  SynthArgs syn;
  CLI::App* synth_cmd = app.add_subcommand("synth", "Write a small synthetic data set (seeded)");
  synth_cmd->add_option("kind", syn.kind, "blobs or spirals")
      ->required()
      ->check(CLI::IsMember({"blobs", "spirals"}));
  synth_cmd->add_option("-o,--output", syn.out, "Output HDF5 file")->required();
  synth_cmd->add_option("--train", syn.train, "Train rows")->check(CLI::PositiveNumber);
  synth_cmd->add_option("--test", syn.test, "Test rows")->check(CLI::PositiveNumber);
  synth_cmd->add_option("--classes", syn.classes, "Classes (blobs / spiral arms)")
      ->check(CLI::Range(1, 1 << 20));
  synth_cmd->add_option("--dims", syn.dims, "Feature dimensions (blobs)")
      ->check(CLI::Range(1, 1 << 20));
  synth_cmd->add_option("--spread", syn.spread, "Standard deviation around a centre (blobs)")
      ->check(CLI::NonNegativeNumber);
  synth_cmd->add_option("--center-box", syn.center_box, "Centres lie in [-b, b]^dims (blobs)")
      ->check(CLI::NonNegativeNumber);
  synth_cmd->add_option("--noise", syn.noise, "Gaussian noise per axis (spirals)")
      ->check(CLI::NonNegativeNumber);
  synth_cmd->add_option("--turns", syn.turns, "Turns of each arm (spirals)");
  synth_cmd->add_option("--seed", syn.seed, "PRNG seed");

  InfoArgs inf;
  CLI::App* info_cmd =
      app.add_subcommand("info", "Validate a data set and print shapes, dtypes, label histogram");
  info_cmd->add_option("file", inf.path, "HDF5 data set")->required();
  info_cmd->add_option("--split", inf.split, "train, test or all")
      ->check(CLI::IsMember({"train", "test", "all"}));
  info_cmd->add_flag("--checksum", inf.checksum, "Also print checksums of the stored values");
  info_cmd->add_option("--ranks", inf.ranks, "Print the shard of each of N ranks")
      ->check(CLI::PositiveNumber);
  info_cmd->add_option("--batch", inf.batch, "With --ranks: global batch for steps per epoch")
      ->check(CLI::PositiveNumber);
  info_cmd->add_option("--shard-mode", inf.shard_mode, "strided or contiguous")
      ->check(CLI::IsMember({"strided", "contiguous"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitUsage;
  }

  try {
    if (*import_cmd) return run_import(imp);
    if (*synth_cmd) return run_synth(syn);
    if (*info_cmd) return run_info(inf);
  } catch (const ringflow::Error& e) {
    std::fflush(stdout);
    std::cerr << "ringflow-data: error: " << e.what() << "\n";
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "ringflow-data: error: " << e.what() << "\n";
    return kExitBadInput;
  }
  return kExitUsage;
}
