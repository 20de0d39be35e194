// Writes every bad input of tests/unit/datasets_files.h, plus four valid
// small IDX files, into the directory given as argv[1], and prints one line
// per bad input: kind <TAB> file name <TAB> words the error must contain.
// tests/e2e/datasets_cli.sh feeds them to ringflow-data.
#include <cstdio>
#include <vector>

#include "datasets_files.h"
#include "ringflow/datasets/idx.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  rftest::TempDir keep(dir);  // existing directory, not removed
  // Valid MNIST-like inputs: 6 images of 4x4, labels 0..5.
  std::vector<uint8_t> images(6 * 16), labels(6);
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint8_t>(i);
  const std::vector<int64_t> image_dims = {6, 4, 4}, label_dims = {6};
  ringflow::datasets::write_idx(dir + "/good-images.idx", image_dims, images, false);
  ringflow::datasets::write_idx(dir + "/good-labels.idx.gz", label_dims, labels, true);
  for (const rftest::BadCase& c : rftest::write_bad_inputs(dir)) {
    std::printf("%s\t%s\t%s\n", c.kind.c_str(), c.name.c_str(), c.expect.c_str());
  }
  return 0;
}
