//! Enrollment benchmark (not a test): N simulated agents enroll with a hub
//! enrollment service over real mTLS on loopback, each with its own key, its
//! own TLS connection and an inventory like a QEMU VM's; then each reconnects
//! with its new certificate and sends one health report. Prints enrollments/s
//! and latency percentiles. Run by bench/enroll.sh.
//!
//! The per-source rate limit is raised for the run: every simulated agent
//! comes from 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::v1::enroll_request::Credential;
use proto::v1::enrollment_client::EnrollmentClient;
use proto::v1::{EnrollRequest, HealthBatch, HealthReport};
use provisioner::enroll::authority::AuthoritySettings;
use provisioner::enroll::service::EnrollServer;
use provisioner::store::EmbeddedStore;
use provisioner::timeline::Timeline;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

struct Sample {
    enroll: Duration,
    health: Duration,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let agents: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(agents), |a| a.parse())?;
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/inventory/qemu-q35-ovmf.expected.json"
    );
    let inventory: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture)?)?;

    let dir = tempfile::tempdir()?;
    let mut settings = AuthoritySettings::default();
    settings.rate.burst = u32::MAX / 2;
    settings.rate.per_sec = 1e9;
    let server = EnrollServer::build(
        "127.0.0.1:0".parse()?,
        EmbeddedStore::open(dir.path())?,
        dir.path(),
        settings,
        vec![],
        vec!["127.0.0.1".parse()?],
        Arc::new(Timeline::default()),
    )?;
    let addr = server.local_addr()?;
    let authority = server.authority().clone();
    let (token, _) =
        authority.create_token("bench".into(), Duration::from_secs(3600), None, true)?;
    let token = token.reveal();
    let ca = authority.ca().cert_der().to_vec();
    let cancel = CancellationToken::new();
    let hub = tokio::spawn(server.run(cancel.clone()));

    // Keys and CSRs are the agents' work, made before the clock starts.
    let mut prepared = Vec::with_capacity(agents);
    for i in 0..agents {
        let key = KeyPair::generate()?;
        let csr = CertificateParams::default()
            .serialize_request(&key)?
            .der()
            .to_vec();
        let mut inv = inventory.clone();
        inv["system"]["uuid"] = format!("00000000-0000-4000-8000-{i:012x}").into();
        inv["system"]["serial"] = format!("BENCH-{i:06}").into();
        inv["nics"] = serde_json::json!([{"name": "eth0", "mac": format!("02:00:00:{:02x}:{:02x}:{:02x}", i >> 16 & 0xff, i >> 8 & 0xff, i & 0xff)}]);
        prepared.push((key, csr, inv.to_string()));
    }
    let inventory_bytes = prepared.first().map_or(0, |p| p.2.len());

    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (key, csr, inv) in prepared {
        let (gate, ca, token) = (gate.clone(), ca.clone(), token.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let t0 = Instant::now();
            let config = proto::client::client_config(&ca, None).ok()?;
            let channel = proto::client::connect(addr, config, Duration::from_secs(60))
                .await
                .ok()?;
            let r = EnrollmentClient::new(channel)
                .enroll(EnrollRequest {
                    credential: Some(Credential::JoinToken(token)),
                    csr_der: csr,
                    inventory_json: inv,
                    agent_version: "bench".into(),
                })
                .await
                .ok()?
                .into_inner();
            let enroll = t0.elapsed();
            let t1 = Instant::now();
            let identity = (
                vec![CertificateDer::from(r.cert_der)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            );
            let config = proto::client::client_config(&ca, Some(identity)).ok()?;
            let channel = proto::client::connect(addr, config, Duration::from_secs(60))
                .await
                .ok()?;
            EnrollmentClient::new(channel)
                .report_health(HealthBatch {
                    boot_id: "bench".into(),
                    reports: vec![HealthReport {
                        seq: 1,
                        ..Default::default()
                    }],
                })
                .await
                .ok()?;
            Some(Sample {
                enroll,
                health: t1.elapsed(),
            })
        });
    }
    let mut samples = Vec::new();
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Some(s)) => samples.push(s),
            _ => failed += 1,
        }
    }
    let wall = started.elapsed();
    cancel.cancel();
    let _ = hub.await;

    let mut enroll: Vec<Duration> = samples.iter().map(|s| s.enroll).collect();
    let mut health: Vec<Duration> = samples.iter().map(|s| s.health).collect();
    enroll.sort();
    health.sort();
    let nodes = authority.nodes();
    println!(
        "agents={agents} concurrency={concurrency} inventory={inventory_bytes}B ok={} failed={failed} nodes_in_registry={}",
        samples.len(),
        nodes.len()
    );
    println!(
        "wall {:.2} s  ->  {:.0} agents/s (enroll + mTLS health report each)",
        wall.as_secs_f64(),
        samples.len() as f64 / wall.as_secs_f64()
    );
    println!("| step | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in [
        ("enroll (TLS connect + Enroll, fsync)", &enroll),
        ("health (mTLS connect + ReportHealth, fsync)", &health),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(percentile(v, 0.99)),
            ms(percentile(v, 1.0))
        );
    }
    Ok(())
}
