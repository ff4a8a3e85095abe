#!/usr/bin/env bash
# How long the hub's store takes to open (and load every lease) after kill -9,
# with N leases (default 100000). Kills the writer mid-commit RUNS times.
# Usage: bench/store-reopen.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
RUNS=${2:-3}
cargo build --release --example store_crash -q
BIN=target/release/examples/store_crash
DIR=$(mktemp -d /var/tmp/store-reopen.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
for run in $(seq 1 "$RUNS"); do
  rm -rf "$DIR/state"
  "$BIN" fill "$DIR/state" "$N" > "$DIR/fill.out" &
  pid=$!
  for _ in $(seq 1 600); do grep -q filled "$DIR/fill.out" 2>/dev/null && break; sleep 0.1; done
  sleep "0.$((RANDOM % 9 + 1))"   # land somewhere inside the rewrite loop
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  size=$(du -h "$DIR/state/hub.redb" | cut -f1)
  echo "run $run: file $size; $("$BIN" open "$DIR/state")"
done
