#!/usr/bin/env bash
# Memory: the hub's resident set with a fleet of BENCH_MEM_NODES enrolled nodes
# (default 10,000, each with a real agent's 3.6 KB inventory) and BENCH_MEM_LEASES
# DHCP leases (default 100,000), filled through the hub's own protocols, not
# written into its store behind its back:
#
#  1. the hub starts on an empty state directory (RSS idle);
#  2. `storm enroll-load` enrolls the nodes over mTLS with an auto-approve token,
#     sending node-agent/tests/fixtures/inventory/qemu-q35-ovmf.expected.json with
#     each agent's own UUID, serial and MAC;
#  3. `storm dhcp-load` binds the leases (one DORA per fresh MAC, on-link, over a
#     veth pair);
#  4. RSS and its high-water mark after the fill (the hub that did the work);
#  5. the hub restarts on that state directory: time until it serves again, RSS
#     after the store is loaded, and after `GET /api/v1/nodes` lists every node.
#
# Namespaces pvm-srv (10.204.0.1/15) and pvm-cli (10.204.0.2/15), one veth pair;
# nothing leaves them. Writes bench/results/memory-<date>.md; prints one line of
# JSON last (for bench/run). Needs root. Does not build: target/release/{provisioner,storm}.
#
# Environment knobs:
#   BENCH_MEM_NODES=10000 BENCH_MEM_LEASES=100000
#   BENCH_MEM_DHCP_RATE=4000   new DHCP clients per second during the fill
#   PROVISIONER_BIN, STORM_BIN, KEEP_WORK=1
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PROVISIONER_BIN:-$REPO/target/release/provisioner}
STORM=${STORM_BIN:-$REPO/target/release/storm}
NODES=${BENCH_MEM_NODES:-10000}
LEASES=${BENCH_MEM_LEASES:-100000}
DHCP_RATE=${BENCH_MEM_DHCP_RATE:-4000}
INVENTORY=$REPO/node-agent/tests/fixtures/inventory/qemu-q35-ovmf.expected.json

NS_SRV=pvm-srv
NS_CLI=pvm-cli
IF_SRV=pvm-s0
IF_CLI=pvm-c0
ADDR_SRV=10.204.0.1
ADDR_CLI=10.204.0.2
PREFIX=15

WORK=$(mktemp -d /var/tmp/pvm-memory.XXXXXX) # real disk: the hub fsyncs
HUB_PID=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$WORK/steps.log" >&2; }

stop_hub() {
    [[ -n $HUB_PID ]] || return 0
    kill -TERM "$HUB_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$HUB_PID" 2>/dev/null
    wait "$HUB_PID" 2>/dev/null
    HUB_PID=""
}

cleanup() {
    stop_hub
    ip netns del "$NS_SRV" 2>/dev/null
    ip netns del "$NS_CLI" 2>/dev/null
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

write_config() {
    cat >"$WORK/hub.toml" <<EOF
state_dir = "$WORK/state"
[dhcp]
mode = "full"
interfaces = ["$IF_SRV"]
[[dhcp.subnet]]
network = "10.204.0.0/$PREFIX"
pools = [{ start = "10.204.1.0", end = "10.205.255.250" }]
lease_time = 86400
[http]
listen = "$ADDR_SRV:8080"
[enroll]
listen = "$ADDR_SRV:9443"
rate_burst = 100000
rate_per_sec = 100000.0
EOF
}

listening() { # listening tcp|udp PORT
    ip netns exec "$NS_SRV" ss -lnH --"$1" "sport = :$2" | grep -q .
}

# start_hub: sets HUB_PID, and READY to the seconds until DHCP, HTTP and enrollment listen.
start_hub() {
    local t0 t1
    t0=$(date +%s.%N)
    ip netns exec "$NS_SRV" "$BIN" --log warn serve -c "$WORK/hub.toml" >>"$WORK/hub.log" 2>&1 &
    HUB_PID=$!
    for _ in $(seq 600); do
        kill -0 "$HUB_PID" 2>/dev/null || { log "the hub exited: $(tail -n 3 "$WORK/hub.log")"; return 1; }
        if listening udp 67 && listening tcp 8080 && listening tcp 9443 && [[ -s $WORK/state/talos/secrets.yaml ]]; then
            t1=$(date +%s.%N)
            READY=$(awk -v a="$t0" -v z="$t1" 'BEGIN { printf "%.2f", z - a }')
            return 0
        fi
        sleep 0.1
    done
    log "the hub did not listen within 60 s"
    return 1
}

kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$HUB_PID/status"; } # kib VmRSS|VmHWM
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
nodes() { # enrolled nodes, from /metrics
    ip netns exec "$NS_CLI" curl -sf "http://$ADDR_SRV:8080/metrics" |
        awk '/^provisioner_nodes\{/ { n += $2 } END { print n + 0 }'
}

main() {
    [[ $(id -u) == 0 ]] || { echo "bench/memory.sh needs root" >&2; exit 1; }
    for b in "$BIN" "$STORM"; do
        [[ -x $b ]] || { echo "$b is missing: cargo build --release --workspace" >&2; exit 1; }
    done
    command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
    ulimit -n "$(ulimit -Hn)"
    setup_veth_pair
    write_config
    local ready0 idle token enroll dhcp filled_rss filled_hwm ready1 loaded_rss listed_rss listed_hwm n_nodes acks bytes
    start_hub || exit 1
    ready0=$READY
    sleep 1
    idle=$(kib VmRSS)
    log "hub up in ${ready0}s, RSS idle $(mib "$idle") MiB"
    token=$(ip netns exec "$NS_SRV" "$BIN" tokens create --auto-approve --ttl 2h -c "$WORK/hub.toml" 2>>"$WORK/hub.log")
    [[ $token == *.* ]] || { log "no join token: $token"; exit 1; }

    log "enrolling $NODES nodes"
    enroll=$(ip netns exec "$NS_CLI" "$STORM" enroll-load --grpc "$ADDR_SRV:9443" --http "$ADDR_SRV:8080" \
        --token "$token" --seconds 1200 --count "$NODES" --concurrency 32 --inventory "$INVENTORY" \
        --log "$WORK/enroll.events" 2>>"$WORK/storm.log")
    log "enroll-load: $enroll"
    log "binding $LEASES leases"
    dhcp=$(ip netns exec "$NS_CLI" "$STORM" dhcp-load --iface "$IF_CLI" --seconds 1200 --count "$LEASES" \
        --rate "$DHCP_RATE" --concurrency 1024 --reboot-every 0 --log "$WORK/dhcp.events" 2>>"$WORK/storm.log")
    log "dhcp-load: $dhcp"
    acks=$(grep -c '^ack ' "$WORK/dhcp.events")
    sleep 1
    filled_rss=$(kib VmRSS); filled_hwm=$(kib VmHWM)
    n_nodes=$(nodes)
    log "after the fill: $n_nodes nodes, $acks leases, RSS $(mib "$filled_rss") MiB, high-water $(mib "$filled_hwm") MiB"

    stop_hub
    start_hub || exit 1
    ready1=$READY
    sleep 1
    loaded_rss=$(kib VmRSS)
    bytes=$(ip netns exec "$NS_CLI" curl -sf -o /dev/null -w '%{size_download}' "http://$ADDR_SRV:8080/api/v1/nodes")
    sleep 0.5
    listed_rss=$(kib VmRSS); listed_hwm=$(kib VmHWM)
    local after_restart
    after_restart=$(nodes)
    log "restart: ready in ${ready1}s, RSS $(mib "$loaded_rss") MiB; after listing $after_restart nodes ($bytes bytes): RSS $(mib "$listed_rss") MiB, high-water $(mib "$listed_hwm") MiB"
    stop_hub

    mkdir -p "$REPO/bench/results"
    local out=$REPO/bench/results/memory-$(date +%Y-%m-%d).md peak
    peak=$(( filled_hwm > listed_hwm ? filled_hwm : listed_hwm ))
    {
        echo "# Hub memory with $n_nodes nodes and $acks leases, $(date -Is)"
        echo
        echo "Host: $(nproc) CPUs, $(uname -r); provisioner: $BIN ($(date -r "$BIN" '+%F %T'))."
        echo "Filled through the hub's own protocols: storm enroll-load (mTLS; each node sends the $(stat -c %s "$INVENTORY")-byte inventory of node-agent's QEMU fixture), storm dhcp-load (on-link DORA, fresh MAC each)."
        echo
        echo "| moment | RSS MiB | high-water MiB |"
        echo "|---|---:|---:|"
        echo "| idle, empty store | $(mib "$idle") | |"
        echo "| after enrolling $n_nodes nodes and binding $acks leases | $(mib "$filled_rss") | $(mib "$filled_hwm") |"
        echo "| restarted on that store (ready in ${ready1} s) | $(mib "$loaded_rss") | |"
        echo "| after GET /api/v1/nodes ($bytes bytes) | $(mib "$listed_rss") | $(mib "$listed_hwm") |"
        echo
        echo "enroll-load: \`$enroll\`; dhcp-load: \`$dhcp\`."
    } >"$out"
    cat "$out" >&2
    log "written to $out"
    printf '{"nodes":%s,"leases":%s,"rss_idle_kib":%s,"rss_filled_kib":%s,"hwm_filled_kib":%s,"restart_ready_s":%s,"rss_restarted_kib":%s,"rss_listed_kib":%s,"hwm_peak_kib":%s,"nodes_after_restart":%s}\n' \
        "$n_nodes" "$acks" "$idle" "$filled_rss" "$filled_hwm" "$ready1" "$loaded_rss" "$listed_rss" "$peak" "$after_restart"
}

main "$@"
