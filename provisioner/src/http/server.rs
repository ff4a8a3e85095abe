//! The HTTP shell (axum): iPXE scripts, boot assets with Content-Length, Range and
//! HEAD, `/healthz` and `/metrics`. Decisions live in `render` and `range`.
//!
//! Backpressure: at most `max_streams` boot-file bodies are sent at once. A GET past
//! that waits, first come first served, before its response starts; it is never
//! refused (iPXE does not retry a failed `kernel`/`initrd`). In a storm this keeps
//! the first machines' downloads fast instead of slowing every download to
//! 1/N of the link, and the wait shows in `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use super::range::{Span, span};
use super::render::{self, Discovery, MACHINE_SCRIPT_PATH};
use crate::assets::Assets;
use crate::boot::BOOT_SCRIPT_PATH;
use crate::config::MacAddr;
use crate::metrics::{HttpStats, Registry};
use crate::timeline::{Source, Timeline};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("binding HTTP on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// What handlers share.
#[derive(Debug, Clone)]
struct Shared {
    assets: Arc<Assets>,
    metrics: Registry,
    /// `http://addr:port` to use when a request has no usable Host header.
    fallback_base: String,
    console: String,
    timeline: Arc<Timeline>,
    /// The enrollment authority and the port of its gRPC service, when enabled.
    enroll: Option<(Arc<crate::enroll::Authority>, u16)>,
    /// Installs: an installed machine's script hands off to its disk.
    installs: Option<Arc<crate::install::Installs>>,
    /// One permit per boot-file body being sent.
    streams: Arc<Semaphore>,
}

#[derive(Debug)]
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    shared: Shared,
}

impl HttpServer {
    /// Binds now, so a port in use fails at start.
    pub fn bind(
        addr: SocketAddr,
        assets: Arc<Assets>,
        metrics: Registry,
        timeline: Arc<Timeline>,
        enroll: Option<(Arc<crate::enroll::Authority>, u16)>,
        installs: Option<Arc<crate::install::Installs>>,
        max_streams: usize,
    ) -> Result<HttpServer, HttpError> {
        let err = |source| HttpError::Bind { addr, source };
        let std = listen(addr).map_err(err)?;
        let listener = tokio::net::TcpListener::from_std(std).map_err(err)?;
        let local = listener.local_addr().map_err(err)?;
        Ok(HttpServer {
            listener,
            shared: Shared {
                assets,
                metrics,
                fallback_base: format!("http://{local}"),
                console: "ttyS0".into(),
                timeline,
                enroll,
                installs,
                streams: Arc::new(Semaphore::new(max_streams.max(1))),
            },
        })
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<(), HttpError> {
        let app = Router::new()
            .route(BOOT_SCRIPT_PATH, get(boot_script))
            .route(MACHINE_SCRIPT_PATH, get(machine_script))
            .route("/boot/{name}", get(asset))
            .route("/boot/talos/{name}", get(talos_image))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/api/v1/machines", get(machines))
            .route("/api/v1/machines/{mac}/timeline", get(machine_timeline))
            .route("/metrics", get(metrics))
            .fallback(not_found);
        let enroll = self.shared.enroll.clone();
        let mut app = app.with_state(self.shared);
        if let Some((authority, _)) = enroll {
            app = app.merge(super::api::public(authority));
        }
        // Scripts are small responses: without TCP_NODELAY, Nagle holds them back.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
        .map_err(HttpError::Serve)
    }
}

/// A listening socket with a backlog for a storm: a thousand machines connect
/// within a second, and std's 128 would drop SYNs (each drop costs the client a
/// 1 s retransmission). The kernel caps it at `net.core.somaxconn`.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Waits for a stream permit, counting the wait in the metrics.
async fn stream_permit(s: &Shared) -> Option<OwnedSemaphorePermit> {
    let stats = &s.metrics.http;
    if let Ok(p) = s.streams.clone().try_acquire_owned() {
        stats.streams.fetch_add(1, Ordering::Relaxed);
        return Some(p);
    }
    let t = Instant::now();
    stats.waiting.fetch_add(1, Ordering::Relaxed);
    // Dropped mid-wait (the client went away): the gauge still comes back down.
    struct Leave<'a>(&'a HttpStats);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let leave = Leave(stats);
    let permit = s.streams.clone().acquire_owned().await.ok();
    drop(leave);
    stats.waited.fetch_add(1, Ordering::Relaxed);
    stats
        .wait_us
        .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    if permit.is_some() {
        stats.streams.fetch_add(1, Ordering::Relaxed);
    }
    permit
}

/// A body that holds its stream permit until it is sent or dropped.
fn held_body<S>(chunks: S, permit: Option<OwnedSemaphorePermit>, stats: Arc<HttpStats>) -> Body
where
    S: tokio_stream::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    struct Release(Option<OwnedSemaphorePermit>, Arc<HttpStats>);
    impl Drop for Release {
        fn drop(&mut self) {
            if self.0.take().is_some() {
                self.1.streams.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    let release = Release(permit, stats);
    Body::from_stream(chunks.map(move |c| {
        let _ = &release;
        c
    }))
}

fn done(stats: &HttpStats, started: Instant) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    stats
        .duration_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn boot_script(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let t = Instant::now();
    if let SocketAddr::V4(p) = peer {
        s.timeline
            .record_peer(*p.ip(), Source::Http, format!("GET {BOOT_SCRIPT_PATH}"));
    }
    s.metrics.http.scripts.fetch_add(1, Ordering::Relaxed);
    let r = text(StatusCode::OK, render::boot_script());
    done(&s.metrics.http, t);
    r
}

/// `http://host:port` as the client addressed us, if its Host header is sane.
fn base_url(headers: &HeaderMap, fallback: &str) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if render::valid_host(h) => format!("http://{h}"),
        _ => fallback.to_string(),
    }
}

async fn machine_script(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let t = Instant::now();
    let q = match render::parse_query(query.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(error) => {
            s.metrics.http.bad_request.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, ?error, query = query.as_deref().unwrap_or(""), "bad machine-script query");
            done(&s.metrics.http, t);
            return text(
                StatusCode::BAD_REQUEST,
                format!("#!ipxe\necho provisioner: bad request ({error:?})\nexit 1\n"),
            );
        }
    };
    let mac = MacAddr(q.mac);
    if let SocketAddr::V4(p) = peer {
        s.timeline.learn(*p.ip(), mac);
    }
    let base = base_url(&headers, &s.fallback_base);
    if let Some(installs) = s.installs.clone() {
        let platform = q.platform;
        let local = tokio::task::spawn_blocking(move || installs.local_boot(mac, platform))
            .await
            .ok()
            .flatten();
        if let Some((node, how)) = local {
            tracing::info!(%mac, %peer, node_id = %node, ?how, "machine script: boot from disk");
            s.timeline.record(
                mac,
                Source::Http,
                format!("GET {MACHINE_SCRIPT_PATH}: local-boot script ({how:?}, node {node})"),
                crate::timeline::now_ms(),
            );
            s.metrics.http.scripts.fetch_add(1, Ordering::Relaxed);
            done(&s.metrics.http, t);
            return text(
                StatusCode::OK,
                render::local_boot_script(node.as_str(), how),
            );
        }
    }
    let available =
        s.assets.has_http(render::DISCOVERY_KERNEL) && s.assets.has_http(render::DISCOVERY_INITRD);
    tracing::info!(%mac, %peer, uuid = ?q.uuid, serial = ?q.serial, platform = ?q.platform, "machine script: discovery");
    let fingerprint;
    let token;
    let enroll = match &s.enroll {
        Some((authority, port)) => {
            fingerprint = authority.ca().fingerprint().to_owned();
            let a = authority.clone();
            // Minting a token commits (fsync) once every few hours.
            token = match tokio::task::spawn_blocking(move || a.boot_token()).await {
                Ok(Ok(t)) => t,
                other => {
                    tracing::error!(result = ?other.map(|r| r.map(|_| ())), "no discovery token");
                    done(&s.metrics.http, t);
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "#!ipxe\necho provisioner: hub error\nexit 1\n".into(),
                    );
                }
            };
            Some(render::EnrollArgs {
                ca: &fingerprint,
                token: &token,
                port: *port,
            })
        }
        None => None,
    };
    let script = render::discovery_script(&Discovery {
        base: &base,
        platform: q.platform,
        available,
        console: &s.console,
        enroll,
        agent: s.assets.has_http(crate::agent_image::AGENT_INITRD),
    });
    let missing = if available { "" } else { ", image missing" };
    let event = format!(
        "GET {MACHINE_SCRIPT_PATH}: discovery script ({:?}{missing})",
        q.platform
    );
    s.timeline
        .record(mac, Source::Http, event, crate::timeline::now_ms());
    s.metrics.http.scripts.fetch_add(1, Ordering::Relaxed);
    done(&s.metrics.http, t);
    text(StatusCode::OK, script)
}

async fn talos_image(
    state: State<Shared>,
    peer: ConnectInfo<SocketAddr>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    asset(state, peer, method, Path(format!("talos/{name}")), headers).await
}

async fn asset(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let t = Instant::now();
    let stats = &s.metrics.http;
    let Some(asset) = s.assets.http(&format!("/boot/{name}")) else {
        stats.not_found.fetch_add(1, Ordering::Relaxed);
        done(stats, t);
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let size = asset.spec.size;
    let range = headers.get(header::RANGE).and_then(|h| h.to_str().ok());
    let (status, start, len) = match span(range, size) {
        Span::Full => (StatusCode::OK, 0, size),
        Span::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Span::Unsatisfiable => {
            done(stats, t);
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response();
        }
    };
    // HEAD sends no body: no permit, no wait.
    let permit = if method == Method::HEAD || len == 0 {
        None
    } else {
        stream_permit(&s).await
    };
    const CHUNK: u64 = 256 * 1024;
    let body = match &asset.data {
        // Verified bytes in memory: slices, no copy, no file I/O.
        Some(data) => {
            let data = data.slice(start as usize..(start + len) as usize);
            let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
                let from = (i * CHUNK) as usize;
                let to = ((i + 1) * CHUNK).min(len) as usize;
                Ok(data.slice(from..to))
            });
            held_body(tokio_stream::iter(chunks), permit, stats.clone())
        }
        None => {
            let mut file = match tokio::fs::File::open(&asset.path).await {
                Ok(f) => f,
                Err(error) => {
                    tracing::warn!(path = ?asset.path, %error, "asset vanished");
                    done(stats, t);
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "asset unavailable\n".into(),
                    );
                }
            };
            if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
                done(stats, t);
                return text(StatusCode::INTERNAL_SERVER_ERROR, "seek failed\n".into());
            }
            held_body(
                tokio_util::io::ReaderStream::with_capacity(file.take(len), CHUNK as usize),
                permit,
                stats.clone(),
            )
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        stats.partial.fetch_add(1, Ordering::Relaxed);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    // The sha256 is a strong validator of the exact bytes.
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", asset.spec.sha256)) {
        h.insert(header::ETAG, v);
    }
    stats.assets.fetch_add(1, Ordering::Relaxed);
    stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
    if let SocketAddr::V4(p) = peer {
        let part = if status == StatusCode::PARTIAL_CONTENT {
            format!(" bytes {start}+{len}")
        } else {
            format!(" {len} bytes")
        };
        s.timeline
            .record_peer(*p.ip(), Source::Http, format!("GET /boot/{name}{part}"));
    }
    done(stats, t);
    resp
}

async fn machines(State(s): State<Shared>) -> Response {
    axum::Json(s.timeline.machines()).into_response()
}

async fn machine_timeline(State(s): State<Shared>, Path(mac): Path<String>) -> Response {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return text(StatusCode::BAD_REQUEST, "not a MAC address\n".into());
    };
    let events = s.timeline.events(mac);
    if events.is_empty() {
        return text(StatusCode::NOT_FOUND, format!("no events for {mac}\n"));
    }
    axum::Json(serde_json::json!({ "mac": mac.to_string(), "events": events })).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found(State(s): State<Shared>) -> Response {
    s.metrics.http.not_found.fetch_add(1, Ordering::Relaxed);
    text(StatusCode::NOT_FOUND, "not found\n".into())
}
