//! The agent against a real hub enrollment service on loopback: enroll, wait
//! for approval, report health; then the hub goes away and comes back (same
//! state directory, same port), and every report made meanwhile arrives
//! exactly once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use node_agent::agent::{Agent, AgentConfig, Status};
use provisioner::enroll::NodeId;
use provisioner::enroll::authority::AuthoritySettings;
use provisioner::enroll::service::EnrollServer;
use provisioner::store::EmbeddedStore;
use provisioner::timeline::Timeline;
use tokio_util::sync::CancellationToken;

struct Hub {
    server_task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
}

fn build(dir: &Path, addr: SocketAddr) -> EnrollServer {
    build_with(dir, addr, AuthoritySettings::default())
}

fn build_with(dir: &Path, addr: SocketAddr, settings: AuthoritySettings) -> EnrollServer {
    let store = EmbeddedStore::open(dir).expect("store");
    EnrollServer::build(
        addr,
        store,
        dir,
        settings,
        vec![],
        vec![addr.ip()],
        Arc::new(Timeline::default()),
    )
    .expect("enroll server")
}

fn start(server: EnrollServer) -> Hub {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let server_task = tokio::spawn(async move {
        server.run(c).await.expect("run");
    });
    Hub {
        server_task,
        cancel,
    }
}

/// Serves `pem` at any path over plain HTTP, as the hub's /ca.pem.
async fn serve_ca(pem: String) -> SocketAddr {
    serve_files(vec![(String::new(), pem.into_bytes())]).await
}

/// Serves each `(path, bytes)` over plain HTTP; an empty path matches any.
async fn serve_files(files: Vec<(String, Vec<u8>)>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let files = Arc::new(files);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let files = files.clone();
            tokio::spawn(async move {
                // The whole request head, however many segments it came in.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let body = files
                    .iter()
                    .find(|(p, _)| p.is_empty() || *p == path)
                    .map(|(_, b)| b.as_slice());
                let Some(body) = body else {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(body).await;
            });
        }
    });
    addr
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<Status>,
    what: &str,
    f: impl Fn(&Status) -> bool,
) -> Status {
    let r = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("timed out waiting for {what}: {:?}", rx.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_buffered_while_the_hub_is_down_arrives_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let server = build(dir.path(), port);
    let addr = server.local_addr().expect("addr");
    let authority = server.authority().clone();
    let token = authority
        .create_token("t".into(), Duration::from_secs(600), Some(1), false)
        .expect("token")
        .0
        .reveal();
    let ca_url = serve_ca(authority.ca().cert_pem()).await;
    let fingerprint = authority
        .ca()
        .fingerprint()
        .trim_start_matches("sha256:")
        .to_owned();
    let hub = start(server);

    let inventory = serde_json::json!({
        "system": {"vendor": "QEMU", "uuid": "6f1c2c6a-8e2b-4e43-9c57-0a1b2c3d4e5f", "serial": "SN-AGENT"},
        "nics": [{"name": "eth0", "mac": "52:54:00:aa:bb:cc"}],
    });
    let (agent, mut status) = Agent::new(AgentConfig {
        url: format!("http://{ca_url}"),
        grpc: addr,
        ca_sha256: Some(fingerprint),
        token,
        interval: Some(Duration::from_millis(150)),
        root: "/".into(),
        inventory_json: inventory.to_string(),
        buffer: 1000,
        install: true,
        reboot: false,
        work_dir: std::env::temp_dir(),
        dev_dir: "/dev".into(),
    });
    let cancel = CancellationToken::new();
    let agent_task = tokio::spawn(agent.run(cancel.clone()));

    let s = wait_for(&mut status, "pending", |s| s.phase == "pending").await;
    let id = NodeId::parse(s.node_id.as_deref().expect("node id")).expect("id");
    authority.approve(&id, None).expect("approve");
    wait_for(&mut status, "three acked reports", |s| s.acked_through >= 3).await;

    // The hub goes away; the agent keeps measuring into its buffer.
    hub.cancel.cancel();
    hub.server_task.await.expect("hub stopped");
    drop(authority);
    let s = wait_for(&mut status, "a buffer of 8", |s| s.buffered >= 8).await;
    let acked_before = s.acked_through;

    // The hub returns on the same port with the same state.
    let server = build(dir.path(), addr);
    let authority = server.authority().clone();
    let hub = start(server);
    let s = wait_for(&mut status, "the buffer drained", |s| {
        s.buffered == 0 && s.acked_through >= acked_before + 8
    })
    .await;
    cancel.cancel();
    let _ = agent_task.await;

    let node = authority.node(&id).expect("node");
    let seqs: Vec<u64> = authority
        .health_history(&id, 1000)
        .expect("history")
        .iter()
        .map(|h| h.report.seq)
        .collect();
    let n = seqs.len() as u64;
    assert!(
        n >= s.acked_through,
        "{n} stored, {} acked",
        s.acked_through
    );
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "every report once, in order"
    );
    assert_eq!(node.health_lost, 0);
    assert_eq!(node.health_reports, n);
    assert_eq!(s.dropped, 0);
    hub.cancel.cancel();
    let _ = hub.server_task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_stops_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = build(dir.path(), "127.0.0.1:0".parse().expect("addr"));
    let ca_url = serve_ca(server.authority().ca().cert_pem()).await;
    let e = node_agent::agent::fetch_ca(&format!("http://{ca_url}"), Some(&"00".repeat(32)))
        .await
        .expect_err("pin mismatch");
    assert!(
        matches!(e, node_agent::agent::AgentError::PinMismatch { .. }),
        "{e:?}"
    );
    let ok = node_agent::agent::fetch_ca(
        &format!("http://{ca_url}"),
        Some(
            server
                .authority()
                .ca()
                .fingerprint()
                .trim_start_matches("sha256:"),
        ),
    )
    .await
    .expect("pinned CA");
    assert_eq!(ok, server.authority().ca().cert_der().to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_renews_at_half_life_and_keeps_reporting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = AuthoritySettings::default();
    // Certificates that live 4 s: the agent must renew every 2 s.
    settings.registry.cert_ttl = Duration::from_secs(4);
    let server = build_with(dir.path(), "127.0.0.1:0".parse().expect("addr"), settings);
    let addr = server.local_addr().expect("addr");
    let authority = server.authority().clone();
    let token = authority
        .create_token("t".into(), Duration::from_secs(600), None, true)
        .expect("token")
        .0
        .reveal();
    let ca_url = serve_ca(authority.ca().cert_pem()).await;
    let hub = start(server);
    let inventory = serde_json::json!({"system": {"serial": "SN-RENEW"}, "nics": [{"mac": "52:54:00:aa:bb:01"}]});
    let (agent, mut status) = Agent::new(AgentConfig {
        url: format!("http://{ca_url}"),
        grpc: addr,
        ca_sha256: None,
        token,
        interval: Some(Duration::from_millis(250)),
        root: "/".into(),
        inventory_json: inventory.to_string(),
        buffer: 100,
        install: true,
        reboot: false,
        work_dir: std::env::temp_dir(),
        dev_dir: "/dev".into(),
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(agent.run(cancel.clone()));
    let s = wait_for(&mut status, "three renewals", |s| s.renewals >= 3).await;
    let after = s.acked_through;
    let s = wait_for(&mut status, "reports with a renewed certificate", |s| {
        s.acked_through >= after + 4
    })
    .await;
    assert_eq!(s.phase, "approved", "never fell back to enrolling: {s:?}");
    cancel.cancel();
    let _ = task.await;
    let id = NodeId::parse(s.node_id.as_deref().expect("id")).expect("id");
    let node = authority.node(&id).expect("node");
    assert_eq!(node.enrollments, 1, "renewed, not re-enrolled");
    assert!(
        node.events
            .iter()
            .filter(|e| e.what == "certificate renewed")
            .count()
            >= 3,
        "{:?}",
        node.events
    );
    hub.cancel.cancel();
    let _ = hub.server_task.await;
}

/// A stand-in for Talos's `metal-amd64.raw` (which cannot be downloaded
/// here): 16 MiB, a GPT with EFI, BIOS, BOOT and META like Talos's, each
/// partition filled with a pattern naming it.
fn stand_in_image() -> Vec<u8> {
    use node_agent::install::gpt::{Gpt, LINUX_FS, Partition, SECTOR};
    let sectors = 32768u64;
    let empty = Partition {
        type_guid: [0; 16],
        unique_guid: [0; 16],
        first_lba: 0,
        last_lba: 0,
        attributes: 0,
        name: String::new(),
    };
    let mut entries = vec![empty; 128];
    let layout = [
        ("EFI", 2048u64, 8191u64),
        ("BIOS", 8192, 10239),
        ("BOOT", 10240, 28671),
        ("META", 28672, 30719),
    ];
    let mut img = vec![0u8; (sectors * SECTOR) as usize];
    for (i, (name, first, last)) in layout.into_iter().enumerate() {
        entries[i] = Partition {
            type_guid: LINUX_FS,
            unique_guid: [i as u8 + 1; 16],
            first_lba: first,
            last_lba: last,
            attributes: 0,
            name: name.into(),
        };
        let pattern = format!("talos-stand-in {name} ");
        for (j, b) in img[(first * SECTOR) as usize..((last + 1) * SECTOR) as usize]
            .iter_mut()
            .enumerate()
        {
            *b = pattern.as_bytes()[j % pattern.len()];
        }
    }
    let gpt = Gpt {
        disk_guid: [0x42; 16],
        first_usable: 34,
        last_usable: sectors - 34,
        alternate_lba: sectors - 1,
        entries,
    };
    let mut mbr = vec![0u8; 512];
    mbr[446 + 4] = 0xEE;
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    for (at, bytes) in gpt.writes(&mbr) {
        img[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    img
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    proto::hex::encode(&sha2::Sha256::digest(b))
}

/// The whole install on a disk that is a file: assignment, config over mTLS
/// with the install token, image and STATE written, the hub told, and the
/// disk verified with xfsprogs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_agent_installs_talos_and_its_config() {
    use node_agent::install::gpt::{Gpt, SECTOR};
    use provisioner::install::{Installs, TalosImage};
    for tool in ["mkfs.xfs", "xfs_repair", "xfs_db"] {
        assert!(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is needed (apt-get install xfsprogs)"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut server = build(dir.path(), port);
    let addr = server.local_addr().expect("addr");
    let authority = server.authority().clone();
    let config = provisioner::config::Config::parse(&format!(
        "state_dir = {:?}\n[talos]\ncluster_name = \"lab\"\n",
        dir.path()
    ))
    .expect("config");
    let cluster = provisioner::cluster::ClusterService::open(
        dir.path(),
        &config.talos,
        addr.ip(),
        std::time::SystemTime::now(),
    )
    .expect("cluster");
    let image = stand_in_image();
    let image_path = "/boot/talos/metal-amd64.raw";
    let installs = Arc::new(Installs::new(
        authority.clone(),
        Arc::new(cluster),
        Some(TalosImage {
            path: image_path.into(),
            sha256: sha256_hex(&image),
            size: image.len() as u64,
            zstd: false,
        }),
        Arc::new(provisioner::audit::Audit::open(dir.path()).expect("audit")),
        100 << 20,
    ));
    server.set_installs(installs.clone());
    let token = authority
        .create_token("test".into(), Duration::from_secs(600), None, true)
        .expect("token")
        .0
        .reveal();
    let http = serve_files(vec![
        ("/ca.pem".into(), authority.ca().cert_pem().into_bytes()),
        (image_path.into(), image.clone()),
    ])
    .await;
    let hub = start(server);

    // The "disk": a 1 GiB sparse file (the qemu profile's minimum) named
    // like the inventory's disk.
    let disks = tempfile::tempdir().expect("tempdir");
    let disk_size = 1u64 << 30;
    std::fs::File::create(disks.path().join("vda"))
        .and_then(|f| f.set_len(disk_size))
        .expect("disk file");
    let inventory = serde_json::json!({
        "system": {"vendor": "QEMU", "product": "Standard PC (i440FX + PIIX, 1996)", "serial": "SN-INSTALL"},
        "firmware": {"mode": "bios"},
        "nics": [{"name": "eth0", "mac": "52:54:00:aa:bb:01", "link": true}],
        "disks": [
            {"name": "vda", "size_bytes": disk_size, "transport": "virtio", "serial": "VDISK-1"},
            {"name": "sr0", "size_bytes": 1u64 << 20, "transport": "sata", "removable": true}
        ],
    });
    let work = tempfile::tempdir().expect("tempdir");
    let (agent, mut status) = Agent::new(AgentConfig {
        url: format!("http://{http}"),
        grpc: addr,
        ca_sha256: None,
        token,
        interval: Some(Duration::from_millis(200)),
        root: "/".into(),
        inventory_json: inventory.to_string(),
        buffer: 100,
        install: true,
        reboot: false,
        work_dir: work.path().to_owned(),
        dev_dir: disks.path().to_owned(),
    });
    let cancel = CancellationToken::new();
    let agent_task = tokio::spawn(agent.run(cancel.clone()));
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        status.wait_for(|s| s.install.is_some()),
    )
    .await
    .is_ok();
    let s = status.borrow().clone();
    assert!(waited, "no install within 120 s: {s:?}");
    assert_eq!(s.phase, "installed", "{s:?}");
    let id = NodeId::parse(s.node_id.as_deref().expect("node id")).expect("id");
    let node = authority.node(&id).expect("node");
    assert_eq!(
        node.state,
        provisioner::enroll::registry::NodeState::Installed
    );
    let delivered = node
        .install
        .clone()
        .expect("install record")
        .config_sha256
        .expect("delivered");
    cancel.cancel();
    let _ = agent_task.await;
    hub.cancel.cancel();
    let _ = hub.server_task.await;

    // The disk: the image's partitions byte for byte, STATE after them,
    // both tables at the right ends.
    let read = |at: u64, len: u64| {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(disks.path().join("vda")).expect("open disk");
        f.seek(SeekFrom::Start(at)).expect("seek");
        let mut b = vec![0u8; len as usize];
        f.read_exact(&mut b).expect("read disk");
        b
    };
    // The image region plus STATE (the first 128 MiB), and the last sector.
    let disk = read(0, 128 << 20);
    let gpt = Gpt::parse(&disk[..34 * 512]).expect("primary GPT");
    let names: Vec<&str> = gpt
        .entries
        .iter()
        .filter(|p| p.is_used())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["EFI", "BIOS", "BOOT", "META", "STATE"]);
    for p in gpt
        .entries
        .iter()
        .filter(|p| p.is_used() && p.name != "STATE")
    {
        let r = p.offset() as usize..(p.offset() + p.len()) as usize;
        assert!(
            disk[r.clone()] == image[r],
            "partition {} differs from the image",
            p.name
        );
    }
    let state = gpt.find("STATE").expect("STATE").clone();
    assert_eq!(state.first_lba, 30720, "1 MiB aligned after META");
    assert_eq!(state.len(), 100 << 20);
    assert_eq!(gpt.alternate_lba, disk_size / SECTOR - 1);
    let backup = read(disk_size - SECTOR, SECTOR);
    assert_eq!(
        &backup[..8],
        b"EFI PART",
        "backup header at the disk's last sector"
    );
    let old_backup = (image.len() as u64 - SECTOR) as usize;
    assert_eq!(
        &disk[old_backup..old_backup + 8],
        &[0u8; 8],
        "the image's own backup header is gone"
    );

    // STATE: a clean xfs labelled STATE, with the delivered config in it.
    let region = &disk[state.offset() as usize..(state.offset() + state.len()) as usize];
    let state_file = work.path().join("state-check.img");
    std::fs::write(&state_file, region).expect("write STATE copy");
    let repair = std::process::Command::new("xfs_repair")
        .arg("-n")
        .arg(&state_file)
        .output()
        .expect("xfs_repair");
    assert!(
        repair.status.success(),
        "xfs_repair -n: {}",
        String::from_utf8_lossy(&repair.stderr)
    );
    let label = std::process::Command::new("xfs_db")
        .args(["-r", "-c", "label"])
        .arg(&state_file)
        .output()
        .expect("xfs_db");
    assert!(
        String::from_utf8_lossy(&label.stdout).contains("\"STATE\""),
        "{label:?}"
    );
    let ls = std::process::Command::new("xfs_db")
        .args(["-r", "-c", "ls /"])
        .arg(&state_file)
        .output()
        .expect("xfs_db");
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("config.yaml"),
        "{ls:?}"
    );
    let rendered = installs.render(&node).expect("render");
    assert_eq!(
        rendered.sha256, delivered,
        "the hub records the config it rendered"
    );
    let cfg = rendered.yaml.as_bytes();
    let at = region
        .windows(64)
        .position(|w| w == &cfg[..64])
        .expect("config bytes in STATE");
    assert_eq!(
        &region[at..at + cfg.len()],
        cfg,
        "config.yaml holds the delivered config"
    );
    assert_eq!(sha256_hex(cfg), delivered);
}
