//! Steady load for the crash tests: DHCP clients and enrolling agents that keep
//! going while the hub is killed and restarted under them, and write down every
//! answer the hub committed to (an ACK, a certificate) so the test can check,
//! afterwards, that the hub still knows all of them.
//!
//! Log lines (one `write` each, flushed):
//!   `ack MAC IP`               a DHCPACK for a new client
//!   `reboot-ok MAC IP`         INIT-REBOOT of an earlier client ACKed with its address
//!   `reboot-nak MAC IP`        ...NAKed: the hub forgot (or moved) the lease
//!   `reboot-moved MAC IP NEW`  ...ACKed with another address
//!   `double IP MAC OTHER`      one address ACKed to two machines
//!   `cert NODE CERT_HEX KEY_HEX`  a certificate the hub issued (auto-approved)

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::v1::enroll_request::Credential;
use proto::v1::enrollment_client::EnrollmentClient;
use proto::v1::{EnrollRequest, EnrollState, HealthBatch, HealthReport};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::boot::Http;
use crate::dhcp::{Clients, Failure, Kind};

/// A line-per-event log shared by tasks.
#[derive(Debug, Clone)]
pub struct EventLog(Arc<Mutex<std::fs::File>>);

impl EventLog {
    pub fn create(path: &std::path::Path) -> anyhow::Result<EventLog> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(EventLog(Arc::new(Mutex::new(f))))
    }

    pub fn line(&self, s: String) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(format!("{s}\n").as_bytes());
    }
}

pub fn mac_str(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug, Default)]
struct DhcpState {
    /// Every ACKed client and its address.
    bound: Vec<([u8; 6], Ipv4Addr)>,
    owner: HashMap<Ipv4Addr, [u8; 6]>,
    counts: HashMap<&'static str, u64>,
}

/// How long a load runs: `seconds`, or until `count` clients have started if
/// that comes first.
#[derive(Debug, Clone, Copy)]
pub struct Until {
    pub seconds: u64,
    pub count: Option<u64>,
}

/// The hub an enroll load talks to, and the join token its agents present.
#[derive(Debug, Clone)]
pub struct Target {
    /// The enrollment service, e.g. 10.77.0.1:9443.
    pub grpc: SocketAddr,
    /// The hub's HTTP port (for /ca.pem).
    pub http: SocketAddr,
    pub token: String,
}

/// New clients at `rate` per second (at most `concurrency` exchanges at once);
/// every `reboot_every`-th start is instead an INIT-REBOOT of an earlier client.
pub async fn dhcp_load(
    iface: &str,
    until: Until,
    rate: f64,
    concurrency: usize,
    reboot_every: u64,
    mac_prefix: [u8; 2],
    log: EventLog,
) -> anyhow::Result<serde_json::Value> {
    let clients = Clients::bind(
        iface,
        u32::from(mac_prefix[1]) << 24,
        &[Duration::from_millis(500); 3],
    )?;
    let state = Arc::new(Mutex::new(DhcpState::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let end = Instant::now() + Duration::from_secs(until.seconds);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    while Instant::now() < end && !crate::stopping() && until.count.is_none_or(|c| n < c) {
        tick.tick().await;
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            continue;
        };
        n += 1;
        let (clients, state, log) = (clients.clone(), state.clone(), log.clone());
        let reboot = {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            (reboot_every > 0 && n.is_multiple_of(reboot_every) && !st.bound.is_empty())
                .then(|| st.bound[(n as usize / 7) % st.bound.len()])
        };
        let id = n as u32;
        tasks.spawn(async move {
            let _permit = permit;
            let count = |k: &'static str| {
                *state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .counts
                    .entry(k)
                    .or_default() += 1;
            };
            match reboot {
                Some((mac, addr)) => match clients.init_reboot(mac, Kind::Plain, addr).await {
                    Ok(l) if l.addr == addr => {
                        count("reboot_ok");
                        log.line(format!("reboot-ok {} {addr}", mac_str(&mac)));
                    }
                    Ok(l) => {
                        count("reboot_moved");
                        log.line(format!("reboot-moved {} {addr} {}", mac_str(&mac), l.addr));
                    }
                    Err(Failure::Nak) => {
                        count("reboot_nak");
                        log.line(format!("reboot-nak {} {addr}", mac_str(&mac)));
                    }
                    Err(_) => count("reboot_timeout"),
                },
                None => {
                    let mac = [
                        mac_prefix[0],
                        mac_prefix[1],
                        (id >> 24) as u8,
                        (id >> 16) as u8,
                        (id >> 8) as u8,
                        id as u8,
                    ];
                    match clients.dora(mac, Kind::Plain).await {
                        Ok(lease) => {
                            count("acks");
                            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(other) = st.owner.insert(lease.addr, mac)
                                && other != mac
                            {
                                *st.counts.entry("doubles").or_default() += 1;
                                log.line(format!(
                                    "double {} {} {}",
                                    lease.addr,
                                    mac_str(&mac),
                                    mac_str(&other)
                                ));
                            }
                            st.bound.push((mac, lease.addr));
                            drop(st);
                            log.line(format!("ack {} {}", mac_str(&mac), lease.addr));
                        }
                        Err(Failure::NoOffer) => count("no_offer"),
                        Err(Failure::NoAck) => count("no_ack"),
                        Err(Failure::Nak) => count("nak"),
                    }
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let st = state.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = serde_json::json!({ "started": n });
    for (k, v) in &st.counts {
        out[*k] = (*v).into();
    }
    Ok(out)
}

/// The hub's CA (DER) from `GET /ca.pem` on its HTTP port; retried while the
/// hub is down.
pub async fn fetch_ca(http: SocketAddr, give_up: Instant) -> anyhow::Result<Vec<u8>> {
    loop {
        let attempt = async {
            let mut conn = Http::connect(http, Ipv4Addr::UNSPECIFIED).await?;
            let (text, _) = conn.get_text(http, "/ca.pem").await?;
            proto::pem::decode(&text, "CERTIFICATE")
                .ok_or_else(|| anyhow::anyhow!("no certificate in /ca.pem"))
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(der)) => return Ok(der),
            _ if Instant::now() > give_up => anyhow::bail!("no CA from http://{http}/ca.pem"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn hex(b: &[u8]) -> String {
    proto::hex::encode(b)
}

/// Agent `i`'s inventory: `template` (a real agent's report) with its own
/// identity, or a minimal one.
fn inventory(i: u64, seed: u32, template: Option<&serde_json::Value>) -> String {
    let uuid = format!("{seed:08x}-0000-4000-8000-{i:012x}");
    let serial = format!("STORM-{seed:08x}-{i}");
    let mac = format!(
        "02:ee:{:02x}:{:02x}:{:02x}:{:02x}",
        seed as u8,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8
    );
    if let Some(t) = template {
        let mut inv = t.clone();
        inv["system"]["uuid"] = uuid.into();
        inv["system"]["serial"] = serial.into();
        inv["nics"] = serde_json::json!([{"name": "eth0", "mac": mac}]);
        return inv.to_string();
    }
    serde_json::json!({
        "system": {
            "vendor": "storm",
            "product": "simulated",
            "uuid": uuid,
            "serial": serial,
        },
        "nics": [{"name": "eth0", "mac": mac}],
        "disks": [],
    })
    .to_string()
}

/// What the enrolling workers share.
#[derive(Debug)]
struct Enrolling {
    grpc: SocketAddr,
    token: String,
    ca: Vec<u8>,
    log: EventLog,
    seed: u32,
    end: Instant,
    pause: Duration,
    /// Stop after this many agents (None: until `end`).
    count: Option<u64>,
    template: Option<serde_json::Value>,
    next: AtomicU64,
    issued: AtomicU64,
    errors: AtomicU64,
    ca_changed: AtomicBool,
}

/// Agents that enroll with an auto-approve `token`, one after another on each
/// of `concurrency` workers; each keeps its key and retries until the hub
/// answers with a certificate.
pub async fn enroll_load(
    target: Target,
    until: Until,
    concurrency: usize,
    pause: Duration,
    template: Option<serde_json::Value>,
    log: EventLog,
) -> anyhow::Result<serde_json::Value> {
    let end = Instant::now() + Duration::from_secs(until.seconds);
    let shared = Arc::new(Enrolling {
        grpc: target.grpc,
        token: target.token,
        ca: fetch_ca(target.http, end).await?,
        log,
        seed: u32::from_be_bytes(crate::random::<4>()),
        end,
        pause,
        count: until.count,
        template,
        next: AtomicU64::new(0),
        issued: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        ca_changed: AtomicBool::new(false),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(enroll_worker(shared.clone()));
    }
    while workers.join_next().await.is_some() {}
    Ok(serde_json::json!({
        "issued": shared.issued.load(Relaxed),
        "failed_attempts": shared.errors.load(Relaxed),
        "ca_changed": shared.ca_changed.load(Relaxed),
    }))
}

async fn enroll_worker(s: Arc<Enrolling>) {
    let going = || Instant::now() < s.end && !crate::stopping();
    while going() {
        let i = s.next.fetch_add(1, Relaxed);
        if s.count.is_some_and(|c| i >= c) {
            return;
        }
        let Ok(key) = KeyPair::generate() else { return };
        let Ok(csr) = CertificateParams::default().serialize_request(&key) else {
            return;
        };
        let req = EnrollRequest {
            credential: Some(Credential::JoinToken(s.token.clone())),
            csr_der: csr.der().to_vec(),
            inventory_json: inventory(i, s.seed, s.template.as_ref()),
            agent_version: "storm".into(),
        };
        while going() {
            let attempt = async {
                let config = proto::client::client_config(&s.ca, None).ok()?;
                let ch = proto::client::connect(s.grpc, config, Duration::from_secs(3))
                    .await
                    .ok()?;
                EnrollmentClient::new(ch).enroll(req.clone()).await.ok()
            };
            let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), attempt).await else {
                s.errors.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let r = r.into_inner();
            if r.state == EnrollState::Approved as i32 && !r.cert_der.is_empty() {
                if r.ca_der != s.ca {
                    s.ca_changed.store(true, Relaxed);
                }
                s.issued.fetch_add(1, Relaxed);
                s.log.line(format!(
                    "cert {} {} {}",
                    r.node_id,
                    hex(&r.cert_der),
                    hex(&key.serialize_der())
                ));
                tokio::time::sleep(s.pause).await;
            } else {
                // Pending would mean the token's auto-approval was lost.
                s.log
                    .line(format!("not-approved {} state={}", r.node_id, r.state));
                s.errors.fetch_add(1, Relaxed);
            }
            break;
        }
    }
}

/// Every `cert` line of `log`: an mTLS health report with that certificate and
/// key must be accepted (the hub still knows the node, approved, not revoked).
pub async fn verify_certs(
    grpc: SocketAddr,
    http: SocketAddr,
    log: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let ca = fetch_ca(http, Instant::now() + Duration::from_secs(30)).await?;
    let text = std::fs::read_to_string(log)?;
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut checks = tokio::task::JoinSet::new();
    for line in text.lines().filter(|l| l.starts_with("cert ")) {
        let (line, ca, gate) = (line.to_owned(), ca.clone(), gate.clone());
        checks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let f: Vec<&str> = line.split(' ').collect();
            let [_, node, cert, key] = f[..] else {
                anyhow::bail!("malformed line: {line}");
            };
            let (Some(cert), Some(key)) = (proto::hex::decode(cert), proto::hex::decode(key))
            else {
                anyhow::bail!("{node}: bad hex");
            };
            let identity = (
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            );
            let config = proto::client::client_config(&ca, Some(identity))?;
            let ch = proto::client::connect(grpc, config, Duration::from_secs(10)).await?;
            EnrollmentClient::new(ch)
                .report_health(HealthBatch {
                    boot_id: format!("verify-{node}"),
                    reports: vec![HealthReport {
                        seq: 1,
                        ..Default::default()
                    }],
                })
                .await
                .map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
            anyhow::Ok(())
        });
    }
    let (mut ok, mut failed) = (0u64, Vec::new());
    while let Some(r) = checks.join_next().await {
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => failed.push(format!("{e:#}")),
            Err(e) => failed.push(format!("task: {e}")),
        }
    }
    Ok(serde_json::json!({ "ok": ok, "failed": failed }))
}
