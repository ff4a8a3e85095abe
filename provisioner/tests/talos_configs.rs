//! Rendered Talos configs against the real Talos v1.13 JSON schema, the
//! upstream `gen config` output, our semantic rules, snapshots (secrets
//! redacted), and a typed round trip.
//!
//! The schema comes from `$TALOS_SCHEMA` (scripts/test.sh points it at
//! `tests/fixtures/talos/config.schema.v1.13.9.json`, a verbatim copy; point
//! it at another Talos schema to check against that). Without the variable
//! the vendored copy is used, so `cargo test` alone checks the same thing.
//! `UPDATE_SNAPSHOTS=1` rewrites the snapshots; review the diff.

// Test helpers outside `#[test]` functions unwrap as the tests do.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use provisioner::profiles::{Facts, Profiles};
use provisioner::talos::model::{HostnameConfig, V1Alpha1};
use provisioner::talos::patch::Patch;
use provisioner::talos::render::{
    self, CniChoice, InstallTarget, NodeSpec, Role, Site, StaticNetwork, documents, render,
};
use provisioner::talos::secrets::{SecretsBundle, b64};
use provisioner::talos::validate::{self, Mode};
use provisioner::talos::yaml::{self, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/talos")
}

fn upstream_secrets() -> SecretsBundle {
    SecretsBundle::from_yaml(
        &std::fs::read_to_string(fixtures().join("upstream-secrets.yaml")).unwrap(),
    )
    .unwrap()
}

fn site() -> Site {
    let mut s = Site::new("lab", "https://10.77.0.1:6443");
    s.installer_image = Some("ghcr.io/siderolabs/installer:v1.13.9".to_owned());
    s
}

fn node(role: Role) -> NodeSpec {
    NodeSpec {
        role,
        hostname: None,
        install: InstallTarget {
            disk: Some("/dev/vda".to_owned()),
            ..InstallTarget::default()
        },
        mac: Some("52:54:00:12:34:01".to_owned()),
        address: None,
        profile_patches: Vec::new(),
    }
}

/// The configs every test looks at: `(name, yaml)`.
fn rendered() -> &'static Vec<(String, String)> {
    static R: OnceLock<Vec<(String, String)>> = OnceLock::new();
    R.get_or_init(|| {
        let secrets = upstream_secrets();
        let mut out = Vec::new();
        for role in [Role::SingleNode, Role::Controlplane, Role::Worker] {
            let r = render(&site(), &secrets, &node(role)).unwrap();
            out.push((role.as_str().to_owned(), r.yaml));
        }
        let mut cilium = site();
        cilium.cni = CniChoice::Cilium;
        cilium.discovery = false;
        let mut n = node(Role::SingleNode);
        n.hostname = Some("hub-1".to_owned());
        out.push((
            "single-node-cilium-hostname".to_owned(),
            render(&cilium, &secrets, &n).unwrap().yaml,
        ));
        let mut fixed = site();
        fixed.network = Some(StaticNetwork {
            prefix_len: 24,
            gateway: "10.77.0.254".parse().unwrap(),
            nameservers: vec!["10.77.0.53".parse().unwrap(), "1.1.1.1".parse().unwrap()],
        });
        fixed.patches = vec![
            Patch::parse(
                "site",
                "cluster:\n  network:\n    podSubnets: [10.42.0.0/16]\n",
            )
            .unwrap(),
        ];
        let mut n = node(Role::Worker);
        n.address = Some("10.77.0.21".parse().unwrap());
        out.push((
            "worker-static".to_owned(),
            render(&fixed, &secrets, &n).unwrap().yaml,
        ));
        // Every shipped profile, on a machine it matches.
        let profiles = Profiles::shipped().unwrap();
        for p in &profiles.all {
            let facts = facts_for(&p.name);
            assert_eq!(profiles.matching(&facts).unwrap().name, p.name);
            let disk = p.choose_disk(&facts).unwrap();
            let mut n = node(Role::Controlplane);
            n.install = InstallTarget {
                disk: None,
                selector: Some(disk.selector),
                legacy_bios: false,
            };
            n.profile_patches = p.patches().unwrap();
            out.push((
                format!("profile-{}", p.name),
                render(&site(), &secrets, &n).unwrap().yaml,
            ));
        }
        out
    })
}

fn facts_for(profile: &str) -> Facts {
    let (vendor, product, model, transport, size) = match profile {
        "dell-poweredge-r660" => (
            "Dell Inc.",
            "PowerEdge R660",
            "Dell BOSS-N1",
            "nvme",
            480_000_000_000u64,
        ),
        "dell-poweredge-r760" => (
            "Dell Inc.",
            "PowerEdge R760",
            "Dell BOSS-N1",
            "nvme",
            960_000_000_000,
        ),
        "hpe-proliant-dl360-gen11" => (
            "HPE",
            "ProLiant DL360 Gen11",
            "HPE NS204i-u Gen11 Boot Controller",
            "nvme",
            480_000_000_000,
        ),
        "qemu" => (
            "QEMU",
            "Standard PC (Q35 + ICH9, 2009)",
            "",
            "virtio",
            8 << 30,
        ),
        _ => ("Acme", "Box", "SSD 1", "sata", 500_000_000_000),
    };
    let json = serde_json::json!({
        "system": {"vendor": vendor, "product": product},
        "disks": [{"name": if transport == "virtio" { "vda" } else { "disk0" }, "size_bytes": size,
                   "model": if model.is_empty() { None } else { Some(model) }, "serial": format!("SER-{profile}"),
                   "transport": transport}],
    });
    Facts::from_inventory(&json)
}

// ---- the schema -----------------------------------------------------------------------------

fn schema() -> &'static serde_json::Value {
    static S: OnceLock<serde_json::Value> = OnceLock::new();
    S.get_or_init(|| {
        let path = std::env::var_os("TALOS_SCHEMA")
            .map(PathBuf::from)
            .unwrap_or_else(|| fixtures().join("config.schema.v1.13.9.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("TALOS_SCHEMA {path:?} cannot be read: {e}"));
        serde_json::from_str(&text).unwrap()
    })
}

/// The `$defs` entry for a document: `v1alpha1.Config`, or the one whose
/// `kind` enum names it. (The top-level `oneOf` gives useless errors.)
fn def_for(kind: &str) -> String {
    let defs = schema()["$defs"].as_object().unwrap();
    if kind == "v1alpha1" {
        return "v1alpha1.Config".to_owned();
    }
    defs.iter()
        .find(|(_, d)| {
            d["properties"]["kind"]["enum"]
                .as_array()
                .is_some_and(|e| e.iter().any(|k| k == kind))
        })
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| panic!("no schema definition for kind {kind}"))
}

fn schema_errors(doc: &Value) -> Vec<String> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("v1alpha1");
    let wrapper = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/$defs/{}", def_for(kind)),
        "$defs": schema()["$defs"],
    });
    let validator = jsonschema::draft202012::new(&wrapper).unwrap();
    let instance = serde_json::to_value(doc).unwrap();
    validator
        .iter_errors(&instance)
        .map(|e| format!("{kind} {}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_rendered_config_validates_against_the_talos_schema() {
    let mut checked = 0;
    for (name, text) in rendered() {
        let docs = yaml::parse_all(text).unwrap();
        assert!(docs.len() >= 2, "{name}");
        for doc in &docs {
            let errors = schema_errors(doc);
            assert!(errors.is_empty(), "{name}: {errors:#?}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} documents");
}

#[test]
fn the_schema_check_catches_what_talos_would_refuse() {
    // The check is live: gen config's own output fails on `persist`, an
    // unknown key fails, and a wrong enum fails.
    let upstream =
        std::fs::read_to_string(fixtures().join("upstream-v1.13-base-controlplane.yaml")).unwrap();
    let doc = yaml::parse_all(&upstream).unwrap().remove(0);
    assert!(
        schema_errors(&doc).iter().any(|e| e.contains("persist")),
        "upstream output has persist"
    );
    let mut ours = yaml::parse_all(&rendered()[0].1).unwrap().remove(0);
    ours["machine"]["install"]["diskSelector"] = serde_yaml_ng::from_str("{type: floppy}").unwrap();
    assert!(!schema_errors(&ours).is_empty());
    let mut ours = yaml::parse_all(&rendered()[0].1).unwrap().remove(0);
    ours["machine"]["instal"] = Value::Bool(true);
    assert!(!schema_errors(&ours).is_empty());
}

// ---- upstream equivalence --------------------------------------------------------------------

#[test]
fn base_documents_equal_talosctl_gen_config_output() {
    // Upstream: generate.NewInput("base", "https://base:6443", "1.28.0", secrets, contract v1.13).
    let secrets = upstream_secrets();
    let mut s = Site::new("base", "https://base:6443");
    s.kubernetes_version = "1.28.0".to_owned();
    for (role, file) in [
        (Role::Controlplane, "upstream-v1.13-base-controlplane.yaml"),
        (Role::Worker, "upstream-v1.13-base-worker.yaml"),
    ] {
        let mut n = node(role);
        n.install = InstallTarget::default();
        n.mac = None;
        let ours = documents(&s, &secrets, &n).unwrap();
        let mut theirs =
            yaml::parse_all(&std::fs::read_to_string(fixtures().join(file)).unwrap()).unwrap();
        theirs[0].as_mapping_mut().unwrap().shift_remove("persist");
        assert_eq!(ours, theirs, "{file}");
    }
}

// ---- semantic rules ---------------------------------------------------------------------------

fn findings_after(role_idx: usize, edit: impl Fn(&mut Vec<Value>)) -> Vec<String> {
    let mut docs = yaml::parse_all(&rendered()[role_idx].1).unwrap();
    edit(&mut docs);
    validate::validate(&docs, Mode::Metal)
        .into_iter()
        .filter(|f| f.is_error())
        .map(|f| f.to_string())
        .collect()
}

fn set(doc: &mut Value, path: &str, value: &str) {
    let mut cur = doc;
    let keys: Vec<&str> = path.split('.').collect();
    for k in &keys[..keys.len() - 1] {
        if cur.get(*k).is_none() {
            cur.as_mapping_mut()
                .unwrap()
                .insert(Value::from(*k), Value::Mapping(Default::default()));
        }
        cur = cur.get_mut(*k).unwrap();
    }
    let v: Value = serde_yaml_ng::from_str(value).unwrap();
    cur.as_mapping_mut()
        .unwrap()
        .insert(Value::from(*keys.last().unwrap()), v);
}

fn remove(doc: &mut Value, path: &str) {
    let (parent, last) = path.rsplit_once('.').unwrap();
    let mut cur = doc;
    for k in parent.split('.') {
        cur = cur.get_mut(k).unwrap();
    }
    cur.as_mapping_mut().unwrap().remove(last);
}

#[test]
fn rendered_configs_have_no_findings_at_all() {
    for (name, text) in rendered() {
        let docs = yaml::parse_all(text).unwrap();
        let f = validate::validate(&docs, Mode::Metal);
        assert!(f.is_empty(), "{name}: {f:#?}");
    }
}

#[test]
fn semantic_rules_of_talosctl_validate_metal() {
    const CP: usize = 1;
    const WORKER: usize = 2;
    type Edit = Box<dyn Fn(&mut Vec<Value>)>;
    let cases: Vec<(usize, &str, Edit)> = vec![
        (
            CP,
            "machine.install",
            Box::new(|d| remove(&mut d[0], "machine.install.disk")),
        ),
        (
            CP,
            "grubUseUKICmdline",
            Box::new(|d| {
                set(
                    &mut d[0],
                    "machine.install.extraKernelArgs",
                    "[console=ttyS0]",
                )
            }),
        ),
        (
            CP,
            "cluster.controlPlane.endpoint",
            Box::new(|d| set(&mut d[0], "cluster.controlPlane.endpoint", "10.0.0.1:6443")),
        ),
        (
            CP,
            "cluster.controlPlane.endpoint",
            Box::new(|d| {
                set(
                    &mut d[0],
                    "cluster.controlPlane.endpoint",
                    "https://fd00::1:6443",
                )
            }),
        ),
        (
            CP,
            "dnsDomain",
            Box::new(|d| set(&mut d[0], "cluster.network.dnsDomain", "bad_domain")),
        ),
        (
            CP,
            "machine.ca.key",
            Box::new(|d| set(&mut d[0], "machine.ca.key", "''")),
        ),
        (
            CP,
            "cni.name",
            Box::new(|d| set(&mut d[0], "cluster.network.cni", "{name: calico}")),
        ),
        (
            CP,
            "CNI none takes no urls",
            Box::new(|d| {
                set(
                    &mut d[0],
                    "cluster.network.cni",
                    "{name: none, urls: ['https://x/y.yaml']}",
                )
            }),
        ),
        (
            CP,
            "forwardKubeDNSToHost requires",
            Box::new(|d| set(&mut d[0], "machine.features.hostDNS.enabled", "false")),
        ),
        (
            CP,
            "persist",
            Box::new(|d| set(&mut d[0], "persist", "false")),
        ),
        (
            CP,
            "machine type",
            Box::new(|d| set(&mut d[0], "machine.type", "master")),
        ),
        (
            CP,
            "discovery needs",
            Box::new(|d| set(&mut d[0], "cluster.secret", "''")),
        ),
        (
            CP,
            "managed by Talos",
            Box::new(|d| set(&mut d[0], "machine.kubelet.extraConfig", "{port: 1}")),
        ),
        (
            CP,
            "outside Talos 1.13",
            Box::new(|d| {
                set(
                    &mut d[0],
                    "machine.kubelet.image",
                    "ghcr.io/siderolabs/kubelet:v1.28.0",
                )
            }),
        ),
        (
            CP,
            "vX.Y.Z",
            Box::new(|d| {
                set(
                    &mut d[0],
                    "cluster.apiServer.image",
                    "registry.k8s.io/kube-apiserver:latest",
                )
            }),
        ),
        (
            CP,
            "used twice",
            Box::new(|d| {
                set(
                    &mut d[0],
                    "cluster.inlineManifests",
                    "[{name: a, contents: x}, {name: a, contents: y}]",
                )
            }),
        ),
        (
            CP,
            "label",
            Box::new(|d| set(&mut d[0], "machine.nodeLabels", "{'bad key': x}")),
        ),
        (
            CP,
            "size matcher",
            Box::new(|d| set(&mut d[0], "machine.install.diskSelector", "{size: huge}")),
        ),
        (
            CP,
            "empty selector",
            Box::new(|d| set(&mut d[0], "machine.install.diskSelector", "{}")),
        ),
        (
            WORKER,
            "must not carry the Talos CA key",
            Box::new(|d| set(&mut d[0], "machine.ca.key", "a2V5")),
        ),
        (
            WORKER,
            "must not carry the Kubernetes CA key",
            Box::new(|d| set(&mut d[0], "cluster.ca.key", "a2V5")),
        ),
        (
            WORKER,
            "etcd",
            Box::new(|d| set(&mut d[0], "cluster.etcd", "{ca: {crt: a, key: b}}")),
        ),
        (
            CP,
            "auto: off",
            Box::new(|d| set(&mut d[1], "hostname", "n1")),
        ),
        (
            CP,
            "not a valid host name",
            Box::new(|d| {
                set(&mut d[1], "hostname", "bad_name");
                set(&mut d[1], "auto", "'off'");
            }),
        ),
        (
            CP,
            "either auto or hostname",
            Box::new(|d| remove_top(&mut d[1], "auto")),
        ),
        (
            CP,
            "duplicate document",
            Box::new(|d| {
                let h = d[1].clone();
                d.push(h);
            }),
        ),
        (
            CP,
            "unknown document kind",
            Box::new(|d| {
                d.push(serde_yaml_ng::from_str("apiVersion: v1alpha1\nkind: Nope\n").unwrap())
            }),
        ),
        (
            CP,
            "no v1alpha1 document",
            Box::new(|d| {
                d.remove(0);
            }),
        ),
        (
            CP,
            "conflicts with machine.network.hostname",
            Box::new(|d| set(&mut d[0], "machine.network", "{hostname: x}")),
        ),
    ];
    for (idx, want, edit) in cases {
        let found = findings_after(idx, edit);
        assert!(
            found.iter().any(|f| f.contains(want)),
            "want {want:?}, got {found:#?}"
        );
    }
}

fn remove_top(doc: &mut Value, key: &str) {
    doc.as_mapping_mut().unwrap().remove(key);
}

#[test]
fn render_refuses_a_patch_that_breaks_the_rules() {
    let mut s = site();
    s.patches = vec![Patch::parse("site", "machine:\n  ca:\n    key: a2V5\n").unwrap()];
    let err = render(&s, &upstream_secrets(), &node(Role::Worker)).unwrap_err();
    assert!(
        err.to_string().contains("must not carry the Talos CA key"),
        "{err}"
    );
    let mut n = node(Role::Worker);
    let mut s = site();
    s.network = Some(StaticNetwork {
        prefix_len: 24,
        gateway: "10.0.0.1".parse().unwrap(),
        nameservers: vec![],
    });
    n.address = None;
    assert!(matches!(
        render(&s, &upstream_secrets(), &n),
        Err(render::RenderError::StaticNeeds("address"))
    ));
}

// ---- determinism, round trip, snapshots -----------------------------------------------------

#[test]
fn same_inputs_give_byte_identical_output() {
    let secrets = upstream_secrets();
    for role in [Role::SingleNode, Role::Controlplane, Role::Worker] {
        let a = render(&site(), &secrets, &node(role)).unwrap().yaml;
        let b = render(&site(), &secrets, &node(role)).unwrap().yaml;
        assert_eq!(a, b);
    }
    let other = SecretsBundle::generate(std::time::SystemTime::now()).unwrap();
    assert_ne!(
        render(&site(), &other, &node(Role::Worker)).unwrap().yaml,
        rendered()[2].1
    );
}

#[test]
fn rendered_yaml_parses_back_into_the_typed_model() {
    let secrets = upstream_secrets();
    for (role, idx) in [
        (Role::SingleNode, 0),
        (Role::Controlplane, 1),
        (Role::Worker, 2),
    ] {
        let docs = yaml::parse_all(&rendered()[idx].1).unwrap();
        let main: V1Alpha1 = serde_yaml_ng::from_value(docs[0].clone()).unwrap();
        let typed = documents(&site(), &secrets, &node(role)).unwrap();
        let expected: V1Alpha1 = serde_yaml_ng::from_value(typed[0].clone()).unwrap();
        assert_eq!(main, expected);
        let host: HostnameConfig = serde_yaml_ng::from_value(docs[1].clone()).unwrap();
        assert_eq!(host.auto.as_deref(), Some("stable"));
        assert_eq!(main.machine.ca.crt, b64(&secrets.os.crt));
        assert_eq!(main.machine.ca.key.is_empty(), role == Role::Worker);
        assert_eq!(
            main.cluster.allow_scheduling_on_control_planes,
            (role == Role::SingleNode).then_some(true)
        );
    }
}

/// Every secret value of the bundle replaced by a marker.
fn redact(text: &str, s: &SecretsBundle) -> String {
    let mut out = text.to_owned();
    for (name, value) in [
        ("os.crt", b64(&s.os.crt)),
        ("os.key", b64(&s.os.key)),
        ("k8s.crt", b64(&s.k8s.crt)),
        ("k8s.key", b64(&s.k8s.key)),
        ("etcd.crt", b64(&s.etcd.crt)),
        ("etcd.key", b64(&s.etcd.key)),
        ("aggregator.crt", b64(&s.aggregator.crt)),
        ("aggregator.key", b64(&s.aggregator.key)),
        ("serviceaccount.key", b64(&s.service_account_key)),
        ("cluster.id", s.cluster_id.clone()),
        ("cluster.secret", s.cluster_secret.clone()),
        ("bootstrap.token", s.bootstrap_token.clone()),
        ("trustd.token", s.trustd_token.clone()),
        ("secretbox", s.secretbox_secret.clone()),
    ] {
        out = out.replace(&value, &format!("<redacted {name}>"));
    }
    out
}

#[test]
fn snapshots_with_secrets_redacted() {
    let secrets = upstream_secrets();
    let dir = fixtures().join("snapshots");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    for (name, text) in rendered() {
        let got = redact(text, &secrets);
        assert!(!got.contains("LS0t"), "{name}: a PEM escaped redaction");
        let path = dir.join(format!("{name}.yaml"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{path:?} missing (run with UPDATE_SNAPSHOTS=1)"));
        assert_eq!(
            got, want,
            "{name} differs from its snapshot (UPDATE_SNAPSHOTS=1 to accept)"
        );
    }
}
