//! Every enrollment and lifecycle decision, as pure functions over the
//! registry's state: nodes, join tokens, revoked certificate serials and
//! duplicated UUIDs. Each operation takes `&self` and `now`, and returns a
//! `Plan`: the changes to persist and the answer. The shell (`authority`)
//! commits the changes, then `apply`s them, then answers; so nothing is
//! answered that is not durable, and a failed commit changes nothing.
//!
//! Lifecycle: discovered → pending → approved → installing → installed, and
//! rejected from anywhere. `discovered` is for machines known before they
//! enroll (BMC registration); an enrollment starts at `pending`. Health
//! (healthy / unhealthy) is derived from the age of the last report.
//!
//! Not here: sockets, TLS, the clock, the store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ca::{Ca, CaError, Issued};
use super::identity::{Claim, Resolution, resolve};
use super::token::{JoinToken, Refusal, TokenRecord};
use super::{NodeId, hex};

/// Largest inventory document accepted (JSON bytes).
pub const INVENTORY_MAX: usize = 256 * 1024;
/// Events kept per node.
pub const EVENTS_MAX: usize = 64;
/// Unexpired certificates remembered per node (for revocation on reject).
pub const CERTS_KEPT: usize = 16;
/// Reports accepted in one health batch.
pub const HEALTH_BATCH_MAX: usize = 512;
/// Nodes the registry holds.
pub const NODES_MAX: usize = 100_000;
/// Failed installs after which a node waits for the operator to approve it again.
pub const INSTALL_FAILURES_MAX: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Discovered,
    Pending,
    Approved,
    Rejected,
    Installing,
    Installed,
}

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        NodeState::Discovered,
        NodeState::Pending,
        NodeState::Approved,
        NodeState::Rejected,
        NodeState::Installing,
        NodeState::Installed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NodeState::Discovered => "discovered",
            NodeState::Pending => "pending",
            NodeState::Approved => "approved",
            NodeState::Rejected => "rejected",
            NodeState::Installing => "installing",
            NodeState::Installed => "installed",
        }
    }

    /// States in which a node holds (and may renew) a certificate.
    fn certified(self) -> bool {
        matches!(
            self,
            NodeState::Approved | NodeState::Installing | NodeState::Installed
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Controlplane,
    Worker,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "controlplane" => Ok(Role::Controlplane),
            "worker" => Ok(Role::Worker),
            other => Err(format!("unknown role {other:?} (controlplane or worker)")),
        }
    }
}

/// Lets a pending agent poll: bound to the key of the CSR it enrolled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub secret_sha256: String,
    pub key_sha256: String,
    pub expires: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRef {
    pub serial: String,
    pub not_after: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    pub at: u64,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub mount: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    pub sensor: String,
    pub celsius: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicLink {
    pub name: String,
    pub up: bool,
    pub speed_mbps: u32,
}

/// One health report as stored (validated copy of the agent's message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub seq: u64,
    pub at_ms: i64,
    pub received: u64,
    pub uptime_secs: f64,
    pub load: [f64; 3],
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub disks: Vec<DiskUsage>,
    pub temperatures: Vec<Temperature>,
    pub nics: Vec<NicLink>,
    pub agent_version: String,
}

/// A node's inventory document, held as its compact JSON text, deflated. A
/// parsed `serde_json::Value` of a 3.6 KB inventory takes several times that in
/// maps and small strings, and the registry holds one per node; deflate brings
/// the text to about a quarter. Readers inflate and parse when they need fields
/// (a show, an install, a list's vendor column), which is rare next to the
/// registry's lifetime. Cloning is a reference count, so listing nodes copies
/// no inventories. The store row keeps the plain JSON.
#[derive(Debug, Clone)]
pub struct Inventory(Arc<[u8]>);

/// Deflate level: 1 is the fastest; JSON still shrinks about fourfold.
const INVENTORY_DEFLATE: u8 = 1;

impl Inventory {
    pub fn new(v: &serde_json::Value) -> Inventory {
        Inventory::from_json(&v.to_string())
    }

    fn from_json(text: &str) -> Inventory {
        Inventory(miniz_oxide::deflate::compress_to_vec(text.as_bytes(), INVENTORY_DEFLATE).into())
    }

    /// The compact JSON text (`null` if the bytes are somehow damaged).
    pub fn text(&self) -> String {
        miniz_oxide::inflate::decompress_to_vec_with_limit(&self.0, 2 * INVENTORY_MAX)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| "null".to_owned())
    }

    /// Bytes the registry holds for it (deflated).
    pub fn held_bytes(&self) -> usize {
        self.0.len()
    }

    /// The document parsed.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.text()).unwrap_or_default()
    }

    /// `system.vendor` and `system.product`, for list views, without building
    /// the whole document.
    pub fn vendor_product(&self) -> (Option<String>, Option<String>) {
        #[derive(Deserialize, Default)]
        struct System {
            vendor: Option<String>,
            product: Option<String>,
        }
        #[derive(Deserialize, Default)]
        struct Doc {
            #[serde(default)]
            system: System,
        }
        let d: Doc = serde_json::from_str(&self.text()).unwrap_or_default();
        (d.system.vendor, d.system.product)
    }
}

impl Default for Inventory {
    fn default() -> Inventory {
        Inventory::from_json("null")
    }
}

impl PartialEq for Inventory {
    fn eq(&self, other: &Inventory) -> bool {
        self.text() == other.text()
    }
}

impl Serialize for Inventory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.text())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Inventory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Inventory, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(Inventory::from_json(raw.get()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub state: NodeState,
    pub created: u64,
    pub updated: u64,
    pub claim: Claim,
    pub inventory: Inventory,
    pub agent_version: String,
    /// Id of the join token of the latest enrollment.
    pub token: String,
    pub enrollments: u32,
    pub role: Option<Role>,
    pub ticket: Option<Ticket>,
    pub certs: Vec<CertRef>,
    pub last_seen: u64,
    pub peer: Option<IpAddr>,
    pub health: Option<HealthRecord>,
    pub health_boot: Option<String>,
    pub health_seq: u64,
    pub health_reports: u64,
    /// Sequence numbers never received (the agent's bounded buffer overflowed).
    pub health_lost: u64,
    pub events: Vec<NodeEvent>,
    /// The current (or last) install; absent in rows written before installs existed.
    #[serde(default)]
    pub install: Option<InstallRecord>,
}

/// A node's install as the hub tracks it. The install token's plaintext is
/// never stored: only its SHA-256, cleared when it is spent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRecord {
    pub token_sha256: Option<String>,
    pub token_expires: u64,
    /// Install tokens issued so far.
    pub attempts: u32,
    /// Failed attempts since the last approval.
    pub failures: u32,
    pub disk: String,
    pub profile: String,
    /// SHA-256 of the config delivered for this attempt, and when.
    pub config_sha256: Option<String>,
    pub delivered: Option<u64>,
    /// Last progress the agent reported.
    pub step: Option<InstallStep>,
    pub percent: u32,
    pub finished: Option<u64>,
}

/// Install progress, as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallStep {
    Started,
    WritingImage,
    WritingConfig,
    Done,
    Failed,
}

/// Why an install token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallRefusal {
    /// The node has no install under way.
    NoInstall,
    /// Already used: a config goes out once per token.
    Spent,
    Expired,
    Wrong,
}

impl Node {
    fn event(&mut self, now: u64, what: impl Into<String>) {
        self.events.push(NodeEvent {
            at: now,
            what: what.into(),
        });
        if self.events.len() > EVENTS_MAX {
            let extra = self.events.len() - EVENTS_MAX;
            self.events.drain(..extra);
        }
        self.updated = now;
    }

    /// `healthy` when the last report is younger than `stale`, else `unhealthy`;
    /// `None` before any report.
    pub fn health_status(&self, now_ms: u64, stale: Duration) -> Option<&'static str> {
        let last = u64::try_from(self.health.as_ref()?.at_ms).unwrap_or(0);
        let fresh =
            now_ms.saturating_sub(last) < u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
        Some(if fresh { "healthy" } else { "unhealthy" })
    }
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum Change {
    PutNode(Box<Node>),
    PutToken(TokenRecord),
    /// A revoked certificate serial (hex) and when it expires anyway.
    Revoke {
        serial: String,
        not_after: u64,
    },
    DuplicateUuid(String),
    /// The node's `index`-th report (1-based, over its whole life).
    Health {
        node: NodeId,
        index: u64,
        boot: String,
        report: Box<HealthRecord>,
    },
}

/// The changes to persist, and the answer to give once they are durable.
#[derive(Debug)]
pub struct Plan<T> {
    pub changes: Vec<Change>,
    pub outcome: T,
}

/// Why the registry refuses. Client-facing text stays generic where detail
/// would help an attacker (tokens, tickets).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("join token refused ({0:?})")]
    Token(Refusal),
    #[error("malformed join token")]
    TokenFormat,
    #[error("enrollment ticket refused")]
    Ticket,
    #[error("node {0} was rejected by the operator")]
    Rejected(NodeId),
    #[error("the inventory identifies nothing (no UUID, serial or MAC)")]
    NoIdentity,
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("CSR: {0}")]
    Csr(#[source] CaError),
    #[error("signing: {0}")]
    Sign(#[source] CaError),
    #[error("too many enrollment attempts from {0}")]
    RateLimited(IpAddr),
    #[error("the registry is full ({NODES_MAX} nodes)")]
    Full,
    #[error("no node {0}")]
    UnknownNode(String),
    #[error("no token {0}")]
    UnknownToken(String),
    #[error("node {id} is {state}, not approved")]
    NotApproved { id: NodeId, state: &'static str },
    #[error("certificate {0} is not current for its node")]
    StaleCert(String),
    #[error("health batch: {0}")]
    Health(String),
    #[error("install token refused ({0:?})")]
    InstallToken(InstallRefusal),
    #[error("node {id} is {state}: {why}")]
    InvalidTransition {
        id: NodeId,
        state: &'static str,
        why: &'static str,
    },
}

/// How a machine enrolls.
#[derive(Debug, Clone)]
pub enum Credential {
    Token(JoinToken),
    /// `<node id>.<secret>` from an earlier answer.
    Ticket(String),
}

#[derive(Debug, Clone)]
pub struct EnrollInput {
    pub credential: Credential,
    /// The CSR's public key (SubjectPublicKeyInfo DER; `ca::csr_public_key`
    /// verified the request's signature).
    pub public_key: Vec<u8>,
    pub claim: Claim,
    pub inventory: serde_json::Value,
    pub agent_version: String,
    pub peer: Option<IpAddr>,
}

#[derive(Debug)]
pub struct EnrollOutcome {
    pub node: NodeId,
    /// Set when a new ticket was made (token enrollments).
    pub ticket: Option<String>,
    pub issued: Option<Issued>,
    /// The node is new to the registry.
    pub new: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub cert_ttl: Duration,
    pub ticket_ttl: Duration,
}

/// An operator rule that approves matching machines without a human: every
/// selector given must equal (case-insensitively) what the inventory says.
/// The inventory is self-asserted, so a rule trusts anyone holding a join token
/// (the hub's discovery token is readable on the LAN) to tell the truth about
/// its hardware: use rules only where that is acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApprove {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial_prefix: Option<String>,
    pub role: Option<Role>,
}

impl AutoApprove {
    pub fn matches(&self, inventory: &serde_json::Value) -> bool {
        let sys = &inventory["system"];
        let eq = |want: &Option<String>, field: &str| {
            want.as_ref().is_none_or(|w| {
                sys[field]
                    .as_str()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(w.trim()))
            })
        };
        let prefix = self.serial_prefix.as_ref().is_none_or(|p| {
            sys["serial"]
                .as_str()
                .is_some_and(|s| s.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()))
        });
        // A rule with no selector would approve everything: never match.
        let any = self.vendor.is_some() || self.product.is_some() || self.serial_prefix.is_some();
        any && eq(&self.vendor, "vendor") && eq(&self.product, "product") && prefix
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    /// Auto-approval rules from the configuration.
    pub rules: Vec<AutoApprove>,
    pub nodes: BTreeMap<NodeId, Node>,
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Revoked serial (hex) -> expiry (unix s), after which it needs no listing.
    pub revoked: BTreeMap<String, u64>,
    pub duplicated: BTreeSet<String>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn ct_eq_hex(a_hex: &str, b: &[u8; 32]) -> bool {
    a_hex.as_bytes().ct_eq(hex(b).as_bytes()).into()
}

fn unix_s(now: std::time::SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Validates an agent's inventory document and extracts the identity claim
/// from it (`system.uuid`, `system.serial`, `nics[].mac`).
pub fn parse_inventory(json: &str) -> Result<(serde_json::Value, Claim), EnrollError> {
    if json.len() > INVENTORY_MAX {
        return Err(EnrollError::Inventory(format!(
            "{} bytes, limit {INVENTORY_MAX}",
            json.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| EnrollError::Inventory(e.to_string()))?;
    if !value.is_object() {
        return Err(EnrollError::Inventory("not a JSON object".into()));
    }
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let uuid = text(&value["system"]["uuid"]);
    let serial = text(&value["system"]["serial"]);
    let macs: Vec<crate::config::MacAddr> = value["nics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["mac"].as_str()?.parse().ok())
        .collect();
    let claim =
        Claim::new(uuid.as_deref(), serial.as_deref(), &macs).ok_or(EnrollError::NoIdentity)?;
    Ok((value, claim))
}

impl Registry {
    /// Applies durable changes to the in-memory state.
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::PutNode(node) => {
                    self.nodes.insert(node.id.clone(), (**node).clone());
                }
                Change::PutToken(t) => {
                    self.tokens.insert(t.id.clone(), t.clone());
                }
                Change::Revoke { serial, not_after } => {
                    self.revoked.insert(serial.clone(), *not_after);
                }
                Change::DuplicateUuid(u) => {
                    self.duplicated.insert(u.clone());
                }
                Change::Health { .. } => {}
            }
        }
    }

    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        self.revoked.contains_key(serial_hex)
    }

    fn node(&self, id: &NodeId) -> Result<&Node, EnrollError> {
        self.nodes
            .get(id)
            .ok_or_else(|| EnrollError::UnknownNode(id.to_string()))
    }

    /// Enroll (token) or poll (ticket).
    pub fn enroll(
        &self,
        input: EnrollInput,
        ca: &Ca,
        settings: Settings,
        now: std::time::SystemTime,
    ) -> Result<Plan<EnrollOutcome>, EnrollError> {
        match &input.credential {
            Credential::Token(token) => self.enroll_with_token(token, &input, ca, settings, now),
            Credential::Ticket(ticket) => self.poll(ticket, &input, ca, settings, now),
        }
    }

    fn enroll_with_token(
        &self,
        token: &JoinToken,
        input: &EnrollInput,
        ca: &Ca,
        settings: Settings,
        now: std::time::SystemTime,
    ) -> Result<Plan<EnrollOutcome>, EnrollError> {
        let t = unix_s(now);
        let record = self
            .tokens
            .get(token.id())
            .ok_or(EnrollError::Token(Refusal::Unknown))?;
        record.check(token, t).map_err(EnrollError::Token)?;
        let mut changes = Vec::new();
        let known = self.nodes.iter().map(|(id, n)| (id, &n.claim));
        let (mut node, new) = match resolve(&input.claim, known, &self.duplicated) {
            Resolution::Known(id) => {
                let node = self.node(&id)?.clone();
                if node.state == NodeState::Rejected {
                    return Err(EnrollError::Rejected(id));
                }
                (node, false)
            }
            Resolution::New { duplicate_uuid } => {
                if self.nodes.len() >= NODES_MAX {
                    return Err(EnrollError::Full);
                }
                if let Some(uuid) = duplicate_uuid {
                    changes.push(Change::DuplicateUuid(uuid));
                }
                let node = Node {
                    id: NodeId::random(),
                    state: NodeState::Pending,
                    created: t,
                    updated: t,
                    claim: input.claim.clone(),
                    inventory: Inventory::default(),
                    agent_version: String::new(),
                    token: String::new(),
                    enrollments: 0,
                    role: None,
                    ticket: None,
                    certs: Vec::new(),
                    last_seen: t,
                    peer: None,
                    health: None,
                    health_boot: None,
                    health_seq: 0,
                    health_reports: 0,
                    health_lost: 0,
                    events: Vec::new(),
                    install: None,
                };
                (node, true)
            }
        };
        let mut used = record.clone();
        used.uses += 1;
        changes.push(Change::PutToken(used));

        node.claim = input.claim.clone();
        node.inventory = Inventory::new(&input.inventory);
        node.agent_version = input.agent_version.clone();
        node.token = token.id().to_owned();
        node.enrollments += 1;
        node.last_seen = t;
        node.peer = input.peer;
        let rule = self.rules.iter().find(|r| r.matches(&input.inventory));
        let auto = record.auto_approve || rule.is_some();
        if new {
            node.event(t, format!("enrolled with token {}", token.id()));
        } else {
            node.event(
                t,
                format!("enrolled again with token {}, new key", token.id()),
            );
        }
        if auto {
            node.state = NodeState::Approved;
            match rule {
                Some(r) => {
                    node.role = node.role.or(r.role);
                    node.event(t, "approved automatically (hardware rule)");
                }
                None => node.event(t, "approved automatically (token)"),
            }
        } else if node.state != NodeState::Pending {
            // A known machine with a new key may be an impostor copying its
            // identity: approval is needed again.
            node.state = NodeState::Pending;
            node.event(t, "pending: approval needed for the new key");
        }
        let secret = super::random_bytes::<20>();
        let ticket = format!("{}.{}", node.id, hex(&secret));
        node.ticket = Some(Ticket {
            secret_sha256: hex(&sha256(hex(&secret).as_bytes())),
            key_sha256: hex(&sha256(&input.public_key)),
            expires: t + settings.ticket_ttl.as_secs(),
        });
        let issued = if node.state.certified() {
            let (issued, revoke) = issue(&mut node, ca, &input.public_key, settings, now)?;
            changes.extend(revoke);
            Some(issued)
        } else {
            None
        };
        let outcome = EnrollOutcome {
            node: node.id.clone(),
            ticket: Some(ticket),
            issued,
            new,
        };
        changes.push(Change::PutNode(Box::new(node)));
        Ok(Plan { changes, outcome })
    }

    fn poll(
        &self,
        ticket: &str,
        input: &EnrollInput,
        ca: &Ca,
        settings: Settings,
        now: std::time::SystemTime,
    ) -> Result<Plan<EnrollOutcome>, EnrollError> {
        let t = unix_s(now);
        let (id, secret) = ticket.split_once('.').ok_or(EnrollError::Ticket)?;
        let id = NodeId::parse(id).ok_or(EnrollError::Ticket)?;
        let node = self.nodes.get(&id).ok_or(EnrollError::Ticket)?;
        let held = node.ticket.as_ref().ok_or(EnrollError::Ticket)?;
        let secret_ok = ct_eq_hex(&held.secret_sha256, &sha256(secret.as_bytes()));
        let key_ok = ct_eq_hex(&held.key_sha256, &sha256(&input.public_key));
        if !secret_ok || !key_ok || t >= held.expires {
            return Err(EnrollError::Ticket);
        }
        match node.state {
            NodeState::Rejected => Err(EnrollError::Rejected(id)),
            state if state.certified() => {
                let mut node = node.clone();
                node.last_seen = t;
                node.peer = input.peer;
                let (issued, mut changes) = issue(&mut node, ca, &input.public_key, settings, now)?;
                changes.push(Change::PutNode(Box::new(node)));
                Ok(Plan {
                    outcome: EnrollOutcome {
                        node: id,
                        ticket: None,
                        issued: Some(issued),
                        new: false,
                    },
                    changes,
                })
            }
            // Still pending: nothing to persist (a poll must not cost an fsync).
            _ => Ok(Plan {
                changes: Vec::new(),
                outcome: EnrollOutcome {
                    node: id,
                    ticket: None,
                    issued: None,
                    new: false,
                },
            }),
        }
    }

    /// The operator approves a node (optionally setting its role).
    pub fn approve(
        &self,
        id: &NodeId,
        role: Option<Role>,
        now: u64,
    ) -> Result<Plan<()>, EnrollError> {
        let mut node = self.node(id)?.clone();
        match node.state {
            NodeState::Discovered | NodeState::Pending | NodeState::Rejected => {
                node.state = NodeState::Approved;
                node.event(now, "approved by the operator");
            }
            NodeState::Approved => {}
            // Approving again after failed installs allows new attempts.
            NodeState::Installing
                if node
                    .install
                    .as_ref()
                    .is_some_and(|i| i.failures >= INSTALL_FAILURES_MAX) =>
            {
                if let Some(i) = node.install.as_mut() {
                    i.failures = 0;
                }
                node.event(
                    now,
                    "approved again by the operator: install may be retried",
                );
            }
            NodeState::Installing | NodeState::Installed => {
                return Err(EnrollError::InvalidTransition {
                    id: id.clone(),
                    state: node.state.name(),
                    why: "already approved and installing or installed",
                });
            }
        }
        if let Some(role) = role {
            node.role = Some(role);
        }
        Ok(Plan {
            changes: vec![Change::PutNode(Box::new(node))],
            outcome: (),
        })
    }

    /// The operator rejects a node: its certificates are revoked at once.
    pub fn reject(&self, id: &NodeId, now: u64) -> Result<Plan<usize>, EnrollError> {
        let mut node = self.node(id)?.clone();
        let mut changes = Vec::new();
        for c in node.certs.drain(..) {
            if c.not_after > now && !self.revoked.contains_key(&c.serial) {
                changes.push(Change::Revoke {
                    serial: c.serial,
                    not_after: c.not_after,
                });
            }
        }
        let revoked = changes.len();
        node.state = NodeState::Rejected;
        node.ticket = None;
        node.event(
            now,
            format!("rejected by the operator; {revoked} certificate(s) revoked"),
        );
        changes.push(Change::PutNode(Box::new(node)));
        Ok(Plan {
            changes,
            outcome: revoked,
        })
    }

    /// A certified node asks for a certificate for a new key. `serial` is the
    /// serial of the client certificate it connected with (TLS verified it).
    pub fn renew(
        &self,
        id: &NodeId,
        serial: &str,
        public_key: &[u8],
        ca: &Ca,
        settings: Settings,
        now: std::time::SystemTime,
    ) -> Result<Plan<Issued>, EnrollError> {
        let mut node = self.node(id)?.clone();
        if !node.state.certified() {
            return Err(EnrollError::NotApproved {
                id: id.clone(),
                state: node.state.name(),
            });
        }
        if !node.certs.iter().any(|c| c.serial == serial) || self.is_revoked(serial) {
            return Err(EnrollError::StaleCert(serial.to_owned()));
        }
        let (issued, mut changes) = issue(&mut node, ca, public_key, settings, now)?;
        node.event(unix_s(now), "certificate renewed");
        changes.push(Change::PutNode(Box::new(node)));
        Ok(Plan {
            changes,
            outcome: issued,
        })
    }

    /// Stores the reports of `boot` newer than what the node already holds;
    /// answers the highest sequence number held.
    pub fn report_health(
        &self,
        id: &NodeId,
        boot: &str,
        mut reports: Vec<HealthRecord>,
        now: u64,
    ) -> Result<Plan<u64>, EnrollError> {
        let mut node = self.node(id)?.clone();
        if node.state == NodeState::Rejected {
            return Err(EnrollError::Rejected(id.clone()));
        }
        if boot.is_empty()
            || boot.len() > 64
            || !boot.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(EnrollError::Health(
                "boot_id must be 1-64 of [A-Za-z0-9-]".into(),
            ));
        }
        if reports.len() > HEALTH_BATCH_MAX {
            return Err(EnrollError::Health(format!(
                "{} reports, limit {HEALTH_BATCH_MAX}",
                reports.len()
            )));
        }
        reports.sort_by_key(|r| r.seq);
        if reports.windows(2).any(|w| w[0].seq == w[1].seq) || reports.iter().any(|r| r.seq == 0) {
            return Err(EnrollError::Health(
                "sequence numbers must be unique and > 0".into(),
            ));
        }
        let same_boot = node.health_boot.as_deref() == Some(boot);
        let mut last = if same_boot { node.health_seq } else { 0 };
        if !same_boot {
            node.health_boot = Some(boot.to_owned());
            node.event(now, "agent started (new health sequence)");
        }
        let mut changes = Vec::new();
        let fresh: Vec<HealthRecord> = reports.into_iter().filter(|r| r.seq > last).collect();
        for mut r in fresh {
            node.health_lost += r.seq - last - 1;
            last = r.seq;
            r.received = now;
            node.health_reports += 1;
            node.health = Some(r.clone());
            changes.push(Change::Health {
                node: id.clone(),
                index: node.health_reports,
                boot: boot.to_owned(),
                report: Box::new(r),
            });
        }
        if changes.is_empty() && same_boot {
            // A retry of what is already stored: acknowledge, persist nothing.
            return Ok(Plan {
                changes,
                outcome: last,
            });
        }
        node.health_seq = last;
        node.last_seen = now;
        changes.push(Change::PutNode(Box::new(node)));
        Ok(Plan {
            changes,
            outcome: last,
        })
    }

    /// The role a node installs with: its own, else controlplane while no
    /// other node holds that role, else worker.
    pub fn install_role(&self, id: &NodeId) -> Result<Role, EnrollError> {
        let node = self.node(id)?;
        Ok(node.role.unwrap_or_else(|| {
            if self.other_controlplanes(id) == 0 {
                Role::Controlplane
            } else {
                Role::Worker
            }
        }))
    }

    /// Nodes other than `id` that are (or are becoming) control planes.
    pub fn other_controlplanes(&self, id: &NodeId) -> usize {
        self.nodes
            .values()
            .filter(|n| &n.id != id && n.role == Some(Role::Controlplane) && n.state.certified())
            .count()
    }

    /// Starts (or restarts) a node's install: a new token (its hash), the
    /// disk, the role. Approved or installing nodes only.
    pub fn begin_install(
        &self,
        id: &NodeId,
        disk: &str,
        profile: &str,
        token_sha256: String,
        expires: u64,
        now: u64,
    ) -> Result<Plan<Role>, EnrollError> {
        let role = self.install_role(id)?;
        let mut node = self.node(id)?.clone();
        let not_now = |why| EnrollError::InvalidTransition {
            id: id.clone(),
            state: node.state.name(),
            why,
        };
        if !matches!(node.state, NodeState::Approved | NodeState::Installing) {
            return Err(not_now("only approved nodes install"));
        }
        let mut rec = node.install.clone().unwrap_or_default();
        if rec.failures >= INSTALL_FAILURES_MAX {
            return Err(not_now(
                "its install failed too often; approve it again to retry",
            ));
        }
        rec.token_sha256 = Some(token_sha256);
        rec.token_expires = expires;
        rec.attempts += 1;
        rec.disk = disk.to_owned();
        rec.profile = profile.to_owned();
        rec.config_sha256 = None;
        rec.delivered = None;
        rec.step = None;
        rec.percent = 0;
        rec.finished = None;
        let attempt = rec.attempts;
        node.install = Some(rec);
        node.role = Some(role);
        node.state = NodeState::Installing;
        node.event(
            now,
            format!(
                "install assigned: {} on {disk} (profile {profile}), attempt {attempt}",
                role.name()
            ),
        );
        Ok(Plan {
            changes: vec![Change::PutNode(Box::new(node))],
            outcome: role,
        })
    }

    /// Whether `token` is the node's current, unspent, unexpired install token.
    pub fn check_install_token(
        &self,
        id: &NodeId,
        token: &str,
        now: u64,
    ) -> Result<&InstallRecord, EnrollError> {
        let node = self.node(id)?;
        let refuse = |r| Err(EnrollError::InstallToken(r));
        let Some(rec) = node
            .install
            .as_ref()
            .filter(|_| node.state == NodeState::Installing)
        else {
            return refuse(InstallRefusal::NoInstall);
        };
        let Some(held) = rec.token_sha256.as_deref() else {
            return refuse(InstallRefusal::Spent);
        };
        if !ct_eq_hex(held, &sha256(token.as_bytes())) {
            return refuse(InstallRefusal::Wrong);
        }
        if now >= rec.token_expires {
            return refuse(InstallRefusal::Expired);
        }
        Ok(rec)
    }

    /// Spends the install token for the delivery of a config whose SHA-256
    /// is `config_sha256`.
    pub fn spend_install_token(
        &self,
        id: &NodeId,
        token: &str,
        config_sha256: &str,
        now: u64,
    ) -> Result<Plan<()>, EnrollError> {
        let mut rec = self.check_install_token(id, token, now)?.clone();
        let mut node = self.node(id)?.clone();
        rec.token_sha256 = None;
        rec.config_sha256 = Some(config_sha256.to_owned());
        rec.delivered = Some(now);
        node.install = Some(rec);
        node.event(
            now,
            format!(
                "machine config delivered (sha256 {})",
                config_sha256.get(..16).unwrap_or(config_sha256)
            ),
        );
        Ok(Plan {
            changes: vec![Change::PutNode(Box::new(node))],
            outcome: (),
        })
    }

    /// The agent's install progress. `Done` needs the SHA-256 of the config
    /// it wrote, which must be the one delivered; it makes the node installed.
    pub fn install_report(
        &self,
        id: &NodeId,
        step: InstallStep,
        percent: u32,
        message: &str,
        config_sha256: &str,
        now: u64,
    ) -> Result<Plan<NodeState>, EnrollError> {
        let mut node = self.node(id)?.clone();
        if node.state == NodeState::Installed && step == InstallStep::Done {
            // A retried final report.
            return Ok(Plan {
                changes: Vec::new(),
                outcome: node.state,
            });
        }
        let state = node.state.name();
        let wrong = |why| EnrollError::InvalidTransition {
            id: id.clone(),
            state,
            why,
        };
        let Some(mut rec) = node
            .install
            .clone()
            .filter(|_| node.state == NodeState::Installing)
        else {
            return Err(wrong("no install under way"));
        };
        let message: String = message.chars().take(200).collect();
        let changed = rec.step != Some(step);
        match step {
            InstallStep::Done => {
                let delivered = rec.config_sha256.as_deref();
                if delivered.is_none_or(|d| !d.eq_ignore_ascii_case(config_sha256)) {
                    return Err(wrong("the config on disk is not the one delivered"));
                }
                rec.finished = Some(now);
                rec.percent = 100;
                node.state = NodeState::Installed;
                node.event(
                    now,
                    format!("installed: Talos and its config on {}", rec.disk),
                );
            }
            InstallStep::Failed => {
                rec.failures += 1;
                rec.token_sha256 = None;
                node.event(
                    now,
                    format!("install failed (attempt {}): {message}", rec.attempts),
                );
            }
            _ => {
                rec.percent = percent.min(100);
                if changed {
                    node.event(now, format!("install: {step:?} {message}"));
                }
            }
        }
        rec.step = Some(step);
        node.install = Some(rec);
        node.last_seen = now;
        let outcome = node.state;
        Ok(Plan {
            changes: vec![Change::PutNode(Box::new(node))],
            outcome,
        })
    }

    pub fn create_token(&self, record: TokenRecord) -> Plan<()> {
        Plan {
            changes: vec![Change::PutToken(record)],
            outcome: (),
        }
    }

    pub fn revoke_token(&self, id: &str) -> Result<Plan<()>, EnrollError> {
        let mut t = self
            .tokens
            .get(id)
            .ok_or_else(|| EnrollError::UnknownToken(id.to_owned()))?
            .clone();
        t.revoked = true;
        Ok(Plan {
            changes: vec![Change::PutToken(t)],
            outcome: (),
        })
    }
}

/// Signs a certificate for the node's public key and records it on the node. A node
/// keeps at most `CERTS_KEPT` unexpired certificates: older ones are revoked
/// (the returned changes), so revocation on reject can never miss one.
fn issue(
    node: &mut Node,
    ca: &Ca,
    public_key: &[u8],
    settings: Settings,
    now: std::time::SystemTime,
) -> Result<(Issued, Vec<Change>), EnrollError> {
    let issued = ca
        .issue_node(public_key, &node.id, now, settings.cert_ttl)
        .map_err(EnrollError::Sign)?;
    let t = unix_s(now);
    node.certs.retain(|c| c.not_after > t);
    node.certs.push(CertRef {
        serial: hex(&issued.serial),
        not_after: issued.not_after,
    });
    let extra = node.certs.len().saturating_sub(CERTS_KEPT);
    let revoke = node
        .certs
        .drain(..extra)
        .map(|c| Change::Revoke {
            serial: c.serial,
            not_after: c.not_after,
        })
        .collect();
    node.event(
        t,
        format!("certificate issued, serial {}", hex(&issued.serial)),
    );
    Ok((issued, revoke))
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
