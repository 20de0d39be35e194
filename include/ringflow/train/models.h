// The models the trainer knows, built as graphs.
//
//   logreg     flatten -> dense(C)
//   mlp        flatten -> [dense(h) -> relu] for each h in hidden -> dense(C)
//   cnn        the TensorFlow layers tutorial net: conv5x5x32 -> relu -> maxpool2
//              -> conv5x5x64 -> relu -> maxpool2 -> dense(1024) -> relu
//              -> dropout(0.4) -> dense(C)
//   cnn-small  conv5x5x16 -> relu -> maxpool2 -> conv5x5x32 -> relu -> maxpool2
//              -> dense(128) -> relu -> dense(C)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ringflow/graph/graph.h"

namespace ringflow::train {

struct ModelSpec {
  std::string name = "mlp";
  std::vector<std::int64_t> hidden = {256, 128};  // mlp only
  float dropout = 0.4f;                           // cnn only
  std::uint64_t seed = 1;
};

// The names the trainer accepts, for --help and error messages.
const std::vector<std::string>& model_names();

struct Model {
  Output x;               // f32 (-1, feature dims...)
  Output y;               // i32 (-1)
  Output training;        // f32 scalar switch, 0 unless fed (dropout)
  Output dropout_stream;  // i32 scalar keying the dropout masks, 0 unless fed
  Output logits;          // (-1, C)
  Output loss;            // mean cross-entropy over the batch (scalar)
  Output loss_sum;        // summed cross-entropy (scalar), for exact evaluation
  Output correct;         // number of correct predictions (scalar f32)
};

// Builds the model into g. feature_shape is one row's shape, e.g. {28, 28};
// convolutional models need (H, W) or (H, W, C). Raises InvalidArgument
// naming --model and the data's shape when they don't fit.
Model build_model(Graph& g, const ModelSpec& spec, const std::vector<std::int64_t>& feature_shape,
                  int num_classes);

}  // namespace ringflow::train
