//! Installs over real gRPC + mTLS on loopback: assignment plans, machine
//! config delivery bound to the node's certificate and a single-use install
//! token, the audit log, progress reports, and the iPXE hand-off choice.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::v1::{Action, InstallPhase, InstallReport, MachineConfigRequest};
use provisioner::audit::Audit;
use provisioner::cluster::ClusterService;
use provisioner::config::Config;
use provisioner::enroll::Authority;
use provisioner::enroll::authority::AuthoritySettings;
use provisioner::enroll::registry::NodeState;
use provisioner::http::render::Platform;
use provisioner::install::{Installs, TalosImage};
use provisioner::profiles::HandOff;
use tonic::Code;

mod common;
use common::*;

const IMAGE: &str = "/boot/talos/metal-amd64.raw.zst";

fn installs(
    image: bool,
) -> impl FnOnce(&std::path::Path, &Arc<Authority>) -> Option<Arc<Installs>> {
    move |dir, authority| {
        let config = Config::parse(&format!(
            "state_dir = {:?}\n[talos]\ncluster_name = \"lab\"\n",
            dir
        ))
        .unwrap();
        let cluster = ClusterService::open(
            dir,
            &config.talos,
            "10.0.0.1".parse().unwrap(),
            SystemTime::now(),
        )
        .unwrap();
        let image = image.then(|| TalosImage {
            path: IMAGE.into(),
            sha256: "ab".repeat(32),
            size: 123_456,
            zstd: true,
        });
        Some(Arc::new(Installs::new(
            authority.clone(),
            Arc::new(cluster),
            image,
            Arc::new(Audit::open(dir).unwrap()),
            100 << 20,
        )))
    }
}

fn audit_events(hub: &Hub) -> Vec<serde_json::Value> {
    provisioner::audit::read(&hub.dir.path().join("audit.log")).unwrap_or_default()
}

fn config_req(token: &str, node: &str) -> MachineConfigRequest {
    MachineConfigRequest {
        install_token: token.into(),
        node_id: node.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_node_installs_and_its_config_goes_only_to_it() {
    let hub = start(AuthoritySettings::default(), installs(true)).await;
    let token = hub.token(None, false);
    let (a_id, a) = enrolled(&hub, &token, U1, "SN-A", "52:54:00:00:00:0a").await;
    let mut ca = hub.client(Some(&a)).await.unwrap();

    // The assignment: install, with the plan the profile and inventory give.
    let asg = assignment(&mut ca).await;
    assert_eq!(asg.action, Action::Install as i32, "{asg:?}");
    assert_eq!(asg.state, "installing");
    assert_eq!(
        asg.role, "controlplane",
        "the first node is the control plane"
    );
    let plan = asg.install.clone().unwrap();
    assert_eq!(plan.disk, "vda");
    assert_eq!(plan.disk_serial, "disk-SN-A");
    assert_eq!(plan.profile, "qemu");
    assert_eq!(plan.image_path, IMAGE);
    assert!(plan.image_zstd);
    assert_eq!(plan.state_size_bytes, 100 << 20);
    assert_eq!(plan.install_token.len(), 64);
    // Polling again hands out the same token (no new attempt per poll).
    let again = assignment(&mut ca).await;
    assert_eq!(again.install.unwrap().install_token, plan.install_token);
    assert_eq!(
        hub.authority.node(&a_id).unwrap().install.unwrap().attempts,
        1
    );

    // A second machine with a valid certificate of its own.
    let (b_id, b) = enrolled(&hub, &token, "", "SN-B", "52:54:00:00:00:0b").await;
    let mut cb = hub.client(Some(&b)).await.unwrap();
    // ...asking for A's config by name: refused and audited.
    let err = cb
        .get_machine_config(config_req(&plan.install_token, a_id.as_str()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // ...presenting A's token as its own: refused too (B has no install token).
    let err = cb
        .get_machine_config(config_req(&plan.install_token, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let events = audit_events(&hub);
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "machine_config_refused")
        .collect();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert_eq!(refused[0]["node"], b_id.as_str());
    assert_eq!(refused[0]["asked"], a_id.as_str());
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("asked for node"),
        "{refused:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.to_string().contains(&plan.install_token)),
        "tokens never reach the audit log"
    );

    // No client certificate at all: refused before anything else.
    let mut anon = hub.client(None).await.unwrap();
    let err = anon
        .get_machine_config(config_req(&plan.install_token, a_id.as_str()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let last = audit_events(&hub).pop().unwrap();
    assert_eq!(last["event"], "machine_config_refused");
    assert!(last["node"].is_null());
    assert!(
        last["reason"].as_str().unwrap().contains("certificate"),
        "{last}"
    );

    // A gets its config, naming itself.
    let cfg = ca
        .get_machine_config(config_req(&plan.install_token, a_id.as_str()))
        .await
        .unwrap()
        .into_inner();
    let yaml = String::from_utf8(cfg.config.clone()).unwrap();
    assert_eq!(cfg.role, "single-node");
    assert_eq!(cfg.talos_version, provisioner::talos::TALOS_VERSION);
    assert_eq!(
        cfg.sha256,
        proto::hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&cfg.config))
    );
    let docs: Vec<serde_json::Value> = provisioner::talos::yaml::parse_all(&yaml)
        .unwrap()
        .into_iter()
        .map(|d| serde_json::to_value(d).unwrap())
        .collect();
    let main = &docs[0];
    assert_eq!(main["machine"]["type"], "controlplane");
    assert_eq!(
        main["machine"]["install"]["diskSelector"]["serial"],
        "disk-SN-A"
    );
    assert_eq!(main["machine"]["install"]["legacyBIOSSupport"], true);
    assert_eq!(
        main["machine"]["install"]["wipe"], true,
        "the qemu profile's patch"
    );
    assert_eq!(main["cluster"]["allowSchedulingOnControlPlanes"], true);
    assert_eq!(
        main["cluster"]["controlPlane"]["endpoint"],
        "https://10.0.0.1:6443"
    );
    assert!(
        main["machine"]["ca"]["key"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );

    // The same token again: a replay, refused and audited.
    let err = ca
        .get_machine_config(config_req(&plan.install_token, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("Spent"), "{err:?}");
    let events = audit_events(&hub);
    let delivered: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "machine_config_delivered")
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["node"], a_id.as_str());
    assert_eq!(delivered[0]["sha256"], cfg.sha256.as_str());
    let last = events.last().unwrap();
    assert_eq!(last["event"], "machine_config_refused");
    assert!(last["reason"].as_str().unwrap().contains("Spent"), "{last}");

    // Progress, then done with the wrong config hash: refused.
    let report = |phase: InstallPhase, sha: &str| InstallReport {
        phase: phase as i32,
        percent: 50,
        message: "test".into(),
        config_sha256: sha.into(),
        disk: "vda".into(),
    };
    let ack = ca
        .report_install(report(InstallPhase::WritingImage, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.state, "installing");
    let err = ca
        .report_install(report(InstallPhase::Done, &"0".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The real hash: installed; a retry of the final report is harmless.
    for _ in 0..2 {
        let ack = ca
            .report_install(report(InstallPhase::Done, &cfg.sha256))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.state, "installed");
    }
    let node = hub.authority.node(&a_id).unwrap();
    assert_eq!(node.state, NodeState::Installed);
    assert_eq!(
        node.install.as_ref().unwrap().config_sha256.as_deref(),
        Some(cfg.sha256.as_str())
    );
    let asg = assignment(&mut ca).await;
    assert_eq!(asg.action, Action::BootLocal as i32);
    assert!(asg.install.is_none());

    // The iPXE hand-off for its MAC follows the qemu profile: sanboot on
    // BIOS, exit on UEFI; B (not installed) gets none.
    let installs = hub.installs.clone().unwrap();
    let mac = "52:54:00:00:00:0a".parse().unwrap();
    assert_eq!(
        installs.local_boot(mac, Some(Platform::Pcbios)),
        Some((a_id.clone(), HandOff::Sanboot))
    );
    assert_eq!(
        installs.local_boot(mac, Some(Platform::Efi)),
        Some((a_id.clone(), HandOff::Exit))
    );
    assert_eq!(
        installs.local_boot("52:54:00:00:00:0b".parse().unwrap(), None),
        None
    );

    // B is the second node: a worker, whose config carries no CA keys.
    let asg = assignment(&mut cb).await;
    assert_eq!(asg.role, "worker");
    let cfg = cb
        .get_machine_config(config_req(&asg.install.unwrap().install_token, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cfg.role, "worker");
    let yaml = String::from_utf8(cfg.config).unwrap();
    let main =
        serde_json::to_value(&provisioner::talos::yaml::parse_all(&yaml).unwrap()[0]).unwrap();
    assert_eq!(main["machine"]["type"], "worker");
    assert_eq!(
        main["machine"]["ca"]["key"], "",
        "workers get no Talos CA key"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_expiry_and_missing_image() {
    let settings = AuthoritySettings {
        install_window: Duration::from_secs(60),
        ..AuthoritySettings::default()
    };
    let hub = start(settings, installs(true)).await;
    let token = hub.token(None, false);
    let (id, a) = enrolled(&hub, &token, U1, "SN-F", "52:54:00:00:00:0f").await;
    let mut c = hub.client(Some(&a)).await.unwrap();
    let failed = InstallReport {
        phase: InstallPhase::Failed as i32,
        message: "disk vanished".into(),
        ..InstallReport::default()
    };
    let mut tokens = Vec::new();
    for attempt in 1..=3 {
        let asg = assignment(&mut c).await;
        assert_eq!(asg.action, Action::Install as i32, "attempt {attempt}");
        let t = asg.install.unwrap().install_token;
        assert!(
            !tokens.contains(&t),
            "a failed attempt's token is never reused"
        );
        tokens.push(t);
        c.report_install(failed.clone()).await.unwrap();
    }
    // Three failures: the node waits for the operator.
    let asg = assignment(&mut c).await;
    assert_eq!(asg.action, Action::Wait as i32);
    assert!(asg.reason.contains("approve it again"), "{asg:?}");
    // An old token after a failure is spent.
    let err = c
        .get_machine_config(config_req(&tokens[0], ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    hub.authority.approve(&id, None).unwrap();
    let asg = assignment(&mut c).await;
    assert_eq!(
        asg.action,
        Action::Install as i32,
        "re-approval allows a retry"
    );
    let t = asg.install.unwrap().install_token;
    // Expired: checked against the registry with a clock past the window.
    let later = SystemTime::now() + Duration::from_secs(120);
    let err = hub
        .authority
        .check_install_token(&id, &t, later)
        .unwrap_err();
    assert!(err.to_string().contains("Expired"), "{err}");
    hub.stop().await;

    // No image configured: approved nodes wait, and say why.
    let hub = start(AuthoritySettings::default(), installs(false)).await;
    let token = hub.token(None, false);
    let (_, a) = enrolled(&hub, &token, U1, "SN-G", "52:54:00:00:00:10").await;
    let mut c = hub.client(Some(&a)).await.unwrap();
    let asg = assignment(&mut c).await;
    assert_eq!(asg.action, Action::Wait as i32);
    assert!(asg.reason.contains("[talos] image"), "{asg:?}");
    assert_eq!(asg.state, "approved");
    hub.stop().await;
}
