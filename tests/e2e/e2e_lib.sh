# Shared by the e2e test scripts; source it after setting $tmp (a scratch dir).
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# e2e_finish: the script's end; exit 1 naming the count if any check failed,
# else print "<case>: ok" ($case is the script's test case).
e2e_finish() {
  if ((failures > 0)); then
    echo "$case: $failures check(s) failed" >&2
    exit 1
  fi
  echo "$case: ok"
}

# expect_error CODE "words" cmd...: the command must exit with CODE within the
# time limit (a hung rank is a failure), its stderr must contain the words
# (fixed string; empty: anything) and no HDF5 error-stack dump, crash, uncaught
# exception or job abort.
expect_error() {
  local code=$1 words=$2
  shift 2
  timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [[ $rc -eq 124 ]]; then
    fail "timed out (a process hung): $*"
    return
  fi
  if [[ $rc -ne $code ]]; then
    fail "exit $rc (want $code): $*"
    sed 's/^/    /' "$tmp/err" >&2
  fi
  if [[ -n $words ]] && ! grep -qF -- "$words" "$tmp/err"; then
    fail "stderr of '$*' lacks '$words':"
    sed 's/^/    /' "$tmp/err" >&2
  fi
  if grep -qE "HDF5-DIAG|terminate called|Segmentation|Aborted|core dumped|MPI_ABORT" "$tmp/err"; then
    fail "noise or crash in stderr of '$*':"
    sed 's/^/    /' "$tmp/err" >&2
  fi
}
