#!/usr/bin/env bash
# The whole test suite: format, lints, unit/integration/differential tests
# (nextest when present), benchmark build check, bounded fuzzing. Installs
# the system packages it needs. Prints the test runner's summary and a
# final `N passed, N failed, N skipped` line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
corral_build_deps
corral_vm_deps
corral_container_deps
corral_agent_deps
corral_egress_deps
corral_mcp_deps
corral_ui_browser_deps
corral_ui_api_deps

start=$(date +%s)
step() { echo; echo "==> $* ($(( $(date +%s) - start )) s)"; }

# Checks other than the test runner's tests: each counts as one passed,
# failed or skipped check in the final line, and a failure does not stop
# the rest of the suite from running.
checks_passed=0; checks_failed=0; checks_skipped=0; failures=()
check() { # name, command...
    local name=$1; shift
    if "$@"; then
        checks_passed=$((checks_passed + 1))
    else
        checks_failed=$((checks_failed + 1)); failures+=("$name")
    fi
}
skip() { echo "SKIP $1: $2"; checks_skipped=$((checks_skipped + 1)); }

step "format"
if cargo fmt --version >/dev/null 2>&1; then
    check format cargo fmt --all -- --check
else
    skip format "rustfmt is not installed (rustup component add rustfmt)"
fi

step "clippy"
if cargo clippy --version >/dev/null 2>&1; then
    check clippy cargo clippy -q --workspace --all-targets -- -D warnings
else
    skip clippy "not installed (rustup component add clippy)"
fi

step "tests"
log=$(mktemp)
# Tests that cannot run on this host (no root, no VM) print a CORRAL-SKIP
# line and append it here; each counts as skipped in the final line.
export CORRAL_SKIP_LOG
CORRAL_SKIP_LOG=$(mktemp)
trap 'rm -f "$log" "$CORRAL_SKIP_LOG"' EXIT
if cargo nextest --version >/dev/null 2>&1; then
    set +e
    cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    summary=$(grep -E "Summary \[" "$log" | tail -1 || true)
    passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
    failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
    skipped=$(sed -nE 's/.* ([0-9]+) skipped.*/\1/p' <<<"$summary")
else
    set +e
    cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    sum() { grep -E "^test result:" "$log" | sed -nE "s/.* ([0-9]+) $1.*/\\1/p" | awk '{s+=$1} END {print s+0}'; }
    passed=$(sum passed); failed=$(sum failed); skipped=$(sum ignored)
fi
passed=${passed:-0}; failed=${failed:-0}; skipped=${skipped:-0}
# A test that skipped itself ran and returned: count it as skipped, not passed.
capability_skips=$(wc -l <"$CORRAL_SKIP_LOG")
if [ "$capability_skips" -gt 0 ]; then
    echo "skipped for lack of a host capability:"
    sed 's/^/  /' "$CORRAL_SKIP_LOG"
    passed=$((passed - capability_skips)); skipped=$((skipped + capability_skips))
fi

step "benchmarks build and run once (criterion test mode)"
check benchmarks cargo test -q --benches -p corral-policy

step "fuzz (bounded: ${FUZZ_SECONDS:-60} s per target)"
check fuzzing env FUZZ_SECONDS="${FUZZ_SECONDS:-60}" bash scripts/fuzz.sh

step "done"
[ "$status" = 0 ] || failures+=("tests")
for f in "${failures[@]}"; do echo "FAILED: $f"; done
# The browser tests' screenshots, one per step: the CI artifacts.
shots=$(find target/ui-artifacts -name '*.png' 2>/dev/null | wc -l)
echo "UI screenshots (CI artifacts): target/ui-artifacts/<test>/NN-step.png ($shots files)"
echo "total time $(( $(date +%s) - start )) s"
echo "test runner: ${summary:-see above}"
echo "capability skips (counted in skipped below): ${capability_skips:-0}"
echo "checks (format, clippy, benchmarks, fuzzing): $checks_passed passed, $checks_failed failed, $checks_skipped skipped"
echo "corral: $((passed + checks_passed)) passed, $((failed + checks_failed)) failed, $((skipped + checks_skipped)) skipped"
[ "$status" = 0 ] && [ "$checks_failed" = 0 ]
