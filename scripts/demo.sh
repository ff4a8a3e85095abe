#!/usr/bin/env bash
# See the hub work on this machine without touching its real network: builds the
# hub, creates an isolated network-namespace lab (hub + one client on a private
# veth link), serves DHCP there with an embedded default config, and lets a real
# client (busybox udhcpc) get a lease. Everything is torn down on exit.
# Usage: scripts/demo.sh [--keep]   (--keep: leave the hub running until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root "the demo"
need_cargo
apt_install iproute2 busybox

cargo build --release -p provisioner --locked -q
BIN="$PWD/target/release/provisioner"
ID=$$
HUB="pvdemo$ID-hub"; CLI="pvdemo$ID-cli"
WORK=$(mktemp -d /var/tmp/provisioner-demo.XXXXXX)
HUB_PID=""
cleanup() {
  [ -n "$HUB_PID" ] && kill "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null || true
  ip netns del "$HUB" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$HUB"; ip netns add "$CLI"
ip link add eth0 netns "$HUB" type veth peer name eth0 netns "$CLI"
for ns in "$HUB" "$CLI"; do
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set eth0 up
done
ip netns exec "$HUB" ip addr add 10.77.0.1/24 dev eth0

cat > "$WORK/hub.toml" <<CFG
state_dir = "$WORK/state"
[dhcp]
mode = "full"
interfaces = ["eth0"]
lease_key = "mac"
[[dhcp.subnet]]
network = "10.77.0.0/24"
pools = [{ start = "10.77.0.100", end = "10.77.0.200" }]
routers = ["10.77.0.1"]
dns = ["10.77.0.1"]
CFG

echo "== hub: provisioner serve (full DHCP on an isolated lab link 10.77.0.0/24)"
ip netns exec "$HUB" "$BIN" serve -c "$WORK/hub.toml" &
HUB_PID=$!
sleep 1
echo "== client: busybox udhcpc"
ip netns exec "$CLI" busybox udhcpc -i eth0 -q -n -t 5 -T 1 -s /bin/true
echo "== provisioner leases list"
"$BIN" leases list -c "$WORK/hub.toml"
if [ "${1:-}" = "--keep" ]; then
  echo "hub running in namespace $HUB; Ctrl-C to stop"
  wait "$HUB_PID"
fi
