#!/usr/bin/env bash
# Boot storm and DHCP avalanche.
#
# Avalanche: BENCH_AVALANCHE_N (10,000) clients power on at once and each does one
# DORA as a plain on-link client (`storm boot --until-bound`); time to bound
# (p50/p99) and time to all bound, against our hub, Kea (raw sockets, memfile) and
# dnsmasq, one after another on the same namespaces.
#
# Boot storm: N simulated machines (`storm boot`) power on at once and each walks
# the real sequence (DHCP as PXE, TFTP of undionly.kpxe, DHCP as iPXE, HTTP script,
# HTTP kernel + initramfs). Run against our hub, then against dnsmasq (DHCP + TFTP)
# with nginx (HTTP), on the same namespaces, files and client.
#
# Namespaces pvs-srv (10.203.0.1/16) and pvs-cli joined by one veth pair; nothing
# leaves them. The client namespace has no address of its own: it routes the DHCP
# pool (10.203.64.0/18, 16k addresses) to lo ("AnyIP"), so every simulated machine binds its TFTP
# and HTTP sockets to the address its lease gave it, and the server sees N distinct
# clients, as on a real segment. The neighbour table is raised for the run (the
# kernel's default gc_thresh3 of 1024 entries would drop replies past 1024
# machines; host-wide, restored on exit). So is net.core.rmem_default (8 MiB, as in
# bench/dhcp.sh): a socket that does not size its own buffer (Kea's, dnsmasq's)
# would hold about 90 DISCOVERs of a burst at the default 208 KiB and drop the
# rest; the hub sizes its own (4 MiB). Every server gets its best case.
#
# dnsmasq gets --no-ping, --dhcp-lease-max=65536 and --tftp-max=4096 (defaults:
# ping before every offer, 1000, 50): its best case. Its default ping check waits
# for each new address in turn (50 machines took 18 s to their script here);
# BENCH_DNSMASQ_PING=1 keeps it (the client namespace ignores echo requests, as
# unused addresses do, so the check passes). nginx: one worker when pinned,
# sendfile, keepalive_requests 1000000.
#
# Files: stand-ins of the manifest's sizes (undionly.kpxe 74213, discovery kernel
# 8222656, discovery initramfs 3404472 bytes); the node agent archive is not served.
#
# Prints one line of JSON per run (to stdout, and bench/results/storm-<date>.jsonl).
# Needs root. Does not build: uses target/release/{provisioner,storm}.
#
# Environment knobs:
#   BENCH_AVALANCHE_N=10000            avalanche clients (0: no avalanche)
#   BENCH_AVALANCHE_SERVERS="provisioner kea dnsmasq"
#   BENCH_STORM_N="100 1000 5000"      machine counts
#   BENCH_STORM_SERVERS="provisioner dnsmasq+nginx"
#   BENCH_STORM_FIRMWARE=bios          bios | uefi (uefi: ipxe.efi, 850528 bytes)
#   BENCH_STORM_TIMEOUT=300            a machine without its kernel by then has failed (s)
#   BENCH_PIN=1                        servers on CPU 1, the storm on CPU 0
#   BENCH_DNSMASQ_PING=0               1: dnsmasq pings each address before offering it (its default)
#   PROVISIONER_BIN, STORM_BIN         binaries (default target/release/...)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PROVISIONER_BIN:-$REPO/target/release/provisioner}
STORM=${STORM_BIN:-$REPO/target/release/storm}
NS=${BENCH_STORM_N:-"100 1000 5000"}
SERVERS=${BENCH_STORM_SERVERS:-"provisioner dnsmasq+nginx"}
FIRMWARE=${BENCH_STORM_FIRMWARE:-bios}
TIMEOUT=${BENCH_STORM_TIMEOUT:-300}
PIN=${BENCH_PIN:-1}

NS_SRV=pvs-srv
NS_CLI=pvs-cli
IF_SRV=pvs-s0
IF_CLI=pvs-c0
ADDR_SRV=10.203.0.1
AVALANCHE_N=${BENCH_AVALANCHE_N:-10000}
AVALANCHE_SERVERS=${BENCH_AVALANCHE_SERVERS:-"provisioner kea dnsmasq"}
POOL_NET=10.203.64.0/18
POOL_START=10.203.64.10
POOL_END=10.203.127.250
HTTP_PORT=8080

WORK=$(mktemp -d /var/tmp/pvs-storm.XXXXXX)
chmod 755 "$WORK"
SERVER_PIDS=()
GC3_OLD=$(sysctl -n net.ipv4.neigh.default.gc_thresh3)
GC2_OLD=$(sysctl -n net.ipv4.neigh.default.gc_thresh2)
RMEM_OLD=$(sysctl -n net.core.rmem_default)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_servers() {
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    SERVER_PIDS=()
}

cleanup() {
    stop_servers
    ip netns del "$NS_SRV" 2>/dev/null
    ip netns del "$NS_CLI" 2>/dev/null
    sysctl -qw net.ipv4.neigh.default.gc_thresh3="$GC3_OLD" net.ipv4.neigh.default.gc_thresh2="$GC2_OLD" \
        net.core.rmem_default="$RMEM_OLD"
    [[ ${KEEP_WORK:-0} == 1 ]] && log "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

pin_srv() { if [[ $PIN == 1 ]]; then echo "taskset -c 1"; fi; }
pin_cli() { if [[ $PIN == 1 ]]; then echo "taskset -c 0"; fi; }

setup_net() {
    for ns in "$NS_SRV" "$NS_CLI"; do
        ip netns del "$ns" 2>/dev/null
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "$IF_SRV" netns "$NS_SRV" type veth peer name "$IF_CLI" netns "$NS_CLI"
    ip -n "$NS_SRV" addr add "$ADDR_SRV/16" dev "$IF_SRV"
    ip -n "$NS_SRV" link set "$IF_SRV" up
    ip -n "$NS_CLI" link set "$IF_CLI" up
    ip -n "$NS_CLI" route add 10.203.0.0/16 dev "$IF_CLI"
    ip -n "$NS_CLI" route add local "$POOL_NET" dev lo
    # Only machines that exist answer pings on a real segment: without this, every
    # pool address would echo, and dnsmasq (which pings before it offers) would
    # find none free.
    ip netns exec "$NS_CLI" sysctl -qw net.ipv4.icmp_echo_ignore_all=1
    sysctl -qw net.ipv4.neigh.default.gc_thresh3=65536 net.ipv4.neigh.default.gc_thresh2=32768 \
        net.core.rmem_default=8388608
}

# make_files: stand-ins of the real sizes, the same bytes for every server.
make_files() {
    mkdir -p "$WORK/assets" "$WORK/www/boot" "$WORK/tftp"
    head -c 74213 /dev/urandom >"$WORK/assets/undionly.kpxe"
    head -c 850528 /dev/urandom >"$WORK/assets/ipxe.efi"
    head -c 8222656 /dev/urandom >"$WORK/assets/discovery-vmlinuz"
    head -c 3404472 /dev/urandom >"$WORK/assets/discovery-initramfs.gz"
    : >"$WORK/manifest.toml"
    for f in undionly.kpxe ipxe.efi discovery-vmlinuz discovery-initramfs.gz; do
        local tftp="" http="/boot/$f" kind
        case $f in
        undionly.kpxe | ipxe.efi) tftp="tftp = \"$f\"" kind=ipxe ;;
        discovery-vmlinuz) kind=kernel ;;
        *) kind=initramfs ;;
        esac
        cat >>"$WORK/manifest.toml" <<EOF
[[asset]]
name = "$f"
kind = "$kind"
arch = "x86_64"
firmware = "any"
sha256 = "$(sha256sum "$WORK/assets/$f" | cut -d' ' -f1)"
size = $(stat -c %s "$WORK/assets/$f")
source = "bench"
$tftp
http = "$http"
EOF
        ln "$WORK/assets/$f" "$WORK/www/boot/$f"
        ln "$WORK/assets/$f" "$WORK/tftp/$f"
    done
}

write_hub_config() {
    cat >"$WORK/hub.toml" <<EOF
state_dir = "$WORK/state"
[dhcp]
mode = "full"
interfaces = ["$IF_SRV"]
[[dhcp.subnet]]
network = "10.203.0.0/16"
pools = [{ start = "$POOL_START", end = "$POOL_END" }]
lease_time = 3600
[boot]
assets_dir = "$WORK/assets"
manifest = "$WORK/manifest.toml"
[http]
listen = "$ADDR_SRV:$HTTP_PORT"
[enroll]
enabled = false
EOF
}

write_nginx_config() {
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $([[ $PIN == 1 ]] && echo 1 || echo auto);
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen $ADDR_SRV:$HTTP_PORT backlog=16384;
        root $WORK/www;
        location = /ipxe { default_type text/plain; try_files /ipxe.txt =404; }
        location = /boot.ipxe { default_type text/plain; }
    }
}
EOF
}

wait_port() { # wait_port tcp|udp PORT
    for _ in $(seq 100); do
        ip netns exec "$NS_SRV" ss -lnH --"$1" "sport = :$2" | grep -q . && return 0
        sleep 0.1
    done
    log "nothing listens on $1/$2"; return 1
}

start_hub() {
    fresh_hub_state "$WORK/state"
    ip netns exec "$NS_SRV" $(pin_srv) "$BIN" --log warn serve -c "$WORK/hub.toml" >>"$WORK/provisioner.log" 2>&1 &
    SERVER_PIDS+=($!)
    wait_port tcp "$HTTP_PORT" && wait_port udp 67 && wait_port udp 69 && wait_hub_settled "$WORK/state"
}

# The scripts nginx serves are what the hub served: the entry script and the
# discovery script of an unknown machine (the same for every machine).
capture_scripts() {
    start_hub || return 1
    ip netns exec "$NS_SRV" curl -sf "http://$ADDR_SRV:$HTTP_PORT/boot.ipxe" >"$WORK/www/boot.ipxe" &&
        ip netns exec "$NS_SRV" curl -sf "http://$ADDR_SRV:$HTTP_PORT/ipxe?mac=02-00-00-00-00-01&platform=pcbios&buildarch=i386" >"$WORK/www/ipxe.txt"
    local rc=$?
    stop_servers
    return $rc
}

start_dnsmasq_nginx() {
    rm -f "$WORK/dnsmasq.leases"
    # Leases and TFTP transfers raised from their defaults (1000 and 50) for a big fleet.
    local ping=--no-ping
    [[ ${BENCH_DNSMASQ_PING:-0} == 1 ]] && ping=""
    ip netns exec "$NS_SRV" $(pin_srv) dnsmasq -k $ping --port=0 --interface="$IF_SRV" --bind-interfaces \
        --dhcp-range="$POOL_START,$POOL_END,1h" --dhcp-authoritative --dhcp-lease-max=65536 \
        --dhcp-leasefile="$WORK/dnsmasq.leases" --dhcp-userclass=set:ipxe,iPXE \
        --dhcp-match=set:efi,option:client-arch,7 \
        --dhcp-boot=tag:!ipxe,tag:!efi,undionly.kpxe --dhcp-boot=tag:!ipxe,tag:efi,ipxe.efi \
        --dhcp-boot="tag:ipxe,http://$ADDR_SRV:$HTTP_PORT/boot.ipxe" \
        --enable-tftp --tftp-root="$WORK/tftp" --tftp-max=4096 --pid-file="$WORK/dnsmasq.pid" --log-facility=- \
        >>"$WORK/dnsmasq.log" 2>&1 &
    SERVER_PIDS+=($!)
    ip netns exec "$NS_SRV" $(pin_srv) nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
        -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >>"$WORK/nginx.log" 2>&1 &
    SERVER_PIDS+=($!)
    wait_port tcp "$HTTP_PORT" && wait_port udp 67 && wait_port udp 69
}

# Kea on-link: raw sockets (a UDP socket bound to the address sees no broadcast
# from clients without one), memfile leases persisted as in bench/dhcp.sh.
start_kea() {
    rm -rf "$WORK/kea"
    mkdir -p "$WORK/kea"
    write_kea_config "$WORK/kea/kea-dhcp4.json" "$IF_SRV" raw 10.203.0.0/16 "$POOL_START - $POOL_END" \
        "$WORK/kea/kea-leases4.csv"
    KEA_PIDFILE_DIR="$WORK/kea" KEA_LOCKFILE_DIR="$WORK/kea" \
        ip netns exec "$NS_SRV" $(pin_srv) kea-dhcp4 -c "$WORK/kea/kea-dhcp4.json" >>"$WORK/kea.log" 2>&1 &
    SERVER_PIDS+=($!)
    # A raw socket shows in ss as p_raw, not udp/67: give it a moment, then check it lives.
    sleep 1.5
    kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null
}

run_avalanche() { # run_avalanche SERVER N
    local server=$1 n=$2 out
    case $server in
    provisioner) start_hub ;;
    kea) start_kea ;;
    dnsmasq) start_dnsmasq_nginx ;;
    esac || { echo "{\"kind\":\"avalanche\",\"server\":\"$server\",\"n\":$n,\"error\":\"did not start\"}"; stop_servers; return; }
    log "avalanche: $n DHCP clients against $server"
    out=$(ip netns exec "$NS_CLI" $(pin_cli) "$STORM" boot --until-bound --iface "$IF_CLI" --n "$n" \
        --timeout-secs "$TIMEOUT" --mac-prefix 02:a7 2>>"$WORK/storm.log")
    stop_servers
    echo "{\"kind\":\"avalanche\",\"server\":\"$server\",\"n\":$n,\"result\":${out:-null}}"
}

run_storm() { # run_storm SERVER N
    local server=$1 n=$2 out
    case $server in
    provisioner) start_hub ;;
    dnsmasq+nginx) start_dnsmasq_nginx ;;
    esac || { echo "{\"kind\":\"boot\",\"server\":\"$server\",\"n\":$n,\"error\":\"did not start\"}"; stop_servers; return; }
    log "storm: $n machines against $server"
    out=$(ip netns exec "$NS_CLI" $(pin_cli) "$STORM" boot --iface "$IF_CLI" --n "$n" --firmware "$FIRMWARE" \
        --timeout-secs "$TIMEOUT" 2>>"$WORK/storm.log")
    stop_servers
    echo "{\"kind\":\"boot\",\"server\":\"$server\",\"n\":$n,\"result\":${out:-null}}"
}

main() {
    [[ $(id -u) == 0 ]] || { echo "bench/storm.sh needs root" >&2; exit 1; }
    for b in "$BIN" "$STORM"; do
        [[ -x $b ]] || { echo "$b is missing: cargo build --release --workspace" >&2; exit 1; }
    done
    command -v dnsmasq >/dev/null && command -v nginx >/dev/null && command -v curl >/dev/null ||
        { echo "needs dnsmasq, nginx and curl (apt-get install dnsmasq-base nginx-light curl)" >&2; exit 1; }
    if [[ $AVALANCHE_N != 0 && " $AVALANCHE_SERVERS " == *" kea "* ]] && ! command -v kea-dhcp4 >/dev/null; then
        echo "needs kea-dhcp4 for the avalanche (apt-get install kea-dhcp4-server)" >&2; exit 1
    fi
    ulimit -n "$(ulimit -Hn)" # 5000 machines: a UDP and a TCP socket each, on both sides
    setup_net
    make_files
    write_hub_config
    write_nginx_config
    capture_scripts || { log "could not capture the hub's scripts for nginx"; exit 1; }
    mkdir -p "$REPO/bench/results"
    local results=${BENCH_STORM_OUT:-$REPO/bench/results/storm-$(date +%Y%m%d-%H%M%S).jsonl}
    if [[ $AVALANCHE_N != 0 ]]; then
        for s in $AVALANCHE_SERVERS; do
            run_avalanche "$s" "$AVALANCHE_N" | tee -a "$results"
        done
    fi
    for n in $NS; do
        for s in $SERVERS; do
            run_storm "$s" "$n" | tee -a "$results"
        done
    done
    log "results: $results"
}

main "$@"
