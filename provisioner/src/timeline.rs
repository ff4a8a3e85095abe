//! The per-machine boot timeline: every DHCP, TFTP and HTTP event for a MAC, in
//! order, so an operator sees where a boot stopped (DHCP → TFTP → HTTP → ...).
//!
//! Bounded: at most `MAX_EVENTS` per machine and `MAX_MACHINES` machines (the
//! machine idle longest is forgotten first), so spoofed MACs cannot exhaust
//! memory. In memory only: a restart starts a fresh timeline.
//! TFTP and HTTP requests arrive from an IP address; the timeline learns which
//! MAC holds an address from the DHCP replies it sees.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::MacAddr;

pub const MAX_EVENTS: usize = 128;
pub const MAX_MACHINES: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Dhcp,
    Tftp,
    Http,
    /// Enrollment, approval, certificates and health (the node agent).
    Enroll,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub source: Source,
    /// What happened, e.g. `DISCOVER -> OFFER 10.0.0.5 (bios-x86: undionly.kpxe)`.
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineSummary {
    pub mac: String,
    pub address: Option<String>,
    pub events: usize,
    pub last: Option<Event>,
}

#[derive(Debug, Default)]
struct Inner {
    machines: HashMap<MacAddr, VecDeque<Event>>,
    addresses: HashMap<Ipv4Addr, MacAddr>,
    /// Peers the neighbour table did not know, and until when not to look again.
    unknown: HashMap<Ipv4Addr, u64>,
}

/// How long a failed neighbour-table lookup is remembered (a hot path for HTTP).
const UNKNOWN_PEER_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub struct Timeline(Mutex<Inner>);

impl Timeline {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, mac: MacAddr, source: Source, what: String, at_ms: u64) {
        let mut t = self.inner();
        if !t.machines.contains_key(&mac) && t.machines.len() >= MAX_MACHINES {
            evict_idlest(&mut t);
        }
        let events = t.machines.entry(mac).or_default();
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(Event {
            at_ms,
            source,
            what,
        });
    }

    /// Remembers that `addr` belongs to `mac` (from a DHCP reply or a 4011 request).
    pub fn learn(&self, addr: Ipv4Addr, mac: MacAddr) {
        if addr.is_unspecified() {
            return;
        }
        let mut t = self.inner();
        if t.addresses.len() >= MAX_MACHINES * 2 && !t.addresses.contains_key(&addr) {
            t.addresses.clear();
        }
        t.addresses.insert(addr, mac);
        t.unknown.remove(&addr);
    }

    pub fn mac_of(&self, addr: Ipv4Addr) -> Option<MacAddr> {
        self.inner().addresses.get(&addr).copied()
    }

    /// Records an event for whoever holds `addr`, if known; returns whether it was.
    pub fn record_by_addr(&self, addr: Ipv4Addr, source: Source, what: String, at_ms: u64) -> bool {
        match self.mac_of(addr) {
            Some(mac) => {
                self.record(mac, source, what, at_ms);
                true
            }
            None => false,
        }
    }

    /// Like `record_by_addr`, falling back to the kernel's neighbour table (for
    /// peers whose address another DHCP server handed out).
    pub fn record_peer(&self, addr: Ipv4Addr, source: Source, what: String) {
        let at = now_ms();
        if self.record_by_addr(addr, source, what.clone(), at) {
            return;
        }
        {
            let mut t = self.inner();
            if t.unknown.get(&addr).is_some_and(|&until| until > at) {
                return;
            }
            if t.unknown.len() >= MAX_MACHINES {
                t.unknown.retain(|_, until| *until > at);
            }
        }
        match crate::udp::neighbour_mac(addr) {
            Some(mac) => {
                self.learn(addr, mac);
                self.record(mac, source, what, at);
            }
            None => {
                let mut t = self.inner();
                if t.unknown.len() < MAX_MACHINES {
                    t.unknown.insert(addr, at + UNKNOWN_PEER_MS);
                }
            }
        }
    }

    pub fn events(&self, mac: MacAddr) -> Vec<Event> {
        self.inner()
            .machines
            .get(&mac)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn machines(&self) -> Vec<MachineSummary> {
        let t = self.inner();
        let mut out: Vec<MachineSummary> = t
            .machines
            .iter()
            .map(|(mac, ev)| MachineSummary {
                mac: mac.to_string(),
                address: t
                    .addresses
                    .iter()
                    .find(|(_, m)| *m == mac)
                    .map(|(a, _)| a.to_string()),
                events: ev.len(),
                last: ev.back().cloned(),
            })
            .collect();
        out.sort_by(|a, b| a.mac.cmp(&b.mac));
        out
    }
}

/// Forgets the idlest eighth of the machines in one pass, so that a stream of new
/// MACs (a boot storm, or spoofing) costs amortised O(1) per MAC, not a scan each.
fn evict_idlest(t: &mut Inner) {
    let mut last: Vec<u64> = t
        .machines
        .values()
        .map(|ev| ev.back().map_or(0, |e| e.at_ms))
        .collect();
    let k = (last.len() / 8).max(1) - 1;
    let (_, cutoff, _) = last.select_nth_unstable(k);
    let cutoff = *cutoff;
    t.machines
        .retain(|_, ev| ev.back().map_or(0, |e| e.at_ms) > cutoff);
    let Inner {
        machines,
        addresses,
        ..
    } = t;
    addresses.retain(|_, m| machines.contains_key(m));
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn events_are_ordered_and_bounded_per_machine() {
        let t = Timeline::default();
        for i in 0..(MAX_EVENTS as u64 + 10) {
            t.record(mac(1), Source::Dhcp, format!("e{i}"), i);
        }
        let ev = t.events(mac(1));
        assert_eq!(ev.len(), MAX_EVENTS);
        assert_eq!(ev[0].what, "e10", "oldest events are dropped first");
        assert!(ev.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn addresses_map_tftp_and_http_peers_to_machines() {
        let t = Timeline::default();
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert!(
            !t.record_by_addr(ip, Source::Tftp, "RRQ".into(), 1),
            "unknown peer"
        );
        t.learn(ip, mac(7));
        assert!(t.record_by_addr(ip, Source::Tftp, "RRQ undionly.kpxe".into(), 2));
        assert_eq!(t.events(mac(7)).len(), 1);
        assert_eq!(t.machines()[0].address.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn machine_count_is_bounded_forgetting_the_idlest() {
        let t = Timeline::default();
        for i in 0..(MAX_MACHINES as u32) {
            t.record(mac(i), Source::Dhcp, "x".into(), 100 + u64::from(i));
        }
        t.record(mac(0), Source::Dhcp, "recent".into(), 1_000_000);
        t.record(mac(999_999), Source::Dhcp, "new".into(), 1_000_001);
        let n = t.machines().len();
        assert!(
            n <= MAX_MACHINES && n > MAX_MACHINES / 2,
            "bounded, and only the idlest part evicted: {n}"
        );
        assert!(
            t.events(mac(1)).is_empty(),
            "the idlest machine was forgotten"
        );
        assert_eq!(t.events(mac(0)).len(), 2, "a recently active one was kept");
        assert_eq!(t.events(mac(999_999)).len(), 1, "the new one is recorded");
    }
}
