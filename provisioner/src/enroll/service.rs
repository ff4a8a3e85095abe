//! The gRPC shell (tonic) of enrollment: our TLS acceptor feeds tonic, each
//! RPC takes the caller's identity from its verified client certificate (never
//! from a request field), runs the authority on a blocking thread, and maps
//! errors to `tonic::Status` in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::v1::enrollment_server::{Enrollment, EnrollmentServer};
use proto::v1::{
    Action, Assignment, AssignmentRequest, EnrollRequest, EnrollResponse, EnrollState, HealthAck,
    HealthBatch, InstallAck, InstallPhase, InstallReport, MachineConfig, MachineConfigRequest,
    RenewRequest, RenewResponse,
};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::authority::{AssignedAction, Authority, AuthorityError};
use super::registry::{DiskUsage, EnrollError, HealthRecord, InstallStep, NicLink, Temperature};
use super::tls::{ClientCert, PeerInfo, ServerCert, TlsConn};
use crate::install::{DeliveryError, Installs};

/// Handshakes in flight at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The hub's TLS certificate is re-issued when half of this is left.
const SERVER_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    #[error("binding the enrollment service to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("enrollment service: {0}")]
    Serve(#[from] tonic::transport::Error),
}

impl From<AuthorityError> for Status {
    fn from(e: AuthorityError) -> Status {
        match e {
            AuthorityError::Enroll(e) => match e {
                // Say nothing about which part of a credential was wrong.
                EnrollError::Token(reason) => {
                    tracing::info!(?reason, "join token refused");
                    Status::unauthenticated("join token refused")
                }
                EnrollError::TokenFormat | EnrollError::Ticket => {
                    Status::unauthenticated(e.to_string())
                }
                EnrollError::Rejected(_)
                | EnrollError::InstallToken(_)
                | EnrollError::NotApproved { .. }
                | EnrollError::StaleCert(_)
                | EnrollError::InvalidTransition { .. } => Status::permission_denied(e.to_string()),
                EnrollError::NoIdentity
                | EnrollError::Inventory(_)
                | EnrollError::Csr(_)
                | EnrollError::Health(_) => Status::invalid_argument(e.to_string()),
                EnrollError::RateLimited(_) | EnrollError::Full => {
                    Status::resource_exhausted(e.to_string())
                }
                EnrollError::UnknownNode(_) | EnrollError::UnknownToken(_) => {
                    Status::not_found(e.to_string())
                }
                EnrollError::Sign(e) => {
                    tracing::error!(error = %e, "signing failed");
                    Status::internal("internal error")
                }
            },
            AuthorityError::Store(e) => {
                tracing::error!(error = %e, "enrollment store failed");
                Status::unavailable("the hub could not persist this; retry")
            }
            AuthorityError::Ca(e) => {
                tracing::error!(error = %e, "CA failed");
                Status::internal("internal error")
            }
        }
    }
}

fn peer<T>(req: &Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

/// The verified client certificate of the caller, or `unauthenticated`.
fn caller<T>(req: &Request<T>) -> Result<ClientCert, Status> {
    peer(req)
        .and_then(|p| p.cert.clone())
        .ok_or_else(|| Status::unauthenticated("a client certificate from the hub is required"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthorityError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => {
            tracing::error!(error = %e, "enrollment task failed");
            Err(Status::internal("internal error"))
        }
    }
}

fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

/// The agent's report, validated and bounded, as the registry stores it.
fn health_record(r: proto::v1::HealthReport) -> HealthRecord {
    HealthRecord {
        seq: r.seq,
        at_ms: r.at_unix_ms,
        received: 0,
        uptime_secs: finite(r.uptime_secs),
        load: [finite(r.load1), finite(r.load5), finite(r.load15)],
        mem_total_bytes: r.mem_total_bytes,
        mem_available_bytes: r.mem_available_bytes,
        disks: r
            .disks
            .into_iter()
            .take(64)
            .map(|d| DiskUsage {
                mount: bounded(d.mount, 256),
                total_bytes: d.total_bytes,
                used_bytes: d.used_bytes,
            })
            .collect(),
        temperatures: r
            .temperatures
            .into_iter()
            .take(128)
            .map(|t| Temperature {
                sensor: bounded(t.sensor, 64),
                celsius: finite(t.celsius),
            })
            .collect(),
        nics: r
            .nics
            .into_iter()
            .take(64)
            .map(|n| NicLink {
                name: bounded(n.name, 32),
                up: n.up,
                speed_mbps: n.speed_mbps,
            })
            .collect(),
        agent_version: bounded(r.agent_version, 64),
    }
}

impl From<DeliveryError> for Status {
    fn from(e: DeliveryError) -> Status {
        match e {
            DeliveryError::NoCertificate => Status::unauthenticated(e.to_string()),
            DeliveryError::OtherNode { .. } => Status::permission_denied(e.to_string()),
            DeliveryError::Authority(e) => Status::from(e),
            DeliveryError::Render(_) => Status::failed_precondition(e.to_string()),
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct EnrollService {
    authority: Arc<Authority>,
    /// Talos installs; `None` when the hub only enrolls.
    installs: Option<Arc<Installs>>,
}

#[tonic::async_trait]
impl Enrollment for EnrollService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let addr = peer(&req).map(|p| p.addr.ip());
        let r = req.into_inner();
        let (join_token, ticket) = match r.credential {
            Some(proto::v1::enroll_request::Credential::JoinToken(t)) => (Some(t), None),
            Some(proto::v1::enroll_request::Credential::Ticket(t)) => (None, Some(t)),
            None => (None, None),
        };
        let raw = super::authority::EnrollRequest {
            join_token,
            ticket,
            csr_der: r.csr_der,
            inventory_json: r.inventory_json,
            agent_version: r.agent_version,
        };
        let authority = self.authority.clone();
        let poll = authority.settings().poll.as_secs() as u32;
        let outcome = blocking(move || authority.enroll(raw, addr, SystemTime::now())).await?;
        let ca_der = self.authority.ca().cert_der().to_vec();
        let mut resp = EnrollResponse {
            node_id: outcome.node.to_string(),
            ticket: outcome.ticket.unwrap_or_default(),
            retry_after_secs: poll,
            ..Default::default()
        };
        match outcome.issued {
            Some(issued) => {
                resp.state = EnrollState::Approved as i32;
                resp.cert_der = issued.der.to_vec();
                resp.ca_der = ca_der;
                resp.not_after_unix = i64::try_from(issued.not_after).unwrap_or(i64::MAX);
            }
            None => resp.state = EnrollState::Pending as i32,
        }
        Ok(Response::new(resp))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let who = caller(&req)?;
        let csr = req.into_inner().csr_der;
        let authority = self.authority.clone();
        let issued =
            blocking(move || authority.renew(&who.node, &who.serial, &csr, SystemTime::now()))
                .await?;
        Ok(Response::new(RenewResponse {
            cert_der: issued.der.to_vec(),
            not_after_unix: i64::try_from(issued.not_after).unwrap_or(i64::MAX),
        }))
    }

    async fn report_health(
        &self,
        req: Request<HealthBatch>,
    ) -> Result<Response<HealthAck>, Status> {
        let who = caller(&req)?;
        let batch = req.into_inner();
        if batch.reports.len() > super::registry::HEALTH_BATCH_MAX {
            return Err(Status::invalid_argument("too many reports in one batch"));
        }
        let reports: Vec<HealthRecord> = batch.reports.into_iter().map(health_record).collect();
        let authority = self.authority.clone();
        let acked = blocking(move || {
            authority.report_health(&who.node, &batch.boot_id, reports, SystemTime::now())
        })
        .await?;
        Ok(Response::new(HealthAck {
            acked_through: acked,
        }))
    }

    async fn get_assignment(
        &self,
        req: Request<AssignmentRequest>,
    ) -> Result<Response<Assignment>, Status> {
        let who = caller(&req)?;
        let a = self.authority.assignment(&who.node).map_err(Status::from)?;
        let mut install = None;
        let mut reason = String::new();
        let action = match (a.action, &self.installs) {
            (AssignedAction::Wait, _) => Action::Wait,
            (AssignedAction::BootLocal, _) => Action::BootLocal,
            (AssignedAction::Install, None) => {
                reason = "this hub only enrolls (enrollment without [talos])".into();
                Action::Wait
            }
            (AssignedAction::Install, Some(installs)) => {
                let (installs, id) = (installs.clone(), who.node.clone());
                match tokio::task::spawn_blocking(move || installs.plan(&id, SystemTime::now()))
                    .await
                {
                    Ok(Ok(plan)) => {
                        install = Some(plan);
                        Action::Install
                    }
                    Ok(Err(why)) => {
                        tracing::debug!(node_id = %who.node, why, "no install yet");
                        reason = why;
                        Action::Wait
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "install planning failed");
                        return Err(Status::internal("internal error"));
                    }
                }
            }
        };
        // The install grant may have just decided the role and moved the state.
        let (state, role) = self
            .authority
            .node(&who.node)
            .map_or((a.state, a.role), |n| (n.state, n.role));
        Ok(Response::new(Assignment {
            node_id: who.node.to_string(),
            state: state.name().to_owned(),
            role: role.map(|r| r.name().to_owned()).unwrap_or_default(),
            action: action as i32,
            poll_secs: self.authority.settings().poll.as_secs() as u32,
            install,
            reason,
        }))
    }

    async fn get_machine_config(
        &self,
        req: Request<MachineConfigRequest>,
    ) -> Result<Response<MachineConfig>, Status> {
        let peer_info = peer(&req).cloned();
        let r = req.into_inner();
        let Some(installs) = self.installs.clone() else {
            return Err(Status::failed_precondition(
                "this hub renders no Talos configs",
            ));
        };
        let cert = peer_info
            .as_ref()
            .and_then(|p| p.cert.as_ref())
            .map(|c| c.node.clone());
        let addr = peer_info.map(|p| p.addr.ip());
        let delivered = tokio::task::spawn_blocking(move || {
            installs.machine_config(
                cert.as_ref(),
                &r.node_id,
                &r.install_token,
                addr,
                SystemTime::now(),
            )
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "config delivery failed");
            Status::internal("internal error")
        })??;
        Ok(Response::new(MachineConfig {
            config: delivered.yaml.into_bytes(),
            sha256: delivered.sha256,
            role: delivered.role.as_str().to_owned(),
            talos_version: crate::talos::TALOS_VERSION.to_owned(),
        }))
    }

    async fn report_install(
        &self,
        req: Request<InstallReport>,
    ) -> Result<Response<InstallAck>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let step = match InstallPhase::try_from(r.phase) {
            Ok(InstallPhase::Started) => InstallStep::Started,
            Ok(InstallPhase::WritingImage) => InstallStep::WritingImage,
            Ok(InstallPhase::WritingConfig) => InstallStep::WritingConfig,
            Ok(InstallPhase::Done) => InstallStep::Done,
            Ok(InstallPhase::Failed) => InstallStep::Failed,
            _ => return Err(Status::invalid_argument("unknown install phase")),
        };
        let authority = self.authority.clone();
        let message = bounded(r.message, 200);
        let sha = bounded(r.config_sha256, 64);
        let state = blocking(move || {
            authority.install_report(
                &who.node,
                step,
                r.percent,
                &message,
                &sha,
                SystemTime::now(),
            )
        })
        .await?;
        Ok(Response::new(InstallAck {
            state: state.name().to_owned(),
        }))
    }
}

/// The bound enrollment service: listener, acceptor configuration, authority.
#[derive(Debug)]
pub struct EnrollServer {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cert: Arc<ServerCert>,
    authority: Arc<Authority>,
    installs: Option<Arc<Installs>>,
}

impl EnrollServer {
    /// Loads (or creates) the CA in `<state_dir>/ca`, opens the authority on
    /// `store`, issues the hub's server certificate for `names` and `ips`, and
    /// binds `addr`.
    pub fn build(
        addr: SocketAddr,
        store: crate::store::EmbeddedStore,
        state_dir: &std::path::Path,
        settings: super::authority::AuthoritySettings,
        names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
        timeline: Arc<crate::timeline::Timeline>,
    ) -> Result<EnrollServer, ServiceError> {
        let ca = super::ca::Ca::load_or_create(
            &state_dir.join("ca"),
            "provisioner hub",
            SystemTime::now(),
        )
        .map_err(AuthorityError::from)?;
        let cert = ServerCert::new(&ca, names, ips, SERVER_CERT_TTL)?;
        let authority = Arc::new(Authority::open(store, Arc::new(ca), settings, timeline)?);
        EnrollServer::bind(addr, authority, Arc::new(cert))
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// Turns on installs: assignments with plans, config delivery.
    pub fn set_installs(&mut self, installs: Arc<Installs>) {
        self.installs = Some(installs);
    }

    pub fn bind(
        addr: SocketAddr,
        authority: Arc<Authority>,
        cert: Arc<ServerCert>,
    ) -> Result<EnrollServer, ServiceError> {
        let std = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ServiceError::Bind { addr, source })?;
        let listener =
            TcpListener::from_std(std).map_err(|source| ServiceError::Bind { addr, source })?;
        let tls = super::tls::server_config(authority.ca(), cert.clone(), authority.revocations())?;
        Ok(EnrollServer {
            listener,
            tls,
            cert,
            authority,
            installs: None,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ServiceError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<TlsConn>(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        // The accept loop stops with the server, whichever way the server ends.
        let stop_accept = cancel.child_token();
        let accept = accept_loop(
            self.listener,
            acceptor,
            tx,
            self.cert,
            self.authority.clone(),
            stop_accept.clone(),
        );
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
        let service = EnrollmentServer::new(EnrollService {
            authority: self.authority,
            installs: self.installs,
        })
        .max_decoding_message_size(1 << 20);
        let serve = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(30))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned());
        let serve = async move {
            let r = serve.await;
            stop_accept.cancel();
            r
        };
        let ((), served) = tokio::join!(accept, serve);
        served.map_err(ServiceError::from)
    }
}

use tokio_stream::StreamExt;

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: tokio::sync::mpsc::Sender<TlsConn>,
    cert: Arc<ServerCert>,
    authority: Arc<Authority>,
    cancel: CancellationToken,
) {
    let mut handshakes: JoinSet<()> = JoinSet::new();
    let mut refresh = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = refresh.tick() => {
                match cert.refresh(authority.ca()) {
                    Ok(true) => tracing::info!("hub TLS certificate re-issued"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "re-issuing the hub TLS certificate"),
                }
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept(), if handshakes.len() < MAX_HANDSHAKES => {
                let (tcp, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let stats = authority.stats().clone();
                handshakes.spawn(async move {
                    let failed = || stats.handshake_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(TlsConn::new(tls, addr)).await;
                        }
                        Ok(Err(e)) => {
                            failed();
                            tracing::info!(peer = %addr, error = %e, "TLS handshake refused");
                        }
                        Err(_) => {
                            failed();
                            tracing::info!(peer = %addr, "TLS handshake timed out");
                        }
                    }
                });
            }
        }
    }
    handshakes.shutdown().await;
}
