#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: SECONDS each (default 20; FUZZ_SECS).
# Usage: bash fuzz/run.sh [SECONDS]
# New inputs go to a temporary directory, never into the committed corpus; a
# crash fails the run and names the input (under fuzz/artifacts/<target>/), which
# belongs in fuzz/corpus/<target>/ (as regression-*) once fixed.
#
# Stable toolchain: --sanitizer none (the address sanitizer needs nightly). The
# invariants are assertions in provisioner::fuzz, so a broken one is a crash.
# Longer runs: bash fuzz/run.sh 3600, or cargo fuzz run --sanitizer none <target>.
set -euo pipefail
cd "$(dirname "$0")"
source ../scripts/lib.sh
need_cargo
SECS=${1:-${FUZZ_SECS:-20}}
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked >/dev/null
fi
# CI builds unoptimised (--dev: about 3 minutes from scratch on 2 cores, against
# 6 for a release build), which runs 10-60x fewer inputs per second; these runs
# are a bounded smoke test of every target. FUZZ_RELEASE=1 for real campaigns.
FLAGS=(--sanitizer none)
[ "${FUZZ_RELEASE:-0}" = 1 ] || FLAGS+=(--dev)
cargo fuzz build "${FLAGS[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for t in $(cargo fuzz list); do
  mkdir -p "$work/$t"
  if cargo fuzz run "${FLAGS[@]}" "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$work/$t.log" 2>&1; then
    runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz $t: ${SECS}s, $runs inputs, no crash"
  else
    failed=1
    echo "fuzz $t: FAILED" >&2
    grep -E "panicked at|SUMMARY|Test unit written" -A2 "$work/$t.log" >&2 || tail -40 "$work/$t.log" >&2
  fi
done
exit "$failed"
