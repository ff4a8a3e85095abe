//! The lease table: who holds which address until when. Pure data structure,
//! no I/O: the DHCP core mutates it and hands the persisted changes to the store.
//!
//! Offers live only here (they are never persisted); bound, released and
//! declined leases are written to the store before any ACK for them is sent.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::{MacAddr, Subnet};

/// Seconds since the Unix epoch. Time always comes in as an argument.
pub type Secs = u64;

/// What identifies a client's lease: its client identifier (option 61), or its
/// hardware type and address. The first byte tags which.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientKey(Vec<u8>);

const KEY_CLIENT_ID: u8 = 0;
const KEY_HW: u8 = 1;

impl ClientKey {
    pub fn client_id(id: &[u8]) -> ClientKey {
        let mut v = Vec::with_capacity(id.len() + 1);
        v.push(KEY_CLIENT_ID);
        v.extend_from_slice(id);
        ClientKey(v)
    }
    pub fn hw(htype: u8, chaddr: &[u8]) -> ClientKey {
        let mut v = Vec::with_capacity(chaddr.len() + 2);
        v.extend_from_slice(&[KEY_HW, htype]);
        v.extend_from_slice(chaddr);
        ClientKey(v)
    }
    /// Accepts only what `client_id` or `hw` can produce (used when loading stored rows).
    pub fn from_stored(bytes: Vec<u8>) -> Option<ClientKey> {
        match bytes.first() {
            Some(&KEY_CLIENT_ID) if (3..=131).contains(&bytes.len()) => Some(ClientKey(bytes)),
            Some(&KEY_HW) if (3..=18).contains(&bytes.len()) => Some(ClientKey(bytes)),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_first() {
            Some((&KEY_CLIENT_ID, id)) => write!(f, "id:{}", hex(id)),
            Some((&KEY_HW, rest)) => write!(f, "hw:{}", hex(rest)),
            _ => write!(f, "?:{}", hex(&self.0)),
        }
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered, held for `offer_hold_secs`; memory only.
    Offered,
    /// Acknowledged to the client.
    Bound,
    /// Given back by the client (DHCPRELEASE); free, but the client is preferred.
    Released,
    /// Reported in use by someone else (DHCPDECLINE); quarantined until `expires`.
    Declined,
}

impl LeaseState {
    pub fn persisted(self) -> bool {
        self != LeaseState::Offered
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub key: ClientKey,
    pub htype: u8,
    /// Hardware address, at most 16 bytes (validated before it gets here).
    pub chaddr: Vec<u8>,
    pub hostname: Option<String>,
    pub state: LeaseState,
    pub starts: Secs,
    pub expires: Secs,
}

impl Lease {
    pub fn mac(&self) -> Option<MacAddr> {
        (self.htype == 1)
            .then(|| {
                <[u8; 6]>::try_from(self.chaddr.as_slice())
                    .ok()
                    .map(MacAddr)
            })
            .flatten()
    }
    /// Whether another client may take this address now.
    fn free_for_others(&self, now: Secs) -> bool {
        match self.state {
            LeaseState::Released => true,
            LeaseState::Offered | LeaseState::Bound | LeaseState::Declined => self.expires <= now,
        }
    }
}

/// All leases, indexed by address and by client.
#[derive(Debug, Default)]
pub struct LeaseTable {
    by_addr: HashMap<Ipv4Addr, Lease>,
    by_key: HashMap<ClientKey, Ipv4Addr>,
    /// Next address to try, per subnet (by network address), so allocation is amortised O(1).
    cursors: HashMap<Ipv4Addr, u32>,
}

impl LeaseTable {
    pub fn new() -> LeaseTable {
        LeaseTable::default()
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    pub fn get(&self, addr: Ipv4Addr) -> Option<&Lease> {
        self.by_addr.get(&addr)
    }

    /// The lease this client last held, if it still exists and is still this client's.
    pub fn of_client(&self, key: &ClientKey) -> Option<&Lease> {
        let addr = self.by_key.get(key)?;
        self.by_addr.get(addr).filter(|l| &l.key == key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_addr.values()
    }

    /// Whether `addr` may be given to `key` now: nobody else holds it, it is not
    /// quarantined, and it is not reserved for another MAC.
    pub fn available(
        &self,
        subnet: &Subnet,
        addr: Ipv4Addr,
        key: &ClientKey,
        mac: Option<MacAddr>,
        now: Secs,
    ) -> bool {
        if let Some(r) = subnet.reservation_of_addr(addr)
            && Some(r.mac) != mac
        {
            return false;
        }
        match self.by_addr.get(&addr) {
            None => true,
            Some(l) if l.state == LeaseState::Declined => l.expires <= now,
            Some(l) => &l.key == key || l.free_for_others(now),
        }
    }

    /// Picks a free pool address in `subnet` for `key`, scanning from the cursor.
    pub fn allocate(
        &mut self,
        subnet: &Subnet,
        key: &ClientKey,
        mac: Option<MacAddr>,
        now: Secs,
    ) -> Option<Ipv4Addr> {
        let total: u64 = subnet.pools.iter().map(|p| p.size()).sum();
        if total == 0 {
            return None;
        }
        let net = subnet.network.network();
        let start = *self
            .cursors
            .get(&net)
            .unwrap_or(&u32::from(subnet.pools[0].start));
        // Walk the pools as one ring, starting at the cursor.
        let mut order: Vec<(u32, u32)> = subnet
            .pools
            .iter()
            .map(|p| (u32::from(p.start), u32::from(p.end)))
            .collect();
        order.sort_unstable();
        // A cursor outside every pool (the config changed) restarts at the first pool.
        let (mut idx, mut cur) = match order.iter().position(|&(s, e)| s <= start && start <= e) {
            Some(i) => (i, start),
            None => (0, order[0].0),
        };
        for _ in 0..total {
            let addr = Ipv4Addr::from(cur);
            let (_, end) = order[idx];
            let next = if cur >= end {
                idx = (idx + 1) % order.len();
                order[idx].0
            } else {
                cur + 1
            };
            if self.available(subnet, addr, key, mac, now)
                && subnet.reservation_of_addr(addr).is_none()
            {
                self.cursors.insert(net, next);
                return Some(addr);
            }
            cur = next;
        }
        None
    }

    /// Inserts or replaces the lease for `lease.addr`, keeping the client index true.
    pub fn put(&mut self, lease: Lease) {
        if let Some(old) = self.by_addr.get(&lease.addr)
            && old.key != lease.key
            && self.by_key.get(&old.key) == Some(&lease.addr)
        {
            self.by_key.remove(&old.key);
        }
        self.by_key.insert(lease.key.clone(), lease.addr);
        self.by_addr.insert(lease.addr, lease);
    }

    pub fn remove(&mut self, addr: Ipv4Addr) -> Option<Lease> {
        let lease = self.by_addr.remove(&addr)?;
        if self.by_key.get(&lease.key) == Some(&addr) {
            self.by_key.remove(&lease.key);
        }
        Some(lease)
    }

    /// Drops leases whose time is up. Returns the ones that were persisted, so the
    /// store can delete them too.
    pub fn reclaim(&mut self, now: Secs) -> Vec<Ipv4Addr> {
        let expired: Vec<Ipv4Addr> = self
            .by_addr
            .values()
            .filter(|l| l.expires <= now)
            .map(|l| l.addr)
            .collect();
        let mut persisted = Vec::new();
        for addr in expired {
            if let Some(l) = self.remove(addr)
                && l.state.persisted()
            {
                persisted.push(addr);
            }
        }
        persisted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Pool, Reservation};

    fn subnet() -> Subnet {
        Subnet {
            network: "10.0.0.0/24".parse().expect("net"),
            pools: vec![
                Pool {
                    start: Ipv4Addr::new(10, 0, 0, 10),
                    end: Ipv4Addr::new(10, 0, 0, 11),
                },
                Pool {
                    start: Ipv4Addr::new(10, 0, 0, 20),
                    end: Ipv4Addr::new(10, 0, 0, 20),
                },
            ],
            lease_time: 600,
            renew_time: 300,
            rebind_time: 500,
            routers: vec![],
            dns: vec![],
            domain: None,
            reservations: vec![Reservation {
                mac: MacAddr([2, 0, 0, 0, 0, 9]),
                address: Ipv4Addr::new(10, 0, 0, 11),
                hostname: None,
            }],
        }
    }

    fn bound(addr: Ipv4Addr, key: &ClientKey, expires: Secs) -> Lease {
        Lease {
            addr,
            key: key.clone(),
            htype: 1,
            chaddr: vec![2, 0, 0, 0, 0, 1],
            hostname: None,
            state: LeaseState::Bound,
            starts: 0,
            expires,
        }
    }

    #[test]
    fn allocation_skips_taken_and_reserved_and_wraps_pools() {
        let s = subnet();
        let mut t = LeaseTable::new();
        let a = ClientKey::hw(1, &[2, 0, 0, 0, 0, 1]);
        let b = ClientKey::hw(1, &[2, 0, 0, 0, 0, 2]);
        let c = ClientKey::hw(1, &[2, 0, 0, 0, 0, 3]);
        let first = t.allocate(&s, &a, None, 100).expect("first");
        assert_eq!(first, Ipv4Addr::new(10, 0, 0, 10));
        t.put(bound(first, &a, 1000));
        // .11 is reserved for another MAC: skipped; next pool's .20 is next.
        let second = t.allocate(&s, &b, None, 100).expect("second");
        assert_eq!(second, Ipv4Addr::new(10, 0, 0, 20));
        t.put(bound(second, &b, 1000));
        assert_eq!(t.allocate(&s, &c, None, 100), None, "pool exhausted");
        // After expiry the address is free for others again.
        assert_eq!(
            t.allocate(&s, &c, None, 1000),
            Some(Ipv4Addr::new(10, 0, 0, 10))
        );
    }

    #[test]
    fn declined_addresses_stay_quarantined_even_for_their_client() {
        let s = subnet();
        let mut t = LeaseTable::new();
        let a = ClientKey::hw(1, &[2, 0, 0, 0, 0, 1]);
        let mut l = bound(Ipv4Addr::new(10, 0, 0, 10), &a, 500);
        l.state = LeaseState::Declined;
        t.put(l);
        assert!(!t.available(&s, Ipv4Addr::new(10, 0, 0, 10), &a, None, 499));
        assert!(t.available(&s, Ipv4Addr::new(10, 0, 0, 10), &a, None, 500));
    }

    #[test]
    fn reclaim_returns_only_persisted_rows_and_fixes_indexes() {
        let mut t = LeaseTable::new();
        let a = ClientKey::hw(1, &[2, 0, 0, 0, 0, 1]);
        let b = ClientKey::hw(1, &[2, 0, 0, 0, 0, 2]);
        t.put(bound(Ipv4Addr::new(10, 0, 0, 10), &a, 100));
        let mut offer = bound(Ipv4Addr::new(10, 0, 0, 20), &b, 50);
        offer.state = LeaseState::Offered;
        t.put(offer);
        assert_eq!(t.reclaim(100), vec![Ipv4Addr::new(10, 0, 0, 10)]);
        assert!(t.is_empty());
        assert!(t.of_client(&a).is_none());
    }

    #[test]
    fn moving_an_address_to_a_new_client_unlinks_the_old_one() {
        let mut t = LeaseTable::new();
        let a = ClientKey::hw(1, &[2, 0, 0, 0, 0, 1]);
        let b = ClientKey::hw(1, &[2, 0, 0, 0, 0, 2]);
        t.put(bound(Ipv4Addr::new(10, 0, 0, 10), &a, 100));
        t.put(bound(Ipv4Addr::new(10, 0, 0, 10), &b, 200));
        assert!(t.of_client(&a).is_none());
        assert_eq!(
            t.of_client(&b).map(|l| l.addr),
            Some(Ipv4Addr::new(10, 0, 0, 10))
        );
    }

    #[test]
    fn stored_keys_are_validated() {
        assert!(ClientKey::from_stored(vec![]).is_none());
        assert!(ClientKey::from_stored(vec![7, 1, 2]).is_none());
        assert!(ClientKey::from_stored(vec![1, 1, 2, 3, 4, 5, 6, 7]).is_some());
        assert!(ClientKey::from_stored(vec![1; 40]).is_none());
    }
}
