//! Remembers which PXE firmware ignores ProxyDHCP offers (auto mode).
//!
//! A client that DISCOVERs again and again (new transactions) after our proxy
//! offers never used them: it took the other server's address and found no boot
//! file. After `fallback_after` such offers within the window, the MAC is served
//! fully from then on. A request on port 4011 proves the client honours ProxyDHCP
//! and clears its count. Bounded in memory: spoofed MACs cannot grow it forever.

use std::collections::{HashMap, HashSet};

use crate::config::MacAddr;

use super::leases::Secs;

/// At most this many MACs are watched at once; beyond it, new ones are not tracked.
const MAX_WATCHED: usize = 65_536;

#[derive(Debug, Default)]
pub struct Fallback {
    fallen: HashSet<MacAddr>,
    watch: HashMap<MacAddr, Watch>,
}

#[derive(Debug)]
struct Watch {
    since: Secs,
    xids: Vec<u32>,
}

impl Fallback {
    pub fn with_fallen(fallen: impl IntoIterator<Item = MacAddr>) -> Fallback {
        Fallback {
            fallen: fallen.into_iter().collect(),
            watch: HashMap::new(),
        }
    }

    pub fn is_fallen_back(&self, mac: MacAddr) -> bool {
        self.fallen.contains(&mac)
    }

    pub fn fallen(&self) -> impl Iterator<Item = &MacAddr> {
        self.fallen.iter()
    }

    /// Records a PXE DISCOVER that we are about to answer with a proxy offer.
    /// Returns true when the client has now come back more than `after` times
    /// within `window` seconds, i.e. it ignores our offers.
    pub fn observe(&mut self, mac: MacAddr, xid: u32, now: Secs, window: u32, after: u32) -> bool {
        if !self.watch.contains_key(&mac) && self.watch.len() >= MAX_WATCHED {
            self.prune(now, window);
            if self.watch.len() >= MAX_WATCHED {
                return false;
            }
        }
        let w = self.watch.entry(mac).or_insert(Watch {
            since: now,
            xids: Vec::new(),
        });
        if now.saturating_sub(w.since) > u64::from(window) {
            *w = Watch {
                since: now,
                xids: Vec::new(),
            };
        }
        // Retransmissions reuse the xid; only new transactions count.
        if !w.xids.contains(&xid) && w.xids.len() <= after as usize {
            w.xids.push(xid);
        }
        w.xids.len() > after as usize
    }

    pub fn fall_back(&mut self, mac: MacAddr) {
        self.watch.remove(&mac);
        self.fallen.insert(mac);
    }

    /// The client used our boot server: it honours ProxyDHCP.
    pub fn honoured(&mut self, mac: MacAddr) {
        self.watch.remove(&mac);
    }

    /// Forgets watches older than the window.
    pub fn prune(&mut self, now: Secs, window: u32) {
        self.watch
            .retain(|_, w| now.saturating_sub(w.since) <= u64::from(window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    #[test]
    fn falls_back_after_n_new_transactions_within_window() {
        let mut f = Fallback::default();
        assert!(!f.observe(M, 1, 0, 60, 2));
        assert!(
            !f.observe(M, 1, 1, 60, 2),
            "a retransmission does not count"
        );
        assert!(!f.observe(M, 2, 10, 60, 2));
        assert!(f.observe(M, 3, 20, 60, 2));
    }

    #[test]
    fn window_expiry_and_boot_server_use_reset_the_count() {
        let mut f = Fallback::default();
        f.observe(M, 1, 0, 60, 2);
        f.observe(M, 2, 10, 60, 2);
        assert!(
            !f.observe(M, 3, 100, 60, 2),
            "outside the window: starts over"
        );
        f.observe(M, 4, 101, 60, 2);
        f.honoured(M);
        assert!(!f.observe(M, 5, 102, 60, 2));
    }

    #[test]
    fn watch_table_is_bounded() {
        let mut f = Fallback::default();
        for i in 0..(MAX_WATCHED as u32 + 10) {
            let b = i.to_be_bytes();
            f.observe(MacAddr([2, 0, b[0], b[1], b[2], b[3]]), 1, 0, 60, 2);
        }
        assert_eq!(f.watch.len(), MAX_WATCHED);
    }
}
