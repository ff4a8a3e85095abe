"""The Talos side of the hub, checked with tools we did not write: the
secrets bundle and the operator's talosconfig come out of the running hub
over its admin socket, and OpenSSL parses every certificate and key and
verifies the admin certificate against the Talos CA. The bundle survives a
restart unchanged. `profiles check` accepts the shipped profiles and refuses
a local profile that would tie with one of them.
"""
import base64
import json
import stat
import subprocess
from pathlib import Path

import yaml

from conftest import BIN, Hub
from test_dhcp import HUB_ADDR, config

HUB_BODY = config() + '[http]\nlisten = "0.0.0.0:8080"\n[talos]\ncluster_name = "lab"\n'
REPO = Path(__file__).resolve().parents[2]


def cli(hub, *args, check=True):
    r = hub.lab.ns(hub.ns, BIN, *args, "-c", str(hub.config), check=False)
    if check:
        assert r.returncode == 0, f"provisioner {' '.join(args)} failed:\n{r.stdout}\n{r.stderr[-2000:]}"
    return r


def openssl(*args, stdin=None):
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"
    return r.stdout


def pem(b64):
    return base64.b64decode(b64).decode()


def test_secrets_bundle_and_talosconfig_pass_openssl(lab, tmp_path):
    hub_ns = lab.host("hub", f"{HUB_ADDR}/24")
    hub = Hub(lab, hub_ns, tmp_path, HUB_BODY).start(ready="talos cluster ready")
    stored = hub.state / "talos" / "secrets.yaml"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600

    out = tmp_path / "secrets.yaml"
    out.write_text("old, world-readable")
    out.chmod(0o644)
    cli(hub, "cluster", "export-secrets", "--out", str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bundle = yaml.safe_load(out.read_text())
    assert set(bundle) == {"cluster", "secrets", "trustdinfo", "certs"}
    certs = bundle["certs"]
    for name, org, algo in [("os", "talos", "ED25519"), ("k8s", "kubernetes", "id-ecPublicKey"),
                            ("etcd", "etcd", "id-ecPublicKey"), ("k8saggregator", None, "id-ecPublicKey")]:
        text = openssl("x509", "-noout", "-text", stdin=pem(certs[name]["crt"]))
        assert algo in text, f"{name}: {text}"
        assert "CA:TRUE" in text and "Certificate Sign" in text, name
        assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
        subject = openssl("x509", "-noout", "-subject", stdin=pem(certs[name]["crt"]))
        assert (f"O = {org}" in subject) if org else subject.strip() == "subject=", subject
        if algo == "id-ecPublicKey":
            assert "prime256v1" in text
            openssl("ec", "-check", "-noout", stdin=pem(certs[name]["key"]))
    assert pem(certs["os"]["key"]).startswith("-----BEGIN ED25519 PRIVATE KEY-----")
    rsa = openssl("rsa", "-check", "-noout", "-text", stdin=pem(certs["k8sserviceaccount"]["key"]))
    assert "4096 bit" in rsa and "RSA key ok" in rsa

    tc_path = tmp_path / "talosconfig"
    cli(hub, "cluster", "talosconfig", "--out", str(tc_path))
    assert stat.S_IMODE(tc_path.stat().st_mode) == 0o600
    tc = yaml.safe_load(tc_path.read_text())
    ctx = tc["contexts"][tc["context"]]
    assert tc["context"] == "lab"
    assert ctx["endpoints"] == [HUB_ADDR]
    ca, crt = tmp_path / "os.crt", tmp_path / "admin.crt"
    ca.write_text(pem(ctx["ca"]))
    crt.write_text(pem(ctx["crt"]))
    assert pem(ctx["ca"]) == pem(certs["os"]["crt"])
    assert openssl("verify", "-CAfile", str(ca), str(crt)).strip().endswith("OK")
    assert "O = os:admin" in openssl("x509", "-noout", "-subject", "-in", str(crt))

    # The same bundle after a restart: configs already issued stay valid.
    hub.kill()
    hub.start(ready="talos cluster ready")
    again = tmp_path / "again.yaml"
    cli(hub, "cluster", "export-secrets", "--out", str(again))
    assert again.read_text() == out.read_text()
    assert "cluster secrets generated" not in hub.log.read_text()
    assert "cluster secrets exported" in hub.log.read_text()


def test_profiles_check_accepts_shipped_and_refuses_a_tie(tmp_path):
    r = subprocess.run([BIN, "profiles", "check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("\nok ") + r.stdout.startswith("ok ") == 5, r.stdout
    local = tmp_path / "profiles"
    local.mkdir()
    text = (REPO / "hw-profiles" / "dell-poweredge-r760.toml").read_text()
    (local / "mine.toml").write_text(text.replace('name = "dell-poweredge-r760"', 'name = "my-r760"'))
    r = subprocess.run([BIN, "profiles", "check", "--dir", str(local)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "FAIL  my-r760" in r.stdout and "dell-poweredge-r760" in r.stdout, r.stdout
    # Which profile an agent's inventory gets, and the disk it picks.
    inv = {"system": {"vendor": "HPE", "product": "ProLiant DL360 Gen11"},
           "disks": [{"name": "nvme0n1", "size_bytes": 480103981056, "transport": "nvme",
                      "model": "HPE NS204i-u Gen11 Boot Controller", "serial": "PYWWA0A6KMN2UA"},
                     {"name": "sda", "size_bytes": 1920383410176, "transport": "sas", "model": "MR416i", "serial": "X"}]}
    f = tmp_path / "inv.json"
    f.write_text(json.dumps(inv))
    r = subprocess.run([BIN, "profiles", "match", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "profile hpe-proliant-dl360-gen11" in r.stdout and "/dev/nvme0n1" in r.stdout, r.stdout
    assert "PYWWA0A6KMN2UA" in r.stdout
