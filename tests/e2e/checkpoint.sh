#!/usr/bin/env bash
# End-to-end tests of checkpoints, resume, stop signals and failures, with the
# real trainer binary on a small synthetic data set. Usage:
#   checkpoint.sh TRAINER DATA_TOOL CHECKPOINT_DIFF CASE MPIEXEC [FASHION_MNIST_DIR]
# CASE: bitwise | other_ranks | corrupt | crash | signals | kill | nan | stall | bad_flags | ps
#       | ps_cnn (needs Fashion-MNIST; exits 77, skipped, without it)
set -uo pipefail
trainer=$1 data_tool=$2 ckdiff=$3 case=$4 mpiexec=$5 fmnist=${6:-/usr/share/datasets/fashion-mnist}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rf_checkpoint_e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"

data="$tmp/blobs.h5"
"$data_tool" synth blobs --train 1200 --test 240 --classes 4 --dims 8 --spread 3 --seed 5 \
  -o "$data" >/dev/null || { echo "could not make the test data set" >&2; exit 1; }
# 20 steps per epoch; momentum (a slot per variable) and shuffling, so a
# resume must restore optimizer state and the data loader's position.
base=(--data "$data" --model mlp --hidden 16,8 --batch-size 60 --optimizer momentum --lr 0.05
  --threads 1 --log-level warn)

# run NP ARGS...: the trainer on NP ranks (0: alone, as a singleton), bounded.
run() {
  local np=$1
  shift
  if ((np == 0)); then
    timeout 120 "$trainer" "$@"
  else
    timeout 120 "$mpiexec" -np "$np" --oversubscribe "$trainer" "$@"
  fi
}

# The final test accuracy (percent) in a run's output.
accuracy_of() { sed -nE 's/^final test accuracy: ([0-9.]+)%.*/\1/p' "$1"; }

# The "model checksum: <hex>" line of a run's output.
checksum_of() { sed -n 's/^model checksum: //p' "$1"; }

# expect_same_model WHAT OUT_A OUT_B: both runs printed the same checksum.
expect_same_model() {
  local a b
  a=$(checksum_of "$2")
  b=$(checksum_of "$3")
  if [[ -z $a || $a != "$b" ]]; then
    fail "$1: model checksum '$a' vs '$b'"
    sed 's/^/    /' "$2" "$3" >&2
  fi
}

# signal_run NP SIGNAL TARGET DIR [ARGS...]: starts a slowed-down run (with
# ARGS), sends SIGNAL once it has checkpointed a step, to mpirun
# (TARGET=launcher, which forwards it) or to every rank (TARGET=ranks, as
# Slurm does), and checks the documented exit 75.
signal_run() {
  local np=$1 sig=$2 target=$3 dir=$4
  shift 4
  local launcher=()
  ((np > 0)) && launcher=("$mpiexec" -np "$np" --oversubscribe)
  "${launcher[@]}" "$trainer" "${base[@]}" --epochs 3 "$@" --checkpoint-dir "$dir" --checkpoint-every 5 --test-step-delay-ms 15 \
    >"$tmp/sig.out" 2>"$tmp/sig.err" &
  local pid=$! i
  # Wait (bounded) until training is under way: the first checkpoint.
  for ((i = 0; i < 200; i++)); do
    compgen -G "$dir/ckpt-*.h5" >/dev/null && break
    sleep 0.05
  done
  if [[ $target == ranks && $np -gt 0 ]]; then
    pkill "-$sig" -P "$pid"
  else
    kill "-$sig" "$pid"
  fi
  wait "$pid"
  local rc=$?
  if [[ $rc -ne 75 ]]; then
    fail "np $np SIG$sig to the $target: exit $rc (want 75)"
    sed 's/^/    /' "$tmp/sig.out" "$tmp/sig.err" >&2
  fi
  grep -q "stopped by SIG$sig after step" "$tmp/sig.out" ||
    fail "np $np SIG$sig: no 'stopped by' line in $(cat "$tmp/sig.out")"
  [[ -n $(ls "$dir"/ckpt-*.h5 2>/dev/null) ]] || fail "np $np SIG$sig: no checkpoint in $dir"
}

case $case in
  bitwise)
    # 2k steps straight vs k + resume + k, at 1 and 2 ranks: bitwise equal.
    for np in 0 2; do
      run "$np" "${base[@]}" --max-steps 50 --checkpoint-dir "$tmp/straight$np" >"$tmp/a.out" ||
        fail "np $np: straight run failed"
      run "$np" "${base[@]}" --max-steps 23 --checkpoint-dir "$tmp/split$np" >"$tmp/b1.out" ||
        fail "np $np: first half failed"
      run "$np" "${base[@]}" --max-steps 50 --checkpoint-dir "$tmp/split$np" --resume \
        >"$tmp/b2.out" 2>"$tmp/b2.err" || fail "np $np: resumed half failed"
      grep -q "resumed from '$tmp/split$np/ckpt-0000000023.h5' at step 23" "$tmp/b2.err" ||
        fail "np $np: no 'resumed from' message: $(cat "$tmp/b2.err")"
      expect_same_model "np $np: straight vs resumed" "$tmp/a.out" "$tmp/b2.out"
      "$ckdiff" "$tmp/straight$np/ckpt-0000000050.h5" "$tmp/split$np/ckpt-0000000050.h5" 0 \
        >/dev/null || fail "np $np: final checkpoints (with optimizer slots) differ"
    done
    # Resuming a finished run trains no more and gives the same model.
    run 2 "${base[@]}" --max-steps 50 --checkpoint-dir "$tmp/split2" --resume >"$tmp/c.out" 2>&1 ||
      fail "resuming a finished run failed"
    expect_same_model "finished run resumed" "$tmp/a.out" "$tmp/c.out"
    ;;
  other_ranks)
    # Equivalence mode: no shuffle, strided shards, the same global batch.
    # 2 ranks for k steps, then 3 ranks for k more, equals 2k steps on 2 ranks.
    eq=("${base[@]}" --no-shuffle --shard strided)
    run 2 "${eq[@]}" --max-steps 40 --checkpoint-dir "$tmp/straight" >/dev/null ||
      fail "straight run failed"
    run 2 "${eq[@]}" --max-steps 20 --checkpoint-dir "$tmp/split" >/dev/null || fail "2-rank half failed"
    run 3 "${eq[@]}" --max-steps 40 --checkpoint-dir "$tmp/split" --resume >/dev/null 2>&1 ||
      fail "3-rank resume failed"
    "$ckdiff" "$tmp/straight/ckpt-0000000040.h5" "$tmp/split/ckpt-0000000040.h5" 1e-5 >&2 ||
      fail "2 ranks straight and 2 -> 3 ranks resumed differ beyond 1e-5"
    ;;
  corrupt)
    run 2 "${base[@]}" --max-steps 60 --checkpoint-dir "$tmp/straight" >"$tmp/a.out" ||
      fail "straight run failed"
    run 2 "${base[@]}" --max-steps 40 --checkpoint-every 20 --checkpoint-dir "$tmp/c" >/dev/null ||
      fail "checkpointed run failed"
    newest="$tmp/c/ckpt-0000000040.h5"
    # Cut the newest checkpoint in half (a crash of the file system, a full disk).
    truncate -s $(($(stat -c %s "$newest") / 2)) "$newest"
    run 2 "${base[@]}" --max-steps 60 --checkpoint-dir "$tmp/c" --resume >"$tmp/b.out" 2>"$tmp/b.err" ||
      fail "resume after corruption failed: $(cat "$tmp/b.err")"
    grep -q "checkpoint '$newest'.*corrupt" "$tmp/b.err" ||
      fail "no message naming the corrupt checkpoint: $(cat "$tmp/b.err")"
    grep -q "resumed from '$tmp/c/ckpt-0000000020.h5' at step 20" "$tmp/b.err" ||
      fail "did not fall back to the older checkpoint: $(cat "$tmp/b.err")"
    [[ -f $newest.corrupt ]] || fail "the corrupt checkpoint was not kept aside as $newest.corrupt"
    expect_same_model "fallback resume" "$tmp/a.out" "$tmp/b.out"
    # A truncated file and nothing older: refused, never a silent fresh start.
    run 0 "${base[@]}" --max-steps 10 --checkpoint-dir "$tmp/t" >/dev/null || fail "short run failed"
    truncate -s 2000 "$tmp/t/ckpt-0000000010.h5"
    expect_error 1 "none of the 1 checkpoints in '$tmp/t' can be read" \
      "$trainer" "${base[@]}" --max-steps 20 --checkpoint-dir "$tmp/t" --resume
    # Another model's checkpoint: refused by name.
    run 0 "${base[@]}" --max-steps 10 --checkpoint-dir "$tmp/m" >/dev/null || fail "short run failed"
    expect_error 1 "checkpoint '$tmp/m/ckpt-0000000010.h5' (mlp hidden 16,8, optimizer momentum) does not fit this run (mlp hidden 16,4" \
      "$trainer" "${base[@]}" --hidden 16,4 --max-steps 20 --checkpoint-dir "$tmp/m" --resume
    ;;
  crash)
    # Rank 0 is killed while writing its second checkpoint: the first stays
    # loadable and the resumed run ends with the uninterrupted run's model.
    run 2 "${base[@]}" --max-steps 60 --checkpoint-dir "$tmp/straight" >"$tmp/a.out" ||
      fail "straight run failed"
    run 2 "${base[@]}" --max-steps 60 --checkpoint-every 20 --checkpoint-dir "$tmp/c" \
      --test-crash-in-checkpoint 2 >/dev/null 2>&1 && fail "the crashing run exited 0"
    [[ -n $(ls -A "$tmp/c" | grep '\.tmp$') ]] || fail "no partial temporary file was left by the crash"
    [[ ! -e $tmp/c/ckpt-0000000040.h5 ]] || fail "a half-written checkpoint has the final name"
    run 2 "${base[@]}" --max-steps 60 --checkpoint-dir "$tmp/c" --resume >"$tmp/b.out" 2>"$tmp/b.err" ||
      fail "resume after the crash failed: $(cat "$tmp/b.err")"
    grep -q "resumed from '$tmp/c/ckpt-0000000020.h5'" "$tmp/b.err" ||
      fail "did not resume from the previous checkpoint: $(cat "$tmp/b.err")"
    [[ -z $(ls -A "$tmp/c" | grep '\.tmp$') ]] || fail "the stale temporary file was not cleaned up"
    expect_same_model "resume after a crash" "$tmp/a.out" "$tmp/b.out"
    ;;
  signals)
    # SIGTERM and SIGUSR1 at 1, 2 and 4 ranks: checkpoint, exit 75, and the
    # resumed run ends with the uninterrupted model whatever step it stopped at.
    run 2 "${base[@]}" --epochs 3 >"$tmp/ref2.out" || fail "reference run failed"
    run 0 "${base[@]}" --epochs 3 >"$tmp/ref0.out" || fail "reference run failed"
    run 4 "${base[@]}" --epochs 3 >"$tmp/ref4.out" || fail "reference run failed"
    for np in 0 2 4; do
      for sig in TERM USR1; do
        for target in launcher ranks; do
          ((np == 0)) && [[ $target == ranks ]] && continue
          # mpirun itself treats SIGTERM as "abort the job": Slurm signals the ranks.
          [[ $sig == TERM && $target == launcher && $np -gt 0 ]] && continue
          dir="$tmp/s$np$sig$target"
          signal_run "$np" "$sig" "$target" "$dir"
          run "$np" "${base[@]}" --epochs 3 --checkpoint-dir "$dir" --resume >"$tmp/r.out" 2>&1 ||
            fail "np $np SIG$sig: resume failed: $(cat "$tmp/r.out")"
          expect_same_model "np $np SIG$sig ($target) then resume" "$tmp/ref$np.out" "$tmp/r.out"
        done
      done
    done
    ;;
  kill)
    # kill -9 of one rank ends the whole job, non-zero, within 10 s.
    "$mpiexec" -np 3 --oversubscribe "$trainer" "${base[@]}" --epochs 50 --test-step-delay-ms 10 \
      >"$tmp/k.out" 2>&1 &
    pid=$!
    sleep 2
    victim=$(pgrep -P "$pid" | sed -n 2p)
    start=$(date +%s%N)
    kill -9 "$victim"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    secs=$((($(date +%s%N) - start) / 1000000000))
    if kill -0 "$pid" 2>/dev/null; then
      fail "the job still runs 10 s after kill -9 of rank pid $victim"
      pkill -9 -P "$pid"
    fi
    wait "$pid"
    rc=$?
    ((rc != 0)) || fail "the job exited 0 after a rank was killed"
    echo "job ended ${secs}s after kill -9 of one rank, exit $rc"
    ;;
  nan)
    # A NaN fed at step 25 on the last rank: every rank stops with the step
    # and the first variable named; the checkpoint of step 20 stays valid.
    for np in 0 2; do
      dir="$tmp/n$np"
      if ((np == 0)); then launcher=(); else launcher=(timeout 120 "$mpiexec" -np "$np" --oversubscribe); fi
      expect_error 1 "step 25: the averaged gradient of variable 'dense1/kernel' is NaN or Inf" \
        "${launcher[@]}" "$trainer" "${base[@]}" --epochs 3 --checkpoint-dir "$dir" \
        --checkpoint-every 20 --test-nan-step 25
      grep -q "the last checkpoint, '$dir/ckpt-0000000020.h5', is intact" "$tmp/err" ||
        fail "np $np: the message does not name the last good checkpoint: $(cat "$tmp/err")"
      [[ ! -e $dir/ckpt-0000000025.h5 ]] || fail "np $np: the bad step was checkpointed"
      run "$np" "${base[@]}" --max-steps 21 --checkpoint-dir "$dir" --resume >/dev/null 2>&1 ||
        fail "np $np: the last good checkpoint does not load"
    done
    ;;
  stall)
    # Rank 1 is held back 30 s after step 1: with --stall-timeout 2 rank 0
    # names it and the job is aborted long before the delay is over.
    start=$(date +%s)
    timeout 60 "$mpiexec" -np 3 --oversubscribe "$trainer" "${base[@]}" --epochs 1 \
      --test-step-delay-ms 30000 --test-delay-rank 1 --stall-timeout 2 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    secs=$(($(date +%s) - start))
    ((rc != 0 && rc != 124)) || fail "stalled job: exit $rc (want an abort, non-zero)"
    ((secs < 20)) || fail "the watchdog took ${secs}s"
    grep -q "stalled: rank 0's step agreement at step 1 (waiting for rank(s) 1) has waited" "$tmp/err" ||
      fail "no stall report naming rank 1: $(cat "$tmp/err")"
    ;;
  bad_flags)
    for bad in 0 -5 abc 10x 1.5; do
      expect_error 2 "--checkpoint-every" "$trainer" "${base[@]}" --checkpoint-dir "$tmp/d" \
        --checkpoint-every "$bad"
    done
    expect_error 2 "--checkpoint-every needs --checkpoint-dir" "$trainer" "${base[@]}" --checkpoint-every 10
    expect_error 2 "--resume needs --checkpoint-dir" "$trainer" "${base[@]}" --resume
    expect_error 2 "--keep-checkpoints" "$trainer" "${base[@]}" --checkpoint-dir "$tmp/d" --keep-checkpoints 0
    expect_error 2 "--stall-timeout" "$trainer" "${base[@]}" --stall-timeout -1
    touch "$tmp/file"
    expect_error 1 "--checkpoint-dir: cannot create directory '$tmp/file/sub'" \
      timeout 120 "$mpiexec" -np 2 --oversubscribe "$trainer" "${base[@]}" --checkpoint-dir "$tmp/file/sub"
    # --keep-checkpoints K keeps the newest K.
    run 0 "${base[@]}" --max-steps 50 --checkpoint-every 10 --keep-checkpoints 2 \
      --checkpoint-dir "$tmp/keep" >/dev/null || fail "keep run failed"
    kept=$(cd "$tmp/keep" && echo ckpt-*)
    [[ $kept == "ckpt-0000000040.h5 ckpt-0000000050.h5" ]] || fail "--keep-checkpoints 2 kept: $kept"
    ;;
  ps)
    # Parameter-server checkpoints are the allreduce format (same variables,
    # slots and order): sync ps with W workers equals allreduce on W ranks.
    ps=(--mode ps --num-ps 2)
    run 2 "${base[@]}" --max-steps 50 --checkpoint-dir "$tmp/ar" >/dev/null || fail "allreduce run failed"
    run 4 "${base[@]}" "${ps[@]}" --max-steps 50 --checkpoint-dir "$tmp/ps" >"$tmp/ps.out" ||
      fail "ps run failed"
    grep -q "last checkpoint: '$tmp/ps/ckpt-0000000050.h5'" "$tmp/ps.out" ||
      fail "ps run: no 'last checkpoint' line: $(cat "$tmp/ps.out")"
    "$ckdiff" "$tmp/ar/ckpt-0000000050.h5" "$tmp/ps/ckpt-0000000050.h5" 1e-6 >&2 ||
      fail "sync ps (2 servers, 2 workers) and allreduce (2 ranks) checkpoints differ"
    # ps for 23 steps (checkpoints 10, 20, 23), resumed in ps to 50: bitwise.
    run 4 "${base[@]}" "${ps[@]}" --max-steps 23 --checkpoint-every 10 \
      --checkpoint-dir "$tmp/split" >/dev/null || fail "ps first half failed"
    kept=$(cd "$tmp/split" && echo ckpt-*)
    [[ $kept == "ckpt-0000000010.h5 ckpt-0000000020.h5 ckpt-0000000023.h5" ]] ||
      fail "ps --checkpoint-every 10 --max-steps 23 wrote: $kept"
    run 4 "${base[@]}" "${ps[@]}" --max-steps 50 --checkpoint-dir "$tmp/split" --resume \
      >/dev/null 2>"$tmp/r.err" || fail "ps resume failed: $(cat "$tmp/r.err")"
    grep -q "resumed from '$tmp/split/ckpt-0000000023.h5' at step 23" "$tmp/r.err" ||
      fail "ps: no 'resumed from' message: $(cat "$tmp/r.err")"
    "$ckdiff" "$tmp/ps/ckpt-0000000050.h5" "$tmp/split/ckpt-0000000050.h5" 0 >&2 ||
      fail "ps straight and ps resumed differ"
    # Across modes and server counts: allreduce -> ps (1 server), ps -> allreduce.
    run 2 "${base[@]}" --max-steps 23 --checkpoint-dir "$tmp/a2p" >/dev/null || fail "allreduce half failed"
    run 3 "${base[@]}" --mode ps --num-ps 1 --max-steps 50 --checkpoint-dir "$tmp/a2p" --resume \
      >/dev/null 2>&1 || fail "ps resume of an allreduce checkpoint failed"
    "$ckdiff" "$tmp/ar/ckpt-0000000050.h5" "$tmp/a2p/ckpt-0000000050.h5" 1e-6 >&2 ||
      fail "allreduce -> ps resume differs from allreduce"
    mkdir "$tmp/p2a" && cp "$tmp/split/ckpt-0000000020.h5" "$tmp/p2a/"
    run 2 "${base[@]}" --max-steps 50 --checkpoint-dir "$tmp/p2a" --resume >/dev/null 2>&1 ||
      fail "allreduce resume of a ps checkpoint failed"
    "$ckdiff" "$tmp/ar/ckpt-0000000050.h5" "$tmp/p2a/ckpt-0000000050.h5" 1e-6 >&2 ||
      fail "ps -> allreduce resume differs from allreduce"
    # Async: checkpoints by steps, a resume that finishes; another model is refused.
    as=(--mode ps --num-ps 1 --ps-async --optimizer sgd)
    run 3 "${base[@]}" "${as[@]}" --max-steps 30 --checkpoint-every 10 \
      --checkpoint-dir "$tmp/async" >/dev/null || fail "async run failed"
    run 3 "${base[@]}" "${as[@]}" --max-steps 50 --checkpoint-dir "$tmp/async" --resume \
      >"$tmp/as.out" 2>"$tmp/as.err" || fail "async resume failed: $(cat "$tmp/as.err")"
    grep -q "resumed from '$tmp/async/ckpt-0000000030.h5' at step 30" "$tmp/as.err" ||
      fail "async: no 'resumed from' message: $(cat "$tmp/as.err")"
    grep -q "last checkpoint: '$tmp/async/ckpt-0000000050.h5'" "$tmp/as.out" ||
      fail "async: no final checkpoint: $(cat "$tmp/as.out")"
    # Async is not deterministic; the resumed model must still learn: within
    # 5 points of the straight sync ps run's accuracy.
    a_sync=$(accuracy_of "$tmp/ps.out") a_async=$(accuracy_of "$tmp/as.out")
    awk -v s="${a_sync:-100}" -v a="${a_async:-0}" 'BEGIN { exit !(a >= s - 5) }' ||
      fail "async resumed accuracy ${a_async:-none}% vs sync ${a_sync:-none}%"
    # Stop signals: sync ps stops every worker before the same step,
    # checkpoints, exits 75, and the resumed run ends as the straight one.
    run 4 "${base[@]}" "${ps[@]}" --epochs 3 --checkpoint-dir "$tmp/ps3" >/dev/null ||
      fail "ps 3-epoch run failed"
    for how in "USR1 launcher" "TERM ranks"; do
      read -r sig target <<<"$how"
      signal_run 4 "$sig" "$target" "$tmp/pssig$sig" "${ps[@]}"
      run 4 "${base[@]}" "${ps[@]}" --epochs 3 --checkpoint-dir "$tmp/pssig$sig" --resume \
        >/dev/null 2>&1 || fail "ps resume after SIG$sig failed"
      "$ckdiff" "$tmp/ps3/ckpt-0000000060.h5" "$tmp/pssig$sig/ckpt-0000000060.h5" 0 >&2 ||
        fail "ps stopped by SIG$sig and resumed differs from the straight run"
    done
    signal_run 3 USR1 launcher "$tmp/assig" "${as[@]}"
    run 3 "${base[@]}" "${as[@]}" --epochs 3 --checkpoint-dir "$tmp/assig" --resume >/dev/null 2>&1 ||
      fail "async resume after a stop failed"
    expect_error 1 "Resume with the configuration that wrote it" timeout 120 "$mpiexec" -np 3 --oversubscribe "$trainer" \
      "${base[@]}" --hidden 32 --mode ps --num-ps 1 --checkpoint-dir "$tmp/split" --resume
    ;;
  ps_cnn)
    # The CNN has dropout: ps workers key their masks by step and worker as
    # allreduce ranks do by step and rank, so sync ps equals allreduce.
    [[ -f "$fmnist/train-images-idx3-ubyte.gz" ]] || { echo "Fashion-MNIST not installed" >&2; exit 77; }
    "$data_tool" import-idx --dir "$fmnist" -o "$tmp/fmnist.h5" >/dev/null || fail "import failed"
    cnn=(--data "$tmp/fmnist.h5" --model cnn --batch-size 64 --train-rows 640 --max-steps 4
      --threads 1 --log-level warn)
    run 2 "${cnn[@]}" --checkpoint-dir "$tmp/ar" >/dev/null || fail "allreduce cnn run failed"
    run 3 "${cnn[@]}" --mode ps --num-ps 1 --checkpoint-dir "$tmp/ps" >/dev/null ||
      fail "ps cnn run failed"
    "$ckdiff" "$tmp/ar/ckpt-0000000004.h5" "$tmp/ps/ckpt-0000000004.h5" 1e-6 >&2 ||
      fail "sync ps and allreduce cnn (with dropout) differ"
    ;;
  *)
    echo "unknown case $case" >&2
    exit 2
    ;;
esac

e2e_finish
