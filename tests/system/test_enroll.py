"""End to end enrollment: QEMU VMs network-boot the discovery image from the
hub, the node agent in it (a second initrd the hub packs from the static
agent binary) collects the VM's inventory, enrolls over mTLS with the token and
CA pin the hub's script put on the kernel command line, and waits. The test is
the operator: it lists the nodes, checks what the hub learned about each VM,
approves one, and watches its health reports arrive. Two VMs share one SMBIOS
UUID (cloned firmware) and must stay two nodes.

Needs the static agent: PROVISIONER_AGENT (scripts/test.sh builds it with
scripts/build-agent.sh).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, Hub
from test_dhcp import HUB_ADDR, config
from test_qemu import ASSETS, HTTP, Vm, boot_assets  # noqa: F401 (fixture)

AGENT = os.environ.get("PROVISIONER_AGENT", "")
UUID = "4c4c4544-0042-3510-8052-b3c04f4e3232"
ENROLL_TIMEOUT = 150  # boot (25-40 s under TCG) + agent download and enrollment


@pytest.fixture
def agent_binary():
    if not AGENT or not Path(AGENT).is_file():
        pytest.fail("PROVISIONER_AGENT must name the static node agent (bash scripts/build-agent.sh)")
    return AGENT


def cli(hub, *args):
    r = hub.lab.ns(hub.ns, BIN, *args, "-c", str(hub.config), check=False)
    assert r.returncode == 0, f"provisioner {' '.join(args)} failed:\n{r.stdout}\n{r.stderr[-2000:]}"
    return r.stdout


def nodes(hub):
    return json.loads(cli(hub, "nodes", "list", "--json"))


def wait_until(what, f, timeout, vms, hub):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = f()
        if v:
            return v
        for vm in vms:
            if vm.proc.poll() is not None:
                vm.fail(f"QEMU exited while waiting for {what}", hub)
        time.sleep(1)
    vms[0].fail(f"timed out waiting for {what}; nodes: {nodes(hub)}", hub)


def test_vms_enroll_are_approved_and_report_health(lab, tmp_path, boot_assets, agent_binary):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    body = (config() + f'[boot]\nassets_dir = "{ASSETS}"\nnode_agent = "{agent_binary}"\n' + HTTP
            + "[enroll]\npoll_secs = 2\n")
    hub = Hub(lab, hub_ns, tmp_path, body).start(log_filter="info,provisioner=debug")
    assert "node agent packed for the discovery image" in hub.logs(), hub.logs()

    # Two VMs with one SMBIOS UUID and different serials, NICs and disks.
    vms = []
    for name, mac, serial in [("enra", "52:54:00:e0:00:01", "SN-VM-A"), ("enrb", "52:54:00:e0:00:02", "SN-VM-B")]:
        disk = tmp_path / f"{name}.img"
        subprocess.run(["truncate", "-s", "1G", str(disk)], check=True)
        vms.append(Vm(lab, tmp_path, name, mac, "bios", [
            "-uuid", UUID, "-smbios", f"type=1,serial={serial}",
            "-drive", f"file={disk},if=none,id=d0,format=raw",
            "-device", f"virtio-blk-pci,drive=d0,serial=DISK-{serial}"]))
    for vm in vms:
        vm.wait_for("PROVISIONER-AGENT-START", hub=hub)

    pending = wait_until("two pending nodes", lambda: (lambda n: n if len(n) == 2 and all(
        x["state"] == "pending" for x in n) else None)(nodes(hub)), ENROLL_TIMEOUT, vms, hub)
    assert {n["uuid"] for n in pending} == {UUID}, pending
    by_serial = {n["serial"]: n for n in pending}
    assert set(by_serial) == {"SN-VM-A", "SN-VM-B"}, "same UUID, still two nodes"

    # What the operator sees: QEMU's inventory, the VM's disk and NIC.
    for vm, serial in zip(vms, ["SN-VM-A", "SN-VM-B"]):
        node = json.loads(cli(hub, "nodes", "show", by_serial[serial]["id"], "--json"))
        inv = node["inventory"]
        assert inv["system"]["vendor"] == "QEMU", inv["system"]
        assert inv["system"]["serial"] == serial
        disks = {d["name"]: d for d in inv["disks"]}
        assert "vda" in disks and disks["vda"]["size_bytes"] == 1 << 30, inv["disks"]
        assert disks["vda"]["serial"] == f"DISK-{serial}", disks["vda"]
        assert disks["vda"]["transport"] == "virtio", disks["vda"]
        assert vm.mac in [n["mac"] for n in inv["nics"]], inv["nics"]
        assert node["health_reports"] == 0, "no health before approval"
    text = cli(hub, "nodes", "list")
    assert "pending" in text and "QEMU" in text, text

    # Approve A: it gets its certificate and starts reporting health; B stays pending.
    a, b = by_serial["SN-VM-A"]["id"], by_serial["SN-VM-B"]["id"]
    assert "approved" in cli(hub, "nodes", "approve", a, "--role", "worker")

    def reporting():
        n = json.loads(cli(hub, "nodes", "show", a, "--json"))
        return n if n["health_reports"] >= 2 else None

    node = wait_until("health reports from the approved VM", reporting, 60, vms, hub)
    assert node["state"] == "approved" and node["role"] == "worker", node
    assert node["health"] == "healthy", node
    h = node["last_health"]
    assert h["uptime_secs"] > 0 and h["mem_total_bytes"] > 100 << 20, h
    assert any(n["name"] == "eth0" and n["up"] for n in h["nics"]), h["nics"]
    assert len(node["certificates"]) == 1
    assert "agent started" in " ".join(e["what"] for e in node["events"]), node["events"]
    other = json.loads(cli(hub, "nodes", "show", b, "--json"))
    assert other["state"] == "pending" and other["health_reports"] == 0, other
    metrics = hub.lab.ns(hub.ns, "curl", "-sf", f"http://{HUB_ADDR}:8080/metrics").stdout
    for line in ['provisioner_nodes{state="approved"} 1', 'provisioner_nodes{state="pending"} 1',
                 'provisioner_enroll_requests_total{outcome="enrolled"} 2']:
        assert line in metrics, f"{line!r} not in /metrics:\n{metrics}"

    # The VM's boot timeline carries the enrollment after DHCP and HTTP.
    out = json.loads(cli(hub, "machines", "show", vms[0].mac, "--json"))
    sources = [e["source"] for e in out["events"]]
    assert "enroll" in sources and sources.index("dhcp") < sources.index("enroll"), out["events"]
    for vm in vms:
        vm.stop()
    print(f"nodes: {[(n['id'], n['serial'], n['state']) for n in nodes(hub)]}")


def test_uefi_vm_loads_the_agent_and_enrolls(lab, tmp_path, boot_assets, agent_binary):
    """OVMF's PXE -> ipxe.efi -> the EFI stub loads both initrds from
    `initrd=` arguments, back to back: the agent archive must come first, or the
    kernel skips it (an uncompressed cpio is only found at a 4-byte boundary,
    and the gzip'd discovery initramfs has any length)."""
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    body = (config() + f'[boot]\nassets_dir = "{ASSETS}"\nnode_agent = "{agent_binary}"\n' + HTTP
            + "[enroll]\npoll_secs = 2\n")
    hub = Hub(lab, hub_ns, tmp_path, body).start(log_filter="info,provisioner=debug")
    vm = Vm(lab, tmp_path, "enruefi", "52:54:00:e0:00:0f", "uefi", ["-smbios", "type=1,serial=SN-UEFI"])
    vm.wait_for("PROVISIONER-AGENT-START", hub=hub)
    found = wait_until("a pending UEFI node", lambda: nodes(hub) or None, ENROLL_TIMEOUT, [vm], hub)
    node = json.loads(cli(hub, "nodes", "show", found[0]["id"], "--json"))
    fw = node["inventory"]["firmware"]
    assert fw["mode"] == "uefi", fw
    assert fw["secure_boot"] is False, "efivarfs is mounted, so Secure Boot is known (off in plain OVMF)"
    assert node["serial"] == "SN-UEFI" and node["state"] == "pending", node
    vm.stop()
