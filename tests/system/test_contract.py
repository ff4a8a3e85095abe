"""Contract: every boot file the DHCP side advertises, for every firmware type, is
served (over TFTP or HTTP) byte for byte as the manifest lists it; and nothing
unserved is advertised. Uses the real iPXE binaries from Debian (boot-assets/fetch.sh)
and the manifest built into the binary."""

import hashlib
import os
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, probe, sh
from test_dhcp import HUB_ADDR, PXE_ARM, PXE_BIOS, PXE_UEFI, config

ASSETS = Path(os.environ.get("PROVISIONER_TEST_ASSETS", "/var/tmp/provisioner-test-assets"))
MANIFEST = tomllib.loads((REPO / "boot-assets" / "manifest.toml").read_text())["asset"]

HTTP_X64 = [[60, b"HTTPClient:Arch:00016:UNDI:003001".hex()], [93, "0010"]]
IPXE = PXE_BIOS + [[77, b"iPXE".hex()]]


@pytest.fixture(scope="module")
def real_assets():
    env = dict(os.environ, BOOT_ASSETS_CACHE="/var/tmp/provisioner-deb-cache")
    r = sh("bash", str(REPO / "boot-assets" / "fetch.sh"), str(ASSETS), check=False, timeout=300, env=env)
    assert r.returncode == 0, f"boot-assets/fetch.sh failed:\n{r.stdout}\n{r.stderr}"
    return ASSETS


def sha_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def by_tftp(name):
    return next(a for a in MANIFEST if a.get("tftp") == name)


def by_http(path):
    return next(a for a in MANIFEST if a.get("http") == path)


def test_every_advertised_boot_file_is_served(lab, make_hub, tmp_path, real_assets):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    cli = lab.host("cli")
    body = config() + f'[boot]\nassets_dir = "{real_assets}"\n[http]\nlisten = "0.0.0.0:8080"\n'
    hub = make_hub(hub_ns, body).start()
    mac = lab.mac("cli")
    offers = {}
    for name, opts in [("bios", PXE_BIOS), ("uefi-x64", PXE_UEFI), ("uefi-arm64", PXE_ARM),
                       ("http-x64", HTTP_X64), ("ipxe", IPXE)]:
        xid = abs(hash(name)) % (1 << 31)
        seen = probe(lab, cli, {"mac": mac, "rounds": [{"type": 1, "xid": xid, "opts": opts}]})
        ours = [r for r in seen if r["xid"] == xid and r["ip_src"] == HUB_ADDR]
        assert ours, f"{name}: no offer: {seen}"
        offers[name] = ours[0]
    assert offers["bios"]["file"] == "undionly.kpxe"
    assert offers["uefi-x64"]["file"] == "ipxe.efi"
    assert offers["uefi-arm64"]["file"] == "", "no arm64 iPXE is served, so none may be advertised"
    assert offers["http-x64"]["file"] == f"http://{HUB_ADDR}:8080/boot/ipxe.efi"
    assert offers["ipxe"]["file"] == f"http://{HUB_ADDR}:8080/boot.ipxe"

    # Fetch each advertised file from the client's side of the link, as firmware would.
    lab.ns(cli, "ip", "addr", "add", "10.77.0.60/24", "dev", "eth0")
    for name, offer in offers.items():
        f = offer["file"]
        if not f:
            continue
        out = tmp_path / f"{name}.out"
        if f.startswith("http://"):
            r = lab.ns(cli, "curl", "-sS", "-o", str(out), f, check=False)
            assert r.returncode == 0, f"{name}: {f}: {r.stderr}"
            if f.endswith("/boot.ipxe"):
                assert out.read_text().startswith("#!ipxe")
                continue
            want = by_http(f.split(":8080", 1)[1])
        else:
            assert offer["siaddr"] == HUB_ADDR, name
            r = lab.ns(cli, "tftp", "-m", "binary", offer["siaddr"], "-c", "get", f, str(out), check=False)
            assert r.returncode == 0 and out.exists(), f"{name}: tftp {f}: {r.stdout}{r.stderr}"
            want = by_tftp(f)
        assert out.stat().st_size == want["size"] and sha_of(out) == want["sha256"], f"{name}: {f} differs from the manifest"

    # And the other way round: every TFTP name in the manifest that is present is served.
    for a in MANIFEST:
        if "tftp" in a and (real_assets / a["name"]).exists():
            out = tmp_path / f"all-{a['name']}"
            lab.ns(cli, "tftp", "-m", "binary", HUB_ADDR, "-c", "get", a["tftp"], str(out), check=False)
            assert out.exists() and sha_of(out) == a["sha256"], a["name"]
    present = sum(1 for a in MANIFEST if (real_assets / a["name"]).exists())
    log = hub.log.read_text()
    assert f"boot assets verified served={present} unavailable={len(MANIFEST) - present}" in log, log[:500]
