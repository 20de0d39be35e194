# A private single-node Slurm for the jobs/ tests: munged, slurmctld and slurmd
# from the Debian packages, started directly (no systemd), with every file they
# write (keys, sockets, state, spool, logs, pid files) under one scratch folder.
# Source it, then:
#
#   slurm_up DIR [SCRATCH]  bring the cluster up under DIR (exits 77 when it
#                      cannot); SCRATCH (default DIR) is removed should the test be killed
#   slurm_down         cancel the jobs and stop the daemons by their pid files
#   slurm_submit ...   sbatch --parsable ...; prints the job id
#   slurm_wait J T S.. wait up to T s until job J is in one of the states S
#   slurm_wait_done J T  wait up to T s until job J has finished
#   slurm_field J KEY  a field of `scontrol show job J`, e.g. ExitCode
#   slurm_wait_node_clear J T  wait up to T s until no step of J is on the node
#
# The daemons are stopped whatever happens to the test: by the caller's EXIT
# trap, and, should the test itself be killed (a CTest timeout sends SIGKILL),
# by a watchdog detached from the test's process tree that tears the cluster
# down once the test's pid is gone.
#
# Measured on a 2-core Debian 12 machine: the cluster is up in about 1 s, the
# first job starts about 3 s after slurmctld, later ones within about 1 s.

SLURM_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/slurm_lib.sh"
RF_SLURM_DIR=""

# Not being able to run Slurm skips the test on a workstation (exit 77), but
# fails it on CI (CI set), where jobs/test.sh installs the packages as root:
# there a skip would hide a broken set-up.
slurm_skip() {
  echo "cannot run a private Slurm: $*" >&2
  if [[ -n ${CI:-} ]]; then
    exit 1
  fi
  exit 77
}

# Two consecutive TCP ports nothing listens on (slurmctld's, slurmd's), so
# that a site's or another test's Slurm on 6817/6818 does not collide.
slurm_free_ports() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# stop_pidfile FILE: TERM the daemon named in FILE, wait up to 10 s for it to
# remove its pid file (a stopped daemon lingers as a zombie here, so kill -0
# would lie), then KILL it.
slurm_stop_pidfile() {
  local file=$1 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  kill -TERM "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
  for _ in $(seq 100); do
    [[ -f $file ]] || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
}

# slurm_teardown DIR: cancel every job while slurmctld is still up (clients
# retry for ~27 s when it is down), wait for them to leave, then stop slurmd,
# slurmctld and munged last. Idempotent: a second call finds no pid files.
slurm_teardown() {
  local dir=$1
  [[ -n $dir && -d $dir ]] || return 0
  export SLURM_CONF="$dir/slurm/slurm.conf"
  if [[ -f $dir/slurm/run/slurmctld.pid ]]; then
    local jobs
    jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [[ -n $jobs ]]; then
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      for _ in $(seq 60); do
        [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.5
      done
    fi
  fi
  slurm_stop_pidfile "$dir/slurm/run/slurmd.pid"
  slurm_stop_pidfile "$dir/slurm/run/slurmctld.pid"
  slurm_stop_pidfile "$dir/munge/munged.pid"
}

slurm_down() {
  slurm_teardown "$RF_SLURM_DIR"
}

slurm_up() {
  local dir=$1 scratch=${2:-$1}
  [[ $(id -u) -eq 0 ]] || slurm_skip "needs root (munged runs as user munge, slurmd as root)"
  local tool
  for tool in munged mungekey munge unmunge slurmctld slurmd sbatch squeue scontrol scancel sinfo runuser; do
    command -v "$tool" >/dev/null || slurm_skip "$tool not installed (Debian: slurm-wlm munge)"
  done
  id munge >/dev/null 2>&1 || slurm_skip "no user munge (Debian package munge)"
  RF_SLURM_DIR=$dir
  # munged refuses a socket folder that not everyone can traverse, and runs
  # as user munge, who must reach it: DIR's parents must be traversable too.
  mkdir -p "$dir" && chmod 755 "$dir"
  runuser -u munge -- test -x "$dir" || slurm_skip "user munge cannot reach $dir (chmod o+x its parents)"
  mkdir -p "$dir/munge" "$dir/slurm/state" "$dir/slurm/spool" "$dir/slurm/log" "$dir/slurm/run"
  chown munge:munge "$dir/munge"

  # Watchdog: outlives a killed test (double fork, so the test's process tree
  # does not hold it), tears the cluster down when the test's pid is gone and
  # removes SCRATCH.
  local test_pid=$$
  # shellcheck disable=SC2016  # expanded by the watchdog's shell
  (setsid bash -c 'source "$1"; while kill -0 "$2" 2>/dev/null; do sleep 2; done
                   slurm_teardown "$3"; rm -rf "$4"' _ "$SLURM_LIB" "$test_pid" "$dir" "$scratch" \
     </dev/null >/dev/null 2>&1 &)

  # munge: a fresh key and socket of our own, so a munged of the machine (or
  # none) does not matter, and /etc and /run are left alone.
  local sock="$dir/munge/munge.socket"
  runuser -u munge -- mungekey -c -k "$dir/munge/munge.key" >"$dir/mungekey.log" 2>&1 ||
    slurm_skip "mungekey could not create a key: $(cat "$dir/mungekey.log")"
  runuser -u munge -- munged --socket="$sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" ||
    slurm_skip "munged did not start: $(tail -3 "$dir/munge/munged.log" 2>/dev/null)"
  local ok=0
  for _ in $(seq 50); do
    if munge -S "$sock" -n 2>/dev/null | unmunge -S "$sock" >/dev/null 2>&1; then
      ok=1
      break
    fi
    sleep 0.1
  done
  ((ok)) || slurm_skip "munge credentials do not round-trip"

  local host port cpus mem
  host=$(hostname -s)
  port=$(slurm_free_ports) || slurm_skip "no free TCP port"
  # The node advertises what it really has (slurmd -C), so a job asking for
  # more would pend forever; EnforcePartLimits=ALL rejects it at submission
  # instead. Tests that run more ranks than cores submit with --overcommit.
  cpus=$(nproc)
  mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  cat >"$dir/slurm/slurm.conf" <<EOF
# Private single-node test cluster; no systemd, no cgroups, no accounting.
ClusterName=rftest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
SlurmUser=root
StateSaveLocation=$dir/slurm/state
SlurmdSpoolDir=$dir/slurm/spool
SlurmctldPidFile=$dir/slurm/run/slurmctld.pid
SlurmdPidFile=$dir/slurm/run/slurmd.pid
SlurmctldLogFile=$dir/slurm/log/slurmctld.log
SlurmdLogFile=$dir/slurm/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
MailProg=/bin/true
KillWait=5
EnforcePartLimits=ALL
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=rftest Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm/slurm.conf"
  slurmctld -f "$SLURM_CONF" || slurm_skip "slurmctld did not start: $(tail -3 "$dir/slurm/log/slurmctld.log" 2>/dev/null)"
  slurmd -f "$SLURM_CONF" || slurm_skip "slurmd did not start: $(tail -3 "$dir/slurm/log/slurmd.log" 2>/dev/null)"
  local state=""
  for _ in $(seq 150); do
    state=$(timeout 5 sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [[ $state == idle ]] && return 0
    sleep 0.2
  done
  echo "--- slurmctld.log" >&2
  tail -20 "$dir/slurm/log/slurmctld.log" >&2 || true
  echo "--- slurmd.log" >&2
  tail -20 "$dir/slurm/log/slurmd.log" >&2 || true
  slurm_skip "node not idle after 30 s (state '$state')"
}

slurm_submit() {
  timeout 20 sbatch --parsable "$@"
}

slurm_field() {
  timeout 10 scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# slurm_wait J SECONDS STATE...: 0 once J is in one of the states, 1 on timeout.
slurm_wait() {
  local job=$1 secs=$2 state want
  shift 2
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    state=$(slurm_field "$job" JobState)
    for want in "$@"; do
      [[ $state == "$want" ]] && return 0
    done
    sleep 0.3
  done
  echo "job $job still '$state' after ${secs} s (wanted: $*)" >&2
  return 1
}

# slurm_wait_done J SECONDS: 0 once J has finished (any final state).
slurm_wait_done() {
  slurm_wait "$1" "$2" COMPLETED FAILED CANCELLED TIMEOUT NODE_FAIL OUT_OF_MEMORY PREEMPTED BOOT_FAIL DEADLINE
}

# slurm_wait_node_clear J SECONDS: 0 once no step of job J is left on the node.
# A step's slurmstepd outlives its tasks by a few seconds (PMIx teardown),
# after slurmctld has forgotten it; a requeued job started again at once
# would launch its step with the same id, collide with the old one's PMIx
# socket and fail. What is left shows in the spool: files named *_J.* or *.J.*
slurm_wait_node_clear() {
  local job=$1 secs=$2 spool="$RF_SLURM_DIR/slurm/spool"
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    compgen -G "$spool/*[._]$job.*" >/dev/null || return 0
    sleep 0.2
  done
  echo "job $job still has steps on the node after ${secs} s: $(cd "$spool" && echo *[._]"$job".*)" >&2
  return 1
}
