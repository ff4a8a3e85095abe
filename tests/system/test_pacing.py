"""Boot-storm pacing with real sockets: the TFTP wait queue, HTTP stream
backpressure, and DHCP offers paced on the TFTP queue; each visible in /metrics."""

import ctypes
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import BIN, probe, write_assets

TFTP_PORT = 16970
HTTP_PORT = 18082


def rrq(name, **opts):
    body = name.encode() + b"\0octet\0"
    for k, v in opts.items():
        body += f"{k}\0{v}\0".encode()
    return struct.pack("!H", 1) + body


def opcode(data):
    return struct.unpack("!H", data[:2])[0]


def metric(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def silent(sock, secs):
    """True when nothing arrives on `sock` for `secs`."""
    sock.settimeout(secs)
    try:
        sock.recvfrom(2048)
        return False
    except socket.timeout:
        return True


@pytest.fixture
def hub(tmp_path):
    procs = []

    def start(tftp_extra="", http_extra=""):
        big = os.urandom(64 * 1024 * 1024)
        boot = write_assets(tmp_path, {"big.bin": big, "small.bin": b"x" * 3000})
        (tmp_path / "hub.toml").write_text(
            f'state_dir = "{tmp_path}/state"\n{boot}'
            f'[http]\nlisten = "127.0.0.1:{HTTP_PORT}"\n{http_extra}[enroll]\nenabled = false\n{tftp_extra}'
        )
        log = tmp_path / "hub.log"
        p = subprocess.Popen([BIN, "--log", "info", "serve", "-c", str(tmp_path / "hub.toml")],
                             stdout=open(log, "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.time() + 30
        while "HTTP listening" not in log.read_text():
            assert p.poll() is None, log.read_text()
            assert time.time() < deadline, log.read_text()
            time.sleep(0.1)
        return {"big": big, "log": log, "proc": p}

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def metrics(port=HTTP_PORT, host="127.0.0.1"):
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_tftp_requests_past_the_slots_wait_their_turn_then_expire(hub):
    # Transfers that are never ACKed last timeout_ms x retries (4 s) before they fail.
    h = hub(tftp_extra=f'[tftp]\nlisten = "127.0.0.1:{TFTP_PORT}"\nmax_transfers = 4\nmax_queue = 8\n'
            f'max_wait_secs = 2\ntimeout_ms = 1000\nretries = 3\n')
    server = ("127.0.0.1", TFTP_PORT)

    def client(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.1.{i}", 0))  # one machine each: per-client limits stay out of the way
        return s

    running = [client(i) for i in range(1, 5)]
    waiting = [client(i) for i in range(5, 13)]
    for s in running + waiting:
        s.sendto(rrq("big.bin", blksize=1468), server)
    for s in running:
        s.settimeout(3)
        assert opcode(s.recvfrom(2048)[0]) == 6, "the first four start at once (OACK)"
    for s in waiting:  # PXE ROMs retransmit their RRQ: no second transfer for it
        s.sendto(rrq("big.bin", blksize=1468), server)
    assert silent(waiting[0], 0.5), "past max_transfers, a request waits instead of an ERROR"
    late = client(13)
    late.sendto(rrq("big.bin", blksize=1468), server)
    late.settimeout(3)
    err = late.recvfrom(2048)[0]
    assert opcode(err) == 5 and b"busy" in err, "past max_queue: ERROR busy"
    m = metrics()
    assert metric(m, "provisioner_tftp_transfers_running") == 4
    assert metric(m, "provisioner_tftp_queue_depth") == 8
    assert metric(m, "provisioner_tftp_duplicate_requests_total") == 8
    assert metric(m, 'provisioner_tftp_queue_total{outcome="queued"}') == 8

    # A client ends its transfer: the first in the queue gets the slot, and only it.
    running[0].settimeout(2)
    _, tid = running[0].recvfrom(2048)
    running[0].sendto(struct.pack("!HH", 5, 0) + b"done\0", tid)
    waiting[0].settimeout(2)
    assert opcode(waiting[0].recvfrom(2048)[0]) == 6, "first come, first served"
    assert all(silent(s, 0.05) for s in waiting[1:2])

    # The rest fall silent for longer than max_wait (2 s) before any slot frees (4 s):
    # they are dropped, never started (a live client would have retransmitted).
    time.sleep(6)
    assert all(silent(s, 0.05) for s in waiting[1:]), "an expired request never starts"
    m = metrics()
    assert metric(m, 'provisioner_tftp_queue_total{outcome="expired"}') == 7
    assert metric(m, "provisioner_tftp_queue_depth") == 0
    assert metric(m, "provisioner_tftp_queue_wait_seconds_count") == 1
    # And the server still serves.
    again = client(20)
    again.sendto(rrq("small.bin"), server)
    again.settimeout(3)
    assert opcode(again.recvfrom(2048)[0]) == 3
    assert h["proc"].poll() is None


def test_http_downloads_past_max_streams_wait_and_complete(hub):
    h = hub(http_extra="max_streams = 1\n", tftp_extra="[tftp]\nenabled = false\n")
    get = b"GET /boot/big.bin HTTP/1.1\r\nHost: hub\r\n\r\n"
    first = socket.create_connection(("127.0.0.1", HTTP_PORT))
    first.sendall(get)
    head = recv_until(first, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    # The first client reads no further: 64 MiB do not fit in the socket buffers, so
    # its body holds the only stream slot. The second GET waits: no answer, no error.
    second = socket.create_connection(("127.0.0.1", HTTP_PORT))
    second.sendall(get)
    second.settimeout(1.0)
    with pytest.raises(socket.timeout):
        second.recv(1)
    m = metrics()
    assert metric(m, "provisioner_http_streams_active") == 1
    assert metric(m, "provisioner_http_streams_waiting") == 1
    # HEAD sends no body and does not wait.
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}/boot/big.bin", method="HEAD")
    with urllib.request.urlopen(req, timeout=2) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(h["big"])
    # The first download completes, then the second gets all of its bytes.
    body = head.split(b"\r\n\r\n", 1)[1]
    first.settimeout(30)
    while len(body) < len(h["big"]):
        chunk = first.recv(1 << 20)
        assert chunk, "first download cut short"
        body += chunk
    assert body == h["big"]
    second.settimeout(30)
    head2 = recv_until(second, b"\r\n\r\n")
    assert head2.startswith(b"HTTP/1.1 200"), head2[:100]
    body2 = head2.split(b"\r\n\r\n", 1)[1]
    while len(body2) < len(h["big"]):
        chunk = second.recv(1 << 20)
        assert chunk, "second download cut short"
        body2 += chunk
    assert body2 == h["big"]
    m = metrics()
    assert metric(m, "provisioner_http_stream_wait_seconds_count") == 1
    assert metric(m, "provisioner_http_streams_waiting") == 0
    assert metric(m, "provisioner_http_stream_wait_seconds_sum") >= 1.0


def recv_until(sock, marker, limit=65536):
    got = b""
    while marker not in got and len(got) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def udp_in_netns(ns, n, addr):
    """`n` UDP sockets created inside namespace `ns` (a socket keeps the namespace it
    was made in; setns changes only the calling thread, here a throwaway one)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    made = []

    def work():
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((addr, 0))
            made.append(s)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(made) == n
    return made


PXE_BIOS = [[60, b"PXEClient:Arch:00000:UNDI:002001".hex()], [93, "0000"]]


def test_pxe_discovers_are_paced_while_the_tftp_queue_is_deep(lab, make_hub):
    hub_addr = "10.77.0.1"
    hub_ns = lab.host("hub", f"{hub_addr}/24")
    cli = lab.host("cli", "10.77.0.60/24")
    make_hub(hub_ns, f"""
[dhcp]
mode = "full"
interfaces = ["eth0"]
[[dhcp.subnet]]
network = "10.77.0.0/24"
pools = [{{ start = "10.77.0.100", end = "10.77.0.150" }}]
[tftp]
max_transfers = 1
max_per_client = 16
max_wait_secs = 60
timeout_ms = 1000
retries = 30
""").start()
    mac = lab.mac("cli")

    def offers(opts, xid):
        seen = probe(lab, cli, {"mac": mac, "rounds": [{"type": 1, "xid": xid, "opts": opts}]})
        return [r for r in seen if r["xid"] == xid and r["opts"].get("53") == "02"]

    assert offers(PXE_BIOS, 1), "an idle hub answers PXE at once"
    # One transfer runs (never ACKed, it lasts) and two wait: the queue is deeper
    # than the one transfer slot, so new PXE machines are held back at DHCP.
    socks = udp_in_netns(cli, 3, "10.77.0.60")
    for s in socks:
        s.sendto(rrq("undionly.kpxe"), (hub_addr, 69))
    socks[0].settimeout(3)
    _, tid = socks[0].recvfrom(2048)
    time.sleep(0.3)
    assert not offers(PXE_BIOS, 2), "PXE DISCOVER paced while the TFTP queue is full"
    assert offers([], 3), "a plain client (an OS) is never paced"
    m = lab.ns(hub_ns, "curl", "-sf", f"http://{hub_addr}:8080/metrics").stdout
    assert metric(m, 'provisioner_dhcp_dropped_total{reason="paced"}') >= 1
    assert metric(m, "provisioner_tftp_queue_depth") == 2
    # The running transfer ends: one waits, which one slot absorbs; PXE is answered again.
    socks[0].sendto(struct.pack("!HH", 5, 0) + b"done\0", tid)
    socks[1].settimeout(3)
    socks[1].recvfrom(2048)
    assert offers(PXE_BIOS, 4), "answered once the queue is back under the slots"
