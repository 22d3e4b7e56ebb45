#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of corral-policy, for CI and by hand.
#
#   FUZZ_SECONDS=60 scripts/fuzz.sh                  # every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh policy_pipeline # one target
#   FUZZ_KEEP_GOING=1 scripts/fuzz.sh                # collect every crash, don't stop at the first
#
# Why this works on the stable toolchain: the targets in fuzz/ are ordinary
# cargo-fuzz targets (libfuzzer-sys). `cargo fuzz` needs nightly only for
# `-Zsanitizer=...`; with `-s none` (no AddressSanitizer) every flag it passes
# to rustc is stable: `-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-
# coverage-{level=4,inline-8bit-counters,pc-table,trace-compares,stack-depth}`,
# plus `--cfg fuzzing` and `-Cdebug-assertions`. So this is real libFuzzer,
# coverage-guided (edge counters, compare tracing feeding its dictionary),
# with no RUSTC_BOOTSTRAP and no nightly. Dropping ASan costs little here:
# corral-policy and Cedar forbid `unsafe`, and what we hunt are panics
# (slicing, indexing, unwrap), arithmetic overflow (debug assertions are on),
# hangs and OOMs, which libFuzzer catches without it. The only native piece is
# libFuzzer's C++ source, compiled by libfuzzer-sys with the system C++
# compiler (g++ is enough; clang/LLVM are not needed).
#
# Environment:
#   FUZZ_SECONDS     time per target, seconds (default 60)
#   FUZZ_TIMEOUT     seconds one input may run before it counts as a hang (default 20)
#   FUZZ_KEEP_GOING  1: libFuzzer fork mode with -ignore_crashes, so a run collects
#                    every crash it can find in FUZZ_SECONDS instead of stopping
#   FUZZ_TARGET_DIR  cargo target dir of the instrumented build (default fuzz/target);
#                    point it outside the clone to reuse the build between CI runs
#
# Build time: the instrumented release build (cedar-policy dominates) took
# 2.5 min wall (4.7 min CPU) from a fresh clone on 2 idle cores, ~10 min while
# another cargo build shared them; seconds once built. Installing cargo-fuzz
# adds ~1 min the first time.
#
# Inputs: fuzz/seeds/<target> (committed seeds) and fuzz/regressions/<target>
# (committed crashers: replayed at start-up, so a regression fails at once)
# are read; new corpus entries go to fuzz/corpus/<target>, crashes to
# fuzz/artifacts/<target>, logs to fuzz/artifacts/logs (all gitignored).
# Exit status: 0 when no target crashed; 1 when one did (the crashing input,
# its minimized form and the panic are printed); 2 on a setup or build error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-20}"
FUZZ_KEEP_GOING="${FUZZ_KEEP_GOING:-0}"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
CARGO_FUZZ_VERSION="0.13.2"
ALL_TARGETS=(policy_pipeline request_parse)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

# Flags shared by build, run and tmin (they must agree, or cargo rebuilds).
FLAGS=(-s none --debug-assertions --fuzz-dir "$FUZZ_DIR" --target-dir "$FUZZ_TARGET_DIR")

die() { echo "fuzz: $*" >&2; exit 2; }

[[ "$FUZZ_SECONDS" =~ ^[0-9]+$ ]] && [ "$FUZZ_SECONDS" -gt 0 ] || die "FUZZ_SECONDS must be a positive integer, got '$FUZZ_SECONDS'"
[[ "$FUZZ_TIMEOUT" =~ ^[0-9]+$ ]] && [ "$FUZZ_TIMEOUT" -gt 0 ] || die "FUZZ_TIMEOUT must be a positive integer, got '$FUZZ_TIMEOUT'"
for t in "${TARGETS[@]}"; do
  [ -f "$FUZZ_DIR/fuzz_targets/$t.rs" ] || die "no fuzz target '$t' (have: ${ALL_TARGETS[*]})"
done

# --- tools ------------------------------------------------------------------
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo >/dev/null || die "cargo not found"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" || die "cargo install cargo-fuzz failed"
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  # libfuzzer-sys compiles libFuzzer (C++) with the cc crate.
  command -v apt-get >/dev/null || die "no C++ compiler, and no apt-get to install one"
  echo "fuzz: installing g++ (libFuzzer is C++)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null; } \
    || die "apt-get install g++ failed"
fi

# --- build ------------------------------------------------------------------
cd "$FUZZ_DIR"
build_start=$SECONDS
echo "fuzz: building ${TARGETS[*]} (cargo fuzz build ${FLAGS[*]})"
for t in "${TARGETS[@]}"; do
  cargo fuzz build "${FLAGS[@]}" "$t" || die "build of $t failed"
done
echo "fuzz: build took $((SECONDS - build_start)) s"

# --- run --------------------------------------------------------------------
show_input() { # print a file readably (non-printing bytes as ^X / M-x), at most 4 KiB, and as base64
  local f="$1" size
  size=$(wc -c <"$f")
  echo "----- $f ($size bytes) -----"
  head -c 4096 "$f" | cat -v
  echo
  [ "$size" -le 4096 ] || echo "(... $((size - 4096)) more bytes)"
  echo "----- base64 -----"
  base64 -w 76 "$f"
  echo "------------------"
}

logs="$FUZZ_DIR/artifacts/logs"
mkdir -p "$logs"
failed=0
summaries=()
for t in "${TARGETS[@]}"; do
  corpus="$FUZZ_DIR/corpus/$t"
  artifacts="$FUZZ_DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus")
  [ -d "$FUZZ_DIR/seeds/$t" ] && dirs+=("$FUZZ_DIR/seeds/$t")
  [ -d "$FUZZ_DIR/regressions/$t" ] && dirs+=("$FUZZ_DIR/regressions/$t")
  opts=(-max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -print_final_stats=1)
  [ -f "$FUZZ_DIR/dicts/$t.dict" ] && opts+=("-dict=$FUZZ_DIR/dicts/$t.dict")
  [ "$t" = policy_pipeline ] && opts+=("-max_len=8192")
  [ "$FUZZ_KEEP_GOING" = 1 ] && opts+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  log="$logs/$t-$(date +%Y%m%dT%H%M%S).log"
  stamp="$logs/.$t.start"
  touch "$stamp"
  echo "fuzz: running $t for $FUZZ_SECONDS s (log: $log)"
  run_start=$SECONDS
  set +e
  cargo fuzz run "${FLAGS[@]}" "$t" "${dirs[@]}" -- "${opts[@]}" >"$log" 2>&1
  rc=$?
  set -e
  elapsed=$((SECONDS - run_start))

  # Runs: final stats (plain mode) or the last status line (`#N` / fork mode `#N:`).
  runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)
  [ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$log" | tail -n1 | tr -d '#' || true)
  runs=${runs:-0}
  secs=$(sed -n -e 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' -e 's/^INFO: exiting: [0-9]* time: \([0-9]*\)s.*/\1/p' "$log" | tail -n1)
  secs=${secs:-$elapsed}
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2 || true)
  rate=$(( secs > 0 ? runs / secs : runs ))
  # Artifacts this run wrote: crash-*, timeout-*, oom-*, leak-*.
  mapfile -t found < <(find "$artifacts" -maxdepth 1 -type f -newer "$stamp" \
    \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort)

  if [ "$rc" -eq 0 ] && [ ${#found[@]} -eq 0 ]; then
    summaries+=("fuzz $t: $runs runs in $secs s ($rate/s, cov ${cov:-?}), no crash")
    continue
  fi
  failed=1
  echo "fuzz: $t FAILED (libFuzzer exit $rc), log: $log"
  # The panic (message and location) and libFuzzer's verdict.
  grep -A1 -E "panicked at" "$log" | grep -v '^--$' | head -n 20 || true
  grep -E "ERROR: libFuzzer|SUMMARY: libFuzzer" "$log" | sort -u | head -n 5 || true
  if [ ${#found[@]} -eq 0 ]; then
    echo "fuzz: no artifact written; last lines of the log:"
    tail -n 40 "$log"
    summaries+=("fuzz $t: libFuzzer failed (exit $rc) after $runs runs in $secs s, see $log")
    continue
  fi
  for a in "${found[@]}"; do
    echo "fuzz: crashing input: $a"
    show_input "$a"
    # Reproduce from the artifact's own run to show which panic it is.
    if [ "$FUZZ_KEEP_GOING" = 1 ]; then
      "$FUZZ_TARGET_DIR"/*/release/"$t" "$a" 2>&1 | grep -A1 -E "panicked at" | head -n 2 || true
    fi
    case "$(basename "$a")" in
      crash-*)
        tmin_log="$logs/$(basename "$a").tmin.log"
        echo "fuzz: minimizing (cargo fuzz tmin, log: $tmin_log)"
        set +e
        timeout 300 cargo fuzz tmin "${FLAGS[@]}" -r 500 "$t" "$a" >"$tmin_log" 2>&1
        set -e
        min=$(grep -A2 '^Minimized artifact:' "$tmin_log" | sed -n 's/^[[:space:]]\+\(.*\)$/\1/p' | head -n1 || true)
        [ -z "$min" ] || [[ "$min" = /* ]] || min="$FUZZ_DIR/$min"
        if [ -n "$min" ] && [ -f "$min" ] && [ "$(basename "$min")" != "$(basename "$a")" ]; then
          echo "fuzz: minimized input: $min"
          show_input "$min"
        else
          echo "fuzz: minimized input: the crashing input itself (no smaller input crashes)"
          min="$a"
        fi
        echo "fuzz: reproduce with: (cd fuzz && cargo fuzz run -s none --debug-assertions $t $min)"
        ;;
    esac
  done
  summaries+=("fuzz $t: CRASH after $runs runs in $secs s: ${found[*]}")
done

printf '%s\n' "${summaries[@]}"
exit "$failed"
