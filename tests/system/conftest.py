"""System tests: the hub binary with real clients, over loopback or in a
network-namespace lab.

Every host is a namespace `pvt<id>-<name>` with one `eth0`, plugged into a bridge
in a switch namespace. Only private 10.77/16 and 10.88/16 addresses are used, and
everything created here is torn down at the end. Tests need root; if namespaces
cannot be created the suite fails loudly instead of skipping.
"""

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("PROVISIONER_BIN", str(REPO / "target" / "debug" / "provisioner"))
PY = "/usr/bin/python3"  # Debian's python, which has python3-scapy
PROBE = str(Path(__file__).with_name("probe.py"))


def sh(*args, check=True, timeout=30, **kw):
    return subprocess.run(list(args), check=check, timeout=timeout, capture_output=True, text=True, **kw)


class Lab:
    def __init__(self):
        self.id = uuid.uuid4().hex[:5]
        self.switch = f"pvt{self.id}-sw"
        self.hosts = {}
        self.procs = []
        if os.geteuid() != 0:
            pytest.fail("netns tests need root (run them through .ci/run)")
        try:
            sh("ip", "netns", "add", self.switch)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"cannot create a network namespace: {e}")
        self.ns(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        self.ns(self.switch, "ip", "link", "set", "br0", "up")

    def ns(self, ns, *args, **kw):
        return sh("ip", "netns", "exec", ns, *args, **kw)

    def host(self, name, addr=None):
        """A namespace with eth0 on the lab bridge; `addr` like '10.77.0.1/24'."""
        ns = f"pvt{self.id}-{name}"
        sh("ip", "netns", "add", ns)
        peer = f"v{self.id}{name}"[:15]
        sh("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", peer, "netns", self.switch)
        self.ns(self.switch, "ip", "link", "set", peer, "master", "br0")
        self.ns(self.switch, "ip", "link", "set", peer, "up")
        self.ns(ns, "ip", "link", "set", "lo", "up")
        self.ns(ns, "ip", "link", "set", "eth0", "up")
        if addr:
            self.ns(ns, "ip", "addr", "add", addr, "dev", "eth0")
        self.hosts[name] = ns
        return ns

    def mac(self, name):
        out = self.ns(self.hosts[name], "cat", "/sys/class/net/eth0/address").stdout.strip()
        return out

    def spawn(self, ns, args, log):
        f = open(log, "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for ns in list(self.hosts.values()) + [self.switch]:
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.teardown()


FIRST_STAGE = ["undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe-arm64.efi"]


def write_assets(tmp, files):
    """Writes `files` ({name: bytes}) and a manifest listing them; returns the [boot] lines."""
    import hashlib

    assets = Path(tmp) / "assets"
    assets.mkdir(exist_ok=True)
    manifest = ""
    for name, data in files.items():
        (assets / name).write_bytes(data)
        manifest += (
            f'[[asset]]\nname = "{name}"\nkind = "test"\narch = "x86_64"\nfirmware = "any"\n'
            f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nsize = {len(data)}\nsource = "test"\n'
            f'tftp = "{name}"\nhttp = "/boot/{name}"\n'
        )
    (Path(tmp) / "manifest.toml").write_text(manifest)
    return f'[boot]\nassets_dir = "{assets}"\nmanifest = "{tmp}/manifest.toml"\n'


class Hub:
    """A `provisioner serve` process in a lab namespace. Unless the config has its own
    [boot] section, it serves stand-in first-stage files under the real names."""

    def __init__(self, lab, ns, tmp, config_body):
        self.lab, self.ns, self.tmp = lab, ns, Path(tmp)
        self.state = self.tmp / "state"
        self.config = self.tmp / "hub.toml"
        if "[boot]" not in config_body:
            config_body += write_assets(self.tmp, {n: f"stand-in {n}".encode() for n in FIRST_STAGE})
        self.config.write_text(f'state_dir = "{self.state}"\n' + config_body)
        self.log = self.tmp / "hub.log"
        self.proc = None
        self.starts = 0

    def start(self, ready="DHCP listening", log_filter="info,provisioner::dhcp=debug"):
        self.starts += 1
        log = self.tmp / f"hub.{self.starts}.log"
        self.log = log
        self.proc = self.lab.spawn(self.ns, [BIN, "--log", log_filter, "serve", "-c", str(self.config)], log)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hub exited at start:\n{log.read_text()}")
            if ready in log.read_text():
                return self
            time.sleep(0.1)
        raise AssertionError(f"hub did not start:\n{log.read_text()}")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=15)

    def alive(self):
        return self.proc.poll() is None

    def leases(self):
        out = sh(BIN, "leases", "list", "-c", str(self.config), "--json")
        return json.loads(out.stdout)

    def logs(self):
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("hub.*.log")))


@pytest.fixture
def make_hub(lab, tmp_path):
    def make(ns, body):
        return Hub(lab, ns, tmp_path, body)

    return make


def probe(lab, ns, spec, timeout=30):
    """Runs probe.py in `ns` with a JSON spec; returns the replies it saw."""
    out = lab.ns(ns, PY, PROBE, json.dumps(spec), timeout=timeout)
    return json.loads(out.stdout)
