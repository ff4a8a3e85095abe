"""The hub advertises itself by DNS-SD over mDNS, and an agent with no hub
address on its command line (booted from BMC virtual media, say) finds it
there: python-zeroconf (a client we did not write) sees `_provisioner._tcp`
with the CA fingerprint in TXT, and the node agent, given only a join token,
browses, pins what it found, and enrolls. With a pin that does not match the
advertised CA, the agent ignores the hub.
"""

import json
import re
import time
from pathlib import Path

from conftest import BIN, Hub
from test_dhcp import HUB_ADDR, config

AGENT = str(Path(BIN).parent / "node-agent")

BROWSE = r"""
import sys, time
from zeroconf import ServiceBrowser, Zeroconf
found = {}
class L:
    def add_service(self, zc, t, name):
        info = zc.get_service_info(t, name, 3000)
        if info:
            found[name] = info
    def update_service(self, *a): pass
    def remove_service(self, *a): pass
zc = Zeroconf()
ServiceBrowser(zc, "_provisioner._tcp.local.", L())
deadline = time.time() + 10
while not found and time.time() < deadline:
    time.sleep(0.2)
for name, info in found.items():
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    print(name, info.port, ",".join(info.parsed_addresses()), props.get("ca"), props.get("grpc"), props.get("http"))
zc.close()
"""


def start(lab, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    hub = Hub(lab, hub_ns, tmp_path, config() + '[http]\nlisten = "0.0.0.0:8080"\n').start()
    m = re.search(r'enrollment listening .*ca="(sha256:[0-9a-f]{64})"', hub.logs())
    assert m, hub.logs()
    return hub, m.group(1)


def nodes(hub):
    r = hub.lab.ns(hub.ns, BIN, "nodes", "list", "--json", "-c", str(hub.config))
    return json.loads(r.stdout)


def test_zeroconf_sees_the_hub_and_the_agent_enrolls_through_mdns(lab, tmp_path):
    hub, fingerprint = start(lab, tmp_path)
    assert "mDNS advertising" in hub.logs(), hub.logs()
    node_ns = lab.host("node", "10.77.0.50/24")

    out = lab.ns(node_ns, "/usr/bin/python3", "-c", BROWSE, timeout=30).stdout
    assert "_provisioner._tcp.local." in out, f"zeroconf found nothing:\n{out}"
    name, port, addrs, ca, grpc, http = out.splitlines()[0].rsplit(" ", 5)
    assert (port, ca, grpc, http) == ("9443", fingerprint, "9443", "8080"), out
    assert HUB_ADDR in addrs.split(","), out

    token = lab.ns(hub.ns, BIN, "tokens", "create", "--uses", "1", "-c", str(hub.config)).stdout.strip()
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"console=ttyS0 provisioner.token={token}\n")
    # A veth and a firmware-less host identify nothing: give the agent an identity.
    inventory = tmp_path / "inventory.json"
    mac = lab.mac("node")
    inventory.write_text(json.dumps({"system": {"vendor": "lab", "serial": "SN-MDNS"},
                                     "nics": [{"name": "eth0", "mac": mac}]}))
    log = tmp_path / "agent.log"
    agent = lab.spawn(node_ns, [AGENT, "run", "--cmdline", str(cmdline), "--interval", "1",
                                "--inventory", str(inventory)], log)
    deadline = time.time() + 60
    while time.time() < deadline and not nodes(hub):
        assert agent.poll() is None, f"agent exited:\n{log.read_text()}"
        time.sleep(0.5)
    found = nodes(hub)
    assert len(found) == 1 and found[0]["state"] == "pending", f"{found}\n{log.read_text()}"
    text = log.read_text()
    assert "found the hub by mDNS" in text and f"http://{HUB_ADDR}:8080" in text, text
    assert fingerprint.removeprefix("sha256:") in text, "the agent pinned the advertised CA"
    agent.kill()


def test_agent_ignores_a_hub_that_does_not_match_its_pin(lab, tmp_path):
    hub, _ = start(lab, tmp_path)
    node_ns = lab.host("node", "10.77.0.51/24")
    token = lab.ns(hub.ns, BIN, "tokens", "create", "-c", str(hub.config)).stdout.strip()
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"provisioner.token={token} provisioner.ca=sha256:{'0' * 64}\n")
    log = tmp_path / "agent.log"
    agent = lab.spawn(node_ns, [AGENT, "run", "--cmdline", str(cmdline)], log)
    deadline = time.time() + 15
    while time.time() < deadline and "does not match the pin" not in log.read_text():
        time.sleep(0.5)
    agent.kill()
    assert "does not match the pin" in log.read_text(), log.read_text()
    assert nodes(hub) == [], "nothing enrolled with a hub the pin does not name"
