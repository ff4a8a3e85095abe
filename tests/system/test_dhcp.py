"""DHCP over real links with real clients: udhcpc, dhclient, dnsmasq, perfdhcp,
and crafted packets (probe.py) for PXE, relay and hostile input."""

import random
import signal
import time

from conftest import probe, sh

HUB_ADDR = "10.77.0.1"

FULL = """
[dhcp]
mode = "{mode}"
interfaces = ["eth0"]
lease_key = "{key}"
[[dhcp.subnet]]
network = "10.77.0.0/24"
pools = [{{ start = "10.77.0.{lo}", end = "10.77.0.{hi}" }}]
lease_time = {lease}
routers = ["10.77.0.1"]
dns = ["10.77.0.1"]
[[dhcp.subnet]]
network = "10.88.0.0/24"
pools = [{{ start = "10.88.0.100", end = "10.88.0.150" }}]
"""


def config(mode="full", key="client-id", lo=100, hi=150, lease=600):
    return FULL.format(mode=mode, key=key, lo=lo, hi=hi, lease=lease)


UDHCPC_SCRIPT = """#!/bin/sh
echo "$1 ip=$ip mask=$mask serverid=$serverid lease=$lease router=$router" >> {log}
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
esac
"""


def wait_for(pred, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def udhcpc(lab, ns, tmp, name="udhcpc"):
    log = tmp / f"{name}.events"
    log.write_text("")
    script = tmp / f"{name}.sh"
    script.write_text(UDHCPC_SCRIPT.format(log=log))
    script.chmod(0o755)
    p = lab.spawn(ns, ["busybox", "udhcpc", "-f", "-i", "eth0", "-t", "10", "-T", "1", "-s", str(script)], tmp / f"{name}.out")
    return p, log


def events(log):
    return [line.split() for line in log.read_text().splitlines() if line.strip()]


def test_udhcpc_gets_renews_and_keeps_lease_across_restart(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    cli = lab.host("cli")
    hub = make_hub(hub_ns, config(lease=120)).start()
    p, log = udhcpc(lab, cli, tmp_path)
    bound = wait_for(lambda: [e for e in events(log) if e[0] == "bound"], what="udhcpc bound")[0]
    ip = bound[1].split("=")[1]
    assert ip.startswith("10.77.0.") and 100 <= int(ip.split(".")[3]) <= 150
    assert f"serverid={HUB_ADDR}" in bound and "lease=120" in bound and f"router={HUB_ADDR}" in bound
    leases = hub.leases()
    assert [(x["address"], x["state"], x["mac"]) for x in leases] == [(ip, "bound", lab.mac("cli"))]

    # Renew (SIGUSR1 makes udhcpc unicast a RENEWING request to the server).
    p.send_signal(signal.SIGUSR1)
    wait_for(lambda: [e for e in events(log) if e[0] == "renew"], what="udhcpc renew")
    assert all(e[1] == f"ip={ip}" for e in events(log) if e[0] in ("bound", "renew"))

    # kill -9 the hub, start it again: the lease is still there, and a renew is ACKed.
    hub.kill(signal.SIGKILL)
    assert [x["address"] for x in hub.leases()] == [ip], "leases list reads a store left by a crash"
    hub.start()
    assert [x["address"] for x in hub.leases()] == [ip]
    before = len(events(log))
    p.send_signal(signal.SIGUSR1)
    wait_for(lambda: len(events(log)) > before, what="renew after restart")
    last = events(log)[-1]
    assert last[0] == "renew" and last[1] == f"ip={ip}", f"renew after restart: {last}"
    assert "leases loaded leases=1" in hub.log.read_text()


def test_dhclient_gets_lease_and_init_reboot_is_acked(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    cli = lab.host("cli")
    make_hub(hub_ns, config()).start()
    lf, conf, ev = tmp_path / "dhclient.leases", tmp_path / "dhclient.conf", tmp_path / "dhclient.events"
    conf.write_text("timeout 20;\nretry 1;\n")
    script = tmp_path / "dhclient-script"
    script.write_text(f'#!/bin/sh\necho "$reason $new_ip_address" >> {ev}\nexit 0\n')
    script.chmod(0o755)

    def run_once():
        # In the foreground (-d): a daemonizing dhclient exits before its child writes the pid file,
        # which raced with reading it. We stop it once the script has seen the lease.
        before = len(ev.read_text().splitlines()) if ev.exists() else 0
        p = lab.spawn(cli, ["dhclient", "-4", "-d", "-1", "-v", "-cf", str(conf), "-lf", str(lf),
                            "-pf", str(tmp_path / "pid"), "-sf", str(script), "eth0"], tmp_path / "dhclient.log")
        bound = lambda: ev.exists() and any(
            line.split()[0] in ("BOUND", "REBOOT") for line in ev.read_text().splitlines()[before:] if line.split())
        wait_for(lambda: bound() or p.poll() is not None, timeout=40, what="dhclient lease")
        p.kill()
        p.wait(timeout=10)

    run_once()
    first = [line.split() for line in ev.read_text().splitlines()]
    bound = [e for e in first if e[0] == "BOUND"]
    assert bound, f"dhclient did not bind: {first}"
    ip = bound[0][1]
    assert ip.startswith("10.77.0.")
    # Second run starts from the lease file: INIT-REBOOT (REQUEST with option 50, no server id).
    run_once()
    again = [line.split() for line in ev.read_text().splitlines()][len(first):]
    assert ["REBOOT", ip] in again, f"expected an INIT-REBOOT ACK for {ip}, got {again}"


PXE_BIOS = [[60, b"PXEClient:Arch:00000:UNDI:002001".hex()], [93, "0000"], [97, "00" + "11" * 16]]
PXE_UEFI = [[60, b"PXEClient:Arch:00007:UNDI:003016".hex()], [93, "0007"], [97, "00" + "22" * 16]]
PXE_ARM = [[60, b"PXEClient:Arch:00011:UNDI:003000".hex()], [93, "000b"]]


def dnsmasq(lab, ns, tmp):
    return lab.spawn(ns, ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=eth0",
                          "--bind-interfaces", "--no-ping", "--dhcp-range=10.77.0.10,10.77.0.50,255.255.255.0,10m",
                          f"--dhcp-leasefile={tmp}/dnsmasq.leases", "--log-dhcp", "--log-facility=-"],
                     tmp / "dnsmasq.log")


def test_proxy_mode_beside_dnsmasq_gives_boot_file_without_address(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    dns_ns = lab.host("dns", "10.77.0.2/24")
    cli = lab.host("cli")
    dnsmasq(lab, dns_ns, tmp_path)
    make_hub(hub_ns, '[dhcp]\nmode = "proxy"\ninterfaces = ["eth0"]\n').start()
    mac = lab.mac("cli")
    for name, opts, want in [("bios", PXE_BIOS, "undionly.kpxe"), ("uefi", PXE_UEFI, "ipxe.efi"),
                             ("arm64", PXE_ARM, "ipxe-arm64.efi")]:
        xid = random.getrandbits(31)
        seen = probe(lab, cli, {"mac": mac, "wait": 2.0, "rounds": [{"type": 1, "xid": xid, "opts": opts}]})
        ours = [r for r in seen if r["ip_src"] == HUB_ADDR and r["xid"] == xid]
        theirs = [r for r in seen if r["ip_src"] == "10.77.0.2" and r["xid"] == xid]
        assert theirs and theirs[0]["yiaddr"].startswith("10.77.0."), f"{name}: dnsmasq hands out the address: {seen}"
        assert len(ours) == 1, f"{name}: one proxy offer from the hub: {seen}"
        o = ours[0]
        assert o["yiaddr"] == "0.0.0.0", f"{name}: proxy offer must not assign"
        assert o["file"] == want and o["siaddr"] == HUB_ADDR, name
        assert bytes.fromhex(o["opts"]["60"]) == b"PXEClient", name
        assert o["opts"]["53"] == "02" and o["opts"]["54"] == "0a4d0001", name
        assert o["opts"]["43"] == "060108ff", name
        assert "51" not in o["opts"], f"{name}: no lease time in a proxy offer"
        if name != "arm64":
            assert o["opts"]["97"] == dict(opts)[97], f"{name}: option 97 mirrored"
    # A plain (non-PXE) client gets nothing from a proxy.
    seen = probe(lab, cli, {"mac": mac, "rounds": [{"type": 1, "xid": 4242}]})
    assert not [r for r in seen if r["ip_src"] == HUB_ADDR], seen
    # Port 4011: a PXE client with an address asks the boot server; ACK comes back to it.
    lab.ns(cli, "ip", "addr", "add", "10.77.0.60/24", "dev", "eth0")
    seen = probe(lab, cli, {"mac": mac, "src": "10.77.0.60", "dst": HUB_ADDR, "dst_mac": lab.mac("hub"),
                            "dport": 4011, "rounds": [{"type": 3, "xid": 99, "ciaddr": "10.77.0.60", "opts": PXE_UEFI}]})
    acks = [r for r in seen if r["sport"] == 4011 and r["xid"] == 99]
    assert acks and acks[0]["opts"]["53"] == "05" and acks[0]["file"] == "ipxe.efi" and acks[0]["ip_dst"] == "10.77.0.60", seen


def test_auto_mode_falls_back_to_full_reply_for_client_ignoring_proxy(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    dns_ns = lab.host("dns", "10.77.0.2/24")
    cli = lab.host("cli")
    dnsmasq(lab, dns_ns, tmp_path)
    hub = make_hub(hub_ns, config(mode="auto", lo=200, hi=220)).start()
    mac = lab.mac("cli")
    rounds = [{"type": 1, "xid": 1000 + i, "opts": PXE_UEFI, "wait": 1.5} for i in range(3)]
    seen = probe(lab, cli, {"mac": mac, "rounds": rounds})
    ours = {r["xid"]: r for r in seen if r["ip_src"] == HUB_ADDR}
    assert ours[1000]["yiaddr"] == "0.0.0.0" and ours[1001]["yiaddr"] == "0.0.0.0", ours
    full = ours[1002]
    assert full["yiaddr"].startswith("10.77.0.2"), f"third DISCOVER gets a full offer: {full}"
    assert full["file"] == "ipxe.efi" and "51" in full["opts"]
    assert "falling back to a full reply" in hub.logs()
    # Remembered across a restart.
    hub.kill()
    hub.start()
    seen = probe(lab, cli, {"mac": mac, "rounds": [{"type": 1, "xid": 2000, "opts": PXE_UEFI}]})
    again = [r for r in seen if r["ip_src"] == HUB_ADDR and r["xid"] == 2000]
    assert again and again[0]["yiaddr"] != "0.0.0.0", seen


def test_relay_giaddr_subnet_option82_and_perfdhcp(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    relay = lab.host("relay", "10.77.0.9/24")
    # The relay's downstream network 10.88.0.0/24 sits behind 10.77.0.9.
    lab.ns(relay, "ip", "link", "add", "down0", "type", "veth", "peer", "name", "down1")
    lab.ns(relay, "ip", "addr", "add", "10.88.0.1/24", "dev", "down0")
    lab.ns(relay, "ip", "link", "set", "down0", "up")
    lab.ns(hub_ns, "ip", "route", "add", "10.88.0.0/24", "via", "10.77.0.9")
    make_hub(hub_ns, config()).start()
    o82 = "0106" + b"port-7".hex() + "0203" + "aabbcc" + "0902" + "0001"
    seen = probe(lab, relay, {
        "mac": "02:00:00:00:88:01", "src": "10.88.0.1", "dst": HUB_ADDR, "dst_mac": lab.mac("hub"),
        "sport": 67, "dport": 67, "reply_port": 67,
        "rounds": [{"type": 1, "xid": 777, "giaddr": "10.88.0.1", "opts": [[82, o82]]}],
    })
    offers = [r for r in seen if r["xid"] == 777]
    assert offers, seen
    o = offers[0]
    assert o["ip_dst"] == "10.88.0.1" and o["dport"] == 67, f"reply goes to giaddr:67: {o}"
    assert o["yiaddr"].startswith("10.88.0."), f"subnet chosen by giaddr: {o}"
    assert o["opts"]["82"] == o82, "option 82 echoed byte for byte"

    # perfdhcp: a real relay-style load generator; 30 full DORA exchanges, none dropped.
    # -W: wait for the last replies before exiting, or perfdhcp counts the last one as dropped.
    out = lab.ns(relay, "perfdhcp", "-4", "-l", "eth0", "-r", "30", "-n", "30", "-R", "30", "-W", "1000000", "-p", "5",
                 HUB_ADDR, check=False, timeout=60)
    text = out.stdout + out.stderr
    received = [int(line.split()[-1]) for line in text.splitlines() if line.strip().startswith("received packets:")]
    drops = [int(line.split()[-1]) for line in text.splitlines() if line.strip().startswith("drops:")]
    assert received == [30, 30] and drops == [0, 0], text


MALFORMED = {
    "truncated options": lambda base: base[:240] + bytes([53, 1, 1, 61, 9, 1, 2]),
    "bad magic cookie": lambda base: base[:236] + b"\x00\x00\x00\x00" + base[240:],
    "hlen over 16": lambda base: base[:2] + bytes([17]) + base[3:],
    "oversized option 61": lambda base: base[:240] + bytes([53, 1, 1]) + (bytes([61, 100]) + b"\x07" * 100) * 2 + b"\xff",
    # Found by fuzz/ (target dhcp): dhcproto debug-asserts option 154's length.
    "bulk leasequery time of 2 bytes": lambda base: base[:240] + bytes([53, 1, 1, 154, 2, 0, 0, 255]),
}


def test_hostile_input_is_dropped_and_server_keeps_answering(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    cli = lab.host("cli")
    hub = make_hub(hub_ns, config()).start()
    mac = lab.mac("cli")
    import struct

    base = bytearray(struct.pack("!BBBBIHH", 1, 1, 6, 0, 5, 0, 0) + b"\0" * 16 + bytes.fromhex(mac.replace(":", "")) + b"\0" * 202)
    base += bytes([99, 130, 83, 99, 53, 1, 1, 255])
    base = bytes(base)
    rng = random.Random(1234)
    garbage = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600))) for _ in range(101)]
    rounds = [{"raw": f(base).hex(), "wait": 0.05} for f in MALFORMED.values()]
    rounds += [{"raw": g.hex(), "wait": 0.0} for g in garbage]
    rounds.append({"type": 1, "xid": 31337, "wait": 1.5})
    seen = probe(lab, cli, {"mac": mac, "rounds": rounds}, timeout=60)
    assert hub.alive()
    assert [r for r in seen if r["xid"] == 31337 and r["yiaddr"] != "0.0.0.0"], "a normal DISCOVER is still answered"
    log = hub.log.read_text()
    for reason in ["runs past the end", "bad magic cookie", "hlen 17 exceeds 16", "client identifier of 200 bytes",
                   "option 154 with 2 bytes"]:
        assert reason in log, f"no log line for: {reason}"
    assert log.count("dropping malformed DHCP datagram") >= len(MALFORMED) + 90, "every garbage datagram is logged as dropped"
    assert "panicked" not in log
    # And after a restart it still starts and answers.
    hub.kill(signal.SIGTERM)
    hub.start()
    seen = probe(lab, cli, {"mac": mac, "rounds": [{"type": 1, "xid": 31338}]})
    assert [r for r in seen if r["xid"] == 31338], seen


def test_packets_from_other_interfaces_are_not_served(lab, make_hub, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    cli = lab.host("cli")
    # A second link into the hub namespace, not in the config.
    lab.ns(hub_ns, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "peer1")
    lab.ns(hub_ns, "ip", "addr", "add", "10.88.0.1/24", "dev", "eth1")
    lab.ns(hub_ns, "ip", "link", "set", "eth1", "up")
    lab.ns(hub_ns, "ip", "link", "set", "peer1", "up")
    make_hub(hub_ns, config()).start()
    seen = probe(lab, hub_ns, {"iface": "peer1", "mac": "02:00:00:00:99:01", "rounds": [{"type": 1, "xid": 5150}]})
    assert not [r for r in seen if r["xid"] == 5150], f"served a DISCOVER from an unconfigured interface: {seen}"
    seen = probe(lab, cli, {"mac": lab.mac("cli"), "rounds": [{"type": 1, "xid": 5151}]})
    assert [r for r in seen if r["xid"] == 5151], "but the configured one is served"
    assert sh("true").returncode == 0


def test_boot_timeline_shows_dhcp_tftp_and_http_steps(lab, make_hub, tmp_path):
    import json

    from conftest import BIN

    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    cli = lab.host("cli")
    hub = make_hub(hub_ns, config() + '[http]\nlisten = "0.0.0.0:8080"\n').start()
    mac = lab.mac("cli")
    # PXE ROM: DISCOVER/REQUEST; then TFTP of the iPXE binary; then iPXE's HTTP requests.
    seen = probe(lab, cli, {"mac": mac, "rounds": [{"type": 1, "xid": 71, "opts": PXE_BIOS}]})
    offer = [r for r in seen if r["xid"] == 71][0]
    probe(lab, cli, {"mac": mac, "rounds": [{"type": 3, "xid": 71, "opts": PXE_BIOS + [[54, "0a4d0001"], [50, bytes(map(int, offer["yiaddr"].split("."))).hex()]]}]})
    lab.ns(cli, "ip", "addr", "add", f"{offer['yiaddr']}/24", "dev", "eth0")
    lab.ns(cli, "tftp", "-m", "binary", HUB_ADDR, "-c", "get", "undionly.kpxe", str(tmp_path / "u"))
    lab.ns(cli, "curl", "-sS", "-o", "/dev/null", f"http://{HUB_ADDR}:8080/boot.ipxe")
    lab.ns(cli, "curl", "-sS", "-o", "/dev/null",
           f"http://{HUB_ADDR}:8080/ipxe?mac={mac.replace(':', '-')}&buildarch=i386&platform=pcbios")
    # The CLI asks the hub's API at 127.0.0.1 of the hub's own namespace.
    out = lab.ns(hub_ns, BIN, "machines", "show", mac, "-c", str(hub.config), "--json")
    events = json.loads(out.stdout)["events"]
    steps = [(e["source"], e["what"]) for e in events]
    text = "\n".join(f"{s}: {w}" for s, w in steps)
    order = [
        ("dhcp", "DISCOVER -> OFFER"),
        ("dhcp", "REQUEST -> ACK"),
        ("tftp", "RRQ undionly.kpxe"),
        ("tftp", "sent undionly.kpxe"),
        ("http", "GET /boot.ipxe"),
        ("http", "GET /ipxe: discovery script"),
    ]
    pos = 0
    for source, prefix in order:
        while pos < len(steps) and not (steps[pos][0] == source and steps[pos][1].startswith(prefix)):
            pos += 1
        assert pos < len(steps), f"missing or out of order: {source} {prefix!r}\n{text}"
    assert "[bios-x86: undionly.kpxe]" in text
    human = lab.ns(hub_ns, BIN, "machines", "show", mac, "-c", str(hub.config)).stdout
    assert "boot timeline of" in human and "undionly.kpxe" in human
    listing = lab.ns(hub_ns, BIN, "machines", "list", "-c", str(hub.config)).stdout
    assert mac in listing and offer["yiaddr"] in listing
