#!/usr/bin/env bash
# Installs what is missing, builds ringflow and runs the whole test suite with
# CTest. Its exit status is the suite's.
#
# Knobs (environment):
#   RF_BUILD_DIR   build directory (default: .build/ at the repo root, hidden so the top level stays the source layout)
#   RF_BUILD_TYPE  CMake build type (default: Release)
#   RF_WERROR      ON to make compiler warnings errors (CI sets it)
#   RF_SANITIZE    '' | address | thread
#   CTEST_ARGS     extra arguments for ctest, e.g. "-R collectives"
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RF_PACKAGES+=("${RF_TEST_PACKAGES[@]}")
rf_install_deps
rf_build -DRF_WERROR="${RF_WERROR:-OFF}" -DRF_SANITIZE="${RF_SANITIZE:-}"

echo "== testing"
cd "$RF_BUILD_DIR"
# shellcheck disable=SC2086
ctest --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
