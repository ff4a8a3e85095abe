//! Persistence of everything the hub must not forget: DHCP leases, the MACs
//! that fell back from ProxyDHCP, and the enrollment registry (`nodes`). A `Store` trait with the embedded
//! (redb) implementation and an in-memory one for tests.
//!
//! Records are versioned (first byte), validated on load, and a row that fails
//! to decode or validate is skipped with a warning: no stored row can stop the
//! hub from starting.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use proto::hex::{decode as from_hex, encode as to_hex};
use serde::{Deserialize, Serialize};

use crate::config::{MacAddr, valid_hostname};
use crate::dhcp::decide::Change;
use crate::dhcp::leases::{ClientKey, Lease, LeaseState, Secs};

mod embedded;
mod memory;
mod nodes;

pub use embedded::{EmbeddedStore, STORE_FILE, load_read_only};
pub use memory::MemoryStore;
pub use nodes::{HEALTH_KEPT, StoredHealth};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening store {path:?}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("store {path:?} is in use by another writer (is the hub already running?)")]
    Locked { path: PathBuf },
    #[error("creating state directory {path:?}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store transaction: {0}")]
    Transaction(#[from] Box<redb::TransactionError>),
    #[error("store table: {0}")]
    Table(#[from] Box<redb::TableError>),
    #[error("store read/write: {0}")]
    Storage(#[from] Box<redb::StorageError>),
    #[error("store commit: {0}")]
    Commit(#[from] Box<redb::CommitError>),
    #[error("store closed after an I/O error; reopening")]
    Closed,
}

impl StoreError {
    /// An I/O failure of the storage (ENOSPC, EIO), or redb refusing because of
    /// an earlier one: the database must be reopened before it is usable again.
    pub fn is_io(&self) -> bool {
        use redb::{CommitError, StorageError, TableError, TransactionError};
        let io = |e: &StorageError| matches!(e, StorageError::Io(_) | StorageError::PreviousIo);
        match self {
            StoreError::Storage(e) => io(e),
            StoreError::Transaction(e) => {
                matches!(e.as_ref(), TransactionError::Storage(s) if io(s))
            }
            StoreError::Commit(e) => matches!(e.as_ref(), CommitError::Storage(s) if io(s)),
            StoreError::Table(e) => matches!(e.as_ref(), TableError::Storage(s) if io(s)),
            StoreError::Closed => true,
            _ => false,
        }
    }
}

/// What the store held at open.
#[derive(Debug, Default)]
pub struct Loaded {
    pub leases: Vec<Lease>,
    pub fallback: Vec<MacAddr>,
    /// Rows that could not be decoded or validated, skipped.
    pub skipped: usize,
}

/// The hub's persistent state.
pub trait Store: Send + 'static {
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Applies all changes in one durable transaction: when this returns Ok, they
    /// survive a crash.
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError>;
}

/// Lease record format, version 1: one version byte, then JSON.
const LEASE_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct LeaseRecordV1 {
    key: String,
    htype: u8,
    chaddr: String,
    hostname: Option<String>,
    state: LeaseState,
    starts: Secs,
    expires: Secs,
}

pub fn encode_lease(lease: &Lease) -> Vec<u8> {
    let rec = LeaseRecordV1 {
        key: to_hex(lease.key.as_bytes()),
        htype: lease.htype,
        chaddr: to_hex(&lease.chaddr),
        hostname: lease.hostname.clone(),
        state: lease.state,
        starts: lease.starts,
        expires: lease.expires,
    };
    let mut out = vec![LEASE_V1];
    // Serializing a plain struct of strings and integers cannot fail.
    serde_json::to_writer(&mut out, &rec).unwrap_or_default();
    out
}

/// Decodes and validates a stored lease row; `None` for anything not exactly right.
pub fn decode_lease(addr: Ipv4Addr, bytes: &[u8]) -> Option<Lease> {
    let (&version, body) = bytes.split_first()?;
    if version != LEASE_V1 {
        return None;
    }
    let rec: LeaseRecordV1 = serde_json::from_slice(body).ok()?;
    let key = ClientKey::from_stored(from_hex(&rec.key)?)?;
    let chaddr = from_hex(&rec.chaddr)?;
    if chaddr.len() > 16 || !rec.state.persisted() || rec.starts > rec.expires {
        return None;
    }
    if rec.hostname.as_deref().is_some_and(|h| !valid_hostname(h)) {
        return None;
    }
    Some(Lease {
        addr,
        key,
        htype: rec.htype,
        chaddr,
        hostname: rec.hostname,
        state: rec.state,
        starts: rec.starts,
        expires: rec.expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn lease(n: u8) -> Lease {
        Lease {
            addr: Ipv4Addr::new(10, 0, 0, n),
            key: ClientKey::client_id(&[1, 2, 0, 0, 0, 0, n]),
            htype: 1,
            chaddr: vec![2, 0, 0, 0, 0, n],
            hostname: Some(format!("node{n}")),
            state: LeaseState::Bound,
            starts: 100,
            expires: 200,
        }
    }

    #[test]
    fn lease_round_trips() {
        let l = lease(7);
        assert_eq!(decode_lease(l.addr, &encode_lease(&l)), Some(l));
    }

    #[test]
    fn bad_rows_decode_to_none() {
        let good = encode_lease(&lease(1));
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        let bad_host = {
            let mut l = lease(1);
            l.hostname = Some("bad host!".into());
            encode_lease(&l)
        };
        let offered = {
            let mut l = lease(1);
            l.state = LeaseState::Offered;
            encode_lease(&l)
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("wrong version", wrong_version),
            ("truncated json", good[..good.len() / 2].to_vec()),
            ("garbage", vec![1, 0xff, 0xfe]),
            ("invalid hostname", bad_host),
            ("offers are never stored", offered),
            ("long chaddr", {
                let mut v = vec![1];
                v.extend_from_slice(br#"{"key":"0102","htype":1,"chaddr":"000102030405060708090a0b0c0d0e0f10","hostname":null,"state":"bound","starts":1,"expires":2}"#);
                v
            }),
        ];
        for (name, bytes) in cases {
            assert_eq!(
                decode_lease(Ipv4Addr::new(10, 0, 0, 1), &bytes),
                None,
                "case {name}"
            );
        }
    }
}
