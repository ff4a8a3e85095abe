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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{pem}",
                pem.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
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
