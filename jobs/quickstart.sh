#!/usr/bin/env bash
# Installs what is missing, builds ringflow, imports Fashion-MNIST into the
# ringflow HDF5 format, and trains the MLP on 2 ranks with mpirun, printing a
# line per epoch and the final test accuracy.
#
# Knobs (environment):
#   RF_NP        ranks (default 2)
#   RF_MODEL     logreg | mlp | cnn | cnn-small (default mlp)
#   RF_EPOCHS    passes over the train split (default 10)
#   RF_DATA      where the imported data set goes (default .build/data/fashion-mnist.h5)
#   RF_BUILD_DIR build directory (default .build/)
# Extra arguments go to the trainer, e.g. jobs/quickstart.sh --lr 0.1 --timeline trace.json
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

rf_install_deps
rf_build

NP="${RF_NP:-2}"
DATA="${RF_DATA:-$RF_BUILD_DIR/data/fashion-mnist.h5}"
FMNIST_DIR="$(dirname "$(dpkg -L dataset-fashion-mnist | grep 'train-images-idx3-ubyte.gz$')")"
if [[ ! -f "$DATA" ]]; then
  echo "== importing Fashion-MNIST from $FMNIST_DIR"
  mkdir -p "$(dirname "$DATA")"
  "$RF_BUILD_DIR/src/apps/ringflow-data" import-idx --dir "$FMNIST_DIR" -o "$DATA"
fi

echo "== training: mpirun -np $NP trainer --model ${RF_MODEL:-mlp}"
mpirun -np "$NP" --oversubscribe --bind-to none \
  "$RF_BUILD_DIR/src/apps/trainer" --data "$DATA" --model "${RF_MODEL:-mlp}" \
  --epochs "${RF_EPOCHS:-10}" --batch-size 128 --optimizer momentum --lr 0.05 --schedule cosine \
  --threads 1 "$@"
