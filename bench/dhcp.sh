#!/usr/bin/env bash
# DHCPv4 throughput benchmark: provisioner vs Kea vs dnsmasq.
#
# Builds two private network namespaces (pvb-srv, pvb-cli) joined by a veth pair,
# addresses 10.201.0.1 (server) and 10.201.0.2 (client), and nothing else: no
# traffic leaves the pair. perfdhcp runs in pvb-cli as a relay (giaddr 10.201.0.2)
# and sends to 10.201.0.1. Each server is restarted with empty lease state before
# every load step; the offered DORA rate is stepped up until drops reach 1 %, then
# bisected. Prints a table and writes it to bench/results/dhcp-<date>.md.
#
# Each step also counts UDP receive-buffer overflows in both namespaces: when the
# client's socket overflows and the server's does not, the limit found is perfdhcp's
# (one core, default 208 KiB buffer), not the server's; the table says so.
# Results vary run to run by up to ~30 % on a shared 2-vCPU VM.
#
# Needs root. Does not build anything: waits for target/release/provisioner.
#
# Environment knobs:
#   BENCH_SECS=5      length of one load step (seconds)
#   BENCH_RATES="..." offered DORA/s steps
#   BENCH_BISECT=2    bisection rounds after the first failing step
#   BENCH_PIN=1       pin the server to CPU 1 and perfdhcp to CPU 0 (0 = no pinning)
#   BENCH_SERVERS="provisioner kea dnsmasq"
#   PROVISIONER_BIN   binary to test (default: <repo>/target/release/provisioner)
#   BENCH_SUMMARY=FILE also append each server's figures as a line of JSON (for bench/run)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PROVISIONER_BIN:-$REPO/target/release/provisioner}
SECS=${BENCH_SECS:-5}
RATES=${BENCH_RATES:-"1000 2000 3000 4000 5000 6000 8000 10000 13000 16000 20000 25000 30000"}
BISECT=${BENCH_BISECT:-2}
PIN=${BENCH_PIN:-1}
SERVERS=${BENCH_SERVERS:-"provisioner kea dnsmasq"}
MAX_DROP_PCT=1
# Pool 10.201.1.0-10.201.255.250 holds ~65k addresses; never ask for more
# exchanges than that in one step (the server restarts empty each step).
MAX_EXCHANGES=60000
CLIENTS=16000000 # perfdhcp picks a random MAC among this many per exchange

NS_SRV=pvb-srv
NS_CLI=pvb-cli
IF_SRV=pvb-s0
IF_CLI=pvb-c0
ADDR_SRV=10.201.0.1
ADDR_CLI=10.201.0.2
PREFIX=16

CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d /var/tmp/pvb-dhcp.XXXXXX) # real disk: the provisioner fsyncs leases
SERVER_PID=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$WORK/steps.log" >&2; }

# ---------------------------------------------------------------- setup/teardown

need() { # need CMD PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null; }
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
}

# perfdhcp receives every reply on one socket. With the kernel's default 208 KiB
# receive buffer it overflows on reply bursts (ours come in batches after each
# fsync), and the client's limit is what gets measured. The default is raised for
# the run (same for every server; not namespaced, so host-wide) and restored on exit.
# BENCH_RMEM_DEFAULT=0 keeps the host's value.
RMEM_DEFAULT=${BENCH_RMEM_DEFAULT:-8388608}
RMEM_SAVED=$(cat /proc/sys/net/core/rmem_default)

teardown() {
    echo "$RMEM_SAVED" > /proc/sys/net/core/rmem_default
    stop_server
    ip netns del "$NS_SRV" 2>/dev/null
    ip netns del "$NS_CLI" 2>/dev/null
    if [[ -n ${KEEP_WORK:-} ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

setup_net() {
    if [[ $RMEM_DEFAULT != 0 ]]; then
        echo "$RMEM_DEFAULT" > /proc/sys/net/core/rmem_default
        log "net.core.rmem_default: $RMEM_SAVED -> $RMEM_DEFAULT for the run (restored on exit)"
    fi
    setup_veth_pair
}

# ---------------------------------------------------------------- servers

pin_srv() { if [[ $PIN == 1 ]]; then echo "taskset -c 1"; fi; }
pin_cli() { if [[ $PIN == 1 ]]; then echo "taskset -c 0"; fi; }

write_configs() {
    cat >"$WORK/provisioner.toml" <<EOF
state_dir = "$WORK/state"
[dhcp]
mode = "full"
interfaces = ["$IF_SRV"]
lease_key = "client-id"
[[dhcp.subnet]]
network = "10.201.0.0/16"
pools = [{ start = "10.201.1.0", end = "10.201.255.250" }]
lease_time = 3600
routers = ["$ADDR_SRV"]
EOF
    write_kea_config "$WORK/kea-dhcp4.json" "$IF_SRV" udp 10.201.0.0/16 "10.201.1.0 - 10.201.255.250" \
        "$WORK/kea/kea-leases4.csv" "$ADDR_SRV"
}

# start_server NAME LOGFILE: fresh state, background start, sets SERVER_PID.
start_server() {
    local name=$1 logf=$2
    rm -rf "$WORK/kea" "$WORK/dnsmasq.leases"
    fresh_hub_state "$WORK/state"
    mkdir -p "$WORK/state" "$WORK/kea"
    case $name in
    provisioner)
        ip netns exec "$NS_SRV" $(pin_srv) "$BIN" --log warn serve -c "$WORK/provisioner.toml" \
            >>"$logf" 2>&1 &
        ;;
    kea)
        KEA_PIDFILE_DIR="$WORK/kea" KEA_LOCKFILE_DIR="$WORK/kea" \
            ip netns exec "$NS_SRV" $(pin_srv) kea-dhcp4 -c "$WORK/kea-dhcp4.json" \
            >>"$logf" 2>&1 &
        ;;
    dnsmasq)
        # --no-ping: dnsmasq would otherwise ICMP-probe every address before offering it.
        ip netns exec "$NS_SRV" $(pin_srv) dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
            --interface="$IF_SRV" --bind-interfaces --no-ping --quiet-dhcp \
            --dhcp-range=10.201.1.0,10.201.255.250,255.255.0.0,1h \
            --dhcp-option=option:router,"$ADDR_SRV" \
            --dhcp-leasefile="$WORK/dnsmasq.leases" --dhcp-lease-max=1000000 \
            --pid-file="$WORK/dnsmasq.pid" --user=root --group=root --log-facility=- \
            >>"$logf" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    # Ready when something in pvb-srv listens on UDP 67.
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=""; return 1; }
        if ip netns exec "$NS_SRV" ss -Hlun 'sport = :67' 2>/dev/null | grep -q .; then
            [[ $name == provisioner ]] && wait_hub_settled "$WORK/state"
            sleep 0.3
            return 0
        fi
        sleep 0.1
    done
    return 1
}

udp_rcvbuf_errors() { # UDP receive-buffer overflows in namespace $1 (packets dropped at a socket)
    ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 }
        else print $col["RcvbufErrors"] }' /proc/net/snmp
}

cpu_ticks() { # utime+stime of the whole process (all threads)
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------- one load step

# run_step NAME RATE -> prints "ok|fail|error discovers acks drop% ack/s cpu% srv-rcvbuf-drops cli-rcvbuf-drops"
run_step() {
    local name=$1 rate=$2 logf=$WORK/$1.log out n secs c0 c1
    out=$WORK/perfdhcp-$name-$rate.txt
    if ! start_server "$name" "$logf"; then
        echo "error 0 0 100 0 0 0 0"
        return
    fi
    n=$((rate * SECS))
    ((n > MAX_EXCHANGES)) && n=$MAX_EXCHANGES
    secs=$(((n + rate - 1) / rate)) # perfdhcp -p takes whole seconds only
    c0=$(cpu_ticks "$SERVER_PID")
    local sb0 cb0 sb1 cb1
    sb0=$(udp_rcvbuf_errors "$NS_SRV"); cb0=$(udp_rcvbuf_errors "$NS_CLI")
    # -n and -p both bound the run; -W waits 1 s for late replies before the report;
    # -d 1: a reply later than 1 s counts as a drop. (No -x e: perfdhcp 2.2 prints
    # "reached test-period." once per pending packet.)
    timeout $((secs + 30)) ip netns exec "$NS_CLI" $(pin_cli) perfdhcp -4 -l "$IF_CLI" \
        -r "$rate" -n "$n" -p "$secs" -R "$CLIENTS" -d 1 -W 1000000 \
        "$ADDR_SRV" >"$out" 2>&1
    c1=$(cpu_ticks "$SERVER_PID")
    sb1=$(udp_rcvbuf_errors "$NS_SRV"); cb1=$(udp_rcvbuf_errors "$NS_CLI")
    kill -0 "$SERVER_PID" 2>/dev/null || echo "ERROR: server exited during run" >>"$logf"
    stop_server
    # Sanity: the server namespace must not have tried to reach anything but the client.
    local stray
    stray=$(ip -n "$NS_SRV" neigh show | awk -v c="$ADDR_CLI" '$1 != c { print $1 }' | tr '\n' ' ')
    [[ -n $stray ]] && echo "WARNING: server namespace resolved other neighbours: $stray" >>"$logf"
    ip -n "$NS_SRV" neigh flush dev "$IF_SRV" nud reachable nud stale nud delay nud probe nud failed nud incomplete 2>/dev/null
    # perfdhcp report: "sent packets: N" / "received packets: N" per exchange type,
    # DISCOVER-OFFER first, then REQUEST-ACK.
    awk -v rate="$rate" -v secs="$secs" -v n="$n" -v dc="$((c1 - c0))" -v hz="$CLK_TCK" \
        -v sbuf="$((sb1 - sb0))" -v cbuf="$((cb1 - cb0))" -v maxd="$MAX_DROP_PCT" '
        /sent packets:/     { s[++i] = $3 }
        /received packets:/ { r[++j] = $3 }
        END {
            disc = s[1] + 0; ack = r[2] + 0
            if (disc == 0) { print "error 0 0 100 0 0 0 0"; exit }
            drop = 100 * (disc - ack) / disc
            # exchanges the client actually started per second of the load period
            achieved = ack / (disc / rate)
            # server CPU over the load period (the 1 s exit wait is mostly idle)
            cpu = 100 * dc / hz / (disc / rate)
            verdict = (drop < maxd && disc >= 0.95 * n) ? "ok" : "fail"
            printf "%s %d %d %.2f %.0f %.0f %d %d\n", verdict, disc, ack, drop, achieved, cpu, sbuf, cbuf
        }' "$out"
}

# ---------------------------------------------------------------- search per server

declare -A BEST BEST_CPU NOTE FAILINFO
# step NAME RATE: one load step, retried once if it fails (one bad step should not
# cap the result). Sets res verdict sent acks drop ach cpu in the caller.
step() {
    local try
    for try in 1 2; do
        res=$(run_step "$1" "$2")
        read -r verdict sent acks drop ach cpu sbuf cbuf <<<"$res"
        log "$1 rate=$2 discovers=$sent acks=$acks drops=$drop% ack/s=$ach cpu=$cpu%" \
            "rcvbuf-overflows(srv/cli)=$sbuf/$cbuf -> $verdict"
        [[ $verdict == fail ]] || return 0
    done
    FAILINFO[$1,$2]="$sbuf $cbuf $drop $sent"
}
bench_server() {
    local name=$1 res verdict sent acks drop ach cpu sbuf cbuf lo=0 hi=0 lo_res="" r mid
    local logf=$WORK/$name.log
    : >"$logf"
    log "== $name"
    local first=${RATES%% *} lowest
    for r in $RATES; do
        step "$name" "$r"
        if [[ $verdict == error ]]; then
            NOTE[$name]="failed to start or no replies: $(grep -v '^\s*$' "$logf" | tail -n 2 | tr '\n|' ' /' | cut -c1-160)"
            [[ $lo == 0 ]] && return
            break
        fi
        if [[ $verdict == ok ]]; then lo=$r; lo_res=$res; else hi=$r; break; fi
    done
    # Fails at the first step: halve the rate down to 100/s.
    if [[ $lo == 0 ]]; then
        r=$first
        while ((r > 100)); do
            r=$((r / 2 / 50 * 50)); ((r < 100)) && r=100
            step "$name" "$r"
            if [[ $verdict == ok ]]; then lo=$r; lo_res=$res; break; fi
            hi=$r
        done
    fi
    if [[ $lo == 0 ]]; then
        NOTE[$name]="drops >= ${MAX_DROP_PCT}% even at $r/s ($drop%)"
        return
    fi
    # Bisect between the last passing and the first failing rate.
    if ((hi > 0)); then
        for _ in $(seq "$BISECT"); do
            mid=$(((lo + hi) / 2 / 100 * 100))
            ((mid <= lo || mid >= hi)) && break
            step "$name" "$mid"
            if [[ $verdict == ok ]]; then lo=$mid; lo_res=$res; else hi=$mid; fi
        done
    else
        NOTE[$name]="passed the highest step tried (raise BENCH_RATES)"
    fi
    read -r verdict sent acks drop ach cpu sbuf cbuf <<<"$lo_res"
    BEST[$name]=$lo
    # Who dropped at the first failing rate: the server's socket or perfdhcp's?
    if ((hi > 0)) && [[ -n ${FAILINFO[$name,$hi]:-} ]]; then
        local fs fc fdrop fsent
        read -r fs fc fdrop fsent <<<"${FAILINFO[$name,$hi]}"
        if awk -v d="$fdrop" -v m="$MAX_DROP_PCT" 'BEGIN { exit !(d < m) }'; then
            # No drops, but perfdhcp could not start the exchanges fast enough: its core is the limit.
            NOTE[$name]="${NOTE[$name]:+${NOTE[$name]}; }client-limited: at $hi/s perfdhcp sent only $fsent DISCOVERs in the period (${fdrop}% drops), so this is a lower bound"
        elif ((fc > fs)); then
            NOTE[$name]="${NOTE[$name]:+${NOTE[$name]}; }client-limited: at $hi/s perfdhcp's socket overflowed ($fc) and the server's did not ($fs), so this is a lower bound"
        fi
    fi
    BEST_CPU[$name]=$cpu
    # Kea logs DHCP4_MULTI_THREADING_INFO at WARN on every start; not a problem.
    local bad
    bad=$(grep -iE 'error|panic|warn' "$logf" | grep -v -e DHCP4_MULTI_THREADING_INFO -e 'boot asset not served')
    if [[ -n $bad ]]; then
        NOTE[$name]="${NOTE[$name]:+${NOTE[$name]}; }log: $(wc -l <<<"$bad") warn/error lines, e.g. $(head -n1 <<<"$bad" | cut -c1-120 | tr '|' '/')"
    fi
}

# ---------------------------------------------------------------- main

[[ $EUID == 0 ]] || { echo "run as root" >&2; exit 1; }
need ip iproute2
need ss iproute2
need taskset util-linux
need perfdhcp kea-admin
need kea-dhcp4 kea-dhcp4-server
need dnsmasq dnsmasq-base

if [[ " $SERVERS " == *" provisioner "* && ! -x $BIN ]]; then
    log "waiting for $BIN (up to 15 min)"
    for _ in $(seq 45); do [[ -x $BIN ]] && break; sleep 20; done
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
setup_net
write_configs

for s in $SERVERS; do
    if [[ $s == provisioner && ! -x $BIN ]]; then NOTE[$s]="binary $BIN not found"; continue; fi
    bench_server "$s"
done

# ---------------------------------------------------------------- report

date_tag=$(date +%Y-%m-%d)
mkdir -p "$REPO/bench/results"
result=$REPO/bench/results/dhcp-$date_tag.md
kea_best=${BEST[kea]:-0}
{
    echo "# DHCPv4 DORA throughput, $(date -Is)"
    echo
    echo "Host: $(nproc) CPUs, $(uname -r); $(perfdhcp -v 2>&1 | head -n1 | sed 's/VERSION: /perfdhcp /');" \
        "kea-dhcp4 $(kea-dhcp4 -V 2>/dev/null | head -n1); $(dnsmasq --version | head -n1 | awk '{print $1, $3}')."
    echo "Relayed traffic over a veth pair; ${SECS}s steps (max $MAX_EXCHANGES exchanges), fresh lease state per step;" \
        "pass = drops < ${MAX_DROP_PCT}% (DISCOVERs sent vs ACKs received, 1 s timeout)."
    [[ $PIN == 1 ]] && echo "Server pinned to CPU 1, perfdhcp to CPU 0 (BENCH_PIN=0 to disable)."
    echo "CPU % = server utime+stime during the best step / its load period, % of one core." \
        "Load average at start: $LOAD0."
    echo
    echo "CPU µs/DORA = server CPU time per completed exchange at that rate: what a server would reach if the client could push it to a full core."
    echo
    echo "| server | max DORA/s (<${MAX_DROP_PCT}% drops) | server CPU % | CPU µs/DORA | vs Kea (rate) | vs Kea (CPU/DORA) | notes |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for s in $SERVERS; do
        b=${BEST[$s]:-}
        if [[ -n $b ]]; then
            ratio=$(awk -v a="$b" -v k="$kea_best" 'BEGIN { if (k > 0) printf "%.2fx", a / k; else print "n/a" }')
            us=$(awk -v c="${BEST_CPU[$s]}" -v r="$b" 'BEGIN { printf "%.0f", c * 10000 / r }')
            kus=$(awk -v c="${BEST_CPU[kea]:-0}" -v r="$kea_best" 'BEGIN { if (r > 0) printf "%.1f", c * 10000 / r; else print 0 }')
            cratio=$(awk -v u="$us" -v k="$kus" 'BEGIN { if (u > 0 && k > 0) printf "%.2fx", k / u; else print "n/a" }')
            echo "| $s | $b | ${BEST_CPU[$s]} | $us | $ratio | $cratio | ${NOTE[$s]:-} |"
        else
            echo "| $s | - | - | - | - | - | ${NOTE[$s]:-not run} |"
        fi
    done
    echo
    echo "<details><summary>steps</summary>"
    echo
    echo '```'
    grep -E 'rate=|==' "$WORK/steps.log"
    echo '```'
    echo "</details>"
} >"$result"
echo
cat "$result"
echo
log "written to $result"
if [[ -n ${BENCH_SUMMARY:-} ]]; then
    for s in $SERVERS; do
        printf '{"bench":"dhcp","server":"%s","dora_per_s":%s,"cpu_pct":%s,"note":"%s"}\n' "$s" "${BEST[$s]:-null}" \
            "${BEST_CPU[$s]:-null}" "$(tr '"\\' "''" <<<"${NOTE[$s]:-}")"
    done >>"$BENCH_SUMMARY"
fi
