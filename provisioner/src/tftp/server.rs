//! The TFTP shell: the request socket (port 69), admission (a per-source request
//! rate, then the `gate`: transfer slots, a bounded wait queue, duplicate RRQs), and
//! one task per transfer on its own socket (its TID), connected to the client so the
//! kernel drops datagrams from anyone else (RFC 1350 §4 TID checks).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use super::gate::Admission;
use super::gate::{Gate, Key, Verdict};
use super::packet::{self, Packet};
use super::session::{Failure, Limits, Session, Step};
use crate::assets::{Asset, Assets};
use crate::timeline::{Source, Timeline};

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("binding TFTP on {addr}")]
    Bind {
        addr: SocketAddrV4,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
pub struct TftpStats {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub transfers_done: AtomicU64,
    pub transfers_failed: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub packets_sent: AtomicU64,
    /// Sum of finished transfers' durations, microseconds.
    pub duration_us: AtomicU64,
    /// Transfers running now (gauge).
    pub running: AtomicU64,
    /// Requests waiting for a transfer slot now (gauge).
    pub waiting: AtomicU64,
    /// Requests that had to wait, and those dropped after `max_wait`.
    pub queued: AtomicU64,
    pub expired: AtomicU64,
    /// Retransmitted requests of a transfer already running or waiting.
    pub duplicates: AtomicU64,
    /// Time waited by the requests started from the queue, microseconds.
    pub wait_us: AtomicU64,
    pub waited: AtomicU64,
}

/// Per-source token buckets, bounded in size.
#[derive(Debug, Default)]
struct RateLimiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

const MAX_TRACKED_SOURCES: usize = 65_536;

impl RateLimiter {
    fn allow(&mut self, ip: IpAddr, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate.max(1));
        let burst = rate * 2.0;
        if self.buckets.len() >= MAX_TRACKED_SOURCES && !self.buckets.contains_key(&ip) {
            // Forget sources whose bucket has refilled; they are indistinguishable from new ones.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_TRACKED_SOURCES {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub struct TftpServer {
    sock: UdpSocket,
    assets: Arc<Assets>,
    admission: Admission,
    limits: Limits,
    timeline: Arc<Timeline>,
    pub stats: Arc<TftpStats>,
}

impl TftpServer {
    pub fn bind(
        addr: SocketAddrV4,
        assets: Arc<Assets>,
        admission: Admission,
        limits: Limits,
        timeline: Arc<Timeline>,
    ) -> Result<TftpServer, TftpError> {
        let err = |source| TftpError::Bind { addr, source };
        let std = std::net::UdpSocket::bind(addr).map_err(err)?;
        std.set_nonblocking(true).map_err(err)?;
        // A storm's RRQs arrive at once, retransmissions on top: 208 KiB holds ~270.
        let std = socket2::Socket::from(std);
        crate::udp::storm_buffers(&std, 4 << 20);
        let std = std::net::UdpSocket::from(std);
        crate::udp::enable_packet_info(&std).map_err(err)?;
        let sock = UdpSocket::from_std(std).map_err(err)?;
        Ok(TftpServer {
            sock,
            assets,
            admission,
            limits,
            timeline,
            stats: Arc::default(),
        })
    }

    pub async fn run(self, cancel: CancellationToken) -> Result<(), TftpError> {
        let mut gate: Gate<Job> = Gate::new(self.admission);
        let mut limiter = RateLimiter::default();
        let mut transfers = JoinSet::new();
        // Which request each running task serves, to give its slot back however it ends.
        let mut running: HashMap<tokio::task::Id, Key> = HashMap::new();
        let mut buf = vec![0u8; packet::MAX_REQUEST_LEN + 1];
        let mut out = Vec::with_capacity(128);
        loop {
            let info = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(ended) = transfers.join_next_with_id(), if !transfers.is_empty() => {
                    let id = match ended {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    if let Some(key) = running.remove(&id) {
                        gate.finish(&key);
                    }
                    let now = Instant::now();
                    while let Some((key, job, waited)) = gate.next(now) {
                        self.stats.waited.fetch_add(1, Ordering::Relaxed);
                        self.stats.wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                        let task = transfers.spawn(transfer(job, cancel.clone()));
                        running.insert(task.id(), key);
                    }
                    self.gauges(&gate);
                    continue;
                }
                r = crate::udp::recv_with_info(&self.sock, &mut buf) => match r {
                    Ok(info) => info,
                    Err(error) => {
                        tracing::warn!(%error, "TFTP receive failed");
                        continue;
                    }
                },
            };
            let peer = info.src;
            let datagram = &buf[..info.len.min(buf.len())];
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let refuse = |code: u16, msg: &str, out: &mut Vec<u8>| {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                packet::encode_error(code, msg, out);
                let _ = self.sock.try_send_to(out, SocketAddr::V4(peer));
            };
            let (filename, options) = match packet::parse(datagram) {
                Ok(Packet::Read {
                    filename, options, ..
                }) => (filename, options),
                Ok(Packet::Write { filename }) => {
                    tracing::info!(%peer, filename, "TFTP write refused: read-only server");
                    refuse(packet::ERR_ACCESS, "read-only server", &mut out);
                    continue;
                }
                Ok(other) => {
                    tracing::debug!(%peer, packet = ?other, "TFTP: not a request on the request port");
                    continue;
                }
                Err(error) => {
                    tracing::info!(%peer, %error, "dropping malformed TFTP request");
                    continue;
                }
            };
            if !limiter.allow(
                IpAddr::V4(*peer.ip()),
                self.admission.requests_per_sec,
                Instant::now(),
            ) {
                tracing::info!(%peer, filename, "TFTP request over the per-source rate; dropped");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(asset) = self.assets.tftp(filename) else {
                tracing::info!(%peer, filename, "TFTP file not found");
                self.timeline.record_peer(
                    *peer.ip(),
                    Source::Tftp,
                    format!("RRQ {filename}: not found"),
                );
                refuse(packet::ERR_NOT_FOUND, "file not found", &mut out);
                continue;
            };
            let local = if info.local.is_unspecified() {
                Ipv4Addr::UNSPECIFIED
            } else {
                info.local
            };
            let key = (peer, asset.spec.name.clone());
            let job = Job {
                peer,
                local,
                asset: asset.clone(),
                options,
                limits: self.limits,
                stats: self.stats.clone(),
                timeline: self.timeline.clone(),
            };
            let described = describe(&job.options);
            match gate.offer(key.clone(), job, Instant::now()) {
                Verdict::Start(job) => {
                    tracing::debug!(%peer, filename, options = %described, "TFTP read");
                    let task = transfers.spawn(transfer(job, cancel.clone()));
                    running.insert(task.id(), key);
                }
                Verdict::Queued => {
                    self.stats.queued.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, filename, waiting = gate.waiting(), "TFTP read queued: every transfer slot taken");
                }
                Verdict::Duplicate => {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, filename, "TFTP: retransmitted request ignored");
                    continue;
                }
                Verdict::ClientLimit => {
                    tracing::warn!(%peer, filename, "TFTP per-client transfer limit reached; refused");
                    refuse(packet::ERR_UNDEFINED, "too many transfers, retry", &mut out);
                    continue;
                }
                Verdict::Busy => {
                    tracing::warn!(%peer, filename, "TFTP transfer slots and queue full; refused");
                    refuse(packet::ERR_UNDEFINED, "server busy, retry", &mut out);
                    continue;
                }
            }
            self.timeline.record_peer(
                *peer.ip(),
                Source::Tftp,
                format!("RRQ {filename} {described}").trim_end().to_string(),
            );
            self.gauges(&gate);
        }
        transfers.shutdown().await;
        Ok(())
    }

    fn gauges(&self, gate: &Gate<Job>) {
        let s = &self.stats;
        s.running.store(gate.running() as u64, Ordering::Relaxed);
        s.waiting.store(gate.waiting() as u64, Ordering::Relaxed);
        s.expired.store(gate.expired, Ordering::Relaxed);
    }
}

/// Options as the timeline shows them.
fn describe(o: &packet::Requested) -> String {
    let mut parts = Vec::new();
    if let Some(b) = o.blksize {
        parts.push(format!("blksize={b}"));
    }
    if let Some(w) = o.windowsize {
        parts.push(format!("windowsize={w}"));
    }
    if o.tsize {
        parts.push("tsize".to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("({})", parts.join(" "))
    }
}

/// One admitted transfer and everything it needs.
struct Job {
    peer: SocketAddrV4,
    local: Ipv4Addr,
    asset: Asset,
    options: packet::Requested,
    limits: Limits,
    stats: Arc<TftpStats>,
    timeline: Arc<Timeline>,
}

async fn transfer(job: Job, cancel: CancellationToken) {
    let started = Instant::now();
    let (peer, stats) = (job.peer, &job.stats);
    let name = job.asset.spec.name.as_str();
    let result = run_transfer(
        peer,
        job.local,
        &job.asset,
        job.options,
        job.limits,
        stats,
        &cancel,
    )
    .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    stats
        .duration_us
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let summary = match &result {
        Ok(bytes) => format!("sent {name}: {bytes} bytes in {elapsed_ms} ms"),
        Err(TransferEnd::Failed(Failure::ClientAbort { code })) => {
            format!("{name}: client ended the transfer (ERROR {code}) after {elapsed_ms} ms")
        }
        Err(TransferEnd::Failed(f)) => format!("{name}: failed ({f:?}) after {elapsed_ms} ms"),
        Err(TransferEnd::Io(e)) => format!("{name}: failed ({e}) after {elapsed_ms} ms"),
        Err(TransferEnd::Cancelled) => format!("{name}: cancelled (hub stopping)"),
    };
    job.timeline.record_peer(*peer.ip(), Source::Tftp, summary);
    match result {
        Ok(bytes) => {
            stats.transfers_done.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, file = name, bytes, elapsed_ms, "TFTP transfer complete");
        }
        Err(TransferEnd::Failed(Failure::ClientAbort { code })) => {
            // OVMF probes the size and aborts on purpose; not a failure worth a warning.
            stats.transfers_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, file = name, code, elapsed_ms, "TFTP transfer aborted by client");
        }
        Err(TransferEnd::Io(error)) => {
            stats.transfers_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, file = name, %error, elapsed_ms, "TFTP transfer failed");
        }
        Err(end) => {
            stats.transfers_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, file = name, reason = ?end, elapsed_ms, "TFTP transfer failed");
        }
    }
}

#[derive(Debug)]
enum TransferEnd {
    Failed(Failure),
    Io(std::io::Error),
    Cancelled,
}

async fn run_transfer(
    peer: SocketAddrV4,
    local: Ipv4Addr,
    asset: &Asset,
    options: packet::Requested,
    limits: Limits,
    stats: &TftpStats,
    cancel: &CancellationToken,
) -> Result<u64, TransferEnd> {
    let sock = UdpSocket::bind(SocketAddrV4::new(local, 0))
        .await
        .map_err(TransferEnd::Io)?;
    sock.connect(peer).await.map_err(TransferEnd::Io)?;
    // Cached assets are served from their verified bytes; others are read per block.
    let file = match asset.data {
        Some(_) => None,
        None => Some(std::fs::File::open(&asset.path).map_err(TransferEnd::Io)?),
    };
    let size = asset.spec.size;
    let (mut session, mut steps) = Session::start(options, size, limits, Instant::now());
    let blksize = session.blksize() as usize;
    let mut out = Vec::with_capacity(4 + blksize);
    let mut inbuf = [0u8; 516];
    let mut sent_bytes = 0u64;
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(session.deadline()));
    tokio::pin!(timer);
    loop {
        for step in steps.drain(..) {
            match step {
                Step::SendOack(agreed) => {
                    packet::encode_oack(&agreed, &mut out);
                    sock.send(&out).await.map_err(TransferEnd::Io)?;
                }
                Step::SendData { block } => {
                    let offset = (block - 1) * blksize as u64;
                    let len = size.saturating_sub(offset).min(blksize as u64) as usize;
                    packet::encode_data_header(block as u16, &mut out);
                    match &asset.data {
                        Some(data) => {
                            out.extend_from_slice(&data[offset as usize..offset as usize + len])
                        }
                        None => {
                            out.resize(4 + len, 0);
                            if let Some(f) = &file {
                                f.read_exact_at(&mut out[4..], offset)
                                    .map_err(TransferEnd::Io)?;
                            }
                        }
                    }
                    sock.send(&out).await.map_err(TransferEnd::Io)?;
                    sent_bytes += len as u64;
                    stats.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
                    stats.packets_sent.fetch_add(1, Ordering::Relaxed);
                }
                Step::Done => return Ok(sent_bytes),
                Step::Failed(f) => {
                    if !matches!(f, Failure::ClientAbort { .. }) {
                        packet::encode_error(packet::ERR_UNDEFINED, "transfer timed out", &mut out);
                        let _ = sock.send(&out).await;
                    }
                    return Err(TransferEnd::Failed(f));
                }
            }
        }
        // One timer per transfer, moved rather than re-created for every block.
        timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(session.deadline()));
        tokio::select! {
            _ = cancel.cancelled() => return Err(TransferEnd::Cancelled),
            _ = &mut timer => steps = session.on_timer(Instant::now()),
            r = sock.recv(&mut inbuf) => {
                let n = match r {
                    Ok(n) => n,
                    // ICMP port unreachable: the client went away.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(TransferEnd::Io(e)),
                    Err(e) => return Err(TransferEnd::Io(e)),
                };
                steps = match packet::parse(&inbuf[..n]) {
                    Ok(Packet::Ack { block }) => session.on_ack(block, Instant::now()),
                    Ok(Packet::Error { code, .. }) => session.on_error(code),
                    _ => {
                        packet::encode_error(packet::ERR_ILLEGAL_OP, "unexpected packet", &mut out);
                        let _ = sock.send(&out).await;
                        Vec::new()
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limiter_allows_a_burst_then_the_rate() {
        let mut r = RateLimiter::default();
        let ip: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| r.allow(ip, 10, t0)).count();
        assert_eq!(allowed, 20, "burst of 2 s at 10/s");
        assert!(!r.allow(ip, 10, t0));
        assert!(
            r.allow(ip, 10, t0 + Duration::from_millis(150)),
            "refills at the rate"
        );
        assert!(
            r.allow(Ipv4Addr::new(10, 0, 0, 2).into(), 10, t0),
            "other sources unaffected"
        );
    }
}
