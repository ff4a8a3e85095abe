"""A crafted DHCP client for the lab: builds BOOTP/DHCP bytes itself, sends and
sniffs them at layer 2 with scapy, and prints the replies it saw as JSON.

Usage (inside a namespace): probe.py '<json spec>'. The spec:
  {"iface": "eth0", "mac": "02:..", "rounds": [ {packet}, ... ], "wait": 1.5,
   "src": "0.0.0.0", "dst": "255.255.255.255", "sport": 68, "dport": 67, "reply_port": 68}
where a packet is {"type": 1, "xid": 1, "opts": [[code, "hex"], ...], "giaddr": "..",
"ciaddr": "..", "flags": 32768, "hlen": 6, "raw": "hex (sent as is)"}.
"""

import json
import random
import struct
import sys

from scapy.all import AsyncSniffer, Ether, IP, UDP, Raw, conf, sendp  # noqa: E402

conf.verb = 0
MAGIC = bytes([99, 130, 83, 99])


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def ip_bytes(ip):
    return bytes(int(x) for x in ip.split("."))


def build(p, mac):
    hlen = p.get("hlen", 6)
    chaddr = mac_bytes(mac).ljust(16, b"\0")
    hdr = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, hlen, 0, p.get("xid", random.getrandbits(32)), 0, p.get("flags", 0),
        ip_bytes(p.get("ciaddr", "0.0.0.0")), b"\0" * 4, b"\0" * 4, ip_bytes(p.get("giaddr", "0.0.0.0")),
        chaddr, b"\0" * 64, b"\0" * 128,
    )
    opts = bytes([53, 1, p["type"]])
    for code, hexdata in p.get("opts", []):
        data = bytes.fromhex(hexdata)
        opts += bytes([code, len(data)]) + data
    return hdr + MAGIC + opts + b"\xff"


def parse(b):
    if len(b) < 240:
        return None
    op, htype, hlen, hops, xid, secs, flags = struct.unpack("!BBBBIHH", b[:12])
    ip = lambda o: ".".join(str(x) for x in b[o:o + 4])  # noqa: E731
    out = {
        "op": op, "xid": xid, "flags": flags, "ciaddr": ip(12), "yiaddr": ip(16), "siaddr": ip(20),
        "giaddr": ip(24), "chaddr": ":".join(f"{x:02x}" for x in b[28:28 + hlen]),
        "file": b[108:236].split(b"\0")[0].decode("latin-1"), "opts": {}, "len": len(b),
    }
    i = 240
    while i < len(b):
        code = b[i]
        if code == 0:
            i += 1
            continue
        if code == 255 or i + 1 >= len(b):
            break
        n = b[i + 1]
        out["opts"][str(code)] = b[i + 2:i + 2 + n].hex()
        i += 2 + n
    return out


def main():
    spec = json.loads(sys.argv[1])
    iface = spec.get("iface", "eth0")
    mac = spec["mac"]
    reply_port = spec.get("reply_port", 68)
    # Filter in Python: scapy compiles BPF filters with tcpdump, which we do not require.
    def wanted(pkt):
        return UDP in pkt and pkt[UDP].dport == reply_port and pkt[UDP].sport in (67, 4011)

    sniffer = AsyncSniffer(iface=iface, lfilter=wanted, store=True)
    sniffer.start()
    import time

    time.sleep(0.5)
    seen = []
    for r in spec["rounds"]:
        payload = bytes.fromhex(r["raw"]) if "raw" in r else build(r, mac)
        frame = (
            Ether(src=mac, dst=spec.get("dst_mac", "ff:ff:ff:ff:ff:ff"))
            / IP(src=spec.get("src", "0.0.0.0"), dst=spec.get("dst", "255.255.255.255"))
            / UDP(sport=spec.get("sport", 68), dport=spec.get("dport", 67))
            / Raw(payload)
        )
        sendp(frame, iface=iface)
        time.sleep(r.get("wait", spec.get("wait", 1.0)))
    sniffer.stop()
    for pkt in sniffer.results or []:
        if UDP not in pkt:
            continue
        # scapy dissects ports 67/68 as BOOTP; take the UDP payload bytes as they were.
        d = parse(bytes(pkt[UDP].payload))
        if d is None or d["op"] != 2:
            continue
        d["ip_src"], d["ip_dst"] = pkt[IP].src, pkt[IP].dst
        d["sport"], d["dport"] = pkt[UDP].sport, pkt[UDP].dport
        seen.append(d)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
