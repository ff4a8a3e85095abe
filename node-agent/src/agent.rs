//! `node-agent run`: find the hub, pin its CA, enroll, wait for approval, then
//! report health, fetch the assignment and renew the certificate at half-life,
//! until cancelled. Every network failure is retried with a capped backoff;
//! health reports wait in a bounded buffer meanwhile (see `health`).
//!
//! The private key never leaves this process: a fresh P-256 key per
//! enrollment and per renewal; only its CSR is sent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use proto::v1::enroll_request::Credential;
use proto::v1::enrollment_client::EnrollmentClient;
use proto::v1::{
    Action, AssignmentRequest, EnrollRequest, EnrollState, HealthBatch, InstallPhase, InstallPlan,
    InstallReport, MachineConfigRequest, RenewRequest,
};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::health::{BATCH_MAX, HealthBuffer, measure};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "no hub address: pass provisioner.url / provisioner.grpc on the kernel command line or flags"
    )]
    NoHub,
    #[error("no join token (provisioner.token)")]
    NoToken,
    #[error("fetching the hub CA from {url}: {why}")]
    FetchCa { url: String, why: String },
    #[error("the hub CA fingerprint sha256:{got} is not the pinned sha256:{pinned}")]
    PinMismatch { got: String, pinned: String },
    #[error("key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("connecting: {0}")]
    Connect(#[from] proto::client::ClientError),
    #[error("the hub refused: {0}")]
    Refused(tonic::Status),
    #[error("cancelled")]
    Cancelled,
}

/// What the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://ip:port` of the hub (for its CA certificate).
    pub url: String,
    pub grpc: SocketAddr,
    /// Pinned CA fingerprint (lowercase hex); `None` trusts the first CA seen.
    pub ca_sha256: Option<String>,
    pub token: String,
    /// Health interval; the hub's poll hint takes over once enrolled.
    pub interval: Option<Duration>,
    /// Filesystem root to measure ("/" except in tests).
    pub root: PathBuf,
    /// The inventory, as JSON, sent with each enrollment.
    pub inventory_json: String,
    pub buffer: usize,
    /// Carry out install assignments (else only report them).
    pub install: bool,
    /// Reboot once installed (the discovery image); off for tests and for
    /// the hub installing its own machine.
    pub reboot: bool,
    /// Where the STATE filesystem is built (a tmpfs in the discovery image).
    pub work_dir: PathBuf,
    /// Where disks are (`/dev`; a directory of image files in tests).
    pub dev_dir: PathBuf,
}

/// What the agent is doing, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub node_id: Option<String>,
    pub phase: &'static str,
    pub buffered: usize,
    pub acked_through: u64,
    pub dropped: u64,
    pub assignment: Option<String>,
    /// Certificates renewed since the last enrollment.
    pub renewals: u32,
    /// The last install's outcome: `installed <device>` or the error.
    pub install: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn now_s() -> i64 {
    now_ms() / 1000
}

use proto::hex::encode as hex;

/// GETs `<url>/ca.pem` over plain HTTP and checks it against the pin: the pin,
/// not the transport, is what makes it trustworthy.
pub async fn fetch_ca(url: &str, pin: Option<&str>) -> Result<Vec<u8>, AgentError> {
    use std::io::Read;
    let err = |why: String| AgentError::FetchCa {
        url: url.to_owned(),
        why,
    };
    let ca_url = format!("{}/ca.pem", url.trim_end_matches('/'));
    let fetched = tokio::task::spawn_blocking(move || {
        let (_, body) = crate::install::http_get(&ca_url, TIMEOUT).map_err(|e| e.to_string())?;
        let mut text = String::new();
        body.take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(text)
    })
    .await
    .map_err(|e| err(e.to_string()))?
    .map_err(err)?;
    let der =
        proto::pem::decode(&fetched, "CERTIFICATE").ok_or_else(|| err("no certificate".into()))?;
    let got = hex(&Sha256::digest(&der));
    match pin {
        Some(pinned) if pinned != got => Err(AgentError::PinMismatch {
            got,
            pinned: pinned.to_owned(),
        }),
        Some(_) => Ok(der),
        None => {
            tracing::warn!(fingerprint = %got, "no CA pin given: trusting the hub CA on first use");
            Ok(der)
        }
    }
}

enum Next {
    Continue,
    Reconnect,
    Install(Box<InstallPlan>),
}

struct Identity {
    key: KeyPair,
    cert: Vec<u8>,
    not_after: i64,
    issued_at: i64,
}

fn csr(key: &KeyPair) -> Result<Vec<u8>, AgentError> {
    Ok(CertificateParams::default()
        .serialize_request(key)?
        .der()
        .to_vec())
}

async fn connect(
    grpc: SocketAddr,
    ca: &[u8],
    id: Option<&Identity>,
) -> Result<EnrollmentClient<Channel>, AgentError> {
    let identity = id.map(|i| {
        (
            vec![CertificateDer::from(i.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(i.key.serialize_der())),
        )
    });
    let config = proto::client::client_config(ca, identity)?;
    let channel = proto::client::connect(grpc, config, TIMEOUT).await?;
    Ok(EnrollmentClient::new(channel))
}

/// Sleeps `d` unless cancelled first.
async fn pause(cancel: &CancellationToken, d: Duration) -> Result<(), AgentError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(AgentError::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(15))
}

/// The agent. `run` drives it until `cancel`.
pub struct Agent {
    config: AgentConfig,
    ca: Vec<u8>,
    buffer: HealthBuffer,
    boot_id: String,
    status: tokio::sync::watch::Sender<Status>,
    interval: Duration,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("grpc", &self.config.grpc)
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub fn new(config: AgentConfig) -> (Agent, tokio::sync::watch::Receiver<Status>) {
        let (status, rx) = tokio::sync::watch::channel(Status {
            phase: "starting",
            ..Status::default()
        });
        let mut random = [0u8; 8];
        // A boot id only has to differ between runs; a failing RNG leaves zeros.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        let agent = Agent {
            interval: config.interval.unwrap_or(Duration::from_secs(10)),
            buffer: HealthBuffer::new(config.buffer),
            config,
            ca: Vec::new(),
            // Random per run: a fresh sequence for the hub.
            boot_id: format!("b{}", hex(&random)),
            status,
        };
        (agent, rx)
    }

    fn set(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(f);
    }

    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), AgentError> {
        let mut attempt = 0;
        self.ca = loop {
            match fetch_ca(&self.config.url, self.config.ca_sha256.as_deref()).await {
                Ok(ca) => break ca,
                Err(e @ AgentError::PinMismatch { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "hub CA not reachable yet");
                    attempt += 1;
                    pause(&cancel, backoff(attempt)).await?;
                }
            }
        };
        tracing::info!(fingerprint = %hex(&Sha256::digest(&self.ca)), "hub CA pinned");
        loop {
            let identity = self.enroll(&cancel).await?;
            // Runs until the certificate can no longer be used (expired, revoked).
            match self.certified(identity, &cancel).await {
                Err(AgentError::Cancelled) => return Err(AgentError::Cancelled),
                Err(e) => {
                    tracing::warn!(error = %e, "certificate unusable; enrolling again");
                    pause(&cancel, Duration::from_secs(1)).await?;
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Enrolls (token), then polls (ticket) until approved.
    async fn enroll(&mut self, cancel: &CancellationToken) -> Result<Identity, AgentError> {
        let mut attempt = 0u32;
        let key = KeyPair::generate()?;
        let csr = csr(&key)?;
        let mut ticket: Option<String> = None;
        self.set(|s| s.phase = "enrolling");
        loop {
            let credential = match &ticket {
                Some(t) => Credential::Ticket(t.clone()),
                None => Credential::JoinToken(self.config.token.clone()),
            };
            let req = EnrollRequest {
                credential: Some(credential),
                csr_der: csr.clone(),
                inventory_json: self.config.inventory_json.clone(),
                agent_version: VERSION.into(),
            };
            let answer = match connect(self.config.grpc, &self.ca, None).await {
                Ok(mut c) => c.enroll(req).await.map(|r| r.into_inner()),
                Err(e) => {
                    tracing::info!(error = %e, "hub unreachable");
                    attempt += 1;
                    pause(cancel, backoff(attempt)).await?;
                    continue;
                }
            };
            match answer {
                Ok(r) if r.state == EnrollState::Approved as i32 => {
                    tracing::info!(node_id = %r.node_id, "approved; certificate received");
                    self.set(|s| {
                        s.node_id = Some(r.node_id.clone());
                        s.phase = "approved";
                    });
                    return Ok(Identity {
                        key,
                        cert: r.cert_der,
                        not_after: r.not_after_unix,
                        issued_at: now_s(),
                    });
                }
                Ok(r) => {
                    if !r.ticket.is_empty() {
                        tracing::info!(node_id = %r.node_id, "enrolled; waiting for approval");
                        ticket = Some(r.ticket.clone());
                    }
                    self.set(|s| {
                        s.node_id = Some(r.node_id.clone());
                        s.phase = "pending";
                    });
                    attempt = 0;
                    let wait = Duration::from_secs(u64::from(r.retry_after_secs.clamp(1, 300)));
                    pause(cancel, self.config.interval.unwrap_or(wait).min(wait)).await?;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "enrollment refused");
                    if status.code() == tonic::Code::Unauthenticated {
                        // A lost ticket (expired, or the hub forgot it): start over with the token.
                        ticket = None;
                    }
                    if status.code() == tonic::Code::PermissionDenied {
                        self.set(|s| s.phase = "rejected");
                    }
                    attempt += 1;
                    pause(cancel, backoff(attempt + 2)).await?;
                }
            }
        }
    }

    /// Reports health and fetches the assignment every interval; renews at
    /// half-life. Returns an error when the certificate is no longer usable.
    async fn certified(
        &mut self,
        mut id: Identity,
        cancel: &CancellationToken,
    ) -> Result<(), AgentError> {
        let mut client: Option<EnrollmentClient<Channel>> = None;
        let mut failures = 0u32;
        loop {
            let report = measure(&self.config.root, now_ms(), VERSION);
            self.buffer.push(report);
            if now_s() >= id.not_after {
                return Err(AgentError::Refused(tonic::Status::unauthenticated(
                    "certificate expired",
                )));
            }
            if client.is_none() {
                client = connect(self.config.grpc, &self.ca, Some(&id)).await.ok();
            }
            if let Some(c) = client.as_mut() {
                match self.exchange(c, &mut id).await {
                    Ok(Next::Continue) => failures = 0,
                    Ok(Next::Install(plan)) => {
                        let plan = *plan;
                        failures = 0;
                        if self.install(c, plan).await && self.config.reboot {
                            reboot();
                        }
                    }
                    // The open connection still uses the old certificate.
                    Ok(Next::Reconnect) => client = None,
                    Err(status) => {
                        tracing::info!(code = ?status.code(), message = status.message(), buffered = self.buffer.len(), "hub exchange failed");
                        client = None;
                        failures += 1;
                        // Refused outright (revoked, rejected): a new enrollment is the only way.
                        if matches!(status.code(), tonic::Code::PermissionDenied) || failures > 20 {
                            return Err(AgentError::Refused(status));
                        }
                    }
                }
            }
            let (buffered, dropped) = (self.buffer.len(), self.buffer.dropped());
            self.set(|s| {
                s.buffered = buffered;
                s.dropped = dropped;
            });
            pause(cancel, self.interval).await?;
        }
    }

    async fn exchange(
        &mut self,
        c: &mut EnrollmentClient<Channel>,
        id: &mut Identity,
    ) -> Result<Next, tonic::Status> {
        while !self.buffer.is_empty() {
            let batch = HealthBatch {
                boot_id: self.boot_id.clone(),
                reports: self.buffer.batch(BATCH_MAX),
            };
            let ack = c.report_health(batch).await?.into_inner();
            self.buffer.ack(ack.acked_through);
            self.set(|s| s.acked_through = ack.acked_through);
            if self
                .buffer
                .batch(1)
                .first()
                .is_some_and(|r| r.seq <= ack.acked_through)
            {
                break;
            }
        }
        let a = c.get_assignment(AssignmentRequest {}).await?.into_inner();
        if self.config.interval.is_none() && a.poll_secs > 0 {
            self.interval = Duration::from_secs(u64::from(a.poll_secs.clamp(1, 3600)));
        }
        if a.action == Action::Install as i32
            && self.config.install
            && let Some(plan) = a.install.clone()
        {
            return Ok(Next::Install(Box::new(plan)));
        }
        if !a.reason.is_empty() {
            tracing::debug!(reason = %a.reason, "waiting");
        }
        let summary = format!("{} {}", a.state, a.action);
        if self.status.borrow().assignment.as_deref() != Some(summary.as_str()) {
            let action =
                proto::v1::Action::try_from(a.action).map_or("unknown", |x| x.as_str_name());
            tracing::info!(state = %a.state, role = %a.role, action, "assignment");
            self.set(|s| s.assignment = Some(summary));
        }
        // Renew at half-life, with a new key.
        if now_s() >= id.issued_at + (id.not_after - id.issued_at) / 2 {
            let key = KeyPair::generate().map_err(|e| tonic::Status::internal(e.to_string()))?;
            let csr = csr(&key).map_err(|e| tonic::Status::internal(e.to_string()))?;
            let r = c.renew(RenewRequest { csr_der: csr }).await?.into_inner();
            tracing::info!("certificate renewed");
            self.set(|s| s.renewals += 1);
            *id = Identity {
                key,
                cert: r.cert_der,
                not_after: r.not_after_unix,
                issued_at: now_s(),
            };
            return Ok(Next::Reconnect);
        }
        Ok(Next::Continue)
    }

    /// Carries out an install assignment: config (with the install token),
    /// then the disk, reporting progress. True when the node is installed.
    async fn install(&mut self, c: &mut EnrollmentClient<Channel>, plan: InstallPlan) -> bool {
        self.set(|s| s.phase = "installing");
        tracing::info!(disk = %plan.disk, profile = %plan.profile, image = %plan.image_path, "installing Talos");
        let outcome = self.try_install(c, &plan).await;
        let (phase, message, sha) = match &outcome {
            Ok(done) => (
                InstallPhase::Done,
                format!("installed on {}", done.device.display()),
                done.config_sha256.clone(),
            ),
            Err(e) => (InstallPhase::Failed, e.clone(), String::new()),
        };
        let state = report(c, phase, 100, &message, &sha, &plan.disk).await;
        match (&outcome, state) {
            (Ok(_), Ok(state)) if state == "installed" => {
                tracing::info!(%message, "install done; the hub has the node as installed");
                self.set(|s| {
                    s.phase = "installed";
                    s.install = Some(message.clone());
                });
                true
            }
            (Ok(_), other) => {
                tracing::warn!(?other, "install done, but the hub did not confirm it");
                self.set(|s| s.install = Some(format!("unconfirmed: {message}")));
                false
            }
            (Err(e), _) => {
                tracing::error!(error = %e, "install failed");
                self.set(|s| {
                    s.phase = "approved";
                    s.install = Some(format!("failed: {e}"));
                });
                false
            }
        }
    }

    async fn try_install(
        &mut self,
        c: &mut EnrollmentClient<Channel>,
        plan: &InstallPlan,
    ) -> Result<crate::install::Installed, String> {
        let _ = report(
            c,
            InstallPhase::Started,
            0,
            &format!("disk {}", plan.disk),
            "",
            &plan.disk,
        )
        .await;
        let node_id = self.status.borrow().node_id.clone().unwrap_or_default();
        let cfg = c
            .get_machine_config(MachineConfigRequest {
                install_token: plan.install_token.clone(),
                node_id,
            })
            .await
            .map_err(|s| format!("machine config refused: {}", s.message()))?
            .into_inner();
        if hex(&Sha256::digest(&cfg.config)) != cfg.sha256 {
            return Err("the machine config does not match its hash".into());
        }
        tracing::info!(role = %cfg.role, sha256 = %cfg.sha256, bytes = cfg.config.len(), "machine config received");
        let inventory: serde_json::Value =
            serde_json::from_str(&self.config.inventory_json).unwrap_or_default();
        let p = crate::install::Plan {
            disk: plan.disk.clone(),
            serial: plan.disk_serial.clone(),
            wwid: plan.disk_wwid.clone(),
            size_bytes: plan.disk_size_bytes,
            image_url: format!(
                "{}{}",
                self.config.url.trim_end_matches('/'),
                plan.image_path
            ),
            image_sha256: plan.image_sha256.clone(),
            image_size: plan.image_size,
            zstd: plan.image_zstd,
            state_size: plan.state_size_bytes,
        };
        let device = crate::install::resolve(&p, &inventory, &self.config.dev_dir)
            .map_err(|e| e.to_string())?;
        tracing::info!(device = %device.display(), "writing the Talos image");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let work = self.config.work_dir.clone();
        let config = cfg.config;
        let job = tokio::task::spawn_blocking(move || {
            crate::install::install(&p, &config, &device, &work, &mut |pr| {
                let _ = tx.send(pr);
            })
        });
        tokio::pin!(job);
        let result = loop {
            tokio::select! {
                Some(pr) = rx.recv() => {
                    let (phase, pct, what) = match pr {
                        crate::install::Progress::Image { percent } => (InstallPhase::WritingImage, percent, "image"),
                        crate::install::Progress::Config => (InstallPhase::WritingConfig, 100, "STATE and partition table"),
                    };
                    tracing::info!(percent = pct, "install: {what}");
                    let _ = report(c, phase, pct, what, "", &plan.disk).await;
                }
                r = &mut job => break r,
            }
        };
        match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("install task: {e}")),
        }
    }
}

/// One ReportInstall; answers the node's state.
async fn report(
    c: &mut EnrollmentClient<Channel>,
    phase: InstallPhase,
    percent: u32,
    message: &str,
    sha: &str,
    disk: &str,
) -> Result<String, tonic::Status> {
    let r = c
        .report_install(InstallReport {
            phase: phase as i32,
            percent,
            message: message.to_owned(),
            config_sha256: sha.to_owned(),
            disk: disk.to_owned(),
        })
        .await;
    if let Err(e) = &r {
        tracing::warn!(code = ?e.code(), message = e.message(), "install report not delivered");
    }
    Ok(r?.into_inner().state)
}

/// Restarts the machine (the discovery image: the next network boot hands
/// off to the disk).
fn reboot() {
    tracing::info!("rebooting into the installed system");
    nix::unistd::sync();
    // Give the console a moment to flush.
    std::thread::sleep(Duration::from_millis(500));
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    tracing::error!(error = %e, "reboot failed");
}
