#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Trains on one workstation with `mpirun -np N`, giving each rank its share of
# the cores as executor threads and, when the ranks fit on the cores, binding
# each rank to its own cores so that its threads stay there (no migration,
# warm caches). It needs a build (jobs/quickstart.sh or jobs/test.sh).
#
# Knobs (environment):
#   RF_NP        ranks (default 2)
#   RF_CORES     cores to use (default: physical cores this process may run on)
#   RF_THREADS   executor threads per rank (default RF_CORES / RF_NP, at least 1)
#   RF_BIND      auto | core | none (default auto: core when RF_NP x RF_THREADS
#                fits in RF_CORES, else none, since pinning oversubscribed ranks
#                would stack them)
#   RF_MODEL     default mlp;  RF_EPOCHS default 10;  RF_BATCH default 128
#   RF_DATA      data set (default $RF_BUILD_DIR/data/fashion-mnist.h5,
#                imported from the Debian package dataset-fashion-mnist if missing)
#   RF_TRAINER   trainer binary (default $RF_BUILD_DIR/src/apps/trainer)
#   RF_BUILD_DIR build directory (default .build/)
# Arguments go to the trainer, e.g. RF_NP=4 jobs/local.sh --model cnn-small --metrics m.csv
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

trainer=${RF_TRAINER:-$RF_BUILD_DIR/src/apps/trainer}
data=${RF_DATA:-$RF_BUILD_DIR/data/fashion-mnist.h5}
np=${RF_NP:-2}
[[ -x $trainer ]] || { echo "no trainer at $trainer: build first (jobs/quickstart.sh) or set RF_TRAINER" >&2; exit 2; }

if [[ ! -f $data && -z ${RF_DATA:-} ]]; then
  fmnist=$(dpkg -L dataset-fashion-mnist 2>/dev/null | grep 'train-images-idx3-ubyte.gz$' || true)
  [[ -n $fmnist ]] || { echo "no data set: set RF_DATA or install dataset-fashion-mnist" >&2; exit 2; }
  mkdir -p "$(dirname "$data")"
  "$(dirname "$trainer")/ringflow-data" import-idx --dir "$(dirname "$fmnist")" -o "$data"
fi

# Physical cores, not hardware threads: two ranks' threads on the two
# hyperthreads of one core would share its floating-point units. nproc counts
# what this process may use (cpusets, taskset), lscpu what the machine has.
if [[ -z ${RF_CORES:-} ]]; then
  usable=$(nproc)
  physical=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
  ((physical > 0 && physical < usable)) && usable=$physical
  RF_CORES=$usable
fi
threads=${RF_THREADS:-$((RF_CORES / np > 0 ? RF_CORES / np : 1))}

bind=${RF_BIND:-auto}
if [[ $bind == auto ]]; then
  bind=none
  ((np * threads <= RF_CORES)) && bind=core
fi
case $bind in
  # PE=T gives each rank T consecutive cores and binds it to them.
  core) placement=(--map-by "slot:PE=$threads" --bind-to core) ;;
  none) placement=(--oversubscribe --bind-to none) ;;
  *) echo "RF_BIND must be auto, core or none, not '$bind'" >&2; exit 2 ;;
esac

cmd=(mpirun -np "$np" "${placement[@]}" "$trainer" --data "$data" --model "${RF_MODEL:-mlp}"
  --epochs "${RF_EPOCHS:-10}" --batch-size "${RF_BATCH:-128}" --threads "$threads" "$@")
echo "local.sh: $np rank(s) x $threads thread(s) on $RF_CORES core(s), binding $bind"
echo "local.sh: ${cmd[*]}"
exec "${cmd[@]}"
