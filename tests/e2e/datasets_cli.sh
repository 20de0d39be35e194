#!/usr/bin/env bash
# End-to-end tests of ringflow-data. Usage:
#   datasets_cli.sh TOOL HELPER CASE [FASHION_MNIST_DIR]
# CASE: bad_inputs | usage | ranks | synth | fashion_mnist
# Exits 0 on success, 77 (skipped) when Fashion-MNIST is not installed.
set -uo pipefail
tool=$1 helper=$2 case=$3 fmnist=${4:-/usr/share/datasets/fashion-mnist}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rf_data_e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"

# expect_line FILE REGEX: FILE has a line matching REGEX (extended).
expect_line() {
  if ! grep -qE -- "$2" "$1"; then
    fail "no line matching '$2' in:"
    sed 's/^/    /' "$1" >&2
  fi
}

case $case in
  bad_inputs)
    "$helper" "$tmp" >"$tmp/cases" || { echo "helper failed" >&2; exit 1; }
    n=0
    while IFS=$'\t' read -r kind name expect; do
      f=$tmp/$name
      if [[ $kind == info ]]; then
        expect_error 1 "$f" "$tool" info "$f"
        expect_error 1 "$expect" "$tool" info "$f"
      else
        expect_error 1 "$f" "$tool" import-idx --train-images "$f" \
          --train-labels "$tmp/good-labels.idx.gz" --test-images "$tmp/good-images.idx" \
          --test-labels "$tmp/good-labels.idx.gz" -o "$tmp/out.h5"
        expect_error 1 "$expect" "$tool" import-idx --train-images "$tmp/good-images.idx" \
          --train-labels "$tmp/good-labels.idx.gz" --test-images "$f" \
          --test-labels "$tmp/good-labels.idx.gz" -o "$tmp/out.h5"
        [[ -e $tmp/out.h5 ]] && fail "import of $name left an output file"
      fi
      n=$((n + 1))
    done <"$tmp/cases"
    [[ $n -ge 25 ]] || fail "only $n bad inputs"
    # The good inputs import, and labels beyond --num-classes are rejected.
    "$tool" import-idx --train-images "$tmp/good-images.idx" --train-labels "$tmp/good-labels.idx.gz" \
      --test-images "$tmp/good-images.idx" --test-labels "$tmp/good-labels.idx.gz" \
      -o "$tmp/good.h5" >/dev/null || fail "import of the good IDX files"
    expect_error 1 "label 5 at row 5 is outside [0, 5)" "$tool" import-idx \
      --train-images "$tmp/good-images.idx" --train-labels "$tmp/good-labels.idx.gz" \
      --test-images "$tmp/good-images.idx" --test-labels "$tmp/good-labels.idx.gz" \
      --num-classes 5 -o "$tmp/bad.h5"
    expect_error 1 "no such directory" "$tool" import-idx --dir "$tmp/nope" -o "$tmp/x.h5"
    expect_error 1 "train-images-idx3-ubyte" "$tool" import-idx --dir "$tmp" -o "$tmp/x.h5"
    expect_error 1 "--test-labels is missing" "$tool" import-idx --train-images a \
      --train-labels b --test-images c -o "$tmp/x.h5"
    ;;
  usage)
    expect_error 2 "" "$tool"
    expect_error 2 "" "$tool" frobnicate
    expect_error 2 "" "$tool" info
    expect_error 2 "" "$tool" synth circles -o "$tmp/x.h5"
    expect_error 2 "" "$tool" synth blobs
    expect_error 2 "" "$tool" synth blobs --train -5 -o "$tmp/x.h5"
    expect_error 2 "" "$tool" info x.h5 --split valid
    "$tool" --help >/dev/null || fail "--help exits non-zero"
    ;;
  ranks)
    "$tool" synth spirals --train 3 --test 2 -o "$tmp/s.h5" >/dev/null || fail "synth"
    expect_error 1 "4 ranks but only 3 rows" "$tool" info "$tmp/s.h5" --split train --ranks 4
    expect_error 1 "$tmp/s.h5" "$tool" info "$tmp/s.h5" --split train --ranks 4
    "$tool" info "$tmp/s.h5" --ranks 2 --batch 2 >"$tmp/out" || fail "info --ranks 2"
    expect_line "$tmp/out" "^train shard rank=1 mode=strided start=1 stride=2 rows=1$"
    expect_line "$tmp/out" "^train steps_per_epoch=1 global_batch=2 local_batch=1 dropped_rows=1$"
    expect_error 1 "not a multiple" "$tool" info "$tmp/s.h5" --ranks 2 --batch 3
    ;;
  synth)
    for kind in blobs spirals; do
      "$tool" synth $kind --train 500 --test 100 --classes 4 --seed 7 -o "$tmp/a.h5" >/dev/null &&
        "$tool" synth $kind --train 500 --test 100 --classes 4 --seed 7 -o "$tmp/b.h5" >/dev/null &&
        "$tool" synth $kind --train 500 --test 100 --classes 4 --seed 8 -o "$tmp/c.h5" >/dev/null ||
        fail "synth $kind"
      for f in a b c; do
        "$tool" info "$tmp/$f.h5" --checksum | grep checksum >"$tmp/$f.sum" || fail "info $f"
      done
      cmp -s "$tmp/a.sum" "$tmp/b.sum" || fail "synth $kind with the same seed differs"
      cmp -s "$tmp/a.sum" "$tmp/c.sum" && fail "synth $kind with another seed is identical"
      "$tool" info "$tmp/a.h5" >"$tmp/out" || fail "info"
      expect_line "$tmp/out" "^train/x +float32 \(500, (2)\)"
      expect_line "$tmp/out" "^test/y +int32 \(100\)"
      expect_line "$tmp/out" "^num_classes 4$"
      expect_line "$tmp/out" "^train labels 0:[0-9]+ 1:[0-9]+ 2:[0-9]+ 3:[0-9]+$"
      if command -v h5dump >/dev/null; then
        h5dump -A "$tmp/a.h5" >"$tmp/dump" || fail "h5dump cannot read the synth file"
        expect_line "$tmp/dump" '"ringflow-dataset"'
      fi
    done
    "$tool" synth blobs --dims 5 --train 10 --test 10 -o "$tmp/d.h5" >/dev/null || fail "blobs --dims"
    "$tool" info "$tmp/d.h5" >"$tmp/out"
    expect_line "$tmp/out" "^train/x +float32 \(10, 5\)"
    ;;
  fashion_mnist)
    if [[ ! -d $fmnist ]]; then
      echo "SKIP: $fmnist missing (apt-get install dataset-fashion-mnist)"
      exit 77
    fi
    start=$(date +%s.%N)
    "$tool" import-idx --dir "$fmnist" -o "$tmp/fmnist.h5" || fail "import of $fmnist"
    "$tool" info "$tmp/fmnist.h5" --checksum >"$tmp/out" || fail "info"
    cat "$tmp/out"
    expect_line "$tmp/out" "^train/x +uint8 \(60000, 28, 28\)  scale=0.00392156886"
    expect_line "$tmp/out" "^train/y +int32 \(60000\)$"
    expect_line "$tmp/out" "^test/x +uint8 \(10000, 28, 28\)"
    expect_line "$tmp/out" "^test/y +int32 \(10000\)$"
    expect_line "$tmp/out" "^train labels 0:6000 1:6000 2:6000 3:6000 4:6000 5:6000 6:6000 7:6000 8:6000 9:6000$"
    expect_line "$tmp/out" "^test labels 0:1000 1:1000 2:1000 3:1000 4:1000 5:1000 6:1000 7:1000 8:1000 9:1000$"
    expect_line "$tmp/out" "mean=0\.28604[0-9] std=0\.35302[0-9]"
    # Pinned once from the Debian package's files; the pixel sums were also
    # checked independently against the raw gz files.
    expect_line "$tmp/out" "^train checksum x_fnv1a=51ac53b882edba04 y_fnv1a=3941146f6aa883f5 x_sum=3431114169$"
    expect_line "$tmp/out" "^test checksum x_fnv1a=1b11fc03671b2f71 y_fnv1a=2f57e8024bba1255 x_sum=573469082$"
    if command -v h5dump >/dev/null; then
      h5dump -H "$tmp/fmnist.h5" >"$tmp/dump" || fail "h5dump cannot read the import"
      expect_line "$tmp/dump" "DATASPACE  SIMPLE \{ \( 60000, 28, 28 \)"
    fi
    echo "import + info took $(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo '?') s"
    ;;
  *)
    echo "unknown case $case" >&2
    exit 2
    ;;
esac

e2e_finish
