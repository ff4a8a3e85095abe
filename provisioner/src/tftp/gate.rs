//! Admission of read requests, pure: which request starts a transfer now, which
//! waits its turn, and which is refused. The server owns one `Gate` in its request
//! loop (no locks) and tells it when a transfer ends.
//!
//! In a boot storm a thousand machines ask for the same 74 KB file within a second.
//! Refusing the ones past `max_transfers` with an ERROR fails their boot (PXE ROMs
//! do not retry after an ERROR), so the gate queues them instead, first come first
//! served, and starts each when a transfer ends. The queue is bounded in length
//! (`max_queue`: past it, ERROR "busy") and in time: a waiting client retransmits
//! its RRQ (PXE ROMs at 1, 2, 4, 8, 16 s), and each retransmission says it is still
//! there; a request not heard from for `max_wait` is dropped when its turn comes,
//! as its client has given up. A retransmitted RRQ of a request that is running or
//! waiting starts nothing: without that, every retransmission under load would
//! start one more transfer of the same file to the same port.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Admission limits of the server as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub max_transfers: usize,
    /// Transfers running or waiting, per client address.
    pub max_per_client: usize,
    /// Requests per second per source address (token bucket, burst = 2 s worth).
    pub requests_per_sec: u32,
    /// Requests waiting for a transfer slot; past this, ERROR "busy".
    pub max_queue: usize,
    /// A waiting request not heard from (RRQ retransmission) for this long is dropped.
    pub max_wait: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_transfers: 1024,
            max_per_client: 16,
            requests_per_sec: 50,
            max_queue: 8192,
            max_wait: Duration::from_secs(20),
        }
    }
}

/// A request is the client's socket and the file it asked for.
pub type Key = (SocketAddrV4, String);

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Start the transfer now.
    Start(T),
    /// Waiting for a slot; `next` will hand it out.
    Queued,
    /// The same request is already running or waiting: a retransmission (it
    /// refreshes a waiting request).
    Duplicate,
    /// The client has `max_per_client` transfers running or waiting.
    ClientLimit,
    /// Every slot is taken and the queue is full.
    Busy,
}

#[derive(Debug)]
struct Waiting<T> {
    key: Key,
    since: Instant,
    item: T,
}

#[derive(Debug)]
pub struct Gate<T> {
    limits: Admission,
    running: usize,
    /// Running and waiting requests per client address.
    per_client: HashMap<IpAddr, usize>,
    /// Running requests.
    keys: HashSet<Key>,
    /// Waiting requests, and when each was last heard from.
    heard: HashMap<Key, Instant>,
    queue: VecDeque<Waiting<T>>,
    /// Waiting requests dropped, their clients silent for `max_wait`.
    pub expired: u64,
}

impl<T> Gate<T> {
    pub fn new(limits: Admission) -> Gate<T> {
        Gate {
            limits,
            running: 0,
            per_client: HashMap::new(),
            keys: HashSet::new(),
            heard: HashMap::new(),
            queue: VecDeque::new(),
            expired: 0,
        }
    }

    pub fn offer(&mut self, key: Key, item: T, now: Instant) -> Verdict<T> {
        if let Some(heard) = self.heard.get_mut(&key) {
            *heard = now;
            return Verdict::Duplicate;
        }
        if self.keys.contains(&key) {
            return Verdict::Duplicate;
        }
        self.expire(now);
        let ip = IpAddr::V4(*key.0.ip());
        if self.per_client.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_client {
            return Verdict::ClientLimit;
        }
        let start = self.running < self.limits.max_transfers && self.queue.is_empty();
        if !start && self.queue.len() >= self.limits.max_queue {
            return Verdict::Busy;
        }
        *self.per_client.entry(ip).or_insert(0) += 1;
        if start {
            self.keys.insert(key);
            self.running += 1;
            Verdict::Start(item)
        } else {
            self.heard.insert(key.clone(), now);
            self.queue.push_back(Waiting {
                key,
                since: now,
                item,
            });
            Verdict::Queued
        }
    }

    /// A transfer started by `offer` or `next` has ended.
    pub fn finish(&mut self, key: &Key) {
        if self.keys.remove(key) {
            self.running = self.running.saturating_sub(1);
            self.forget_client(key);
        }
    }

    /// The next waiting request to start, if a slot is free, with its key and how
    /// long it waited.
    pub fn next(&mut self, now: Instant) -> Option<(Key, T, Duration)> {
        self.expire(now);
        if self.running >= self.limits.max_transfers {
            return None;
        }
        let w = self.queue.pop_front()?;
        self.heard.remove(&w.key);
        self.keys.insert(w.key.clone());
        self.running += 1;
        Some((w.key, w.item, now.saturating_duration_since(w.since)))
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Drops the requests at the front whose clients were silent for `max_wait`.
    /// One further back waits for its turn to be found out; the queue is bounded.
    fn expire(&mut self, now: Instant) {
        while let Some(w) = self.queue.front() {
            let heard = self.heard.get(&w.key).copied().unwrap_or(w.since);
            if now.saturating_duration_since(heard) < self.limits.max_wait {
                break;
            }
            if let Some(w) = self.queue.pop_front() {
                self.heard.remove(&w.key);
                self.forget_client(&w.key);
                self.expired += 1;
            }
        }
    }

    fn forget_client(&mut self, key: &Key) {
        let ip = IpAddr::V4(*key.0.ip());
        if let Some(n) = self.per_client.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(host: u8, port: u16, file: &str) -> Key {
        (
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, host), port),
            file.to_string(),
        )
    }

    /// What `next` starts and how long it waited (its key is checked where it matters).
    fn next<T>(g: &mut Gate<T>, now: Instant) -> Option<(T, Duration)> {
        g.next(now).map(|(_, item, waited)| (item, waited))
    }

    fn limits(max_transfers: usize, max_per_client: usize, max_queue: usize) -> Admission {
        Admission {
            max_transfers,
            max_per_client,
            requests_per_sec: 50,
            max_queue,
            max_wait: Duration::from_secs(10),
        }
    }

    #[test]
    fn past_the_slots_requests_wait_and_start_in_arrival_order() {
        let t0 = Instant::now();
        let mut g = Gate::new(limits(2, 16, 10));
        assert_eq!(g.offer(key(1, 1000, "a"), 1, t0), Verdict::Start(1));
        assert_eq!(g.offer(key(2, 1000, "a"), 2, t0), Verdict::Start(2));
        assert_eq!(g.offer(key(3, 1000, "a"), 3, t0), Verdict::Queued);
        assert_eq!(g.offer(key(4, 1000, "a"), 4, t0), Verdict::Queued);
        assert_eq!((g.running(), g.waiting()), (2, 2));
        assert_eq!(next(&mut g, t0), None, "no slot free yet");
        g.finish(&key(2, 1000, "a"));
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            g.next(t1),
            Some((key(3, 1000, "a"), 3, Duration::from_secs(3)))
        );
        assert_eq!(next(&mut g, t1), None);
        g.finish(&key(1, 1000, "a"));
        assert_eq!(next(&mut g, t1), Some((4, Duration::from_secs(3))));
        assert_eq!((g.running(), g.waiting()), (2, 0));
    }

    #[test]
    fn a_new_request_does_not_overtake_the_queue() {
        let t0 = Instant::now();
        let mut g = Gate::new(limits(1, 16, 10));
        assert_eq!(g.offer(key(1, 1, "a"), 1, t0), Verdict::Start(1));
        assert_eq!(g.offer(key(2, 1, "a"), 2, t0), Verdict::Queued);
        g.finish(&key(1, 1, "a"));
        // A slot is free but someone waits: the newcomer queues behind.
        assert_eq!(g.offer(key(3, 1, "a"), 3, t0), Verdict::Queued);
        assert_eq!(next(&mut g, t0), Some((2, Duration::ZERO)));
    }

    #[test]
    fn retransmitted_requests_are_duplicates_while_running_or_waiting() {
        let t0 = Instant::now();
        let mut g = Gate::new(limits(1, 16, 10));
        assert_eq!(g.offer(key(1, 7, "a"), 1, t0), Verdict::Start(1));
        assert_eq!(g.offer(key(1, 7, "a"), 1, t0), Verdict::Duplicate);
        assert_eq!(g.offer(key(2, 7, "a"), 2, t0), Verdict::Queued);
        assert_eq!(g.offer(key(2, 7, "a"), 2, t0), Verdict::Duplicate);
        // Another port or another file is another request.
        assert_eq!(g.offer(key(1, 8, "a"), 3, t0), Verdict::Queued);
        assert_eq!(g.offer(key(1, 7, "b"), 4, t0), Verdict::Queued);
        g.finish(&key(1, 7, "a"));
        assert_eq!(
            g.offer(key(1, 7, "a"), 5, t0),
            Verdict::Queued,
            "after it ended"
        );
    }

    #[test]
    fn the_queue_is_bounded_in_length_and_in_time() {
        let t0 = Instant::now();
        let mut g = Gate::new(limits(1, 16, 2));
        assert_eq!(g.offer(key(1, 1, "a"), 1, t0), Verdict::Start(1));
        assert_eq!(g.offer(key(2, 1, "a"), 2, t0), Verdict::Queued);
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(g.offer(key(3, 1, "a"), 3, t5), Verdict::Queued);
        assert_eq!(g.offer(key(4, 1, "a"), 4, t5), Verdict::Busy);
        // At 10 s the first waiter, silent since 0 s, expires, making room; its
        // retransmission queues again.
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(g.offer(key(4, 1, "a"), 4, t10), Verdict::Queued);
        assert_eq!(g.expired, 1);
        assert_eq!(g.offer(key(2, 1, "a"), 2, t10), Verdict::Busy);
        g.finish(&key(1, 1, "a"));
        assert_eq!(next(&mut g, t10), Some((3, Duration::from_secs(5))));
        // Everything that expired is forgotten: client counts go back to zero.
        let t30 = t0 + Duration::from_secs(30);
        assert_eq!(next(&mut g, t30), None);
        assert_eq!(g.expired, 2);
        g.finish(&key(3, 1, "a"));
        assert!(g.per_client.is_empty() && g.keys.is_empty() && g.running() == 0);
        assert!(g.heard.is_empty());
    }

    #[test]
    fn a_waiting_request_lives_as_long_as_its_client_retransmits() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut g = Gate::new(limits(1, 16, 10));
        assert_eq!(g.offer(key(1, 1, "a"), 1, t0), Verdict::Start(1));
        assert_eq!(g.offer(key(2, 1, "a"), 2, t0), Verdict::Queued);
        assert_eq!(g.offer(key(3, 1, "a"), 3, t0 + s(1)), Verdict::Queued);
        // PXE retransmissions at 1, 3, 7, 15 s keep the first waiter alive.
        for at in [1, 3, 7, 15] {
            assert_eq!(g.offer(key(2, 1, "a"), 2, t0 + s(at)), Verdict::Duplicate);
        }
        g.finish(&key(1, 1, "a"));
        // At 20 s, 25 s after it first asked but 5 s after it was last heard: it starts.
        assert_eq!(next(&mut g, t0 + s(20)), Some((2, s(20))));
        // The other was silent since 1 s: when its turn comes at 20 s, it is gone.
        g.finish(&key(2, 1, "a"));
        assert_eq!(next(&mut g, t0 + s(20)), None);
        assert_eq!(g.expired, 1);
    }

    #[test]
    fn a_client_is_limited_in_running_plus_waiting_requests() {
        let t0 = Instant::now();
        let mut g = Gate::new(limits(1, 2, 10));
        assert_eq!(g.offer(key(1, 1, "a"), 1, t0), Verdict::Start(1));
        assert_eq!(g.offer(key(1, 2, "a"), 2, t0), Verdict::Queued);
        assert_eq!(g.offer(key(1, 3, "a"), 3, t0), Verdict::ClientLimit);
        assert_eq!(g.offer(key(2, 3, "a"), 4, t0), Verdict::Queued);
        g.finish(&key(1, 1, "a"));
        assert_eq!(g.offer(key(1, 3, "a"), 3, t0), Verdict::Queued);
    }

    #[test]
    fn finishing_an_unknown_key_changes_nothing() {
        let t0 = Instant::now();
        let mut g = Gate::new(limits(1, 2, 10));
        assert_eq!(g.offer(key(1, 1, "a"), 1, t0), Verdict::Start(1));
        g.finish(&key(9, 9, "z"));
        assert_eq!(g.running(), 1);
        g.finish(&key(1, 1, "a"));
        g.finish(&key(1, 1, "a"));
        assert_eq!(g.running(), 0);
    }
}
