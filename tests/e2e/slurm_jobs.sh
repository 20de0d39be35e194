#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end tests of the jobs/ launch scripts; the Slurm ones against a real
# single-node Slurm brought up for the test (slurm_lib.sh). Usage:
#   slurm_jobs.sh TRAINER DATA_TOOL JOBS_DIR CASE
# CASE: train | reject | preempt | scaling | local
# Exits 0 on success, 77 (skipped) when Slurm cannot be run here (not root, or
# the packages are missing) outside CI. Nothing is written outside a scratch
# folder, which is removed, with the daemons stopped, whatever the outcome.
set -uo pipefail
trainer=$1 data_tool=$2 jobs_dir=$3 case=$4
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rf_slurm_e2e.XXXXXX")
source "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/slurm_lib.sh"
trap 'slurm_down; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
# The private cluster lives in $tmp/cluster; munged runs as user munge and
# needs to traverse $tmp to reach it.
chmod 755 "$tmp"

data="$tmp/blobs.h5"
"$data_tool" synth blobs --train 2048 --test 512 --classes 4 --dims 16 --spread 2 --seed 7 \
  -o "$data" >/dev/null || { echo "could not make the test data set" >&2; exit 1; }

# The knobs of jobs/*.sbatch for a small, deterministic MLP run: 32 steps per
# epoch, no shuffling, strided shards (same seed and ranks: bitwise the same).
export RF_TRAINER="$trainer" RF_DATA="$data" RF_MODEL=mlp RF_EPOCHS=3 RF_BATCH=64 RF_THREADS=1
small=(--hidden 32 --no-shuffle --shard strided)
cores=$(nproc)

# --overcommit lets more ranks than cores share them: the node advertises
# only what it has, and a job asking for more is rejected.
oc2=() oc4=()
((cores < 2)) && oc2=(--overcommit)
((cores < 4)) && oc4=(--overcommit)

# show_job J OUT: what a failing check needs to see.
show_job() {
  echo "--- scontrol show job $1" >&2
  timeout 10 scontrol show job "$1" >&2 || true
  echo "--- $2" >&2
  sed 's/^/    /' "$2" >&2 || true
  local log
  for log in "$tmp"/cluster/slurm/log/*.log; do
    echo "--- $log (last 30 lines)" >&2
    tail -n 30 "$log" | sed 's/^/    /' >&2
  done
}

# expect_completed J OUT: J finished in state COMPLETED with exit code 0:0.
expect_completed() {
  local state code
  state=$(slurm_field "$1" JobState)
  code=$(slurm_field "$1" ExitCode)
  if [[ $state != COMPLETED || $code != 0:0 ]]; then
    fail "job $1: state $state, exit code $code (want COMPLETED, 0:0)"
    show_job "$1" "$2"
  fi
}

# final_accuracy OUT: the NN.NN of "final test accuracy: NN.NN% (test loss X)".
final_accuracy() { sed -nE 's/^final test accuracy: ([0-9.]+)% \(test loss [0-9.]+\)$/\1/p' "$1" | tail -1; }
checksum_of() { sed -n 's/^model checksum: //p' "$1" | tail -1; }

# run_train NAME SBATCH_FLAGS... -- TRAINER_ARGS...: submits jobs/train.sbatch
# with its log in $tmp/NAME.out, sets $job and waits (bounded) for it to finish.
run_train() {
  local name=$1 sb=()
  shift
  while (($# > 0)) && [[ $1 != -- ]]; do sb+=("$1"); shift; done
  shift
  job=$(slurm_submit --job-name="$name" --output="$tmp/$name.out" "${sb[@]}" \
    "$jobs_dir/train.sbatch" "$@") || { fail "sbatch $name failed"; return 1; }
  slurm_wait_done "$job" 120 || { fail "job $job ($name) did not finish in 120 s"; return 1; }
}

# preempt_and_resume LAUNCHER: the reference run again, slowed down (96 steps x
# 40 ms) so that it can be signalled mid-way. USR1 goes to the batch shell
# only, which is what --signal=B:USR1@<seconds> does before a time limit; the
# script forwards it to the ranks, which checkpoint and exit 75, and the
# script requeues the job. Released at once, the job resumes from that
# checkpoint and must end with the reference run's model ($want).
preempt_and_resume() {
  local launcher=$1 name="pre-$1" ckpt="$tmp/ckpt-$1" out="$tmp/pre-$1.out" i stop
  job=$(RF_LAUNCHER=$launcher RF_CHECKPOINT_DIR="$ckpt" RF_CHECKPOINT_EVERY=10 slurm_submit \
    --job-name="$name" --output="$out" --ntasks=2 "${oc2[@]}" "$jobs_dir/train.sbatch" \
    "${small[@]}" --test-step-delay-ms 40) || { fail "$launcher: sbatch failed"; return; }
  slurm_wait "$job" 60 RUNNING || fail "$launcher: job $job did not start"
  for ((i = 0; i < 300; i++)); do
    grep -q '^epoch 1 ' "$out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '^epoch 1 ' "$out" || fail "$launcher: no epoch finished within 30 s"
  timeout 10 scancel --batch --signal=USR1 "$job" || fail "$launcher: scancel --batch --signal=USR1 failed"

  # Requeued by the script: pending again, one restart counted. Slurm holds a
  # requeued job back for a while (BeginTime); release it at once, once the
  # first run has left the node.
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    [[ $(slurm_field "$job" Restarts) -ge 1 && $(slurm_field "$job" JobState) == PENDING ]] && break
    sleep 0.3
  done
  if [[ $(slurm_field "$job" Restarts) -lt 1 ]]; then
    fail "$launcher: job $job was not requeued"
    show_job "$job" "$out"
    return
  fi
  slurm_wait_node_clear "$job" 30 || fail "$launcher: the first run's step did not leave the node"
  # slurmd revokes the first run's credential with one-second resolution: a
  # run started within the same second is refused ("Job credential revoked")
  # and the job fails for good. A real site's BeginTime hold hides this.
  sleep 2
  timeout 10 scontrol update JobId="$job" StartTime=now || fail "$launcher: could not release job $job"
  slurm_wait_done "$job" 120 || fail "$launcher: the requeued job $job did not finish"
  expect_completed "$job" "$out"
  [[ $(slurm_field "$job" Restarts) -eq 1 ]] ||
    fail "$launcher: job $job restarted $(slurm_field "$job" Restarts) times (want 1)"

  # One log, appended across both runs, tells the story: the signal, the
  # stop checkpoint, the requeue, the second run resuming from that checkpoint.
  stop=$(sed -nE 's/^stopped by SIGUSR1 after step ([0-9]+); checkpoint .*exit 75.*/\1/p' "$out")
  [[ -n $stop ]] || fail "$launcher: no 'stopped by SIGUSR1 after step N; checkpoint ... exit 75' line"
  local line
  for line in "got USR1, forwarding it" "exit 75); requeueing job $job" "job $job restart 1 " \
    "resumed from '$ckpt/ckpt-$(printf %010d "${stop:-0}").h5' at step ${stop:-0}"; do
    grep -qF -- "$line" "$out" || fail "$launcher: the job's log lacks \"$line\""
  done
  local got
  got=$(checksum_of "$out")
  if [[ -z $got || $got != "$want" ]]; then
    fail "$launcher: preempted and resumed model '$got' != uninterrupted '$want'"
    show_job "$job" "$out"
  fi
  [[ $(grep -c '^final test accuracy' "$out") -eq 1 ]] ||
    fail "$launcher: expected one final accuracy line (the resumed run's)"
}

if [[ $case != local ]]; then
  slurm_up "$tmp/cluster" "$tmp"
fi

case $case in
  train)
    # jobs/train.sbatch with 2 tasks under each launcher: it completes, prints
    # the final accuracy, passes extra arguments on to the trainer, and both
    # launchers train the same model (same seed, same ranks).
    for launcher in srun mpirun; do
      RF_LAUNCHER=$launcher run_train "train-$launcher" --ntasks=2 "${oc2[@]}" -- \
        "${small[@]}" --metrics "$tmp/$launcher.csv" || continue
      out="$tmp/train-$launcher.out"
      expect_completed "$job" "$out"
      grep -q "launcher $launcher" "$out" || fail "$launcher: the log does not name the launcher"
      # The script's #SBATCH lines took effect (the test overrides neither).
      [[ $(slurm_field "$job" Requeue) == 1 ]] || fail "$launcher: job $job is not requeueable"
      [[ $(slurm_field "$job" TimeLimit) == 01:00:00 ]] || fail "$launcher: time limit $(slurm_field "$job" TimeLimit)"
      acc=$(final_accuracy "$out")
      if [[ -z $acc ]]; then
        fail "$launcher: no final accuracy line"
        show_job "$job" "$out"
      fi
      awk -v a="${acc:-0}" 'BEGIN { exit !(a >= 90.0) }' || fail "$launcher: accuracy $acc% < 90%"
      # Extra arguments reach the trainer: the metrics file has one row per epoch.
      [[ $(wc -l <"$tmp/$launcher.csv" 2>/dev/null) -eq 4 ]] || fail "$launcher: --metrics file lacks 3 epoch rows"
      grep '^final test accuracy' "$out" >"$tmp/final-$launcher.txt"
    done
    cmp -s "$tmp/final-srun.txt" "$tmp/final-mpirun.txt" ||
      fail "srun and mpirun runs ended differently: $(cat "$tmp"/final-*.txt)"
    ;;
  reject)
    # A job asking for more than the node has must be refused at submission
    # (EnforcePartLimits=ALL), not left pending forever.
    for flags in "--ntasks=$((cores * 4))" "--nodes=2"; do
      start=$SECONDS
      # shellcheck disable=SC2086  # two words on purpose
      if timeout 20 sbatch --parsable $flags --output="$tmp/reject.out" "$jobs_dir/train.sbatch" \
        >"$tmp/sbatch.out" 2>"$tmp/sbatch.err"; then
        fail "sbatch $flags was accepted (job $(cat "$tmp/sbatch.out")); it would pend forever"
      fi
      ((SECONDS - start <= 10)) || fail "sbatch $flags took $((SECONDS - start)) s to be refused"
      grep -qiE "requested|not available|invalid" "$tmp/sbatch.err" ||
        fail "sbatch $flags: unexpected message: $(cat "$tmp/sbatch.err")"
    done
    [[ -z $(timeout 10 squeue -h -o %i) ]] || fail "a rejected job is in the queue: $(squeue)"
    ;;
  preempt)
    # The uninterrupted run of the same configuration.
    RF_CHECKPOINT_DIR="$tmp/ckpt-ref" run_train ref --ntasks=2 "${oc2[@]}" -- "${small[@]}" || exit 1
    expect_completed "$job" "$tmp/ref.out"
    want=$(checksum_of "$tmp/ref.out")
    [[ $want =~ ^[0-9a-f]{16}$ ]] || fail "reference run printed no model checksum"
    for launcher in srun mpirun; do
      preempt_and_resume "$launcher"
    done
    ;;
  scaling)
    # jobs/scaling.sbatch at 1, 2, 4 ranks: one TSV row per rank count, the
    # efficiency of the first 1.000, and a PNG plot of it.
    job=$(RF_SCALING_RANKS="1 2 4" RF_EPOCHS=2 RF_JOBS_DIR="$jobs_dir" RF_SCALING_TSV="$tmp/scaling.tsv" \
      slurm_submit --job-name=scaling --output="$tmp/scaling.out" --ntasks=4 "${oc4[@]}" \
      "$jobs_dir/scaling.sbatch" "${small[@]}" --log-level warn) || { fail "sbatch failed"; exit 1; }
    slurm_wait_done "$job" 150 || fail "job $job did not finish in 150 s"
    expect_completed "$job" "$tmp/scaling.out"
    cat "$tmp/scaling.tsv"
    [[ $(head -1 "$tmp/scaling.tsv") == $'ranks\tthreads_per_rank\tbatch\tsamples_per_s\tspeedup\tefficiency' ]] ||
      fail "unexpected TSV header: $(head -1 "$tmp/scaling.tsv")"
    [[ $(cut -f1 "$tmp/scaling.tsv" | tail -n +2 | tr '\n' ' ') == "1 2 4 " ]] || fail "TSV rows are not for 1, 2, 4 ranks"
    # speedup = S_N / S_1 and efficiency = (S_N / N) / S_1, to the printed digits.
    awk -F'\t' 'function off(a, b) { return a - b > 0.0015 || b - a > 0.0015 }
                NR == 2 { s1 = $4 }
                NR > 1 && !($4 > 0) { exit 1 }
                NR > 1 && (off($5, $4 / s1) || off($6, $4 / $1 / s1)) { exit 1 }' "$tmp/scaling.tsv" ||
      fail "TSV values are inconsistent"
    if command -v gnuplot >/dev/null || [[ -n ${CI:-} ]]; then
      [[ $(head -c 8 "$tmp/scaling.png" 2>/dev/null | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
        fail "no PNG plot at $tmp/scaling.png"
    fi
    ;;
  local)
    # jobs/local.sh: ranks that fit on the cores are bound to them, with
    # cores / ranks threads each; more ranks than cores run unbound.
    unset RF_THREADS
    for np in 1 2 $((cores * 2)); do
      RF_NP=$np timeout 120 "$jobs_dir/local.sh" "${small[@]}" >"$tmp/local.out" 2>&1 ||
        { fail "local.sh with $np rank(s) failed"; sed 's/^/    /' "$tmp/local.out" >&2; continue; }
      bind=core
      ((np > cores)) && bind=none
      # RF_CORES counts physical cores, which may be fewer than nproc.
      grep -qE "^local.sh: $np rank\(s\) x [0-9]+ thread\(s\) on [0-9]+ core\(s\), binding $bind$" "$tmp/local.out" ||
        fail "local.sh with $np rank(s): want binding $bind: $(grep '^local.sh' "$tmp/local.out")"
      [[ -n $(final_accuracy "$tmp/local.out") ]] || fail "local.sh with $np rank(s): no final accuracy"
    done
    ;;
  *)
    echo "unknown case $case" >&2
    exit 2
    ;;
esac

e2e_finish
