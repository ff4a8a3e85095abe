"""HTTP boot over loopback with curl: scripts, assets with Range/HEAD/resume,
traversal, metrics."""

import hashlib
import os
import subprocess
import time

import pytest

from conftest import BIN, sh, write_assets

PORT = 18080


@pytest.fixture(scope="module")
def http_hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    files = {
        "discovery-vmlinuz": os.urandom(3 * 1024 * 1024 + 7),
        "discovery-initramfs.gz": os.urandom(1024 * 1024),
        "large.bin": os.urandom(64 * 1024 * 1024 + 3),
    }
    boot = write_assets(tmp, files)
    (tmp / "secret").write_text("top secret")
    (tmp / "hub.toml").write_text(
        f'state_dir = "{tmp}/state"\n{boot}[tftp]\nenabled = false\n[http]\nlisten = "127.0.0.1:{PORT}"\n'
    )
    log = tmp / "hub.log"
    proc = subprocess.Popen([BIN, "serve", "-c", str(tmp / "hub.toml")], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while "HTTP listening" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, log.read_text()
        time.sleep(0.1)
    yield {"files": files, "tmp": tmp, "log": log}
    proc.terminate()
    proc.wait(timeout=10)


def curl(*args, check=True):
    return sh("curl", "-sS", *args, check=check, timeout=120)


def url(path):
    return f"http://127.0.0.1:{PORT}{path}"


def test_boot_script_chains_to_the_machine_script(http_hub):
    body = curl(url("/boot.ipxe")).stdout
    assert body.startswith("#!ipxe\n") and "chain /ipxe?mac=${net0/mac:hexhyp}" in body


@pytest.mark.parametrize("platform,imgfree,initrd_arg", [("pcbios", True, False), ("efi", False, True)])
def test_unknown_machine_gets_the_discovery_script(http_hub, platform, imgfree, initrd_arg):
    q = f"mac=52-54-00-aa-bb-cc&uuid=&serial=QEMU%20123&buildarch=x86_64&platform={platform}"
    body = curl(url(f"/ipxe?{q}")).stdout
    base = f"http://127.0.0.1:{PORT}"
    assert f"kernel {base}/boot/discovery-vmlinuz" in body, body
    assert f"initrd {base}/boot/discovery-initramfs.gz" in body
    assert f"provisioner.url={base}" in body
    assert ("imgfree" in body) == imgfree and ("initrd=discovery-initramfs.gz" in body) == initrd_arg, body
    # Every URL in the script is served.
    for line in body.splitlines():
        if line.startswith(("kernel ", "initrd ")):
            u = line.split()[1]
            assert curl("-o", "/dev/null", "-w", "%{http_code}", u).stdout == "200", u


@pytest.mark.parametrize("q", ["", "mac=zz", "mac=52-54-00-aa-bb-cc&platform=efi&buildarch=x86_64&serial=a%0Ashell",
                               "mac=52-54-00-aa-bb-cc&platform=uboot&buildarch=x86_64"])
def test_bad_machine_queries_get_400(http_hub, q):
    r = curl("-o", "/dev/null", "-w", "%{http_code}", url(f"/ipxe?{q}"))
    assert r.stdout == "400", q


def test_large_asset_full_head_range_and_resume_are_byte_exact(http_hub, tmp_path):
    data = http_hub["files"]["large.bin"]
    size = len(data)
    out = tmp_path / "full"
    curl("-o", str(out), url("/boot/large.bin"))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    head = curl("-I", url("/boot/large.bin")).stdout.lower()
    assert f"content-length: {size}" in head and "accept-ranges: bytes" in head, head
    for rng, want in [("0-99", data[:100]), ("1000-", data[1000:]), ("-4096", data[-4096:]),
                      (f"{size - 10}-{size + 100}", data[size - 10:])]:
        part = tmp_path / "part"
        r = curl("-D", "-", "-r", rng, "-o", str(part), url("/boot/large.bin"))
        assert "206" in r.stdout.splitlines()[0], r.stdout
        assert part.read_bytes() == want, rng
    # Resume an interrupted download with curl -C -.
    partial = tmp_path / "resume"
    partial.write_bytes(data[: size // 3])
    curl("-C", "-", "-o", str(partial), url("/boot/large.bin"))
    assert hashlib.sha256(partial.read_bytes()).digest() == hashlib.sha256(data).digest()
    # Past the end: 416 with the size.
    r = curl("-D", "-", "-o", "/dev/null", "-r", f"{size}-", url("/boot/large.bin"))
    assert " 416" in r.stdout.splitlines()[0] and f"bytes */{size}" in r.stdout


@pytest.mark.parametrize("path", ["/boot/../hub.toml", "/boot/%2e%2e/secret", "/boot/..%2fsecret", "/boot/",
                                  "/boot/large.bin/", "/boot/LARGE.BIN", "//etc/passwd", "/boot/%00", "/../secret",
                                  "/boot/large.bin%00.txt", "/state/hub.redb"])
def test_traversal_and_unlisted_paths_are_404(http_hub, path):
    r = sh("curl", "-sS", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", url(path), check=False)
    assert r.stdout in ("404", "400"), f"{path}: {r.stdout}"


def test_healthz_and_metrics(http_hub):
    assert curl(url("/healthz")).stdout == "ok\n"
    m = curl(url("/metrics")).stdout
    assert 'provisioner_http_responses_total{kind="asset"}' in m
    assert "provisioner_http_request_seconds_count" in m
    assert "provisioner_dhcp_received_total" in m
