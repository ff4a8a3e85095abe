#!/usr/bin/env bash
# Builds the node agent for the discovery image: statically linked (the image
# has busybox and no C library) and stripped. The hub packs it into
# /boot/node-agent.cpio at start ([boot] node_agent, or `node-agent` beside
# the provisioner binary).
#
# Usage: scripts/build-agent.sh [DEST]   (default: target/node-agent.static)
# Prints DEST. Uses its own target directory tree (--target), so it does not
# rebuild the normal dynamic binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
command -v strip >/dev/null && command -v file >/dev/null || apt_install binutils file
dest=${1:-target/node-agent.static}
# With --target, RUSTFLAGS apply to the agent and its dependencies only, not to
# build scripts and proc macros (which cannot be static).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release -p node-agent \
  --target x86_64-unknown-linux-gnu >&2
install -m 0755 target/x86_64-unknown-linux-gnu/release/node-agent "$dest"
strip "$dest"
file "$dest" | grep -q 'static' || { echo "error: $dest is not statically linked" >&2; exit 1; }
echo "$dest"
