//! The JSON REST API for nodes and join tokens, over the enrollment
//! authority. Two routers share these handlers:
//!
//! - `public`: read-only (nodes, inventory, health, the CA certificate), on
//!   the hub's HTTP port;
//! - `admin`: everything, including approve / reject and tokens, only on the
//!   admin socket (`<state_dir>/admin.sock`, mode 0600): on a LAN reachable by
//!   any machine, changing who is trusted takes local root.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::ClusterService;
use crate::config::MacAddr;
use crate::enroll::registry::{EnrollError, Node, NodeState, Role};
use crate::enroll::token::TokenRecord;
use crate::enroll::{Authority, AuthorityError, NodeId};
use crate::install::Installs;
use crate::timeline::now_ms;

type Shared = Arc<Authority>;

/// One mapping from authority errors to HTTP answers.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> ApiError {
        let status = match &e {
            AuthorityError::Enroll(EnrollError::UnknownNode(_) | EnrollError::UnknownToken(_)) => {
                StatusCode::NOT_FOUND
            }
            AuthorityError::Enroll(EnrollError::InvalidTransition { .. }) => StatusCode::CONFLICT,
            AuthorityError::Enroll(_) => StatusCode::BAD_REQUEST,
            AuthorityError::Store(_) | AuthorityError::Ca(_) => {
                tracing::error!(error = %e, "admin API");
                return ApiError(StatusCode::SERVICE_UNAVAILABLE, "internal error".into());
            }
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn node_id(s: &str) -> Result<NodeId, ApiError> {
    NodeId::parse(s).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {s:?}")))
}

/// Health reports older than this make a node `unhealthy`: three missed polls.
fn stale(a: &Authority) -> Duration {
    a.settings().poll * 3
}

/// The list view: identity, state and the last health, without the inventory.
/// Typed and borrowed, so a list of 10k nodes serializes straight to bytes
/// instead of through a `Value` tree of every field.
#[derive(Debug, Serialize)]
pub struct NodeSummary<'a> {
    id: &'a NodeId,
    state: NodeState,
    health: Option<&'static str>,
    role: Option<Role>,
    vendor: Option<String>,
    product: Option<String>,
    serial: &'a Option<String>,
    uuid: &'a Option<String>,
    macs: &'a BTreeSet<MacAddr>,
    peer: Option<IpAddr>,
    created: u64,
    last_seen: u64,
    health_reports: u64,
}

pub fn node_summary(n: &Node, now_ms: u64, stale: Duration) -> NodeSummary<'_> {
    let (vendor, product) = n.inventory.vendor_product();
    NodeSummary {
        id: &n.id,
        state: n.state,
        health: n.health_status(now_ms, stale),
        role: n.role,
        vendor,
        product,
        serial: &n.claim.serial,
        uuid: &n.claim.uuid,
        macs: &n.claim.macs,
        peer: n.peer,
        created: n.created,
        last_seen: n.last_seen,
        health_reports: n.health_reports,
    }
}

/// The full view: everything the hub knows about a node.
pub fn node_detail(n: &Node, now_ms: u64, stale: Duration) -> Value {
    let mut v = json!(node_summary(n, now_ms, stale));
    v["inventory"] = n.inventory.value();
    v["agent_version"] = json!(n.agent_version);
    v["enrollments"] = json!(n.enrollments);
    v["token"] = json!(n.token);
    v["certificates"] = json!(n.certs);
    v["last_health"] = json!(n.health);
    v["health_lost"] = json!(n.health_lost);
    v["events"] = json!(n.events);
    v["install"] = match &n.install {
        Some(i) => json!({
            "attempts": i.attempts,
            "failures": i.failures,
            "disk": i.disk,
            "profile": i.profile,
            "token_outstanding": i.token_sha256.is_some(),
            "token_expires": i.token_expires,
            "config_sha256": i.config_sha256,
            "delivered": i.delivered,
            "step": i.step,
            "percent": i.percent,
            "finished": i.finished,
        }),
        None => Value::Null,
    };
    v
}

fn token_view(t: &TokenRecord, now: u64) -> Value {
    json!({
        "id": t.id,
        "description": t.description,
        "created": t.created,
        "expires": t.expires,
        "expired": now >= t.expires,
        "max_uses": t.max_uses,
        "uses": t.uses,
        "auto_approve": t.auto_approve,
        "revoked": t.revoked,
        "boot": t.boot,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthorityError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn list_nodes(State(a): State<Shared>) -> Response {
    let now = now_ms();
    let stale = stale(&a);
    let nodes = a.nodes();
    let list: Vec<NodeSummary> = nodes.iter().map(|n| node_summary(n, now, stale)).collect();
    Json(list).into_response()
}

async fn show_node(
    State(a): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = node_id(&id)?;
    let n = a
        .node(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {id}")))?;
    Ok(Json(node_detail(&n, now_ms(), stale(&a))))
}

#[derive(Deserialize)]
struct HealthQuery {
    limit: Option<usize>,
}

async fn node_health(
    State(a): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<HealthQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = node_id(&id)?;
    let limit = q
        .limit
        .unwrap_or(100)
        .min(crate::store::HEALTH_KEPT as usize);
    let rows = blocking(move || a.health_history(&id, limit)).await?;
    Ok(Json(json!(rows)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    role: Option<Role>,
}

async fn approve(
    State(a): State<Shared>,
    Path(id): Path<String>,
    body: Option<Json<ApproveBody>>,
) -> Result<Json<Value>, ApiError> {
    let id = node_id(&id)?;
    let role = body.map(|b| b.0).unwrap_or_default().role;
    let stale = stale(&a);
    let node = blocking(move || a.approve(&id, role)).await?;
    Ok(Json(node_detail(&node, now_ms(), stale)))
}

async fn reject(State(a): State<Shared>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = node_id(&id)?;
    let revoked = blocking(move || a.reject(&id)).await?;
    Ok(Json(
        json!({ "rejected": true, "certificates_revoked": revoked }),
    ))
}

async fn list_tokens(State(a): State<Shared>) -> Json<Value> {
    let now = now_ms() / 1000;
    Json(Value::Array(
        a.tokens().iter().map(|t| token_view(t, now)).collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    #[serde(default)]
    description: String,
    ttl_secs: u64,
    max_uses: Option<u32>,
    #[serde(default)]
    auto_approve: bool,
}

async fn create_token(
    State(a): State<Shared>,
    Json(b): Json<CreateToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if b.ttl_secs == 0 || b.ttl_secs > 365 * 24 * 3600 || b.description.len() > 256 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "ttl_secs within 1..=31536000, description up to 256 bytes".into(),
        ));
    }
    let (token, record) = blocking(move || {
        a.create_token(
            b.description,
            Duration::from_secs(b.ttl_secs),
            b.max_uses,
            b.auto_approve,
        )
    })
    .await?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut v = token_view(&record, now);
    // The only time the secret is ever shown.
    v["token"] = json!(token.reveal());
    Ok((StatusCode::CREATED, Json(v)))
}

async fn revoke_token(
    State(a): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || a.revoke_token(&id)).await?;
    Ok(Json(json!({ "revoked": true })))
}

async fn ca_pem(State(a): State<Shared>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (
                header::HeaderName::from_static("x-ca-fingerprint"),
                a.ca().fingerprint().to_owned(),
            ),
        ],
        a.ca().cert_pem(),
    )
        .into_response()
}

/// Read-only routes for the hub's HTTP port.
pub fn public(authority: Arc<Authority>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", get(show_node))
        .route("/api/v1/nodes/{id}/health", get(node_health))
        .route("/ca.pem", get(ca_pem))
        .with_state(authority)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TalosconfigBody {
    #[serde(default)]
    endpoints: Vec<String>,
}

/// What the cluster routes share.
#[derive(Debug, Clone)]
struct ClusterState {
    cluster: Arc<ClusterService>,
    installs: Option<Arc<Installs>>,
}

impl ClusterState {
    fn audit(&self, event: &str, fields: Value) {
        if let Some(i) = &self.installs {
            i.audit().record(event, fields);
        }
    }
}

/// The cluster secrets bundle as `talosctl gen secrets` writes it. Admin only.
async fn cluster_secrets(State(c): State<ClusterState>) -> Json<Value> {
    tracing::warn!("cluster secrets exported over the admin socket");
    c.audit("secrets_exported", json!({ "via": "admin socket" }));
    Json(json!({ "yaml": c.cluster.secrets().to_yaml() }))
}

/// A new `os:admin` talosconfig. Admin only.
async fn talosconfig(
    State(c): State<ClusterState>,
    body: Option<Json<TalosconfigBody>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    // One Ed25519 key and signature: fast enough for the async thread.
    let yaml = c
        .cluster
        .talosconfig(&body.endpoints, std::time::SystemTime::now())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!("talosconfig issued over the admin socket");
    c.audit(
        "talosconfig_issued",
        json!({ "via": "admin socket", "endpoints": body.endpoints }),
    );
    Ok(Json(json!({ "yaml": yaml })))
}

/// A node's machine config as it would be delivered now (for the operator:
/// review, or a manual install). Admin only; audited.
async fn node_config(
    State(c): State<ClusterState>,
    State(a): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = node_id(&id)?;
    let installs = c.installs.clone().ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "enrollment is off: no installs".into(),
        )
    })?;
    let node = a
        .node(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {id}")))?;
    let out = tokio::task::spawn_blocking(move || installs.render(&node))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::CONFLICT, e))?;
    c.audit(
        "machine_config_exported",
        json!({ "via": "admin socket", "node": id, "sha256": out.sha256 }),
    );
    Ok(Json(
        json!({ "yaml": out.yaml, "sha256": out.sha256, "role": out.role.as_str() }),
    ))
}

async fn list_profiles(State(c): State<ClusterState>) -> Json<Value> {
    let profiles: Vec<Value> = c
        .cluster
        .profiles()
        .all
        .iter()
        .map(|p| json!({ "name": p.name, "description": p.description, "match": p.selector }))
        .collect();
    Json(json!({ "profiles": profiles }))
}

/// Every route, for the admin socket.
pub fn admin(
    authority: Arc<Authority>,
    cluster: Option<Arc<ClusterService>>,
    installs: Option<Arc<Installs>>,
) -> Router {
    let cluster_routes = match cluster {
        Some(cluster) => Router::new()
            .route("/api/v1/cluster/secrets", get(cluster_secrets))
            .route("/api/v1/cluster/talosconfig", post(talosconfig))
            .route("/api/v1/profiles", get(list_profiles))
            .route("/api/v1/nodes/{id}/config", get(node_config))
            .with_state(AdminState {
                authority: authority.clone(),
                cluster: ClusterState { cluster, installs },
            }),
        None => Router::new(),
    };
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", get(show_node))
        .route("/api/v1/nodes/{id}/health", get(node_health))
        .route("/api/v1/nodes/{id}/approve", post(approve))
        .route("/api/v1/nodes/{id}/reject", post(reject))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/ca.pem", get(ca_pem))
        .with_state(authority)
        .merge(cluster_routes)
}

/// The admin API on a Unix socket that only root (the socket's owner) can use.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    authority: Arc<Authority>,
    cluster: Option<Arc<ClusterService>>,
    installs: Option<Arc<Installs>>,
}

/// The cluster routes' state: the cluster, and the authority for node lookups.
#[derive(Debug, Clone)]
struct AdminState {
    authority: Shared,
    cluster: ClusterState,
}

impl axum::extract::FromRef<AdminState> for ClusterState {
    fn from_ref(s: &AdminState) -> ClusterState {
        s.cluster.clone()
    }
}

impl axum::extract::FromRef<AdminState> for Shared {
    fn from_ref(s: &AdminState) -> Shared {
        s.authority.clone()
    }
}

impl AdminServer {
    /// Binds `path` (replacing a stale socket: the store lock already proves no
    /// other hub uses this state directory) with mode 0600.
    pub fn bind(
        path: std::path::PathBuf,
        authority: Arc<Authority>,
        cluster: Option<Arc<ClusterService>>,
        installs: Option<Arc<Installs>>,
    ) -> std::io::Result<AdminServer> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // Bind with a umask-independent mode: create it, then tighten before serving.
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(AdminServer {
            listener,
            path,
            authority,
            cluster,
            installs,
        })
    }

    pub async fn run(self, cancel: tokio_util::sync::CancellationToken) -> std::io::Result<()> {
        let app = admin(self.authority, self.cluster, self.installs);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        let _ = std::fs::remove_file(&self.path);
        served
    }
}
