//! The DHCP shell: the only code that owns DHCP sockets and the store handle.
//!
//! receive → `wire::check` → decode → `decide` (under the state lock) → either
//! send at once, or hand the reply with its changes to the committer, which
//! writes a whole batch in one durable transaction and only then sends the
//! replies. Batching is what makes "ACK only after fsync" fast under load.
//!
//! Boot-storm pacing (full mode, `dhcp.pace`): while the TFTP queue holds more
//! requests than there are transfer slots, a DISCOVER from PXE firmware goes
//! unanswered before any decision is made (no state changes). The firmware
//! retransmits at 4, 8, 16 and 32 s, so a machine that would only have waited in
//! the TFTP queue, and run out of RRQ retries there, waits at the DHCP stage
//! instead, where its budget is a minute. iPXE, HTTP-boot and plain clients, and
//! every REQUEST, are never paced.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Message, MessageType};
use dhcproto::{Decodable, Decoder};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::boot::BootTable;
use crate::config::{DhcpConfig, DhcpMode, MacAddr};
use crate::store::{Store, StoreError};
use crate::tftp::server::TftpStats;
use crate::timeline::{Source, Timeline, now_ms};

use super::decide::{self, Arrival, Change, Outcome, Policy, Reply, ServicePort, State};
use super::fallback::Fallback;
use super::leases::{LeaseTable, Secs};
use super::socket::{DhcpSocket, SocketError, lookup_iface};
use super::wire;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("loading leases")]
    Load(#[source] StoreError),
}

/// Most changes one transaction carries; more wait for the next one.
const MAX_BATCH: usize = 4096;
/// Replies waiting for a commit; beyond this, requests are dropped (clients retransmit).
const COMMIT_QUEUE: usize = 16_384;

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct DhcpStats {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    pub foreign_interface: AtomicU64,
    pub ignored: AtomicU64,
    pub replies: AtomicU64,
    pub commits: AtomicU64,
    pub commit_failures: AtomicU64,
    pub queue_full: AtomicU64,
    /// PXE DISCOVERs left unanswered by boot-storm pacing.
    pub paced: AtomicU64,
}

/// What pacing watches: the TFTP queue, against a depth.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub tftp: Arc<TftpStats>,
    pub max_waiting: u64,
}

impl Pacing {
    fn saturated(&self) -> bool {
        self.tftp.waiting.load(Ordering::Relaxed) > self.max_waiting
    }
}

/// Whether this firmware's next step is a TFTP download.
fn boots_over_tftp(msg: &Message) -> bool {
    use crate::boot::Firmware;
    matches!(
        super::classify::classify(msg).firmware(),
        Some(Firmware::BiosX86 | Firmware::UefiX64 | Firmware::UefiArm64)
    )
}

/// A hardware address as `aa:bb:..` for the `mac` log field, formatted only when logged.
struct HwAddr<'a>(&'a [u8]);

impl std::fmt::Display for HwAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A reply (if any) waiting for its changes to be durable.
struct Pending<R = (Arc<DhcpSocket>, Reply, Ipv4Addr)> {
    changes: Vec<Change>,
    reply: Option<R>,
}

#[derive(Debug)]
pub struct DhcpServer {
    sockets: Vec<Arc<DhcpSocket>>,
    state: Arc<Mutex<State>>,
    dhcp: Arc<DhcpConfig>,
    boot: Arc<BootTable>,
    timeline: Arc<Timeline>,
    pacing: Option<Pacing>,
    pub stats: Arc<DhcpStats>,
}

/// What every socket task shares.
struct Ctx {
    state: Arc<Mutex<State>>,
    dhcp: Arc<DhcpConfig>,
    boot: Arc<BootTable>,
    stats: Arc<DhcpStats>,
    timeline: Arc<Timeline>,
    commits: SyncSender<Pending>,
    pacing: Option<Pacing>,
}

fn now_secs() -> Secs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the table half-updated in a way
    // that matters more than stopping DHCP would; keep serving.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl DhcpServer {
    /// Binds every socket and loads the leases. Fails before anything is served.
    pub fn build(
        dhcp: &DhcpConfig,
        boot: &BootTable,
        store: &dyn Store,
        timeline: Arc<Timeline>,
    ) -> Result<DhcpServer, DhcpError> {
        let mut sockets = Vec::new();
        if dhcp.mode != DhcpMode::Off {
            for name in &dhcp.interfaces {
                let iface = lookup_iface(name)?;
                sockets.push(Arc::new(DhcpSocket::bind(
                    iface.clone(),
                    ServicePort::Dhcp,
                )?));
                if matches!(dhcp.mode, DhcpMode::Proxy | DhcpMode::Auto) {
                    sockets.push(Arc::new(DhcpSocket::bind(
                        iface,
                        ServicePort::PxeBootServer,
                    )?));
                }
            }
        }
        let loaded = store.load().map_err(DhcpError::Load)?;
        let mut leases = LeaseTable::new();
        let count = loaded.leases.len();
        for lease in loaded.leases {
            leases.put(lease);
        }
        if loaded.skipped > 0 {
            tracing::warn!(
                skipped = loaded.skipped,
                "some stored rows could not be read and were skipped"
            );
        }
        tracing::info!(
            leases = count,
            fallback_macs = loaded.fallback.len(),
            "leases loaded"
        );
        let state = State {
            leases,
            fallback: Fallback::with_fallen(loaded.fallback),
        };
        Ok(DhcpServer {
            sockets,
            state: Arc::new(Mutex::new(state)),
            dhcp: Arc::new(dhcp.clone()),
            boot: Arc::new(boot.clone()),
            timeline,
            pacing: None,
            stats: Arc::default(),
        })
    }

    /// Paces PXE DISCOVERs on this TFTP server's queue (full mode with `dhcp.pace`).
    pub fn pace_on(&mut self, pacing: Pacing) {
        if self.dhcp.pace && self.dhcp.mode == DhcpMode::Full {
            self.pacing = Some(pacing);
        }
    }

    /// Serves until `cancel`; the store moves into the committer thread.
    pub async fn run(
        self,
        store: Box<dyn Store>,
        cancel: CancellationToken,
    ) -> Result<(), DhcpError> {
        if self.sockets.is_empty() {
            cancel.cancelled().await;
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(COMMIT_QUEUE);
        let mut tasks = JoinSet::new();
        {
            let stats = self.stats.clone();
            tasks.spawn_blocking(move || {
                committer(store, rx, &stats);
                Ok(())
            });
        }
        let ctx = Arc::new(Ctx {
            state: self.state.clone(),
            dhcp: self.dhcp.clone(),
            boot: self.boot.clone(),
            stats: self.stats.clone(),
            timeline: self.timeline.clone(),
            commits: tx.clone(),
            pacing: self.pacing.clone(),
        });
        for sock in &self.sockets {
            tracing::info!(iface = %sock.iface.name, port = ?sock.port, mode = ?self.dhcp.mode, "DHCP listening");
            tasks.spawn(serve_socket(sock.clone(), ctx.clone(), cancel.clone()));
        }
        drop(ctx);
        tasks.spawn(reclaim_loop(
            self.state.clone(),
            self.dhcp.clone(),
            tx,
            cancel.clone(),
        ));
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "DHCP task failed");
                    cancel.cancel();
                    result = Err(e);
                }
                Err(e) if e.is_panic() => {
                    tracing::error!(error = %e, "DHCP task panicked");
                    cancel.cancel();
                }
                _ => {}
            }
        }
        result
    }
}

async fn serve_socket(
    sock: Arc<DhcpSocket>,
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
) -> Result<(), DhcpError> {
    let mut buf = vec![0u8; 65_536];
    loop {
        let info = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = sock.recv(&mut buf) => match r {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(iface = %sock.iface.name, error = %e, "DHCP receive failed");
                    continue;
                }
            },
        };
        let len = info.len.min(buf.len());
        handle(&sock, &buf[..len], info, &ctx);
    }
}

fn handle(sock: &Arc<DhcpSocket>, datagram: &[u8], info: super::socket::RecvInfo, ctx: &Ctx) {
    let stats = &ctx.stats;
    stats.received.fetch_add(1, Ordering::Relaxed);
    let peer = info.src;
    if info.ifindex != sock.iface.index {
        stats.foreign_interface.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, ifindex = info.ifindex, "dropping datagram from another interface");
        return;
    }
    if let Err(error) = wire::check(datagram) {
        stats.malformed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, %error, "dropping malformed DHCP datagram");
        return;
    }
    let msg = match Message::decode(&mut Decoder::new(datagram)) {
        Ok(m) => m,
        Err(error) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, %error, "dropping undecodable DHCP datagram");
            return;
        }
    };
    if let Some(p) = &ctx.pacing
        && msg.opts().msg_type() == Some(MessageType::Discover)
        && p.saturated()
        && boots_over_tftp(&msg)
    {
        stats.paced.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(mac = %HwAddr(msg.chaddr()), %peer, "PXE DISCOVER paced: the TFTP queue is full");
        return;
    }
    // Serve from our address on this interface; fall back to the first configured one.
    let local = if info.local.is_unspecified() {
        sock.iface.addrs[0].addr()
    } else {
        info.local
    };
    let arrival = Arrival {
        local,
        dst: info.dst,
        src: peer,
        port: sock.port,
    };
    let policy = Policy {
        dhcp: &ctx.dhcp,
        boot: &ctx.boot,
    };
    let Outcome { verdict, persist } = {
        let mut st = lock(&ctx.state);
        decide::decide(&msg, datagram, &arrival, &policy, &mut st, now_secs())
    };
    let xid = msg.xid();
    let mac = HwAddr(msg.chaddr());
    record(&ctx.timeline, &msg, &arrival, &verdict);
    let reply = match verdict {
        Ok(reply) => {
            tracing::debug!(mac = %mac, xid, %peer, kind = ?reply.kind, yiaddr = %reply.yiaddr, dest = ?reply.dest, firmware = ?reply.firmware, "reply");
            Some(reply)
        }
        Err(why) => {
            stats.ignored.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(mac = %mac, xid, %peer, reason = ?why, "no reply");
            None
        }
    };
    if persist.is_empty() {
        if let Some(reply) = reply {
            send(sock, &reply, local, stats);
        }
        return;
    }
    let pending = Pending {
        changes: persist,
        reply: reply.map(|r| (sock.clone(), r, local)),
    };
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        ctx.commits.try_send(pending)
    {
        stats.queue_full.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(mac = %mac, xid, "commit queue full: dropping request (the client will retry)");
    }
}

/// Adds the exchange to the machine's boot timeline.
fn record(
    timeline: &Timeline,
    msg: &Message,
    arrival: &Arrival,
    verdict: &Result<Reply, decide::Ignore>,
) {
    let Ok(chaddr) = <[u8; 6]>::try_from(msg.chaddr()) else {
        return;
    };
    if u8::from(msg.htype()) != 1 {
        return;
    }
    let mac = MacAddr(chaddr);
    let asked = msg
        .opts()
        .msg_type()
        .map(|t| format!("{t:?}").to_uppercase())
        .unwrap_or_default();
    let port = if arrival.port == ServicePort::PxeBootServer {
        " (port 4011)"
    } else {
        ""
    };
    let what = match verdict {
        Ok(r) => {
            timeline.learn(r.yiaddr, mac);
            if arrival.port == ServicePort::PxeBootServer {
                timeline.learn(*arrival.src.ip(), mac);
            }
            let boot = match (&r.firmware, &r.file) {
                (Some(f), Some(file)) => format!(" [{f}: {file}]"),
                _ => String::new(),
            };
            let addr = if r.yiaddr.is_unspecified() {
                String::new()
            } else {
                format!(" {}", r.yiaddr)
            };
            format!(
                "{asked}{port} -> {}{addr}{boot}",
                format!("{:?}", r.kind).to_uppercase()
            )
        }
        Err(decide::Ignore::NoReplyExpected) => format!("{asked}{port}"),
        Err(why) => format!("{asked}{port} -> no reply ({why:?})"),
    };
    timeline.record(mac, Source::Dhcp, what, now_ms());
}

fn send(sock: &DhcpSocket, reply: &Reply, local: Ipv4Addr, stats: &DhcpStats) {
    match sock.send(&reply.bytes, reply.dest, local) {
        Ok(()) => {
            stats.replies.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(dest = ?reply.dest, %error, "sending DHCP reply failed"),
    }
}

/// Writes batches of changes durably, then sends the replies that waited on them.
/// Runs on its own thread until every sender is gone.
fn committer(mut store: Box<dyn Store>, rx: Receiver<Pending>, stats: &DhcpStats) {
    let mut batch: Vec<Pending> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        for (sock, reply, local) in commit_batch(store.as_mut(), &mut batch, stats) {
            send(&sock, &reply, local, stats);
        }
    }
}

/// Commits every change of `batch` in one transaction and returns the replies that
/// may now be sent: all of them on success, none on failure. Empties `batch`.
fn commit_batch<R>(
    store: &mut dyn Store,
    batch: &mut Vec<Pending<R>>,
    stats: &DhcpStats,
) -> Vec<R> {
    let changes: Vec<Change> = batch.iter_mut().flat_map(|p| p.changes.drain(..)).collect();
    match store.commit(&changes) {
        Ok(()) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            batch.drain(..).filter_map(|p| p.reply).collect()
        }
        Err(error) => {
            // Nothing from this batch is acknowledged: a client never holds a lease
            // we could forget. They retry, and we try to persist again.
            stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, requests = batch.len(), "committing leases failed; replies withheld");
            batch.clear();
            Vec::new()
        }
    }
}

async fn reclaim_loop(
    state: Arc<Mutex<State>>,
    dhcp: Arc<DhcpConfig>,
    commits: SyncSender<Pending>,
    cancel: CancellationToken,
) -> Result<(), DhcpError> {
    let mut tick =
        tokio::time::interval(Duration::from_secs(u64::from(dhcp.reclaim_interval_secs)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = now_secs();
        let reclaimed = {
            let mut st = lock(&state);
            st.fallback.prune(now, dhcp.fallback_window_secs);
            st.leases.reclaim(now)
        };
        if !reclaimed.is_empty() {
            tracing::info!(count = reclaimed.len(), "reclaimed expired leases");
            let changes = reclaimed.into_iter().map(Change::DeleteLease).collect();
            // If the queue is full the rows stay on disk and are dropped again at next load.
            let _ = commits.try_send(Pending {
                changes,
                reply: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::{ClientKey, Lease, LeaseState};
    use crate::store::MemoryStore;

    fn pending(n: u8, reply: Option<u32>) -> Pending<u32> {
        let lease = Lease {
            addr: Ipv4Addr::new(10, 0, 0, n),
            key: ClientKey::hw(1, &[2, 0, 0, 0, 0, n]),
            htype: 1,
            chaddr: vec![2, 0, 0, 0, 0, n],
            hostname: None,
            state: LeaseState::Bound,
            starts: 1,
            expires: 2,
        };
        Pending {
            changes: vec![Change::PutLease(lease)],
            reply,
        }
    }

    #[test]
    fn replies_are_released_only_after_a_successful_commit() {
        let store = MemoryStore::default();
        let stats = DhcpStats::default();
        let mut s: Box<dyn Store> = Box::new(store.clone());
        // The disk is full: nothing is persisted, and no reply goes out.
        store.0.lock().expect("lock").fail_commits = true;
        let mut batch = vec![pending(1, Some(1)), pending(2, None), pending(3, Some(3))];
        assert!(commit_batch(s.as_mut(), &mut batch, &stats).is_empty());
        assert!(batch.is_empty());
        assert!(store.0.lock().expect("lock").leases.is_empty());
        assert_eq!(stats.commit_failures.load(Ordering::Relaxed), 1);
        // Space is back: one transaction carries the batch, then every reply is released.
        store.0.lock().expect("lock").fail_commits = false;
        let mut batch = vec![pending(1, Some(1)), pending(2, None), pending(3, Some(3))];
        assert_eq!(commit_batch(s.as_mut(), &mut batch, &stats), vec![1, 3]);
        let st = store.0.lock().expect("lock");
        assert_eq!((st.leases.len(), st.commits), (3, 1));
    }
}
