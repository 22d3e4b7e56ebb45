#!/usr/bin/env bash
# The whole test suite: format, lints, unit/integration/differential tests
# (nextest when present), benchmark build check, bounded fuzzing. Installs
# the system packages it needs. Prints the test runner's summary and a
# final `N passed, N failed, N skipped` line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
corral_build_deps

start=$(date +%s)
step() { echo; echo "==> $* ($(( $(date +%s) - start )) s)"; }

step "format"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
else
    echo "SKIP format: rustfmt is not installed (rustup component add rustfmt)"
fi

step "clippy"
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy -q --workspace --all-targets -- -D warnings
else
    echo "SKIP clippy: not installed (rustup component add clippy)"
fi

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
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

step "benchmarks build and run once (criterion test mode)"
bench_ok=1
cargo test -q --benches -p corral-policy || bench_ok=0

step "fuzz (bounded: ${FUZZ_SECONDS:-60} s per target)"
fuzz_ok=1
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash scripts/fuzz.sh || fuzz_ok=0

step "done"
[ "$bench_ok" = 1 ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAILED: benchmarks"; }
[ "$fuzz_ok" = 1 ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAILED: fuzzing"; }
echo "total time $(( $(date +%s) - start )) s"
echo "${summary:-}"
echo "corral: $passed passed, $failed failed, $skipped skipped"
[ "$status" = 0 ] && [ "$failed" = 0 ]
