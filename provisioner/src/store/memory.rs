//! An in-memory store for tests: same contract, no durability, and a switch
//! that makes commits fail (a full disk) so callers' failure paths are testable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::{Loaded, Store, StoreError};
use crate::config::MacAddr;
use crate::dhcp::decide::Change;
use crate::dhcp::leases::Lease;

#[derive(Debug, Default)]
pub struct MemoryState {
    pub leases: BTreeMap<Ipv4Addr, Lease>,
    pub fallback: BTreeSet<MacAddr>,
    pub commits: usize,
    pub fail_commits: bool,
}

/// Cloning shares the contents, so a test can keep a handle and inspect.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore(pub Arc<Mutex<MemoryState>>);

impl Store for MemoryStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Loaded {
            leases: s.leases.values().cloned().collect(),
            fallback: s.fallback.iter().copied().collect(),
            skipped: 0,
        })
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.fail_commits {
            return Err(StoreError::Storage(Box::new(redb::StorageError::Io(
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "injected: no space left on device",
                ),
            ))));
        }
        for c in changes {
            match c {
                Change::PutLease(l) => {
                    s.leases.insert(l.addr, l.clone());
                }
                Change::DeleteLease(a) => {
                    s.leases.remove(a);
                }
                Change::Fallback(m) => {
                    s.fallback.insert(*m);
                }
            }
        }
        s.commits += 1;
        Ok(())
    }
}
