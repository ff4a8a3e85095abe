"""End to end install: a QEMU VM network-boots the discovery image, its agent
enrolls, the operator approves it, and the agent installs: it fetches its
machine config over mTLS with the assignment's install token, streams the
hub's Talos disk image (zstd) onto its blank virtio disk, adds the STATE
partition with config.yaml, reports done, and reboots. The test then inspects
the disk like Talos would find it, and powers the machine on again: the hub's
iPXE script now hands off to the disk.

Talos images cannot be downloaded here, so the test builds a stand-in with the
same partition layout as metal-amd64.raw (EFI, BIOS, BOOT, META).

Needs the static agent (PROVISIONER_AGENT), sgdisk, zstd, xfsprogs.
"""

import json
import subprocess
import time

import pytest

from conftest import BIN, Hub
from test_dhcp import HUB_ADDR, config
from test_enroll import agent_binary, cli, nodes, wait_until  # noqa: F401 (fixture)
from test_qemu import ASSETS, HTTP, Vm, boot_assets  # noqa: F401 (fixture)

MAC = "52:54:00:e1:00:01"
LAYOUT = [  # name, sgdisk type code, first sector, last sector (a 64 MiB image)
    ("EFI", "EF00", 2048, 43007),
    ("BIOS", "EF02", 43008, 45055),
    ("BOOT", "8300", 45056, 126975),
    ("META", "8300", 126976, 129023),
]
IMAGE_SECTORS = 131072


def run(*args, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r.stdout


def stand_in_image(path):
    """A GPT disk image shaped like Talos's metal-amd64.raw, each partition
    filled with a pattern naming it."""
    with open(path, "wb") as f:
        f.truncate(IMAGE_SECTORS * 512)
    args = ["sgdisk", "-U", "11111111-2222-3333-4444-555555555555"]
    for i, (name, code, first, last) in enumerate(LAYOUT, 1):
        args += [f"-n{i}:{first}:{last}", f"-t{i}:{code}", f"-c{i}:{name}"]
    run(*args, str(path))
    with open(path, "r+b") as f:
        for name, _, first, last in LAYOUT:
            pattern = f"talos-stand-in {name} ".encode()
            size = (last - first + 1) * 512
            f.seek(first * 512)
            f.write((pattern * (size // len(pattern) + 1))[:size])
    return path


def partitions(disk):
    """sgdisk's view: {name: (first, last)}."""
    out = run("sgdisk", "-p", str(disk))
    parts = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 7 and cols[0].isdigit():
            parts[cols[-1]] = (int(cols[1]), int(cols[2]))
    return parts


def read(path, first_sector, sectors):
    with open(path, "rb") as f:
        f.seek(first_sector * 512)
        return f.read(sectors * 512)


def test_approved_vm_installs_talos_and_next_boot_is_from_disk(lab, tmp_path, boot_assets, agent_binary):
    for tool in ["sgdisk", "zstd", "xfs_repair", "losetup"]:
        assert subprocess.run(["sh", "-c", f"command -v {tool}"]).returncode == 0, \
            f"{tool} is needed (apt-get install gdisk zstd xfsprogs mount)"
    raw = stand_in_image(tmp_path / "metal-amd64.raw")
    image = tmp_path / "metal-amd64.raw.zst"
    run("zstd", "-q", "-f", str(raw), "-o", str(image))

    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    body = (config() + f'[boot]\nassets_dir = "{ASSETS}"\nnode_agent = "{agent_binary}"\n' + HTTP
            + "[enroll]\npoll_secs = 2\n" + f'[talos]\ncluster_name = "lab"\nimage = "{image}"\n')
    hub = Hub(lab, hub_ns, tmp_path, body).start(log_filter="info,provisioner=debug")
    assert "Talos disk image hashed" in hub.logs(), hub.logs()

    disk = tmp_path / "vm.img"
    subprocess.run(["truncate", "-s", "1G", str(disk)], check=True)
    drive = ["-drive", f"file={disk},if=none,id=d0,format=raw", "-device", "virtio-blk-pci,drive=d0,serial=DISK-INST"]
    vm = Vm(lab, tmp_path, "inst", MAC, "bios", ["-smbios", "type=1,serial=SN-INST", *drive])
    vm.wait_for("PROVISIONER-AGENT-START", hub=hub)
    node = wait_until("the VM pending", lambda: next(iter(n for n in nodes(hub) if n["state"] == "pending"), None),
                      150, [vm], hub)
    node_id = node["id"]
    assert "approved" in cli(hub, "nodes", "approve", node_id)

    # The agent installs, reports, and reboots (QEMU runs with -no-reboot: it exits).
    def installed():
        n = json.loads(cli(hub, "nodes", "show", node_id, "--json"))
        return n if n["state"] == "installed" else None

    started = time.monotonic()
    n = None
    while n is None and time.monotonic() < started + 240:
        n = installed()
        if n is None and vm.proc.poll() is not None:
            n = installed() or vm.fail("QEMU exited before the node was installed", hub)
        time.sleep(1)
    if n is None:
        vm.fail(f"not installed within 240 s: {cli(hub, 'nodes', 'show', node_id)}", hub)
    took = time.monotonic() - started
    deadline = time.monotonic() + 60
    while vm.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vm.proc.poll() is not None, "the VM did not reboot after installing"
    console = vm.text()
    assert "machine config received" in console and "rebooting into the installed system" in console, console[-3000:]
    assert n["role"] == "controlplane", n
    inst = n["install"]
    assert inst["disk"] == "/dev/vda" and inst["profile"] == "qemu" and inst["attempts"] == 1, inst
    assert not inst["token_outstanding"], "the install token was spent"
    events = " | ".join(e["what"] for e in n["events"])
    for what in ["install assigned", "machine config delivered", "installed: Talos and its config"]:
        assert what in events, events

    # The disk as Talos will find it: the image's partitions unchanged, STATE
    # after META, both GPT copies valid at the disk's ends.
    verify = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True)
    assert verify.returncode == 0 and "No problems found" in verify.stdout, verify.stdout + verify.stderr
    parts = partitions(disk)
    assert list(parts) == ["EFI", "BIOS", "BOOT", "META", "STATE"], parts
    for name, _, first, last in LAYOUT:
        assert parts[name] == (first, last), (name, parts)
        assert read(disk, first, last - first + 1) == read(raw, first, last - first + 1), f"{name} differs"
    first, last = parts["STATE"]
    assert first == 129024 and last - first + 1 == 204800, parts["STATE"]  # 1 MiB aligned, 100 MiB

    # STATE: xfs, clean, labelled STATE, config.yaml = what the hub renders for this node.
    mnt = tmp_path / "mnt-state"
    mnt.mkdir()
    loop = run("losetup", "--find", "--show", "--read-only", "--offset", str(first * 512),
               "--sizelimit", str((last - first + 1) * 512), str(disk)).strip()
    try:
        run("xfs_repair", "-n", loop)
        assert run("xfs_admin", "-l", loop).strip() == 'label = "STATE"'
        run("mount", "-t", "xfs", "-o", "ro,norecovery", loop, str(mnt))
        try:
            on_disk = (mnt / "config.yaml").read_bytes()
            mode = (mnt / "config.yaml").stat().st_mode & 0o777
        finally:
            run("umount", str(mnt))
    finally:
        subprocess.run(["losetup", "-d", loop])
    assert mode == 0o600
    expected = tmp_path / "expected.yaml"
    cli(hub, "nodes", "config", node_id, "--out", str(expected))
    assert on_disk == expected.read_bytes(), "config.yaml is the node's rendered config"
    assert b"type: controlplane" in on_disk and b"serial: DISK-INST" in on_disk

    audit = [json.loads(line) for line in (hub.state / "audit.log").read_text().splitlines()]
    delivered = [e for e in audit if e["event"] == "machine_config_delivered"]
    assert len(delivered) == 1 and delivered[0]["node"] == node_id, audit
    assert not [e for e in audit if e["event"] == "machine_config_refused"], audit

    # Power on again: the hub's script for this machine hands off to its disk.
    again = Vm(lab, tmp_path, "inst2", MAC, "bios", ["-smbios", "type=1,serial=SN-INST", *drive])

    def local_boot():
        out = json.loads(cli(hub, "machines", "show", MAC, "--json"))
        return [e for e in out["events"] if "local-boot script" in e["what"]]

    served = wait_until("the local-boot script", local_boot, 120, [again], hub)
    assert "Sanboot" in served[-1]["what"], served
    again.stop()
    assert "PROVISIONER-AGENT-START" not in again.text(), "an installed machine does not get the discovery image"
    print(f"installed in {took:.0f} s (approval to installed, TCG)")


def test_hub_installs_its_own_machine_through_the_same_path(lab, tmp_path, agent_binary):
    """`provisioner install-self`: the first node is the hub's own machine. The
    node agent enrolls with the running hub over loopback, gets the install
    assignment and its config over mTLS, and writes the disk, exactly as a
    network-booted node does. The "machine" here is a loop device and an
    inventory that describes it."""
    import os
    raw = stand_in_image(tmp_path / "metal-amd64.raw")
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    body = (config() + HTTP + "[enroll]\npoll_secs = 1\n" + f'[talos]\ncluster_name = "lab"\nimage = "{raw}"\n')
    hub = Hub(lab, hub_ns, tmp_path, body).start(log_filter="info,provisioner=debug")
    disk = tmp_path / "hub-disk.img"
    subprocess.run(["truncate", "-s", "1G", str(disk)], check=True)
    loop = run("losetup", "--find", "--show", str(disk)).strip()
    try:
        inventory = tmp_path / "inventory.json"
        inventory.write_text(json.dumps({
            "system": {"vendor": "QEMU", "product": "Standard PC (i440FX + PIIX, 1996)", "serial": "SN-HUB"},
            "firmware": {"mode": "uefi"},
            "nics": [{"name": "eth0", "mac": "52:54:00:e1:00:99", "link": True}],
            "disks": [{"name": os.path.basename(loop), "size_bytes": 1 << 30, "transport": "virtio",
                       "serial": "HUB-DISK"}],
        }))
        r = hub.lab.ns(hub.ns, BIN, "install-self", "-c", str(hub.config), "--agent", agent_binary,
                       "--inventory", str(inventory), check=False, timeout=180)
        assert r.returncode == 0, f"install-self failed:\n{r.stdout}\n{r.stderr[-4000:]}\n{hub.logs()[-4000:]}"
        verify = subprocess.run(["sgdisk", "-v", loop], capture_output=True, text=True)
        assert "No problems found" in verify.stdout, verify.stdout + verify.stderr
        assert list(partitions(loop)) == ["EFI", "BIOS", "BOOT", "META", "STATE"]
    finally:
        subprocess.run(["losetup", "-d", loop])
    [n] = nodes(hub)
    n = json.loads(cli(hub, "nodes", "show", n["id"], "--json"))
    assert n["state"] == "installed" and n["role"] == "controlplane", n
    assert n["install"]["disk"] == loop, n["install"]
    cfg = cli(hub, "nodes", "config", n["id"])
    assert "allowSchedulingOnControlPlanes: true" in cfg, "the first node is a single-node control plane"
