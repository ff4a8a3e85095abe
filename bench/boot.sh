#!/usr/bin/env bash
# Boot-file serving benchmark: TFTP (provisioner vs tftpd-hpa, dnsmasq, atftpd) and
# HTTP (provisioner vs nginx).
#
# Builds two private network namespaces (pvb-srv, pvb-cli) joined by a veth pair,
# addresses 10.202.0.1 (server) and 10.202.0.2 (client), and nothing else: no
# traffic leaves the pair. Every server is started by this script, in pvb-srv, with
# an explicit configuration, and stopped by PID; Debian's tftpd-hpa and nginx
# services are never used (and are stopped/disabled if installing them started them).
#
#  1. TFTP, one client: a 64 MiB random file, atftp --get at blksize 512 and 1468
#     by windowsize 1, 4, 16 (W=1: no windowsize option). MB/s and the server's CPU
#     seconds (utime+stime of the server and its reaped children) for the transfer.
#     Servers that do not grant windowsize answer without it; the notes say which
#     windows were granted (from atftp --verbose).
#  2. TFTP, 50 and 200 concurrent clients fetching an 850 KB file (the size of
#     ipxe.efi) at blksize 1468: aggregate MB/s over BENCH_CONC_ROUNDS rounds, failed fetches
#     (exit status or wrong size).
#  3. HTTP, the same 64 MiB file with 1, 16 and 64 connections (wrk): MB/s.
#  4. HTTP, the iPXE entry script /boot.ipxe (nginx: a static copy of what the hub
#     returned), 16 connections: requests/s.
# Prints one table with ratios (TFTP: ours vs atftpd per window, vs tftpd-hpa at W=1;
# HTTP: ours vs nginx) and writes it to bench/results/boot-<date>.md.
#
# Settings that differ from defaults, for the benchmark only (listed in the report):
# our hub gets max_per_client = 256 and requests_per_sec = 10000 (every client comes
# from 10.202.0.2, and atftp cannot bind a local address); dnsmasq gets
# --tftp-max=1024 (default 50, ours: max_transfers 1024); atftpd -m 1024 (default 100);
# nginx gets keepalive_requests 1000000 (default 1000; the hub does not cap requests
# per connection) and sendfile on.
#
# Debian's tftpd-hpa and atftpd packages conflict: whichever is not installed (atftpd,
# on a machine with neither) is unpacked (apt-get download + dpkg-deb -x) into
# /var/cache/pvb-bench/ and run from there; installed packages are never removed.
#
# Needs root. Does not build anything: waits for target/release/provisioner.
# Results vary a lot on a shared 2-vCPU VM; rerun on a quiet machine for figures.
#
# Environment knobs:
#   BENCH_TFTP_MB=64        size of the large file (MiB)
#   BENCH_BLKSIZES="512 1468" TFTP blksizes for the large file
#   BENCH_WINDOWS="1 4 16"  TFTP windowsizes for the large file
#   BENCH_REPEAT=1          large-file TFTP transfers per (server, window); the best counts
#   BENCH_CONC="50 200"     concurrent TFTP clients (one test per count)
#   BENCH_CONC_ROUNDS=3     rounds of BENCH_CONC concurrent fetches
#   BENCH_SMALL_BYTES=850528 size of the small file (ipxe.efi in the manifest)
#   BENCH_HTTP_SECS=10      wrk duration per step
#   BENCH_HTTP_CONNS="1 16 64"
#   BENCH_PIN=1             pin servers to CPU 1 and clients to CPU 0 (0 = no pinning)
#   BENCH_TFTP_SERVERS="provisioner tftpd-hpa dnsmasq atftpd"
#   BENCH_HTTP_SERVERS="provisioner nginx"
#   PROVISIONER_BIN         binary to test (default: <repo>/target/release/provisioner)
#   KEEP_WORK=1             keep the work directory (server logs, client output)
#   BENCH_SUMMARY=FILE      also append every figure as a line of JSON (for bench/run)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${PROVISIONER_BIN:-$REPO/target/release/provisioner}
TFTP_MB=${BENCH_TFTP_MB:-64}
BLKSIZES=${BENCH_BLKSIZES:-"512 1468"}
WINDOWS=${BENCH_WINDOWS:-"1 4 16"}
REPEAT=${BENCH_REPEAT:-1}
CONCS=${BENCH_CONC:-"50 200"}
CONC_ROUNDS=${BENCH_CONC_ROUNDS:-3}
SMALL_BYTES=${BENCH_SMALL_BYTES:-850528}
HTTP_SECS=${BENCH_HTTP_SECS:-10}
HTTP_CONNS=${BENCH_HTTP_CONNS:-"1 16 64"}
PIN=${BENCH_PIN:-1}
TFTP_SERVERS=${BENCH_TFTP_SERVERS:-"provisioner tftpd-hpa dnsmasq atftpd"}
HTTP_SERVERS=${BENCH_HTTP_SERVERS:-"provisioner nginx"}
BLKSIZE=1468 # 1500-byte MTU minus IP, UDP and TFTP headers: the concurrent tests
BIG=big.bin
SMALL=small.bin
BIG_TIMEOUT=180 # one large TFTP transfer (seconds)
SMALL_TIMEOUT=60 # one small TFTP transfer in the concurrent test
HTTP_PORT=8080

NS_SRV=pvb-srv
NS_CLI=pvb-cli
IF_SRV=pvb-s0
IF_CLI=pvb-c0
ADDR_SRV=10.202.0.1
ADDR_CLI=10.202.0.2
PREFIX=24

CLK_TCK=$(getconf CLK_TCK)
CACHE=/var/cache/pvb-bench # unpacked atftpd or tftpd-hpa (the packages conflict)
WORK=$(mktemp -d /var/tmp/pvb-boot.XXXXXX)
chmod 755 "$WORK" # tftpd-hpa, atftpd and nginx workers drop to nobody
SERVER_PID=""
ATFTPD=""
TFTPD_HPA=""
CG="" # a cgroup holding the server under test: CPU time including forked children

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$WORK/steps.log" >&2; }

# ---------------------------------------------------------------- packages

INSTALLED_NOW=""
need() { # need CMD PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null ||
        { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null; }
    INSTALLED_NOW="$INSTALLED_NOW $2"
    command -v "$1" >/dev/null 2>&1 || { log "ERROR: $1 still missing after installing $2"; return 1; }
}

# quiesce SERVICE PIDFILE: a package we just installed may have started its system
# service (outside our namespaces). Stop and disable it through the service manager;
# never kill by name (other processes of that name may belong to someone else).
quiesce() {
    local svc=$1 pidf=$2 pid
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now "$svc" >/dev/null 2>&1
    else
        [[ -x /etc/init.d/$svc ]] && /etc/init.d/"$svc" stop >/dev/null 2>&1
        command -v update-rc.d >/dev/null && update-rc.d "$svc" disable >/dev/null 2>&1
    fi
    pid=$(cat "$pidf" 2>/dev/null)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        log "stopping $svc service (pid $pid from $pidf), started by its package install"
        kill -TERM "$pid" 2>/dev/null
    fi
    return 0
}

# need_tftpd VAR CMD PACKAGE OTHER: tftpd-hpa and atftpd conflict as packages. Use CMD if
# it is installed; else install PACKAGE with apt unless OTHER is installed (apt would
# remove it), in which case unpack PACKAGE (apt-get download + dpkg-deb -x) under
# $CACHE and run it from there. Sets VAR to the binary's path.
need_tftpd() {
    local var=$1 cmd=$2 pkg=$3 other=$4 path deb ver missing
    path=$(command -v "$cmd" 2>/dev/null)
    if [[ -z $path ]] && ! dpkg -s "$other" 2>/dev/null | grep -q '^Status: install ok installed'; then
        need "$cmd" "$pkg" && path=$(command -v "$cmd")
        [[ " $INSTALLED_NOW " == *" $pkg "* ]] && quiesce "$pkg" "/run/$pkg.pid"
    fi
    [[ -z $path ]] && path=$(ls "$CACHE"/"$pkg"-*/usr/sbin/"$cmd" 2>/dev/null | tail -n 1)
    if [[ -z $path ]]; then
        log "unpacking $pkg into $CACHE (the package conflicts with the installed $other)"
        mkdir -p "$CACHE/dl"
        (cd "$CACHE/dl" && apt-get download "$pkg" >/dev/null 2>&1) ||
            { apt-get update >/dev/null && (cd "$CACHE/dl" && apt-get download "$pkg" >/dev/null 2>&1); }
        deb=$(ls "$CACHE"/dl/"$pkg"_*.deb 2>/dev/null | tail -n 1)
        [[ -n $deb ]] || { log "ERROR: could not download $pkg"; return 1; }
        ver=$(dpkg-deb -f "$deb" Version)
        dpkg-deb -x "$deb" "$CACHE/$pkg-$ver" && rm -f "$deb"
        path=$CACHE/$pkg-$ver/usr/sbin/$cmd
    fi
    [[ -x $path ]] || return 1
    # Shared libraries of the unpacked binary (libwrap0, libpcre2-8-0: small, no services).
    missing=$(ldd "$path" 2>/dev/null | awk '/not found/ { print $1 }')
    if [[ -n $missing ]]; then
        log "$cmd lacks $missing; installing libwrap0 libpcre2-8-0"
        DEBIAN_FRONTEND=noninteractive apt-get install -y libwrap0 libpcre2-8-0 >/dev/null
    fi
    printf -v "$var" '%s' "$path"
}

# ---------------------------------------------------------------- setup/teardown

# Server CPU comes from a cgroup of our own (cgroup v2, or the v2 half of a hybrid
# setup): tftpd-hpa forks a child per transfer and ignores SIGCHLD, so the children's
# time never reaches its own /proc stat. Without a usable cgroup, /proc stat of the
# server and its live children is used instead (the table says which).
setup_cgroup() {
    local base=""
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then base=/sys/fs/cgroup
    elif [[ -f /sys/fs/cgroup/unified/cgroup.controllers ]]; then base=/sys/fs/cgroup/unified; fi
    if [[ -n $base ]] && mkdir "$base/pvb-boot-$$" 2>/dev/null; then
        if [[ -f $base/pvb-boot-$$/cpu.stat ]]; then CG=$base/pvb-boot-$$; else rmdir "$base/pvb-boot-$$"; fi
    fi
    # Servers start through this: join the cgroup, then exec `ip netns exec` (which
    # remounts /sys, so it must come first), which execs the server: $! is its PID.
    cat >"$WORK/cg-exec" <<'EOF'
#!/bin/sh
[ -n "$PVB_CG" ] && echo $$ >"$PVB_CG/cgroup.procs"
exec "$@"
EOF
    chmod 755 "$WORK/cg-exec"
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

teardown() {
    stop_server
    # Anything of ours still in the namespaces (forked tftpd-hpa children, nginx
    # workers, clients): the namespaces are ours, so every process in them is too.
    local ns p
    for ns in "$NS_SRV" "$NS_CLI"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    ip netns del "$NS_SRV" 2>/dev/null
    ip netns del "$NS_CLI" 2>/dev/null
    if [[ -n $CG ]]; then
        for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        for _ in $(seq 20); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
    fi
    if [[ -n ${KEEP_WORK:-} ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

setup_net() {
    setup_veth_pair
}

# ---------------------------------------------------------------- files and configs

write_files() {
    mkdir -p "$WORK/assets" "$WORK/www/boot" "$WORK/nginx" "$WORK/cli"
    chmod 755 "$WORK/assets" "$WORK/www" "$WORK/www/boot"
    head -c $((TFTP_MB * 1024 * 1024)) /dev/urandom >"$WORK/assets/$BIG"
    head -c "$SMALL_BYTES" /dev/urandom >"$WORK/assets/$SMALL"
    chmod 644 "$WORK/assets/"*
    local name manifest=""
    for name in "$BIG" "$SMALL"; do
        ln "$WORK/assets/$name" "$WORK/www/boot/$name" # nginx serves the same bytes at the same URL
        manifest+="[[asset]]
name = \"$name\"
kind = \"test\"
arch = \"x86_64\"
firmware = \"any\"
sha256 = \"$(sha256sum "$WORK/assets/$name" | cut -d' ' -f1)\"
size = $(stat -c %s "$WORK/assets/$name")
source = \"test\"
tftp = \"$name\"
http = \"/boot/$name\"
"
    done
    printf '%s' "$manifest" >"$WORK/manifest.toml"

    cat >"$WORK/provisioner.toml" <<EOF
state_dir = "$WORK/state"
[dhcp]
mode = "off"
[boot]
assets_dir = "$WORK/assets"
manifest = "$WORK/manifest.toml"
[tftp]
listen = "$ADDR_SRV:69"
max_window = 64
max_per_client = 256
requests_per_sec = 10000
[http]
enabled = true
listen = "$ADDR_SRV:$HTTP_PORT"
EOF

    local workers=auto
    [[ $PIN == 1 ]] && workers=1 # the server gets one CPU
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $workers;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
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
        listen $ADDR_SRV:$HTTP_PORT;
        root $WORK/www;
    }
}
EOF
}

# ---------------------------------------------------------------- servers

pin_srv() { if [[ $PIN == 1 ]]; then echo "taskset -c 1"; fi; }
pin_cli() { if [[ $PIN == 1 ]]; then echo "taskset -c 0"; fi; }

# start_server NAME PROTO(udp|tcp) PORT: background start in pvb-srv, sets SERVER_PID.
# `ip netns exec` and `taskset` exec the server, so $! is the server's own PID.
start_server() {
    local name=$1 proto=$2 port=$3 logf=$WORK/$1.log
    case $name in
    provisioner)
        fresh_hub_state "$WORK/state"
        env PVB_CG="$CG" "$WORK/cg-exec" ip netns exec "$NS_SRV" $(pin_srv) "$BIN" --log warn serve -c "$WORK/provisioner.toml" \
            >>"$logf" 2>&1 &
        ;;
    tftpd-hpa)
        # -L: standalone, foreground; -s: chroot to the directory. Forks one child per transfer.
        env PVB_CG="$CG" "$WORK/cg-exec" ip netns exec "$NS_SRV" $(pin_srv) "$TFTPD_HPA" -L -s "$WORK/assets" -a "$ADDR_SRV:69" \
            >>"$logf" 2>&1 &
        ;;
    dnsmasq)
        env PVB_CG="$CG" "$WORK/cg-exec" ip netns exec "$NS_SRV" $(pin_srv) dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
            --enable-tftp --tftp-root="$WORK/assets" --tftp-max=1024 --quiet-tftp \
            --listen-address="$ADDR_SRV" --bind-interfaces \
            --pid-file="$WORK/dnsmasq.pid" --user=root --group=root --log-facility=- \
            >>"$logf" 2>&1 &
        ;;
    atftpd)
        env PVB_CG="$CG" "$WORK/cg-exec" ip netns exec "$NS_SRV" $(pin_srv) "$ATFTPD" --daemon --no-fork --logfile - \
            --verbose=4 --bind-address "$ADDR_SRV" --port 69 -m 1024 \
            --user root --group root --pidfile "$WORK/atftpd.pid" "$WORK/assets" \
            >>"$logf" 2>&1 &
        ;;
    nginx)
        env PVB_CG="$CG" "$WORK/cg-exec" ip netns exec "$NS_SRV" $(pin_srv) nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
            -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >>"$logf" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    local opt=-Hlun
    [[ $proto == tcp ]] && opt=-Hltn
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { SERVER_PID=""; return 1; }
        if ip netns exec "$NS_SRV" ss $opt "sport = :$port" 2>/dev/null | grep -q .; then
            [[ $name == provisioner ]] && wait_hub_settled "$WORK/state"
            sleep 0.3
            return 0
        fi
        sleep 0.1
    done
    stop_server
    return 1
}

# Server CPU time in microseconds: the cgroup's usage, else utime+stime+cutime+cstime
# of the server and its live children from /proc (misses tftpd-hpa's children).
cpu_us() {
    if [[ -n $CG ]]; then awk '$1 == "usage_usec" { print $2 }' "$CG/cpu.stat"; return; fi
    local p t=0 v
    for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
        v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null)
        t=$((t + ${v:-0}))
    done
    echo $((t * 1000000 / CLK_TCK))
}

now() { date +%s.%N; }

check_neigh() { # the server namespace must not have tried to reach anything but the client
    local stray
    stray=$(ip -n "$NS_SRV" neigh show | awk -v c="$ADDR_CLI" '$1 != c { print $1 }' | tr '\n' ' ')
    [[ -n $stray ]] && log "WARNING: server namespace resolved other neighbours: $stray"
    return 0
}

# ---------------------------------------------------------------- TFTP

declare -A R      # R[key] = figure for the table
declare -A NOTE   # per-server notes
declare -A WGOT   # WGOT[server,B,W] = windowsize the server granted

note() { NOTE[$1]="${NOTE[$1]:+${NOTE[$1]}; }$2"; }

# tftp_big NAME B W -> sets R[tftp,NAME,B,W] = "MB/s cpu-seconds" (best of REPEAT)
tftp_big() {
    local name=$1 b=$2 w=$3 i opts t0 t1 c0 c1 rc out mbs cpu retries best="" bestcpu=""
    opts=(--option "blksize $b")
    ((w > 1)) && opts+=(--option "windowsize $w")
    # Probe (and warm-up): the small file with --trace, to see what the OACK granted.
    # (--verbose does not print the OACK; --trace prints every packet, too slow for the
    # timed run.)
    out=$WORK/cli/probe-$name-b$b-w$w.txt
    timeout "$SMALL_TIMEOUT" ip netns exec "$NS_CLI" $(pin_cli) atftp --trace --get -r "$SMALL" \
        -l /dev/null "${opts[@]}" "$ADDR_SRV" >"$out" 2>&1
    WGOT[$name,$b,$w]=$(awk '/received OACK/ { w = 1; if (match($0, /windowsize: [0-9]+/)) w = substr($0, RSTART + 12, RLENGTH - 12) }
                         END { print w ? w : 1 }' "$out")
    for i in $(seq "$REPEAT"); do
        out=$WORK/cli/big-$name-b$b-w$w-$i.txt
        c0=$(cpu_us "$SERVER_PID"); t0=$(now)
        timeout "$BIG_TIMEOUT" ip netns exec "$NS_CLI" $(pin_cli) atftp --get -r "$BIG" \
            -l /dev/null "${opts[@]}" "$ADDR_SRV" >"$out" 2>&1
        rc=$?
        t1=$(now); sleep 0.2; c1=$(cpu_us "$SERVER_PID")
        retries=$(grep -c 'retrying' "$out")
        if ((rc != 0)); then
            log "tftp $name B=$b W=$w run $i: FAILED rc=$rc after $(awk -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", z - a }')s: $(grep -v '^Option' "$out" | tail -n 1)"
            note "$name" "B=$b W=$w: transfer failed (rc=$rc)"
            continue
        fi
        mbs=$(awk -v b=$((TFTP_MB * 1048576)) -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / 1e6 / (z - a) }')
        cpu=$(awk -v d=$((c1 - c0)) 'BEGIN { printf "%.2f", d / 1e6 }')
        log "tftp $name B=$b W=$w (granted ${WGOT[$name,$b,$w]}) run $i: $mbs MB/s, server cpu ${cpu}s, client timeouts $retries"
        ((retries > 0)) && note "$name" "B=$b W=$w: $retries client timeouts (retransmissions)"
        if [[ -z $best ]] || awk -v a="$mbs" -v b="$best" 'BEGIN { exit !(a > b) }'; then
            best=$mbs; bestcpu=$cpu
        fi
    done
    [[ -n $best ]] && R[tftp,$name,$b,$w]="$best $bestcpu"
}

# tftp_conc NAME CONC -> sets R[conc,NAME,CONC] = "MB/s failures total cpu-seconds"
tftp_conc() {
    local name=$1 CONC=$2 round t0 t1 c0 c1 wall=0 ok=0 fail=0 total=0 rc f sz
    c0=$(cpu_us "$SERVER_PID")
    for round in $(seq "$CONC_ROUNDS"); do
        rm -f "$WORK"/cli/s.* "$WORK"/cli/rc.*
        t0=$(now)
        # One shell in pvb-cli starts every client, so the start-up cost is the same per server.
        timeout $((SMALL_TIMEOUT + 30)) ip netns exec "$NS_CLI" $(pin_cli) bash -c '
            for i in $(seq '"$CONC"'); do
                ( timeout '"$SMALL_TIMEOUT"' atftp --get -r '"$SMALL"' -l "'"$WORK"'/cli/s.$i" \
                    --option "blksize '"$BLKSIZE"'" '"$ADDR_SRV"' >"'"$WORK"'/cli/out.$i" 2>&1
                  echo $? >"'"$WORK"'/cli/rc.$i" ) &
            done
            wait'
        t1=$(now)
        wall=$(awk -v w="$wall" -v a="$t0" -v z="$t1" 'BEGIN { print w + z - a }')
        for i in $(seq "$CONC"); do
            total=$((total + 1))
            rc=$(cat "$WORK/cli/rc.$i" 2>/dev/null || echo x)
            sz=$(stat -c %s "$WORK/cli/s.$i" 2>/dev/null || echo 0)
            if [[ $rc == 0 && $sz == "$SMALL_BYTES" ]]; then ok=$((ok + 1)); else
                fail=$((fail + 1))
                [[ $fail -le 3 ]] && log "tftp-conc $name round $round client $i: rc=$rc size=$sz $(grep -iE 'error|timeout' "$WORK/cli/out.$i" 2>/dev/null | head -n 1)"
            fi
        done
    done
    sleep 0.2
    c1=$(cpu_us "$SERVER_PID")
    R[conc,$name,$CONC]=$(awk -v ok="$ok" -v b="$SMALL_BYTES" -v w="$wall" -v f="$fail" -v t="$total" \
        -v d=$((c1 - c0)) -v hz=1000000 'BEGIN { printf "%.1f %d %d %.2f", ok * b / 1e6 / w, f, t, d / hz }')
    log "tftp-conc $name: $CONC clients x $CONC_ROUNDS rounds: ${R[conc,$name,$CONC]} (MB/s failures total cpu-s)"
    rm -f "$WORK"/cli/s.*
}

bench_tftp() {
    local name=$1 b w c
    log "== TFTP $name"
    : >"$WORK/$name.log"
    if ! start_server "$name" udp 69; then
        note "$name" "TFTP: failed to start: $(grep -v '^\s*$' "$WORK/$name.log" | tail -n 2 | tr '\n|' ' /' | cut -c1-160)"
        return
    fi
    for b in $BLKSIZES; do
        for w in $WINDOWS; do
            tftp_big "$name" "$b" "$w"
            kill -0 "$SERVER_PID" 2>/dev/null || { note "$name" "server exited during TFTP"; SERVER_PID=""; return; }
        done
    done
    for c in $CONCS; do tftp_conc "$name" "$c"; done
    kill -0 "$SERVER_PID" 2>/dev/null || note "$name" "server exited during TFTP"
    stop_server
    check_neigh
}

# ---------------------------------------------------------------- HTTP

# wrk_run CONNS URL OUT: bounded by -d plus a margin
wrk_run() {
    local c=$1 url=$2 out=$3 t=2
    ((c < 2)) && t=1
    timeout $((HTTP_SECS + 60)) ip netns exec "$NS_CLI" $(pin_cli) \
        wrk -t"$t" -c"$c" -d"${HTTP_SECS}s" --timeout 30s "$url" >"$out" 2>&1
}

# wrk_parse OUT -> "MB/s req/s errors"
wrk_parse() {
    awk '
        function bytes(s,   n, u) {
            n = s + 0; u = s; sub(/^[0-9.]+/, "", u)
            if (u == "KB") n *= 1024; else if (u == "MB") n *= 1048576
            else if (u == "GB") n *= 1073741824; else if (u == "TB") n *= 1099511627776
            return n
        }
        /^Transfer\/sec:/ { tb = bytes($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Socket errors:/  { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx/         { err += $NF }
        END { printf "%.1f %.0f %d\n", tb / 1e6, rps, err }' "$1"
}

bench_http() {
    local name=$1 c out res c0 c1 cpu
    log "== HTTP $name"
    : >"$WORK/$name-http.log"
    if [[ $name == provisioner ]]; then
        start_server provisioner tcp "$HTTP_PORT" || { note "$name" "HTTP: failed to start"; return; }
    else
        start_server "$name" tcp "$HTTP_PORT" || {
            note "$name" "HTTP: failed to start: $(tail -n 2 "$WORK/$name.log" "$WORK/nginx/error.log" 2>/dev/null | tr '\n|' ' /' | cut -c1-160)"
            return
        }
    fi
    for c in $HTTP_CONNS; do
        out=$WORK/cli/wrk-$name-big-c$c.txt
        c0=$(cpu_us "$SERVER_PID")
        wrk_run "$c" "http://$ADDR_SRV:$HTTP_PORT/boot/$BIG" "$out"
        c1=$(cpu_us "$SERVER_PID")
        res=$(wrk_parse "$out")
        cpu=$(awk -v d=$((c1 - c0)) -v hz=1000000 -v s="$HTTP_SECS" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
        R[http,$name,$c]="$res $cpu"
        log "http $name big c=$c: $res (MB/s req/s errors) cpu $cpu%"
    done
    out=$WORK/cli/wrk-$name-script.txt
    c0=$(cpu_us "$SERVER_PID")
    wrk_run 16 "http://$ADDR_SRV:$HTTP_PORT/boot.ipxe" "$out"
    c1=$(cpu_us "$SERVER_PID")
    res=$(wrk_parse "$out")
    cpu=$(awk -v d=$((c1 - c0)) -v hz=1000000 -v s="$HTTP_SECS" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
    R[rps,$name]="$res $cpu"
    log "http $name /boot.ipxe c=16: $res (MB/s req/s errors) cpu $cpu%"
    kill -0 "$SERVER_PID" 2>/dev/null || note "$name" "server exited during HTTP"
    stop_server
    check_neigh
}

# The hub's /boot.ipxe, saved for nginx to serve as a static file of the same content.
save_script() {
    rm -f "$WORK/www/boot.ipxe"
    if [[ " $HTTP_SERVERS $TFTP_SERVERS " == *" provisioner "* ]] && start_server provisioner tcp "$HTTP_PORT"; then
        timeout 10 ip netns exec "$NS_CLI" curl -sf -o "$WORK/www/boot.ipxe" \
            "http://$ADDR_SRV:$HTTP_PORT/boot.ipxe"
        stop_server
    fi
    if [[ ! -s $WORK/www/boot.ipxe ]]; then
        log "could not fetch /boot.ipxe from the hub; nginx serves a stand-in script"
        printf '#!ipxe\nchain http://%s:%s/ipxe?mac=${net0/mac}&uuid=${uuid}&serial=${serial}&buildarch=${buildarch}&platform=${platform}\n' \
            "$ADDR_SRV" "$HTTP_PORT" >"$WORK/www/boot.ipxe"
    fi
    chmod 644 "$WORK/www/boot.ipxe"
}

# ---------------------------------------------------------------- main

[[ $EUID == 0 ]] || { echo "run as root" >&2; exit 1; }
need ip iproute2
need ss iproute2
need taskset util-linux
need pgrep procps
need curl curl
need wrk wrk
need atftp atftp
need dnsmasq dnsmasq-base
need nginx nginx-light && [[ " $INSTALLED_NOW " == *" nginx-light "* ]] && quiesce nginx /run/nginx.pid
need_tftpd TFTPD_HPA in.tftpd tftpd-hpa atftpd || { log "tftpd-hpa unavailable"; TFTP_SERVERS=${TFTP_SERVERS//tftpd-hpa/}; }
need_tftpd ATFTPD atftpd atftpd tftpd-hpa || { log "atftpd unavailable"; TFTP_SERVERS=${TFTP_SERVERS//atftpd/}; }

if [[ ! -x $BIN ]]; then
    log "waiting for $BIN (up to 15 min)"
    for _ in $(seq 45); do [[ -x $BIN ]] && break; sleep 20; done
fi

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
setup_net
setup_cgroup
write_files
BIN_NOTE=""
if [[ ! -x $BIN ]]; then
    BIN_NOTE="binary $BIN not found"
elif ! "$BIN" check-config -c "$WORK/provisioner.toml" >"$WORK/check-config.txt" 2>&1; then
    BIN_NOTE="check-config failed: $(grep -m1 -iE 'error|unknown' "$WORK/check-config.txt" | cut -c1-160)"
else
    newest=$(find "$REPO/provisioner/src" -name '*.rs' -newer "$BIN" 2>/dev/null | head -n 1)
    [[ -n $newest ]] && BIN_NOTE="binary older than ${newest#"$REPO"/}"
    [[ $BIN == */debug/* ]] && BIN_NOTE="${BIN_NOTE:+$BIN_NOTE; }debug build: its figures are not representative"
fi
[[ -n $BIN_NOTE ]] && log "provisioner: $BIN_NOTE"
if [[ ! -x $BIN ]] || [[ $BIN_NOTE == check-config* ]]; then
    note provisioner "$BIN_NOTE"
    TFTP_SERVERS=${TFTP_SERVERS//provisioner/}; HTTP_SERVERS=${HTTP_SERVERS//provisioner/}
fi
save_script

for s in $TFTP_SERVERS; do bench_tftp "$s"; done
for s in $HTTP_SERVERS; do bench_http "$s"; done

# Our log: every warning/error line is worth a look.
if [[ -s $WORK/provisioner.log ]]; then
    bad=$(grep -iE 'error|panic|warn' "$WORK/provisioner.log")
    [[ -n $bad ]] && note provisioner "log: $(wc -l <<<"$bad") warn/error lines, e.g. $(head -n1 <<<"$bad" | cut -c1-160 | tr '|' '/')"
fi

# ---------------------------------------------------------------- report

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
cell_tftp() { # cell_tftp KEY: "MB/s (cpu s)" or "-"
    local v=${R[$1]:-}
    if [[ -z $v ]]; then echo "-"; return; fi
    read -r mbs cpu <<<"$v"; echo "$mbs (${cpu}s)"
}
first() { local v=${R[$1]:-}; echo "${v%% *}"; }
declare -A CELL RPS

date_tag=$(date +%Y-%m-%d)
mkdir -p "$REPO/bench/results"
result=$REPO/bench/results/boot-$date_tag.md
{
    echo "# Boot file serving: TFTP and HTTP, $(date -Is)"
    echo
    echo "Host: $(nproc) CPUs, $(uname -r); atftp $(atftp -V 2>&1 | head -n1 | grep -o '[0-9][0-9.]*' | head -n1)" \
        "client, $("$TFTPD_HPA" -V 2>&1 | head -n1 | cut -d, -f1), $(dnsmasq --version | head -n1 | awk '{print $1, $3}')," \
        "atftpd $("$ATFTPD" -V 2>&1 | grep -o '[0-9][0-9.]*' | head -n1), $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')."
    echo "provisioner: $BIN ($(date -r "$BIN" '+%F %T' 2>/dev/null))${BIN_NOTE:+: $BIN_NOTE}."
    echo "veth pair between two namespaces, MTU 1500. Load average at start: $LOAD0."
    [[ $PIN == 1 ]] && echo "Server pinned to CPU 1, clients to CPU 0 (BENCH_PIN=0 to disable); nginx runs 1 worker."
    echo
    if [[ -n $CG ]]; then cpu_src="cgroup cpu.stat usage of the server and all its children"
    else cpu_src="utime+stime of the server and its live children from /proc; misses tftpd-hpa's per-transfer children"; fi
    echo "MB/s = 10^6 bytes/s. TFTP cells: MB/s (server CPU seconds for that transfer: $cpu_src;" \
        "network softirq work is charged to whichever process the kernel was running)." \
        "TFTP large: one ${TFTP_MB} MiB file, best of $REPEAT. TFTP Nx: N concurrent atftp clients x $CONC_ROUNDS rounds," \
        "$SMALL_BYTES-byte file, blksize $BLKSIZE; cells: aggregate MB/s, failed/total, (server CPU s for all rounds)." \
        "HTTP: wrk ${HTTP_SECS}s; cells: MB/s or req/s (server CPU % of one core)."
    echo
    echo "Benchmark-only settings: our hub max_per_client = 256, requests_per_sec = 10000 (all clients share 10.202.0.2;" \
        "atftp cannot bind a local address); dnsmasq --tftp-max=1024; atftpd -m 1024; nginx keepalive_requests 1000000, sendfile on."
    echo
    echo "| test | provisioner | tftpd-hpa | dnsmasq | atftpd | nginx | ours vs anchor |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for b in $BLKSIZES; do
        for w in $WINDOWS; do
            row="| TFTP ${TFTP_MB} MiB, blksize $b, W=$w |"
            for s in provisioner tftpd-hpa dnsmasq atftpd; do
                c=$(cell_tftp "tftp,$s,$b,$w")
                [[ $c != - && ${WGOT[$s,$b,$w]:-1} != "$w" ]] && c="$c [W=${WGOT[$s,$b,$w]:-1}]"
                row+=" $c |"
            done
            r="vs atftpd $(ratio "$(first "tftp,provisioner,$b,$w")" "$(first "tftp,atftpd,$b,$w")")"
            r+="; vs tftpd-hpa $(ratio "$(first "tftp,provisioner,$b,$w")" "$(first "tftp,tftpd-hpa,$b,$w")")"
            r+="; vs dnsmasq $(ratio "$(first "tftp,provisioner,$b,$w")" "$(first "tftp,dnsmasq,$b,$w")")"
            echo "$row - | $r |"
        done
    done
    for n in $CONCS; do
        row="| TFTP ${n}x $((SMALL_BYTES / 1000)) KB |"
        for s in provisioner tftpd-hpa dnsmasq atftpd; do
            v=${R[conc,$s,$n]:-}
            if [[ -n $v ]]; then read -r mbs f t cpu <<<"$v"; row+=" $mbs, $f/$t failed (${cpu}s) |"; else row+=" - |"; fi
        done
        r="vs atftpd $(ratio "$(first "conc,provisioner,$n")" "$(first "conc,atftpd,$n")"); vs tftpd-hpa $(ratio "$(first "conc,provisioner,$n")" "$(first "conc,tftpd-hpa,$n")"); vs dnsmasq $(ratio "$(first "conc,provisioner,$n")" "$(first "conc,dnsmasq,$n")")"
        echo "$row - | $r |"
    done
    for c in $HTTP_CONNS; do
        row="| HTTP ${TFTP_MB} MiB, $c conn, MB/s |"
        for s in provisioner nginx; do
            v=${R[http,$s,$c]:-}
            if [[ -n $v ]]; then read -r mbs rps err cpu <<<"$v"; cell="$mbs ($cpu%)"; ((err > 0)) && cell+=" $err err"; else cell="-"; fi
            CELL[$s]=$cell
        done
        echo "$row ${CELL[provisioner]} | - | - | - | ${CELL[nginx]} | vs nginx $(ratio "$(first "http,provisioner,$c")" "$(first "http,nginx,$c")") |"
    done
    for s in provisioner nginx; do
        v=${R[rps,$s]:-}
        if [[ -n $v ]]; then read -r mbs rps err cpu <<<"$v"; cell="$rps ($cpu%)"; ((err > 0)) && cell+=" $err err"; else rps=0; cell="-"; fi
        CELL[$s]=$cell; RPS[$s]=$rps
    done
    echo "| HTTP /boot.ipxe, 16 conn, req/s | ${CELL[provisioner]} | - | - | - | ${CELL[nginx]} | vs nginx $(ratio "${RPS[provisioner]}" "${RPS[nginx]}") |"
    echo
    echo "[W=n]: the windowsize the server granted when it differs from the one asked (no OACK windowsize = 1)."
    for s in provisioner tftpd-hpa dnsmasq atftpd nginx; do
        [[ -n ${NOTE[$s]:-} ]] && echo "- $s: ${NOTE[$s]}"
    done
    echo
    echo "<details><summary>runs</summary>"
    echo
    echo '```'
    grep -E 'tftp|http|==|WARNING|ERROR' "$WORK/steps.log"
    echo '```'
    echo "</details>"
} >"$result"
echo
cat "$result"
echo
log "written to $result"
if [[ -n ${BENCH_SUMMARY:-} ]]; then
    for k in "${!R[@]}"; do
        printf '{"bench":"boot","key":"%s","value":"%s","granted":"%s"}\n' "$k" "${R[$k]}" "${WGOT[${k#tftp,}]:-}"
    done >>"$BENCH_SUMMARY"
fi
