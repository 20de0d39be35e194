# Shared by the jobs/ scripts: install what is missing, configure, build.
# Source it; it defines functions only.

RF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RF_BUILD_DIR="${RF_BUILD_DIR:-$RF_ROOT/.build}"

# The Debian packages ringflow builds, tests and trains with.
RF_PACKAGES=(
  g++ cmake make pkg-config
  libopenmpi-dev openmpi-bin
  libeigen3-dev libtbb-dev
  libhdf5-dev hdf5-tools
  zlib1g-dev libcli11-dev libgtest-dev
  dataset-fashion-mnist
)

# What only the tests need, on top of the above (jobs/test.sh installs it): a
# real Slurm with munge, which the jobs/ tests bring up privately, and gnuplot
# for the scaling plot.
# shellcheck disable=SC2034  # used by the scripts that source this file
RF_TEST_PACKAGES=(slurm-wlm munge gnuplot-nox)

# Installs the packages above that are not installed yet (apt-get update once).
rf_install_deps() {
  local missing=()
  for p in "${RF_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  echo "== installing: ${missing[*]}"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Configures and builds into $RF_BUILD_DIR. Extra arguments go to cmake.
rf_build() {
  echo "== configuring in $RF_BUILD_DIR"
  cmake -S "$RF_ROOT" -B "$RF_BUILD_DIR" -DCMAKE_BUILD_TYPE="${RF_BUILD_TYPE:-Release}" "$@"
  echo "== building"
  cmake --build "$RF_BUILD_DIR" -j "$(nproc)"
}

# mpirun as root and with more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
