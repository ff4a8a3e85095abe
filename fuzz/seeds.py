#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/seed-*.

Deterministic: the same files every run (CSRs are made once with openssl and then
kept; rerunning leaves existing CSR seeds alone). The formats are the ones
provisioner/src/fuzz.rs documents for each target. Run from anywhere:
    python3 fuzz/seeds.py
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)
MAGIC = bytes([99, 130, 83, 99])


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- DHCP

def ip(s):
    return bytes(int(x) for x in s.split("."))


def dhcp_packet(kind, mac, xid, opts=(), ciaddr="0.0.0.0", giaddr="0.0.0.0", flags=0, hlen=6):
    chaddr = bytes(int(x, 16) for x in mac.split(":")).ljust(16, b"\0")
    hdr = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, hlen, 0, xid, 0, flags, ip(ciaddr), b"\0" * 4, b"\0" * 4, ip(giaddr),
        chaddr, b"\0" * 64, b"\0" * 128,
    )
    body = bytes([53, 1, kind])
    for code, data in opts:
        body += bytes([code, len(data)]) + data
    return hdr + MAGIC + body + b"\xff"


def record(control, datagram):
    return bytes([control]) + struct.pack("!H", len(datagram)) + datagram


PXE_BIOS = [(60, b"PXEClient:Arch:00000:UNDI:002001"), (93, b"\x00\x00"), (94, b"\x01\x02\x01"),
            (97, b"\x00" + bytes(range(16)))]
PXE_UEFI = [(60, b"PXEClient:Arch:00007:UNDI:003016"), (93, b"\x00\x07"), (94, b"\x01\x03\x10"),
            (97, b"\x00" + bytes(range(16))), (57, b"\x05\xc0")]
HTTP_UEFI = [(60, b"HTTPClient:Arch:00016:UNDI:003001"), (93, b"\x00\x10")]
IPXE = [(77, b"iPXE"), (175, b"\x13\x01\x01\xeb\x03\x01\x00\x00"), (60, b"PXEClient:Arch:00007:UNDI:003010"),
        (93, b"\x00\x07"), (61, b"\x01\x02\x00\x00\x00\x00\x07")]
IPXE_RFC3004 = [(77, b"\x04iPXE"), (93, b"\x00\x00")]
AGENT = [(12, b"node-7"), (61, b"\x01\x02\x00\x00\x00\x00\x08"), (55, bytes([1, 3, 6, 15, 28, 42, 51]))]


def dhcp_seeds():
    m1, m2, res = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:aa"
    # control: low nibble picks mode/key on the first record (0..5), the high nibble moves time.
    seqs = {
        "dora-bios": [record(0, dhcp_packet(1, m1, 1, PXE_BIOS)),
                      record(2, dhcp_packet(3, m1, 1, PXE_BIOS + [(50, ip("10.0.0.100")), (54, ip("10.0.0.1"))]))],
        "dora-uefi-broadcast": [record(2, dhcp_packet(1, m2, 2, PXE_UEFI, flags=0x8000)),
                                record(2, dhcp_packet(3, m2, 2, PXE_UEFI + [(50, ip("10.0.0.100")), (54, ip("10.0.0.1"))], flags=0x8000))],
        "http-boot": [record(0, dhcp_packet(1, m1, 3, HTTP_UEFI))],
        "ipxe": [record(1, dhcp_packet(1, m1, 4, IPXE)),
                 record(1, dhcp_packet(3, m1, 4, IPXE + [(50, ip("10.0.0.100")), (54, ip("10.0.0.1"))]))],
        "ipxe-rfc3004": [record(0, dhcp_packet(1, m2, 5, IPXE_RFC3004))],
        "proxy": [record(2, dhcp_packet(1, m1, 6, PXE_BIOS)), record(3, dhcp_packet(3, m1, 6, PXE_BIOS, ciaddr="10.0.0.77"))],
        "auto-fallback": [record(4, dhcp_packet(1, m1, 7, PXE_UEFI))] * 4,
        "renew-release": [record(0, dhcp_packet(1, m1, 8, AGENT)),
                          record(0, dhcp_packet(3, m1, 8, AGENT + [(50, ip("10.0.0.100")), (54, ip("10.0.0.1"))])),
                          record(0x30, dhcp_packet(3, m1, 9, AGENT, ciaddr="10.0.0.100")),
                          record(0x32, dhcp_packet(3, m1, 10, AGENT, ciaddr="10.0.0.100")),
                          record(0x10, dhcp_packet(7, m1, 11, AGENT + [(54, ip("10.0.0.1"))], ciaddr="10.0.0.100"))],
        "decline": [record(0, dhcp_packet(1, m2, 12, [])),
                    record(0, dhcp_packet(3, m2, 12, [(50, ip("10.0.0.100")), (54, ip("10.0.0.1"))])),
                    record(0, dhcp_packet(4, m2, 13, [(50, ip("10.0.0.100")), (54, ip("10.0.0.1"))]))],
        "init-reboot": [record(2, dhcp_packet(3, m1, 14, [(50, ip("10.0.0.101"))])),
                        record(2, dhcp_packet(3, m1, 15, [(50, ip("10.9.0.11"))]))],
        "inform": [record(0, dhcp_packet(8, m1, 16, [], ciaddr="10.0.0.9"))],
        "reservation": [record(0, dhcp_packet(1, res, 17, [(12, b"wanted-name")])),
                        record(0, dhcp_packet(3, res, 17, [(50, ip("10.0.0.50")), (54, ip("10.0.0.1"))]))],
        "relay-opt82": [record(4, dhcp_packet(1, m1, 18, [(82, b"\x01\x04port\x02\x06switch")], giaddr="10.9.0.1"))],
        "pool-exhaustion": [record(0, dhcp_packet(1, "02:00:00:00:01:%02x" % i, 100 + i, [])) for i in range(5)],
        "other-server-id": [record(0, dhcp_packet(1, m1, 19, [])),
                            record(2, dhcp_packet(3, m1, 19, [(50, ip("10.0.0.100")), (54, ip("10.0.0.254"))]))],
        "long-client-id": [record(0, dhcp_packet(1, m1, 20, [(61, b"\x00" + b"x" * 254)]))],
        "overload": [record(0, dhcp_packet(1, m1, 21, [(52, b"\x03")]))],
    }
    for name, recs in seqs.items():
        write("dhcp", name, b"".join(recs))


# ---------------------------------------------------------------- TFTP

def rrq(name, mode="octet", opts=()):
    b = struct.pack("!H", 1) + name.encode() + b"\0" + mode.encode() + b"\0"
    for k, v in opts:
        b += k.encode() + b"\0" + v.encode() + b"\0"
    return b


def tftp_input(request, size, events):
    ev = b"".join(bytes([k]) + struct.pack("!H", a) for k, a in events)
    return struct.pack("!H", len(request)) + request + struct.pack("!I", size) + ev


def tftp_seeds():
    acks = lambda n: [(0, i) for i in range(n)]  # noqa: E731
    write("tftp", "plain", tftp_input(rrq("undionly.kpxe"), 1500, acks(4)))
    write("tftp", "options", tftp_input(
        rrq("ipxe.efi", "OCTET", [("blksize", "1468"), ("tsize", "0"), ("windowsize", "4"), ("timeout", "2")]),
        850528, acks(20)))
    write("tftp", "exact-multiple", tftp_input(rrq("x", opts=[("blksize", "512")]), 1024, acks(4)))
    write("tftp", "duplicate-acks", tftp_input(rrq("x", opts=[("windowsize", "8")]), 100000,
                                                [(0, 0), (0, 8), (0, 8), (0, 8), (2, 20), (0, 16)]))
    write("tftp", "timeouts", tftp_input(rrq("x", opts=[("blksize", "1468")]), 5000,
                                          [(0, 0), (2, 15), (2, 15), (2, 15), (2, 15), (2, 15)]))
    write("tftp", "client-error", tftp_input(rrq("x", opts=[("tsize", "0")]), 5000, [(1, 8)]))
    write("tftp", "netascii-unknown-opt", tftp_input(rrq("pxelinux.0", "netascii", [("rollover", "0"), ("multicast", "")]), 10, acks(2)))
    write("tftp", "huge-options", tftp_input(rrq("x", opts=[("blksize", "99999"), ("windowsize", "70000"), ("timeout", "0")]), 10, acks(2)))
    write("tftp", "rollover", tftp_input(rrq("x", opts=[("blksize", "8")]), 8 * 70000, [(0, i & 0xffff) for i in range(0, 70001, 997)]))
    write("tftp", "traversal", tftp_input(rrq("../../etc/passwd"), 10, acks(2)))
    write("tftp", "wrq", tftp_input(struct.pack("!H", 2) + b"x\0octet\0", 10, []))


# ---------------------------------------------------------------- CSR

def csr_seeds():
    d = os.path.join(ROOT, "corpus", "csr")
    if os.path.isdir(d) and any(n.startswith("seed-") for n in os.listdir(d)):
        return  # made once; openssl output is not deterministic
    with tempfile.TemporaryDirectory() as tmp:
        algs = {
            "p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "ed25519": ["-newkey", "ed25519"],
            "rsa2048": ["-newkey", "rsa:2048"],
        }
        for name, args in algs.items():
            out = os.path.join(tmp, name)
            subprocess.run(["openssl", "req", "-new", "-nodes", "-keyout", out + ".key", "-subj",
                            "/CN=evil/O=system:masters", "-addext", "subjectAltName=DNS:hub,URI:node:nffffffffffff",
                            "-addext", "basicConstraints=critical,CA:TRUE", "-outform", "DER", "-out", out + ".der"] + args,
                           check=True, capture_output=True)
            with open(out + ".der", "rb") as f:
                der = f.read()
            write("csr", name + ".der", der)
            if name == "p256":
                subprocess.run(["openssl", "req", "-in", out + ".der", "-inform", "DER", "-out", out + ".pem"],
                               check=True, capture_output=True)
                with open(out + ".pem", "rb") as f:
                    write("csr", "p256.pem", f.read())
                tampered = bytearray(der)
                tampered[40] ^= 1
                write("csr", "p256-tampered.der", bytes(tampered))


# ---------------------------------------------------------------- config, profiles

def config_seeds():
    with open(os.path.join(REPO, "provisioner.example.toml"), "rb") as f:
        write("config", "example.toml", f.read())
    write("config", "minimal.toml", b'state_dir = "/var/lib/provisioner"\n')
    write("config", "proxy.toml", b'state_dir = "/s"\n[dhcp]\nmode = "proxy"\ninterfaces = ["eth0"]\n')
    write("config", "full.toml", b'''state_dir = "/s"
[dhcp]
mode = "full"
interfaces = ["eth0"]
[[dhcp.subnet]]
network = "10.0.0.0/24"
pools = [{ start = "10.0.0.100", end = "10.0.0.200" }]
lease_time = 600
renew_time = 300
rebind_time = 500
[[dhcp.subnet.reservation]]
mac = "02:00:00:00:00:aa"
address = "10.0.0.50"
''')


def profile_seeds():
    inv = {"system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)"},
           "firmware": {"mode": "uefi"},
           "disks": [{"name": "vda", "size_bytes": 1 << 30, "serial": "disk0", "transport": "virtio",
                      "rotational": False, "removable": False},
                     {"name": "sda", "size_bytes": 480 << 30, "model": "SSD", "serial": "S1", "wwid": "naa.5000",
                      "transport": "sata", "rotational": False, "removable": False}]}
    js = json.dumps(inv).encode()
    d = os.path.join(REPO, "hw-profiles")
    for name in sorted(os.listdir(d)):
        if name.endswith(".toml"):
            with open(os.path.join(d, name), "rb") as f:
                write("profile", name, f.read() + b"\0" + js)


# ---------------------------------------------------------------- iPXE query, tokens

def ipxe_query_seeds():
    qs = [
        "mac=52:54:00:12:34:56&uuid=8c1e4f0a-2b3c-4d5e-8f90-123456789abc&serial=ABC123&buildarch=x86_64&platform=efi\n10.0.0.1:8080\nbytes=0-99",
        "mac=52%3a54%3a00%3a12%3a34%3a56&platform=pcbios&buildarch=i386\n10.0.0.1\nbytes=-500",
        "mac=&uuid=&serial=\n[fe80::1]:8080\nbytes=100-",
        "mac=52-54-00-12-34-56&serial=A%20B%0aboot\nhub.lab:80\nbytes=0-0,5-9",
        "mac=52:54:00:12:34:56&mac=52:54:00:12:34:57\n10.0.0.1:8080\n",
        "serial=%ff%fe&x=1&&&=\nevil\nhost\nbytes=99999999999999999999-",
    ]
    for i, q in enumerate(qs):
        write("ipxe_query", str(i), q.encode())


def token_seeds():
    for i, t in enumerate(["abcdef.0123456789abcdef", "abc123.zzzzzzzzzzzzzzzz", "ABCDEF.0123456789ABCDEF",
                           "abcdef.0123456789abcde", "abcdef0123456789abcdef", ".", "abcdef.0123456789abcdef.x",
                           "abcdé.0123456789abcdef"]):
        write("token", str(i), t.encode())


def main():
    dhcp_seeds()
    tftp_seeds()
    csr_seeds()
    config_seeds()
    profile_seeds()
    ipxe_query_seeds()
    token_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
