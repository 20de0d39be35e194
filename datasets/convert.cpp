// IDX -> ringflow HDF5 (convert.h).
#include "ringflow/datasets/convert.h"

#include <filesystem>

#include "ringflow/base/error.h"
#include "ringflow/datasets/idx.h"

namespace ringflow::datasets {
namespace {

namespace fs = std::filesystem;

std::string find_one(const std::string& dir, const std::string& name) {
  const fs::path base = fs::path(dir) / name;
  std::error_code ec;
  if (fs::exists(base, ec)) return base.string();
  fs::path gz = base;
  gz += ".gz";
  if (fs::exists(gz, ec)) return gz.string();
  RF_THROW(NotFound, dir, ": neither ", name, " nor ", name,
           ".gz found — pass the directory that holds the MNIST-style IDX files, or name each "
           "file with --train-images etc.");
}

// Labels file: (N) bytes -> int32, checked against num_classes.
std::vector<int32_t> to_labels(const IdxArray& a, const std::string& path, int32_t num_classes) {
  RF_CHECK_AS(IoError, a.dims.size() == 1, path, ": a labels file must have 1 dimension (N), got ",
              a.dims.size(), " — did you swap the images and labels files?");
  std::vector<int32_t> y(a.data.size());
  for (size_t i = 0; i < a.data.size(); ++i) {
    y[i] = a.data[i];
    RF_CHECK_AS(IoError, y[i] < num_classes, path, ": label ", y[i], " at row ", i,
                " is outside [0, ", num_classes, ") — pass the right --num-classes");
  }
  return y;
}

}  // namespace

IdxFiles find_idx_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    RF_THROW(NotFound, dir, ": no such directory — pass the directory that holds the IDX files");
  }
  return {find_one(dir, "train-images-idx3-ubyte"), find_one(dir, "train-labels-idx1-ubyte"),
          find_one(dir, "t10k-images-idx3-ubyte"), find_one(dir, "t10k-labels-idx1-ubyte")};
}

ImportResult import_idx(const IdxFiles& files, const std::string& out, WriteOptions options) {
  if (options.num_classes == 0) options.num_classes = 10;
  if (options.source.empty()) options.source = "idx import of " + files.train_images;
  struct Split {
    IdxArray images;
    std::vector<int32_t> labels;
  };
  auto load = [&](const std::string& images_path, const std::string& labels_path) {
    Split s;
    s.images = read_idx(images_path);
    RF_CHECK_AS(IoError, s.images.dims.size() == 3, images_path,
                ": an images file must have 3 dimensions (N, H, W), got ", s.images.dims.size(),
                " — did you swap the images and labels files?");
    s.labels = to_labels(read_idx(labels_path), labels_path, options.num_classes);
    RF_CHECK_AS(IoError, static_cast<int64_t>(s.labels.size()) == s.images.dims[0], images_path,
                " has ", s.images.dims[0], " images but ", labels_path, " has ", s.labels.size(),
                " labels — they must come from the same split");
    return s;
  };
  const Split train = load(files.train_images, files.train_labels);
  const Split test = load(files.test_images, files.test_labels);
  RF_CHECK_AS(
      IoError,
      train.images.dims[1] == test.images.dims[1] && train.images.dims[2] == test.images.dims[2],
      files.train_images, " holds ", train.images.dims[1], "x", train.images.dims[2],
      " images but ", files.test_images, " holds ", test.images.dims[1], "x", test.images.dims[2],
      " — both splits must have the same image size");

  SplitData tr{.shape = train.images.dims,
               .x_u8 = train.images.data,
               .x_f32 = {},
               .scale = 1.0f / 255.0f,
               .y = train.labels};
  SplitData te{.shape = test.images.dims,
               .x_u8 = test.images.data,
               .x_f32 = {},
               .scale = 1.0f / 255.0f,
               .y = test.labels};
  write_dataset(out, tr, te, options);
  return {train.images.dims[0], test.images.dims[0], {train.images.dims[1], train.images.dims[2]}};
}

}  // namespace ringflow::datasets
