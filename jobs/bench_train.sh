#!/usr/bin/env bash
# Training throughput benchmark. For each model and rank count (1 and 2 ranks,
# 1 thread each) it trains a fixed number of steps with the allreduce skipped
# (RINGFLOW_BENCH_SKIP_ALLREDUCE=1, benchmark-only) and normally; at 2 ranks
# both with --overlap on and with --overlap off (auto picks one of them: off
# when the ranks' threads fill the node's cores, as here). It prints TSV:
# samples/s, step time, and the exposed communication time, i.e. step time
# with allreduce minus step time without, and its share of the step.
#
# Knobs (environment):
#   RF_BUILD_DIR  build directory with trainer and ringflow-data (default .build/)
#   RF_DATA       Fashion-MNIST in ringflow HDF5 (imported if missing)
#   RF_MODELS     models to run (default "mlp cnn-small cnn")
#   RF_ROWS_MLP, RF_ROWS_CNN     train rows per epoch (default 60000 and 7680)
#   RF_BATCH      global batch (default 128)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA="${RF_DATA:-$RF_BUILD_DIR/data/fashion-mnist.h5}"
TRAINER="$RF_BUILD_DIR/src/apps/trainer"
if [[ ! -f "$DATA" ]]; then
  mkdir -p "$(dirname "$DATA")"
  "$RF_BUILD_DIR/src/apps/ringflow-data" import-idx --dir /usr/share/datasets/fashion-mnist -o "$DATA" >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run NP ROWS MODEL SKIP [FLAGS...] -> samples/s of the second epoch. The first
# epoch is a warm-up (plan compilation, allocator, and the CPU clocking up: on
# the 2-core VMs here the first second of compute runs ~35 % slower).
run() {
  local np=$1 rows=$2 model=$3 skip=$4
  shift 4
  RINGFLOW_BENCH_SKIP_ALLREDUCE=$skip mpirun -np "$np" --oversubscribe --bind-to none \
    -x RINGFLOW_BENCH_SKIP_ALLREDUCE "$TRAINER" --data "$DATA" --model "$model" --threads 1 \
    --batch-size "${RF_BATCH:-128}" --train-rows "$rows" --epochs 2 --log-level warn \
    --metrics "$tmp/m.csv" "$@" >/dev/null
  sed -n '3p' "$tmp/m.csv" | cut -d, -f6
}

# row MODEL NP OVERLAP WITH WITHOUT
row() {
  awk -v m="$1" -v n="$2" -v o="$3" -v b="${RF_BATCH:-128}" -v w="$4" -v wo="$5" 'BEGIN {
    s = 1000 * b / w; s0 = 1000 * b / wo; e = s - s0;
    printf "%s\t%d\t1\t%d\t%s\t%.0f\t%.3f\t%.3f\t%.3f\t%.1f\n", m, n, b, o, w, s, s0, e, 100 * e / s }'
}

printf "model\tranks\tthreads\tbatch\toverlap\tsamples_per_s\tstep_ms\tstep_ms_no_allreduce\texposed_comm_ms\texposed_pct\n"
for model in ${RF_MODELS:-mlp cnn-small cnn}; do
  rows=${RF_ROWS_MLP:-60000}
  [[ $model == cnn* ]] && rows=${RF_ROWS_CNN:-7680}
  without=$(run 1 "$rows" "$model" 1)
  row "$model" 1 - "$(run 1 "$rows" "$model" 0)" "$without"
  for overlap in on off; do  # each against its own no-allreduce step (thread hand-overs included)
    without=$(run 2 "$rows" "$model" 1 --overlap "$overlap")
    row "$model" 2 "$overlap" "$(run 2 "$rows" "$model" 0 --overlap "$overlap")" "$without"
  done
done
