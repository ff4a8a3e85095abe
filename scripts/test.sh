#!/usr/bin/env bash
# The whole test suite, as CI runs it: lints, unit tests, then the network-namespace
# tests with real DHCP clients and servers. Installs what it needs. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_root "the test suite"
need_cargo
apt_install iproute2 binutils file busybox isc-dhcp-client dnsmasq-base kea-admin tftp-hpa atftp curl cpio gzip qemu-system-x86 ipxe-qemu ovmf python3 python3-pytest python3-scapy python3-zeroconf python3-yaml openssl xfsprogs zstd gdisk

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit and crate tests"
# The Talos schema the rendered configs must satisfy: the vendored v1.13.9 copy
# unless the caller points at another (e.g. ../shared/talos/schemas/...).
export TALOS_SCHEMA="${TALOS_SCHEMA:-$PWD/provisioner/tests/fixtures/talos/config.schema.v1.13.9.json}"
test -r "$TALOS_SCHEMA" || { echo "TALOS_SCHEMA=$TALOS_SCHEMA is not readable" >&2; exit 1; }
cargo test --workspace --locked

echo "== fuzz targets, bounded (the corpus itself was replayed by cargo test: fuzz_corpus)"
bash fuzz/run.sh "${FUZZ_SECS:-8}"

echo "== network-namespace tests (real clients, real sockets)"
cargo build --workspace --locked
export PROVISIONER_BIN="$PWD/target/debug/provisioner"
echo "== node-agent inventory on this machine (must not panic, whatever this machine lacks)"
target/debug/node-agent inventory --json >/dev/null
target/debug/node-agent inventory
echo "== hardware profiles"
target/debug/provisioner profiles check
echo "== static node agent for the discovery image"
PROVISIONER_AGENT="$PWD/$(bash scripts/build-agent.sh)"
export PROVISIONER_AGENT
cd tests/system
/usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=15
