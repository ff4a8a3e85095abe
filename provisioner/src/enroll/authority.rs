//! The enrollment authority: the registry under one lock, with the store and
//! the CA. Every operation plans under the lock, commits the plan's changes in
//! one durable transaction, applies them to memory, and only then answers; a
//! failed commit changes nothing and answers an error. Used by the gRPC
//! service (agents) and the admin API (operator).
//!
//! Methods block (fsync): async callers use `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest;

use super::ca::{Ca, CaError, Issued, csr_public_key};
use super::rate::{RateLimit, RateLimiter};
use super::registry::{
    Change, Credential, EnrollError, EnrollInput, EnrollOutcome, HealthRecord, InstallStep, Node,
    NodeState, Plan, Registry, Role, Settings, parse_inventory,
};
use super::token::{JoinToken, TokenRecord};
use super::{NodeId, hex};
use crate::store::{EmbeddedStore, StoreError, StoredHealth};
use crate::timeline::{Source, Timeline, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error("enrollment store: {0}")]
    Store(#[from] StoreError),
    #[error("hub CA: {0}")]
    Ca(#[from] CaError),
}

/// Settings of the authority (from `[enroll]`).
#[derive(Debug, Clone)]
pub struct AuthoritySettings {
    /// `[[enroll.auto_approve]]` rules.
    pub rules: Vec<super::registry::AutoApprove>,
    pub registry: Settings,
    pub rate: RateLimit,
    /// How long the hub's own discovery token lives.
    pub boot_token_ttl: Duration,
    /// How often agents should report health and poll.
    pub poll: Duration,
    /// How long an install token lives (the install window).
    pub install_window: Duration,
}

impl Default for AuthoritySettings {
    fn default() -> Self {
        AuthoritySettings {
            rules: Vec::new(),
            registry: Settings {
                cert_ttl: Duration::from_secs(24 * 3600),
                ticket_ttl: Duration::from_secs(24 * 3600),
            },
            rate: RateLimit {
                burst: 20,
                per_sec: 2.0,
                sources: 4096,
            },
            boot_token_ttl: Duration::from_secs(4 * 3600),
            poll: Duration::from_secs(10),
            install_window: Duration::from_secs(30 * 60),
        }
    }
}

/// Enrollment counters for `/metrics`.
#[derive(Debug, Default)]
pub struct EnrollStats {
    /// Token enrollments accepted (new or known machines).
    pub enrollments: AtomicU64,
    /// Ticket polls answered (pending or approved).
    pub polls: AtomicU64,
    /// Enroll calls refused (token, ticket, CSR, inventory, rejected node).
    pub refused: AtomicU64,
    pub rate_limited: AtomicU64,
    pub certificates_issued: AtomicU64,
    pub renewals: AtomicU64,
    /// Health reports stored (retries of stored ones not counted).
    pub health_reports: AtomicU64,
    /// TLS handshakes that failed (bad, expired, foreign or revoked certificates; garbage).
    pub handshake_failures: AtomicU64,
}

/// Serials the TLS acceptor refuses, updated after each committed revocation.
#[derive(Debug, Default)]
pub struct Revocations(RwLock<HashSet<String>>);

impl Revocations {
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.0.read().map_or(true, |set| set.contains(&hex(serial)))
    }
}

/// What an agent's raw Enroll request carries.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    pub join_token: Option<String>,
    pub ticket: Option<String>,
    pub csr_der: Vec<u8>,
    pub inventory_json: String,
    pub agent_version: String,
}

/// A node's next step, as GetAssignment answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub state: NodeState,
    pub role: Option<Role>,
    pub action: AssignedAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignedAction {
    Wait,
    Install,
    BootLocal,
}

#[derive(Debug)]
pub struct Authority {
    registry: Mutex<Registry>,
    store: EmbeddedStore,
    ca: Arc<Ca>,
    settings: AuthoritySettings,
    rate: Mutex<RateLimiter>,
    revocations: Arc<Revocations>,
    timeline: Arc<Timeline>,
    /// The hub's own discovery token: plaintext in memory only, re-minted after a restart.
    boot_token: Mutex<Option<(JoinToken, u64)>>,
    /// Plaintext install tokens handed out (node -> token, expiry), so that an
    /// agent polling again gets the same one; lost on restart (only hashes are
    /// stored), after which a new one is minted.
    install_tokens: Mutex<HashMap<NodeId, (String, u64)>>,
    stats: Arc<EnrollStats>,
}

/// An install the hub assigned: the token (plaintext, for the agent), its
/// expiry and the role the node installs with.
#[derive(Debug, Clone)]
pub struct InstallGrant {
    pub token: String,
    pub expires: u64,
    pub role: Role,
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authority {
    pub fn open(
        store: EmbeddedStore,
        ca: Arc<Ca>,
        settings: AuthoritySettings,
        timeline: Arc<Timeline>,
    ) -> Result<Authority, AuthorityError> {
        let (mut registry, skipped) = store.load_registry()?;
        registry.rules = settings.rules.clone();
        tracing::info!(
            nodes = registry.nodes.len(),
            tokens = registry.tokens.len(),
            revoked = registry.revoked.len(),
            skipped,
            "enrollment registry loaded"
        );
        let revocations = Revocations(RwLock::new(registry.revoked.keys().cloned().collect()));
        Ok(Authority {
            registry: Mutex::new(registry),
            store,
            ca,
            rate: Mutex::new(RateLimiter::new(settings.rate)),
            settings,
            revocations: Arc::new(revocations),
            timeline,
            boot_token: Mutex::new(None),
            install_tokens: Mutex::default(),
            stats: Arc::default(),
        })
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    pub fn revocations(&self) -> Arc<Revocations> {
        self.revocations.clone()
    }

    pub fn settings(&self) -> &AuthoritySettings {
        &self.settings
    }

    pub fn stats(&self) -> &Arc<EnrollStats> {
        &self.stats
    }

    /// How many nodes are in each lifecycle state (for `/metrics`).
    pub fn state_counts(&self) -> Vec<(&'static str, u64)> {
        let reg = self.lock();
        let mut counts: std::collections::BTreeMap<&'static str, u64> =
            NodeState::ALL.iter().map(|s| (s.name(), 0)).collect();
        for n in reg.nodes.values() {
            *counts.entry(n.state.name()).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-applied
        // (apply is the last step and does not fail), so poisoning is ignored.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans under the lock, commits, applies: the one path every change takes.
    fn run<T>(
        &self,
        plan: impl FnOnce(&Registry) -> Result<Plan<T>, EnrollError>,
    ) -> Result<T, AuthorityError> {
        let mut reg = self.lock();
        let Plan { changes, outcome } = plan(&reg)?;
        let stored = changes
            .iter()
            .filter(|c| matches!(c, Change::Health { .. }))
            .count() as u64;
        self.stats
            .health_reports
            .fetch_add(stored, Ordering::Relaxed);
        if !changes.is_empty() {
            self.store.commit_registry(&changes)?;
            reg.apply(&changes);
            let revoked: Vec<&String> = changes
                .iter()
                .filter_map(|c| match c {
                    Change::Revoke { serial, .. } => Some(serial),
                    _ => None,
                })
                .collect();
            if !revoked.is_empty()
                && let Ok(mut set) = self.revocations.0.write()
            {
                set.extend(revoked.into_iter().cloned());
            }
        }
        Ok(outcome)
    }

    fn record(&self, node: &Node, what: &str) {
        let at = now_ms();
        for mac in &node.claim.macs {
            self.timeline
                .record(*mac, Source::Enroll, format!("{} {what}", node.id), at);
        }
    }

    /// Enroll or poll. Rate-limited per source address.
    pub fn enroll(
        &self,
        req: EnrollRequest,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<EnrollOutcome, AuthorityError> {
        if let Some(ip) = peer {
            let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
            if !rate.allow(ip, Instant::now()) {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Err(EnrollError::RateLimited(ip).into());
            }
        }
        let result = self.enroll_inner(req, peer, now);
        let counter = match &result {
            Err(_) => &self.stats.refused,
            Ok(o) if o.ticket.is_some() => &self.stats.enrollments,
            Ok(_) => &self.stats.polls,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(EnrollOutcome {
            issued: Some(_), ..
        }) = &result
        {
            self.stats
                .certificates_issued
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn enroll_inner(
        &self,
        req: EnrollRequest,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<EnrollOutcome, AuthorityError> {
        let credential = match (req.join_token, req.ticket) {
            (Some(token), None) => {
                Credential::Token(JoinToken::parse(&token).map_err(|_| EnrollError::TokenFormat)?)
            }
            (None, Some(ticket)) => Credential::Ticket(ticket),
            _ => return Err(EnrollError::TokenFormat.into()),
        };
        let public_key = csr_public_key(&req.csr_der).map_err(EnrollError::Csr)?;
        let (inventory, claim) = parse_inventory(&req.inventory_json)?;
        let mut agent_version = req.agent_version;
        agent_version.truncate(64);
        let input = EnrollInput {
            credential,
            public_key,
            claim,
            inventory,
            agent_version,
            peer,
        };
        let settings = self.settings.registry;
        let outcome = self.run(|reg| reg.enroll(input, &self.ca, settings, now))?;
        if let Some(node) = self.node(&outcome.node) {
            let what = match (&outcome.issued, outcome.ticket.is_some()) {
                (Some(_), _) => "enrolled: approved, certificate issued",
                (None, true) => "enrolled: pending approval",
                (None, false) => return Ok(outcome),
            };
            self.record(&node, what);
            tracing::info!(node_id = %node.id, state = node.state.name(), peer = ?peer, "{what}");
        }
        Ok(outcome)
    }

    pub fn approve(&self, id: &NodeId, role: Option<Role>) -> Result<Node, AuthorityError> {
        self.run(|reg| reg.approve(id, role, unix(SystemTime::now())))?;
        let node = self
            .node(id)
            .ok_or_else(|| EnrollError::UnknownNode(id.to_string()))?;
        self.record(&node, "approved by the operator");
        tracing::info!(node_id = %id, "node approved");
        Ok(node)
    }

    pub fn reject(&self, id: &NodeId) -> Result<usize, AuthorityError> {
        let revoked = self.run(|reg| reg.reject(id, unix(SystemTime::now())))?;
        if let Some(node) = self.node(id) {
            self.record(&node, "rejected by the operator");
        }
        tracing::info!(node_id = %id, revoked, "node rejected");
        Ok(revoked)
    }

    pub fn renew(
        &self,
        id: &NodeId,
        serial: &[u8],
        csr_der: &[u8],
        now: SystemTime,
    ) -> Result<Issued, AuthorityError> {
        let settings = self.settings.registry;
        let serial = hex(serial);
        let public_key = csr_public_key(csr_der).map_err(EnrollError::Csr)?;
        let issued =
            self.run(|reg| reg.renew(id, &serial, &public_key, &self.ca, settings, now))?;
        self.stats.renewals.fetch_add(1, Ordering::Relaxed);
        self.stats
            .certificates_issued
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(node_id = %id, "certificate renewed");
        Ok(issued)
    }

    pub fn report_health(
        &self,
        id: &NodeId,
        boot: &str,
        reports: Vec<HealthRecord>,
        now: SystemTime,
    ) -> Result<u64, AuthorityError> {
        let first = {
            let reg = self.lock();
            reg.nodes.get(id).is_some_and(|n| n.health_reports == 0)
        };
        let acked = self.run(|reg| reg.report_health(id, boot, reports, unix(now)))?;
        if first && let Some(node) = self.node(id) {
            self.record(&node, "first health report");
        }
        Ok(acked)
    }

    pub fn assignment(&self, id: &NodeId) -> Result<Assignment, AuthorityError> {
        let reg = self.lock();
        let node = reg
            .nodes
            .get(id)
            .ok_or_else(|| EnrollError::UnknownNode(id.to_string()))?;
        if node.state == NodeState::Rejected {
            return Err(EnrollError::Rejected(id.clone()).into());
        }
        let action = match node.state {
            NodeState::Installed => AssignedAction::BootLocal,
            // The service turns this into an install plan when it can make one.
            NodeState::Approved | NodeState::Installing => AssignedAction::Install,
            _ => AssignedAction::Wait,
        };
        Ok(Assignment {
            state: node.state,
            role: node.role,
            action,
        })
    }

    /// The node's install token for `disk`: the one already handed out while
    /// it is unspent, unexpired and has half its window left; else a new one
    /// (which starts a new attempt and is committed before it is returned).
    pub fn install_grant(
        &self,
        id: &NodeId,
        disk: &str,
        profile: &str,
        now: SystemTime,
    ) -> Result<InstallGrant, AuthorityError> {
        let t = unix(now);
        let window = self.settings.install_window.as_secs().max(60);
        let mut held = self
            .install_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((token, expires)) = held.get(id) {
            let reg = self.lock();
            let current = reg.check_install_token(id, token, t).is_ok();
            let same_disk = reg
                .nodes
                .get(id)
                .and_then(|n| n.install.as_ref())
                .is_some_and(|i| i.disk == disk);
            if current && same_disk && expires.saturating_sub(t) > window / 2 {
                let role = reg.install_role(id)?;
                return Ok(InstallGrant {
                    token: token.clone(),
                    expires: *expires,
                    role,
                });
            }
        }
        let token = hex(&super::random_bytes::<32>());
        let hash = hex(&sha2::Sha256::digest(token.as_bytes()));
        let expires = t + window;
        let role = self.run(|reg| reg.begin_install(id, disk, profile, hash, expires, t))?;
        held.insert(id.clone(), (token.clone(), expires));
        if let Some(node) = self.node(id) {
            self.record(&node, &format!("install assigned on {disk}"));
        }
        tracing::info!(node_id = %id, disk, profile, role = role.name(), "install assigned");
        Ok(InstallGrant {
            token,
            expires,
            role,
        })
    }

    /// Checks the install token without spending it.
    pub fn check_install_token(
        &self,
        id: &NodeId,
        token: &str,
        now: SystemTime,
    ) -> Result<(), AuthorityError> {
        self.lock().check_install_token(id, token, unix(now))?;
        Ok(())
    }

    /// Spends the install token for the delivery of a config (its SHA-256).
    pub fn spend_install_token(
        &self,
        id: &NodeId,
        token: &str,
        config_sha256: &str,
        now: SystemTime,
    ) -> Result<(), AuthorityError> {
        self.run(|reg| reg.spend_install_token(id, token, config_sha256, unix(now)))?;
        if let Some(node) = self.node(id) {
            self.record(&node, "machine config delivered");
        }
        Ok(())
    }

    pub fn install_report(
        &self,
        id: &NodeId,
        step: InstallStep,
        percent: u32,
        message: &str,
        config_sha256: &str,
        now: SystemTime,
    ) -> Result<NodeState, AuthorityError> {
        let before = self.node(id).map(|n| n.state);
        let state = self
            .run(|reg| reg.install_report(id, step, percent, message, config_sha256, unix(now)))?;
        let what = match step {
            InstallStep::Done if before != Some(NodeState::Installed) => Some("installed"),
            InstallStep::Failed => Some("install failed"),
            _ => None,
        };
        if let Some(what) = what
            && let Some(node) = self.node(id)
        {
            self.record(&node, what);
            tracing::info!(node_id = %id, message, "{what}");
        }
        Ok(state)
    }

    /// Control-plane nodes besides `id` (a lone control plane is single-node).
    pub fn other_controlplanes(&self, id: &NodeId) -> usize {
        self.lock().other_controlplanes(id)
    }

    /// The node whose inventory lists this MAC (for iPXE script choice only:
    /// a MAC is self-asserted and never unlocks a secret).
    pub fn node_by_mac(&self, mac: crate::config::MacAddr) -> Option<Node> {
        self.lock()
            .nodes
            .values()
            .filter(|n| n.claim.macs.contains(&mac) && n.state != NodeState::Rejected)
            .max_by_key(|n| n.updated)
            .cloned()
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.lock().nodes.values().cloned().collect()
    }

    pub fn node(&self, id: &NodeId) -> Option<Node> {
        self.lock().nodes.get(id).cloned()
    }

    pub fn health_history(
        &self,
        id: &NodeId,
        limit: usize,
    ) -> Result<Vec<StoredHealth>, AuthorityError> {
        Ok(self.store.health_history(id, limit)?)
    }

    /// Creates a join token; the plaintext is returned once and never stored.
    pub fn create_token(
        &self,
        description: String,
        ttl: Duration,
        max_uses: Option<u32>,
        auto_approve: bool,
    ) -> Result<(JoinToken, TokenRecord), AuthorityError> {
        let token = JoinToken::generate();
        let record = TokenRecord::new(
            &token,
            description,
            unix(SystemTime::now()),
            ttl.as_secs(),
            max_uses,
            auto_approve,
        );
        let r = record.clone();
        self.run(move |reg| Ok(reg.create_token(r)))?;
        tracing::info!(
            token = token.id(),
            auto_approve,
            ?max_uses,
            "join token created"
        );
        Ok((token, record))
    }

    pub fn tokens(&self) -> Vec<TokenRecord> {
        self.lock().tokens.values().cloned().collect()
    }

    pub fn revoke_token(&self, id: &str) -> Result<(), AuthorityError> {
        self.run(|reg| reg.revoke_token(id))?;
        tracing::info!(token = id, "join token revoked");
        Ok(())
    }

    /// The token the hub puts in its discovery scripts: enrollment only, no
    /// auto-approval, unlimited uses, short-lived. Re-minted when less than
    /// half its life is left (and after every restart: the plaintext is never
    /// stored).
    pub fn boot_token(&self) -> Result<String, AuthorityError> {
        let now = unix(SystemTime::now());
        let ttl = self.settings.boot_token_ttl;
        let mut held = self.boot_token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((token, expires)) = held.as_ref()
            && expires.saturating_sub(now) > ttl.as_secs() / 2
        {
            return Ok(token.reveal());
        }
        let token = JoinToken::generate();
        let mut record = TokenRecord::new(
            &token,
            "hub discovery scripts".into(),
            now,
            ttl.as_secs(),
            None,
            false,
        );
        record.boot = true;
        let r = record.clone();
        self.run(move |reg| Ok(reg.create_token(r)))?;
        *held = Some((token.clone(), record.expires));
        Ok(token.reveal())
    }
}
