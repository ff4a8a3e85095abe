#!/usr/bin/env bash
# See the hub work on this machine without touching its real network: builds the
# hub, fetches the iPXE binaries and builds the discovery image (both verified
# against boot-assets/manifest.toml), then `provisioner lab` boots a QEMU VM
# through a hub in a private network namespace (DHCP -> iPXE -> HTTP script ->
# kernel + initramfs -> the node agent enrolls over mTLS -> the lab approves it
# -> health reports) and prints the VM's boot timeline. The namespace disappears with the process.
# Usage: scripts/demo.sh [--firmware bios|uefi]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root "the demo"
need_cargo
apt_install iproute2 qemu-system-x86 ipxe-qemu ovmf cpio gzip

ASSETS=${PROVISIONER_ASSETS:-/var/lib/provisioner/assets}
export BOOT_ASSETS_CACHE=${BOOT_ASSETS_CACHE:-/var/cache/provisioner/debs}
echo "== boot assets in $ASSETS"
bash boot-assets/fetch.sh "$ASSETS"
bash boot-assets/build-discovery.sh "$ASSETS"

echo "== building the hub and the static node agent"
cargo build --release -p provisioner --locked -q
AGENT=$(bash scripts/build-agent.sh 2>/dev/null)

echo "== provisioner lab"
exec target/release/provisioner --log warn lab --assets "$ASSETS" --agent "$AGENT" "$@"
