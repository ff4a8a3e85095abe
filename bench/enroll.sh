#!/usr/bin/env bash
# Enrollment benchmark (not a test): N simulated agents enroll over real mTLS
# with the hub's enrollment service on loopback, then each sends one health
# report with its new certificate. No anchor: none of the tools we compare with
# (Tinkerbell, MAAS, matchbox...) has mTLS enrollment to run beside it.
#
# Usage: bench/enroll.sh [AGENTS] [CONCURRENCY]   (default 1000, and 1000 then 64)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
n=${1:-1000}
cargo build --release --locked -p node-agent --example enroll_bench >&2
bin=target/release/examples/enroll_bench
mkdir -p bench/results
out=bench/results/enroll-$(date +%Y%m%d-%H%M%S).txt
{
  echo "# $(date -u) $(nproc) cores, $(uname -r)"
  if [ -n "${2:-}" ]; then
    "$bin" "$n" "$2"
  else
    echo "## all $n agents at once"; "$bin" "$n" "$n"
    echo; echo "## $n agents, 64 at a time"; "$bin" "$n" 64
  fi
} | tee "$out"
