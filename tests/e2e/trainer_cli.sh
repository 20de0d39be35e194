#!/usr/bin/env bash
# End-to-end tests of the trainer CLI. Usage:
#   trainer_cli.sh TRAINER DATA_TOOL CASE MPIEXEC [FASHION_MNIST_DIR]
# CASE: bad_inputs | singleton | config | timeline | fashion_mnist | ps_bad_inputs | ps |
#       compare_modes
# Exits 0 on success, 77 (skipped) when Fashion-MNIST is not installed.
set -uo pipefail
trainer=$1 data_tool=$2 case=$3 mpiexec=$4 fmnist=${5:-/usr/share/datasets/fashion-mnist}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rf_trainer_e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
mpirun_np() { local np=$1; shift; timeout 120 "$mpiexec" -np "$np" --oversubscribe "$@"; }
mpi2=("$mpiexec" -np 2 --oversubscribe)
mpi3=("$mpiexec" -np 3 --oversubscribe)
mpi4=("$mpiexec" -np 4 --oversubscribe)

blobs="$tmp/blobs.h5"
"$data_tool" synth blobs --train 480 --test 96 --classes 3 --dims 8 --seed 3 -o "$blobs" >/dev/null ||
  { echo "could not make the test data set" >&2; exit 1; }
small=(--data "$blobs" --hidden 16 --batch-size 24 --threads 1 --log-level warn)

case $case in
  bad_inputs)
    for n in 1 2; do
      launcher=()
      ((n == 2)) && launcher=("${mpi2[@]}")
      expect_error 2 "--bogus" "${launcher[@]}" "$trainer" "${small[@]}" --bogus
      expect_error 2 "--model" "${launcher[@]}" "$trainer" "${small[@]}" --model resnet
      expect_error 2 "--threads" "${launcher[@]}" "$trainer" "${small[@]}" --threads -2
      expect_error 2 "--threads" "${launcher[@]}" "$trainer" "${small[@]}" --threads 0
      expect_error 2 "--lr" "${launcher[@]}" "$trainer" "${small[@]}" --lr 0
      expect_error 2 "--lr" "${launcher[@]}" "$trainer" "${small[@]}" --lr -1
      expect_error 2 "no-such.toml" "${launcher[@]}" "$trainer" --config "$tmp/no-such.toml"
      expect_error 2 "--data" "${launcher[@]}" "$trainer" --model mlp
      expect_error 1 "$tmp/missing.h5" "${launcher[@]}" "$trainer" "${small[@]}" --data "$tmp/missing.h5"
      expect_error 1 "--model cnn" "${launcher[@]}" "$trainer" "${small[@]}" --model cnn
      expect_error 2 "--hidden" "${launcher[@]}" "$trainer" "${small[@]}" --hidden 16,x
      expect_error 2 "--overlap" "${launcher[@]}" "$trainer" "${small[@]}" --overlap sometimes
      expect_error 2 "--overlap" "${launcher[@]}" "$trainer" "${small[@]}" --no-overlap --overlap on
    done
    expect_error 2 "--batch-size" "${mpi2[@]}" "$trainer" "${small[@]}" --batch-size 25
    expect_error 2 "--batch-size" "${mpi4[@]}" "$trainer" "${small[@]}" --batch-size 2
    echo "not a toml file [[[" >"$tmp/bad.toml"
    expect_error 2 "" "$trainer" --config "$tmp/bad.toml"
    ;;
  singleton)
    # trainer alone is one rank (MPI singleton): the same run as mpirun -np 1.
    "$trainer" "${small[@]}" --epochs 2 --metrics "$tmp/alone.csv" >/dev/null || fail "trainer alone failed"
    mpirun_np 1 "$trainer" "${small[@]}" --epochs 2 --metrics "$tmp/np1.csv" >/dev/null || fail "mpirun -np 1 failed"
    # epoch, steps, train_loss, test_loss, test_accuracy must agree exactly.
    if ! diff <(cut -d, -f1-5 "$tmp/alone.csv") <(cut -d, -f1-5 "$tmp/np1.csv") >&2; then
      fail "singleton and mpirun -np 1 differ"
    fi
    [[ $(wc -l <"$tmp/alone.csv") -eq 3 ]] || fail "expected a header and 2 epoch rows in $tmp/alone.csv"
    ;;
  config)
    cat >"$tmp/run.toml" <<TOML
data = "$blobs"
model = "mlp"
hidden = "16"
batch-size = 24
epochs = 2
threads = 1
lr = 0.1
optimizer = "nesterov"
schedule = "cosine"
shuffle = false
TOML
    mpirun_np 2 "$trainer" --config "$tmp/run.toml" --metrics "$tmp/a.jsonl" >"$tmp/out" || fail "run from config failed"
    grep -qF 'optimizer = "nesterov"' "$tmp/out" || fail "effective config not printed"
    [[ -f "$tmp/a.jsonl.config.toml" ]] || fail "effective config not stored beside the metrics"
    grep -qE '^\{"epoch":2,' "$tmp/a.jsonl" || fail "JSONL metrics lack epoch 2"
    # The stored configuration alone reproduces the run bit for bit.
    sed -i '/^metrics = /d;/^timeline = /d' "$tmp/a.jsonl.config.toml"
    mpirun_np 2 "$trainer" --config "$tmp/a.jsonl.config.toml" --metrics "$tmp/b.jsonl" >/dev/null || fail "rerun failed"
    strip() { sed -E 's/,"samples_per_second".*//' "$1"; }
    diff <(strip "$tmp/a.jsonl") <(strip "$tmp/b.jsonl") >&2 || fail "the stored config did not reproduce the run"
    # Configs stored when overlap was an on/off flag still load; --no-overlap is off.
    printf 'overlap = false\n' >>"$tmp/run.toml"
    mpirun_np 2 "$trainer" --config "$tmp/run.toml" --threads 1 --max-steps 2 >"$tmp/out" || fail "overlap = false rejected"
    grep -qF 'overlap = "off"' "$tmp/out" || fail "overlap = false did not mean off"
    mpirun_np 2 "$trainer" --data "$blobs" --hidden 16 --batch-size 24 --threads 1 --no-overlap --max-steps 2 \
      >"$tmp/out" || fail "--no-overlap rejected"
    grep -qF 'reduced after backward' "$tmp/out" || fail "--no-overlap did not turn overlap off"
    ;;
  timeline)
    mpirun_np 2 "$trainer" "${small[@]}" --max-steps 4 --fusion-mb 0.0005 --timeline "$tmp/trace.json" \
      --timeline-steps 2 >/dev/null || fail "run with --timeline failed"
    head -c 40 "$tmp/trace.json" | grep -qF '{"displayTimeUnit":"ms","traceEvents":[' || fail "not a Chrome trace"
    tail -c 5 "$tmp/trace.json" | grep -qF ']}' || fail "trace not closed"
    for want in '"pid":0' '"pid":1' '"cat":"allreduce"' '"cat":"backward"' '"cat":"bucket"' '"name":"rank 1"'; do
      grep -qF "$want" "$tmp/trace.json" || fail "trace lacks $want"
    done
    ;;
  fashion_mnist)
    [[ -f "$fmnist/train-images-idx3-ubyte.gz" ]] || { echo "Fashion-MNIST not installed" >&2; exit 77; }
    "$data_tool" import-idx --dir "$fmnist" -o "$tmp/fmnist.h5" >/dev/null || fail "import failed"
    # Learning in CI: 2 ranks, one pass over 10,000 rows, >= 80 % test accuracy
    # on the whole 10,000-row test set.
    mpirun_np 2 "$trainer" --data "$tmp/fmnist.h5" --model mlp --train-rows 10000 --epochs 1 \
      --optimizer adam --lr 0.001 --batch-size 16 --threads 1 >"$tmp/out" 2>&1 || fail "training failed"
    cat "$tmp/out"
    acc=$(sed -nE 's/^final test accuracy: ([0-9.]+)%.*/\1/p' "$tmp/out")
    [[ -n $acc ]] || fail "no final accuracy printed"
    awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 80.0) }' || fail "accuracy $acc% < 80%"
    ;;
  ps_bad_inputs)
    # Every rank rejects these before any message: exit 2, no hang, no abort.
    expect_error 2 "--num-ps" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 3
    expect_error 2 "--num-ps" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 5
    expect_error 2 "--num-ps" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 0
    expect_error 2 "--num-ps" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps
    expect_error 2 "--num-ps" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps -1
    expect_error 2 "--num-ps" "${mpi2[@]}" "$trainer" "${small[@]}" --num-ps 1
    expect_error 2 "--ps-async" "${mpi2[@]}" "$trainer" "${small[@]}" --ps-async
    expect_error 2 "--ps-sync" "${mpi2[@]}" "$trainer" "${small[@]}" --ps-sync
    expect_error 2 "--max-staleness" "${mpi2[@]}" "$trainer" "${small[@]}" --max-staleness 2
    expect_error 2 "--max-staleness" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 1 --max-staleness 2
    expect_error 2 "--max-staleness" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 1 --ps-async --max-staleness -2
    expect_error 2 "exclude" "${mpi3[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 1 --ps-sync --ps-async
    expect_error 2 "--mode" "${mpi2[@]}" "$trainer" "${small[@]}" --mode star
    expect_error 2 "--timeline" "${mpi2[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 1 --timeline "$tmp/t.json"
    expect_error 2 "--num-ps" "$trainer" "${small[@]}" --mode ps --num-ps 1
    # 24 rows per step over 4 - 2 = 2 workers is fine; over 4 - 1 = 3 it is too (24 % 3 == 0);
    # 26 over 3 workers is not.
    expect_error 2 "3 workers" "${mpi4[@]}" "$trainer" "${small[@]}" --mode ps --num-ps 1 --batch-size 26
    ;;
  ps)
    # Sync PS with 1 server and 2 workers trains the model 2 allreduce ranks train.
    run=("${small[@]}" --no-shuffle --epochs 2 --log-level info)
    mpirun_np 3 "$trainer" "${run[@]}" --mode ps --num-ps 1 --ps-sync --metrics "$tmp/ps.csv" >"$tmp/ps.out" ||
      fail "ps sync run failed"
    mpirun_np 2 "$trainer" "${run[@]}" --metrics "$tmp/ar.csv" >"$tmp/ar.out" || fail "allreduce run failed"
    for want in "rank 0 = ps:0" "rank 1 = worker:0" "rank 2 = worker:1" "traffic per rank per step: ps sent"; do
      grep -qF "$want" "$tmp/ps.out" || fail "ps output lacks '$want'"
    done
    grep -qF "traffic per rank per step: sent" "$tmp/ar.out" || fail "allreduce output lacks its traffic line"
    # epoch, steps and test accuracy equal; losses within float noise.
    diff <(cut -d, -f1,2,5 "$tmp/ps.csv") <(cut -d, -f1,2,5 "$tmp/ar.csv") >&2 || fail "ps sync and allreduce differ"
    paste -d, <(tail -n +2 "$tmp/ps.csv" | cut -d, -f3,4) <(tail -n +2 "$tmp/ar.csv" | cut -d, -f3,4) |
      awk -F, '{ for (i = 1; i <= 2; ++i) { d = $i - $(i + 2); if (d < 0) d = -d; if (d > 1e-4 * (1 + $(i + 2))) exit 1 } }' ||
      fail "ps sync and allreduce losses differ"
    # Async with a bound: staleness reported and within the bound.
    mpirun_np 4 "$trainer" "${small[@]}" --epochs 2 --mode ps --num-ps 1 --ps-async --max-staleness 1 \
      --optimizer sgd --lr 0.1 --log-level info >"$tmp/async.out" || fail "ps async run failed"
    max=$(sed -nE 's/^staleness: mean [0-9.]+, max ([0-9]+) versions.*/\1/p' "$tmp/async.out")
    [[ -n $max && $max -le 1 ]] || fail "staleness max '$max' missing or above the bound 1"
    grep -qE "^epoch 2 .*staleness mean" "$tmp/async.out" || fail "no per-epoch staleness"
    acc=$(sed -nE 's/^final test accuracy: ([0-9.]+)%.*/\1/p' "$tmp/async.out")
    awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 90.0) }' || fail "async accuracy $acc% < 90%"
    ;;
  compare_modes)
    # jobs/compare_modes.sh at a tiny size, on the blobs, so the script cannot rot.
    build=$(cd "$(dirname "$trainer")/../.." && pwd)
    RF_BUILD_DIR="$build" RF_DATA="$blobs" RF_TRAIN_ROWS=480 RF_BATCH=24 RF_EPOCHS=2 RF_TARGET=0.5 \
      bash "$(dirname "${BASH_SOURCE[0]}")/../../jobs/compare_modes.sh" >"$tmp/table" 2>&1 ||
      { cat "$tmp/table" >&2; fail "compare_modes.sh failed"; }
    cat "$tmp/table"
    for mode in ring mpi ps-sync ps-async ring-W; do
      grep -qE "^$mode	[^	]+	[0-9]+	[0-9]" "$tmp/table" || fail "no '$mode' row with figures"
    done
    for n in 8 64 512; do grep -qE "^$n	[0-9.]+	[0-9.]+	[0-9.]+$" "$tmp/table" || fail "no projection for $n ranks"; done
    acc() { awk -F'\t' -v m="$1" '$1 == m { print $8 }' "$tmp/table"; }
    [[ $(acc ring) == "$(acc ps-sync)" ]] || fail "ring $(acc ring) and ps-sync $(acc ps-sync) trained different models"
    ;;
  *)
    echo "unknown case $case" >&2
    exit 2
    ;;
esac

e2e_finish
