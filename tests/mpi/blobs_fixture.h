// The small training problem the trainer's MPI tests share: a blobs data set
// (8 features, 3 classes, 480 train and 97 test rows from one draw, so both
// splits share the blob centres) that rank 0 writes to a shared temporary
// file, and the small MLP configuration they train on it.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ringflow/datasets/format.h"
#include "ringflow/datasets/synth.h"
#include "ringflow/train/config.h"

#include "mpi_test_util.h"

namespace ringflow::mpi_test {

// Collective: writes the data set (rank 0) and returns its path on every rank.
inline std::string write_shared_blobs(const char* tag) {
  namespace rd = ringflow::datasets;
  std::string path = shared_temp_path(tag);
  if (world_rank() == 0) {
    const auto all =
        rd::make_blobs({.rows = 577, .classes = 3, .dims = 8, .spread = 2.0f, .seed = 3});
    const std::span<const float> x(all.x);
    const std::span<const std::int32_t> y(all.y);
    rd::SplitData tr{.shape = {480, 8}, .x_f32 = x.first(480 * 8), .y = y.first(480)};
    rd::SplitData te{.shape = {97, 8}, .x_f32 = x.subspan(480 * 8), .y = y.subspan(480)};
    rd::write_dataset(path, tr, te, {.num_classes = 3, .source = std::string(tag) + " blobs"});
  }
  MPI_Barrier(MPI_COMM_WORLD);  // written before any rank opens it
  return path;
}

// MLP 8-16-8-3, momentum, unshuffled strided shards; batch 24 is divisible by
// 1, 2, 3, 4 and 8 ranks (or workers).
inline train::TrainConfig blobs_config(const std::string& path) {
  train::TrainConfig c;
  c.data = path;
  c.model.name = "mlp";
  c.model.hidden = {16, 8};
  c.optimizer = "momentum";
  c.lr = 0.05f;
  c.batch_size = 24;
  c.shuffle = false;
  c.shard = "strided";
  c.seed = 7;
  c.threads = 1;
  return c;
}

}  // namespace ringflow::mpi_test
