"""QEMU VMs that really network-boot through the hub: SeaBIOS + QEMU's iPXE ROM,
OVMF's own PXE, OVMF's UEFI HTTP boot, a BIOS VM in proxy mode beside dnsmasq, and a
BIOS VM with an SMBIOS UUID and serial number like a real server.

Each VM is plugged into the lab bridge through a tap device in the switch
namespace and runs there (`ip netns exec <switch> qemu-system-x86_64 ...`), with
its serial console in a file. The discovery initramfs prints
`PROVISIONER-DISCOVERY-OK ip=<addr>` once it has a lease and `PROVISIONER-FETCH-OK`
once it has fetched `<hub>/healthz`; we wait for those lines, then kill QEMU.
Known dead ends (a 400 for the machine script, ignored ProxyDHCP ACKs, OVMF in its
shell) fail the test at once with what is known about the cause.

Needs qemu-system-x86, ovmf and ipxe-qemu (Debian packages), and the real boot
assets (boot-assets/fetch.sh and build-discovery.sh, run here once per module).
No KVM is assumed: `-accel tcg`.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import json

from conftest import BIN, REPO, Hub, sh
from test_dhcp import HUB_ADDR, config, dnsmasq

ASSETS = Path(os.environ.get("PROVISIONER_TEST_ASSETS", "/var/tmp/provisioner-test-assets"))
QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
VIRTIO_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # QEMU's iPXE option ROM for virtio-net (ipxe-qemu)
BOOT_TIMEOUT = 120  # seconds per VM; here a TCG boot takes 25-40 s (iPXE waits ~16 s for an IPv6 RA)
HTTP = '[http]\nlisten = "0.0.0.0:8080"\n'

OK = "PROVISIONER-DISCOVERY-OK"
FETCH_OK = "PROVISIONER-FETCH-OK"
FAILED = re.compile(r"PROVISIONER-(DISCOVERY|FETCH)-FAIL[^\n]*")


@pytest.fixture(scope="module")
def boot_assets():
    """The iPXE binaries and the discovery kernel + initramfs, verified against the
    manifest built into the hub (both scripts are idempotent)."""
    missing = [str(f) for f in [OVMF_CODE, OVMF_VARS, VIRTIO_ROM] if not f.exists()]
    if not shutil.which(QEMU) or missing:
        pytest.fail(f"{QEMU} or {missing} not found: apt-get install qemu-system-x86 ovmf ipxe-qemu")
    env = dict(os.environ, BOOT_ASSETS_CACHE="/var/tmp/provisioner-deb-cache")
    for script in ["fetch.sh", "build-discovery.sh"]:
        r = sh("bash", str(REPO / "boot-assets" / script), str(ASSETS), check=False, timeout=600, env=env)
        assert r.returncode == 0, f"boot-assets/{script} failed:\n{r.stdout}\n{r.stderr}"
    return ASSETS


def start_hub(lab, tmp_path, body):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    # Every DHCP decision and TFTP/HTTP request logged, for the failure messages.
    hub = Hub(lab, hub_ns, tmp_path, body + f'[boot]\nassets_dir = "{ASSETS}"\n' + HTTP)
    return hub.start(log_filter="info,provisioner=debug")


def full_hub(lab, tmp_path):
    """Full mode, pool 10.77.0.100-150 (test_dhcp.config())."""
    return start_hub(lab, tmp_path, config())


# Known dead ends, recognised early so that a broken boot fails in seconds, not
# after BOOT_TIMEOUT, with what we know about the cause.
BAD_SCRIPT_QUERY = (
    "the hub answered 400 to the /ipxe?... request iPXE built from /boot.ipxe ({line}); iPXE retries "
    "every 10 s forever. Known cause with Debian's iPXE 1.0.0+git-20190125 (and current iPXE): "
    "`${{uuid:uristring}}` percent-encodes the 16 raw SMBIOS UUID bytes, not the UUID text: a real UUID "
    "arrives as 16 bytes (BadUuid); QEMU's all-zero UUID becomes %00..., which iPXE's own URI parser "
    "decodes back to NUL, cutting the request right after `uuid=` (no serial, buildarch, platform). "
    "`${{uuid}}` gives the canonical 36-character text.")
PROXY_ACK_IGNORED = (
    "iPXE keeps repeating its ProxyDHCP REQUEST to port 4011 although the hub ACKed it {n} times. Known cause: iPXE "
    "(src/net/udp/dhcp.c dhcp_has_pxeopts, since 2015) only accepts a ProxyDHCP offer/ACK with a boot "
    "file name AND a non-zero siaddr (or a PXE boot menu); the hub's replies to iPXE carry the "
    "http://.../boot.ipxe URL with siaddr 0.0.0.0. After the ProxyDHCP timeout iPXE has no file name.")


def stuck(serial, hub_log, mac):
    """Why this boot cannot succeed any more, or None."""
    for line in hub_log.splitlines():
        if "bad machine-script query" in line:
            return BAD_SCRIPT_QUERY.format(line=line.split("provisioner::http::server: ")[-1])
    acks = [line for line in hub_log.splitlines()
            if f"mac={mac}" in line and "kind=Ack" in line and "yiaddr=0.0.0.0" in line]
    if len(acks) >= 3 and "mode=Proxy" in hub_log:
        return PROXY_ACK_IGNORED.format(n=len(acks))
    if "EFI Internal Shell" in serial:
        return "OVMF fell through to its UEFI shell: every network boot option failed (see the serial log)"
    return None


class Vm:
    """One QEMU guest on the lab bridge. `firmware` is "bios" or "uefi"."""

    def __init__(self, lab, tmp, name, mac, firmware, extra=()):
        self.lab, self.name, self.mac = lab, name, mac
        self.serial = Path(tmp) / f"{name}.serial"
        self.serial.write_text("")
        tap = f"t{lab.id}{name}"[:15]
        sw = lab.switch
        lab.ns(sw, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
        lab.ns(sw, "ip", "link", "set", tap, "master", "br0")
        lab.ns(sw, "ip", "link", "set", tap, "up")
        args = [QEMU, "-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-vga", "none",
                "-monitor", "none", "-serial", f"file:{self.serial}", "-no-reboot",
                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
        if firmware == "bios":
            # SeaBIOS runs the NIC's option ROM: QEMU's iPXE (ipxe-qemu's efi-virtio.rom).
            args += ["-boot", "n", "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]
        else:
            # OVMF's own virtio-net driver and PXE/HTTP stack: no iPXE option ROM
            # (romfile=), so the only iPXE that runs is the one the hub serves.
            vars_copy = Path(tmp) / f"{name}.OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)
            args += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                     "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"]
        args += list(extra)
        self.out = Path(tmp) / f"{name}.qemu.out"
        with open(self.out, "w") as f:
            self.proc = subprocess.Popen(["ip", "netns", "exec", sw, *args], stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT)
        lab.procs.append(self.proc)  # the lab's teardown kills it if we do not
        self.started = time.monotonic()

    def text(self):
        return self.serial.read_text(errors="replace")

    def wait_for(self, marker, timeout=BOOT_TIMEOUT, hub=None):
        """Waits for `marker` on the serial console; returns seconds since start.
        Fails early when the boot is known to be stuck (see `stuck`)."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if marker in text:
                return time.monotonic() - self.started
            bad = FAILED.search(text)
            if bad:
                self.fail(f"{bad.group(0)} before {marker}", hub)
            if self.proc.poll() is not None:
                self.fail(f"QEMU exited with {self.proc.returncode} before {marker}", hub)
            why = stuck(text, hub.logs() if hub else "", self.mac)
            if why:
                self.fail(f"stuck before {marker}: {why}", hub)
            time.sleep(0.25)
        self.fail(f"no {marker} within {timeout} s", hub)

    def fail(self, why, hub=None):
        self.stop()
        tail = self.text()[-4000:]
        qemu = self.out.read_text(errors="replace")[-2000:]
        hub_log = hub.logs()[-6000:] if hub else ""
        pytest.fail(f"{self.name} ({self.mac}): {why}\n--- serial (tail)\n{tail}\n--- qemu\n{qemu}\n"
                    f"--- hub log (tail)\n{hub_log}", pytrace=False)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def discovery_ip(self):
        m = re.search(r"PROVISIONER-DISCOVERY-OK ip=(\S+)", self.text())
        return m.group(1) if m else None


def boot_to_discovery(vm, hub, lo, hi):
    """Waits for both markers; checks the address is in [lo, hi] of 10.77.0.0/24."""
    t_ok = vm.wait_for(OK, hub=hub)
    t_fetch = vm.wait_for(FETCH_OK, timeout=t_ok + 30, hub=hub)
    vm.stop()
    ip = vm.discovery_ip()
    assert ip and ip.startswith("10.77.0.") and lo <= int(ip.rsplit(".", 1)[1]) <= hi, \
        f"{vm.name}: discovery address {ip} is not from 10.77.0.{lo}-{hi}"
    print(f"{vm.name}: {OK} after {t_ok:.1f} s, {FETCH_OK} after {t_fetch:.1f} s, ip={ip}")
    return ip


def assert_bound(hub, mac, ip):
    leases = hub.leases()
    mine = [x for x in leases if x["mac"] == mac and x["state"] == "bound"]
    assert mine, f"no bound lease for {mac}: {leases}"
    assert ip in [x["address"] for x in mine], f"{ip} is not among {mac}'s bound leases: {leases}"


def assert_timeline(hub, mac, steps):
    """`machines show` (the operator's view) lists `steps`, (source, prefix) pairs, in order."""
    out = hub.lab.ns(hub.ns, BIN, "machines", "show", mac, "-c", str(hub.config), "--json")
    events = [(e["source"], e["what"]) for e in json.loads(out.stdout)["events"]]
    text = "\n".join(f"  {s}: {w}" for s, w in events)
    pos = 0
    for source, prefix in steps:
        while pos < len(events) and not (events[pos][0] == source and events[pos][1].startswith(prefix)):
            pos += 1
        assert pos < len(events), f"{mac}: timeline lacks {source} {prefix!r} (in this order):\n{text}"
        pos += 1


DISCOVERY_OVER_HTTP = [
    ("http", "GET /boot.ipxe"),
    ("http", "GET /ipxe: discovery script"),
    ("http", "GET /boot/discovery-vmlinuz"),
    ("http", "GET /boot/discovery-initramfs.gz"),
]


def script_served(log, mac):
    return re.search(rf"machine script: discovery mac={re.escape(mac)} ", log)


def test_bios_seabios_ipxe_rom_boots_discovery(lab, tmp_path, boot_assets):
    """(a) SeaBIOS + QEMU's iPXE ROM: our DHCP (full) sees user class iPXE and hands out
    http://hub/boot.ipxe; the script boots the discovery kernel + initramfs."""
    hub = full_hub(lab, tmp_path)
    mac = "52:54:00:77:00:0a"
    vm = Vm(lab, tmp_path, "bios", mac, "bios")
    ip = boot_to_discovery(vm, hub, 100, 150)
    assert_bound(hub, mac, ip)
    log = hub.logs()
    assert f"mac={mac}" in log and "firmware=Some(Ipxe)" in log, "the ROM's DHCP request was classified as iPXE"
    assert script_served(log, mac), "the ROM fetched its machine script over HTTP"
    assert_timeline(hub, mac, [("dhcp", "DISCOVER -> OFFER"), ("dhcp", "REQUEST -> ACK"), *DISCOVERY_OVER_HTTP,
                               ("dhcp", "DISCOVER -> OFFER")])  # the last: the booted discovery OS


def test_uefi_ovmf_pxe_tftp_ipxe_boots_discovery(lab, tmp_path, boot_assets):
    """(b) OVMF's own PXE: DHCP gives ipxe.efi over TFTP (OVMF's tsize probe is
    aborted with an ERROR, then the real transfer), iPXE fetches the HTTP script."""
    hub = full_hub(lab, tmp_path)
    mac = "52:54:00:77:00:0b"
    # Without IPv6 PXE, a failed IPv4 PXE falls through to HTTP boot and then the
    # UEFI shell at once (which `stuck` reports) instead of waiting for DHCPv6.
    vm = Vm(lab, tmp_path, "uefipxe", mac, "uefi",
            ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"])
    ip = boot_to_discovery(vm, hub, 100, 150)
    assert_bound(hub, mac, ip)
    log = hub.logs()
    assert "firmware=Some(UefiX64)" in log, "OVMF's DHCP request was classified as UEFI x64 PXE"
    assert re.search(r'TFTP transfer aborted by client .*file="?ipxe\.efi"? code=8', log), \
        "OVMF's tsize probe (aborted with an ERROR) ended that transfer"
    assert re.search(r'TFTP transfer complete .*file="?ipxe\.efi"? bytes=850528', log), "ipxe.efi went over TFTP"
    assert script_served(log, mac), "iPXE fetched its machine script over HTTP"
    assert_timeline(hub, mac, [("dhcp", "DISCOVER -> OFFER"), ("dhcp", "REQUEST -> ACK"), ("tftp", "RRQ ipxe.efi"),
                               ("tftp", "sent ipxe.efi: 850528 bytes"), ("dhcp", "DISCOVER -> OFFER"),
                               *DISCOVERY_OVER_HTTP, ("dhcp", "DISCOVER -> OFFER")])


def test_uefi_http_boot_boots_discovery(lab, tmp_path, boot_assets):
    """(c) OVMF as HTTPClient: DHCP answers with http://hub:8080/boot/ipxe.efi; OVMF
    downloads (HEAD, then GET) and starts it; iPXE fetches the script.

    Steering: OVMF's fw_cfg knobs opt/org.tianocore/IPv4PXESupport and IPv6PXESupport
    (OvmfPkg PxeBcPcdProducerLib) set to "n" remove the PXE boot options, so with
    bootindex=1 on the NIC the first boot option is "UEFI HTTPv4"."""
    hub = full_hub(lab, tmp_path)
    mac = "52:54:00:77:00:0c"
    vm = Vm(lab, tmp_path, "uefihttp", mac, "uefi",
            ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
             "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"])
    ip = boot_to_discovery(vm, hub, 100, 150)
    assert_bound(hub, mac, ip)
    log = hub.logs()
    assert "firmware=Some(HttpUefiX64)" in log, "OVMF's DHCP request was classified as UEFI HTTP boot"
    assert "TFTP read" not in log, "no TFTP on the HTTP boot path"
    assert "Start HTTP Boot over IPv4" in vm.text() and "File Size: 850528" in vm.text(), "OVMF fetched ipxe.efi"
    assert script_served(log, mac), "iPXE fetched its machine script over HTTP"
    assert_timeline(hub, mac, [("dhcp", "DISCOVER -> OFFER"), ("http", "GET /boot/ipxe.efi 850528 bytes"),
                               ("dhcp", "DISCOVER -> OFFER"), *DISCOVERY_OVER_HTTP])


def test_proxy_mode_beside_dnsmasq_bios_boots_discovery(lab, tmp_path, boot_assets):
    """(d) The hub in proxy mode beside dnsmasq, which hands out the addresses; a BIOS
    VM's iPXE ROM takes its address from dnsmasq and the boot file from the hub."""
    dns_ns = lab.host("dns", "10.77.0.2/24")
    dnsmasq(lab, dns_ns, tmp_path)
    hub = start_hub(lab, tmp_path, '[dhcp]\nmode = "proxy"\ninterfaces = ["eth0"]\n')
    mac = "52:54:00:77:00:0d"
    vm = Vm(lab, tmp_path, "proxy", mac, "bios")
    ip = boot_to_discovery(vm, hub, 10, 50)
    leases = (tmp_path / "dnsmasq.leases").read_text()
    assert any(line.split()[1:3] == [mac, ip] for line in leases.splitlines()), \
        f"dnsmasq has no lease {ip} for {mac}:\n{leases}"
    assert hub.leases() == [], "a proxy never assigns addresses"
    assert script_served(hub.logs(), mac), "the ROM fetched its machine script from the hub"
    # The proxy offer carries no address; the HTTP steps are matched to the MAC by the
    # query string and the kernel's neighbour table.
    assert_timeline(hub, mac, [("dhcp", "DISCOVER -> OFFER [ipxe: http://"), *DISCOVERY_OVER_HTTP])


def test_bios_vm_with_smbios_uuid_and_serial_is_identified(lab, tmp_path, boot_assets):
    """Like (a), but the VM has an SMBIOS UUID and serial number, as every real server
    does (QEMU's default is an all-zero UUID and no serial): the hub must boot it and
    see both exactly."""
    hub = full_hub(lab, tmp_path)
    mac = "52:54:00:77:00:0e"
    uuid, serial = "4c4c4544-0042-3510-8052-b3c04f4e3232", "CZJ1234567"
    vm = Vm(lab, tmp_path, "biosuuid", mac, "bios", ["-uuid", uuid, "-smbios", f"type=1,serial={serial}"])
    ip = boot_to_discovery(vm, hub, 100, 150)
    assert_bound(hub, mac, ip)
    line = script_served(hub.logs(), mac)
    assert line, "the ROM fetched its machine script over HTTP"
    text = hub.logs()[line.start():].splitlines()[0]
    assert f'uuid=Some("{uuid}")' in text and f'serial=Some("{serial}")' in text, text
    assert "platform=Some(Pcbios)" in text, text


def test_provisioner_lab_boots_a_vm_and_prints_its_timeline(boot_assets):
    """The README's "see it work" command, run as a user would."""
    agent = os.environ.get("PROVISIONER_AGENT")
    assert agent, "PROVISIONER_AGENT must name the static node agent (bash scripts/build-agent.sh)"
    r = sh(BIN, "--log", "warn", "lab", "--assets", str(boot_assets), "--timeout", "200", "--agent", agent,
           check=False, timeout=300)
    out = r.stdout
    assert r.returncode == 0, f"provisioner lab failed:\n{out}\n{r.stderr[-3000:]}"
    assert "PROVISIONER-DISCOVERY-OK ip=10.99.0." in out and "booted the discovery image through the hub" in out, out
    assert "enrolled, pending: QEMU" in out and "is approved and reporting health" in out, out
    for step in ["DISCOVER -> OFFER", "GET /boot.ipxe", "GET /ipxe: discovery script", "GET /boot/discovery-vmlinuz",
                 "GET /boot/node-agent.cpio", "enrolled: pending approval", "first health report"]:
        assert step in out, f"timeline lacks {step!r}:\n{out}"
    # The lab's QEMU (its serial log lives in provisioner-lab-<pid>) must not outlive it.
    left = sh("pgrep", "-af", "provisioner-lab-", check=False).stdout.strip()
    assert not left, f"the lab left processes behind: {left}"
