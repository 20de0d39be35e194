#!/usr/bin/env bash
# Allreduce vs parameter servers on the same model, data, seed and N ranks.
# Trains four times — ring allreduce, MPI_Allreduce, sync PS and async PS —
# plus a ring allreduce over only W = N - P ranks (ps mode's compute ranks,
# which tells compute contention from communication on a small machine), with
# shuffling off, so ring, mpi and ps-sync train the same model (strided
# shards: the same global batches), and prints one table (TSV):
#   samples/s           mean over the epochs after the first (the first warms up)
#   sent/recv B/step    per rank per training step, the largest over the ranks
#                       (ps: the servers' figure, the hot spot; workers in brackets)
#   model B/step        what the formulas predict: ring 2(N-1)/N*S, ps server W*S/P
#   time_to_target_s    elapsed time (evaluation included) of the first epoch whose
#                       test accuracy reaches the target; "-" if none did
#   final_acc           test accuracy after the last epoch
# Then the alpha-beta model: tests/bench/pingpong_bench measures latency alpha and
# bandwidth 1/beta up to a message of the model's size S, and projects the
# per-step communication time of both modes to 8, 64 and 512 ranks:
#   ring        2(N-1)*alpha + 2(N-1)/N * S * beta       (each rank, in parallel)
#   ps, P srv   max(2W*alpha + 2*(W*S/P)*beta,            (a server's W pulls and pushes)
#                   2P*alpha + 2*S*beta)                  (a worker's P of each), W = N - P
#
# Knobs (environment):
#   RF_BUILD_DIR   build directory (default .build/)
#   RF_DATA        Fashion-MNIST in ringflow HDF5 (imported if missing)
#   RF_NP          ranks N for every mode (default 3: 1 server + 2 workers in ps mode)
#   RF_NUM_PS      parameter servers P (default 1)
#   RF_MODEL       model (default mlp)
#   RF_EPOCHS      epochs (default 5)
#   RF_BATCH       global batch (default 96: divisible by N and by N - P)
#   RF_TRAIN_ROWS  train rows (default 60000, all)
#   RF_TARGET      target test accuracy for time_to_target (default 0.85)
#   RF_OPT         optimiser flags for every mode (default "--optimizer sgd --lr 0.1")
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DATA="${RF_DATA:-$RF_BUILD_DIR/data/fashion-mnist.h5}"
TRAINER="$RF_BUILD_DIR/src/apps/trainer"
PINGPONG="$RF_BUILD_DIR/tests/bench/pingpong_bench"
NP=${RF_NP:-3}
PS=${RF_NUM_PS:-1}
TARGET=${RF_TARGET:-0.85}
if [[ ! -f "$DATA" ]]; then
  mkdir -p "$(dirname "$DATA")"
  "$RF_BUILD_DIR/src/apps/ringflow-data" import-idx --dir /usr/share/datasets/fashion-mnist -o "$DATA" >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Idle ranks (a server waiting in MPI_Probe) yield the core instead of spinning.
export OMPI_MCA_mpi_yield_when_idle=1

common=(--data "$DATA" --model "${RF_MODEL:-mlp}" --epochs "${RF_EPOCHS:-5}" --batch-size "${RF_BATCH:-96}"
  --train-rows "${RF_TRAIN_ROWS:-60000}" --threads 1 --seed 1 --no-shuffle
  ${RF_OPT:---optimizer sgd --lr 0.1})

# run NAME NP FLAGS...: trains, keeps the metrics CSV and the output.
run() {
  local name=$1 np=$2
  shift 2
  mpirun -np "$np" --oversubscribe --bind-to none -x OMPI_MCA_mpi_yield_when_idle "$TRAINER" \
    "${common[@]}" "$@" --metrics "$tmp/$name.csv" >"$tmp/$name.out"
}
W=$((NP - PS))
run ring "$NP" --allreduce ring
run mpi "$NP" --allreduce mpi
run ps-sync "$NP" --mode ps --num-ps "$PS" --ps-sync
run ps-async "$NP" --mode ps --num-ps "$PS" --ps-async
# The same compute ranks as ps mode's workers, without the servers.
run ring-W "$W" --allreduce ring

params=$(sed -nE 's/.* ([0-9]+) parameters in .*/\1/p' "$tmp/ps-sync.out")
S=$((params * 4))

printf "mode\tranks\tsamples_per_s\tsent_B_per_step\trecv_B_per_step\tmodel_B_per_step\ttime_to_target_s\tfinal_acc\n"
for mode in ring mpi ps-sync ps-async ring-W; do
  csv="$tmp/$mode.csv" out="$tmp/$mode.out"
  sps=$(awk -F, 'NR > 2 { s += $6; n++ } END { printf "%.0f", n ? s / n : 0 }' "$csv")
  ttt=$(awk -F, -v t="$TARGET" 'NR > 1 && $5 >= t { printf "%.1f", $7; exit }' "$csv")
  acc=$(sed -nE 's/^final test accuracy: ([0-9.]+)%.*/\1/p' "$out")
  if [[ $mode == ps-* ]]; then
    ranks="${PS}ps+${W}w"
    read -r ss sr ws wr < <(sed -nE 's/^traffic .*: ps sent ([0-9]+) B, received ([0-9]+) B; worker sent ([0-9]+) B, received ([0-9]+) B.*/\1 \2 \3 \4/p' "$out")
    sent="$ss (w $ws)" recv="$sr (w $wr)"
    model=$(awk -v w="$W" -v s="$S" -v p="$PS" 'BEGIN { printf "%.0f", w * s / p }')
  else
    ranks=$NP
    [[ $mode == ring-W ]] && ranks=$W
    read -r sent recv < <(sed -nE 's/^traffic .*: sent ([0-9]+) B, received ([0-9]+) B.*/\1 \2/p' "$out")
    model=$(awk -v n="$ranks" -v s="$S" 'BEGIN { printf "%.0f", 2 * (n - 1) / n * s }')
    [[ $mode == mpi ]] && sent="$sent*" recv="$recv*"
  fi
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%%\n" "$mode" "$ranks" "$sps" "$sent" "$recv" "$model" "${ttt:--}" "${acc:--}"
done
echo "# S = $params parameters = $S B; * MPI_Allreduce hides its algorithm: counted as 2(N-1)/N*S"
stale=$(sed -nE 's/^staleness: (.*)/\1/p' "$tmp/ps-async.out")
echo "# ps-async staleness: $stale"

# Alpha-beta: latency from the smallest message, bandwidth up to the model's
# size; the median of three runs of the benchmark, with ranks busy-polling
# (yielding would add the scheduler's wake-up to every latency).
max=$((S > 1024 ? S : 1024))
for i in 1 2 3; do
  env -u OMPI_MCA_mpi_yield_when_idle mpirun -np 2 --oversubscribe --bind-to none "$PINGPONG" \
    --max-bytes "$max" --iters 200 | sed -n 's/^# //p'
done >"$tmp/fits"
median() { sed -nE "s/.*$1=([0-9.]+).*/\1/p" "$tmp/fits" | sort -g | sed -n 2p; }
alpha=$(median alpha_us)
beta=$(median beta_ns_per_byte)
fit="alpha_us=$alpha beta_ns_per_byte=$beta, median of 3"
echo
echo "# alpha-beta ($fit): projected communication per step, ms"
printf "ranks\tring\tps_P1\tps_P=N/4\n"
for n in 8 64 512; do
  awk -v n="$n" -v s="$S" -v a="$alpha" -v b="$beta" 'function ps(p,   w, srv, wrk) {
      w = n - p; srv = 2 * w * a * 1e-6 + 2 * w * s / p * b * 1e-9
      wrk = 2 * p * a * 1e-6 + 2 * s * b * 1e-9
      return 1e3 * (srv > wrk ? srv : wrk) }
    BEGIN {
      ring = 1e3 * (2 * (n - 1) * a * 1e-6 + 2 * (n - 1) / n * s * b * 1e-9)
      printf "%d\t%.3f\t%.3f\t%.3f\n", n, ring, ps(1), ps(n / 4) }'
done
