//! The embedded store: one redb file in the state directory.
//!
//! redb commits are copy-on-write with checksums: a crash (even `kill -9` or power
//! loss) leaves the last committed transaction intact. `Durability::Immediate`
//! (the default) fsyncs before `commit` returns, which is what lets the DHCP
//! shell send an ACK only after its lease is durable. The writer opens in
//! `SingleWriter` mode so the CLI can read concurrently while the hub runs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::nodes::{self, StoredHealth};
use super::{Loaded, Store, StoreError, decode_lease, encode_lease};
use crate::config::MacAddr;
use crate::dhcp::decide::Change;
use crate::enroll::NodeId;
use crate::enroll::registry::{Change as RegistryChange, Registry};

/// Leases by address (big-endian u32).
const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("dhcp_leases");
/// MACs that ignore ProxyDHCP, with the time they fell back.
const FALLBACK: TableDefinition<&[u8], u64> = TableDefinition::new("dhcp_fallback");

pub const STORE_FILE: &str = "hub.redb";

/// redb's page cache. Its default is 1 GiB, and the integrity check on open
/// reads every page through it, so the whole file would stay resident: 100 MiB
/// at 10k nodes and 100k leases. The hub keeps what it serves in memory and
/// reads the store only on open and for health history; commits touch a few
/// B-tree paths. The kernel's page cache still holds the file.
const CACHE_BYTES: usize = 8 << 20;

/// The hub's store. Clones share one database: the DHCP committer and the
/// enrollment authority each hold one, and redb serialises their write
/// transactions.
///
/// After an I/O error (ENOSPC, EIO) redb refuses every later transaction with
/// `PreviousIo` until the database is closed and opened again. So the handle
/// lives in a shared slot: a failed write empties the slot, and the next use
/// reopens the file (which verifies it) once the last in-flight transaction has
/// let go of the old handle. Until then, and while the disk stays full, every
/// write fails, so nothing is acknowledged; once space returns the hub writes
/// again without a restart.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    slot: Arc<RwLock<Slot>>,
    path: PathBuf,
}

#[derive(Debug)]
struct Slot {
    db: Option<Arc<Database>>,
    /// No reopen before this: opening verifies the whole file, and a full disk
    /// under a storm of retries must not turn into a storm of verifications.
    next_reopen: Instant,
}

/// Least time between two attempts to reopen after an I/O error.
const REOPEN_EVERY: Duration = Duration::from_millis(500);

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_owned(),
        },
        other => StoreError::Open {
            path: path.to_owned(),
            source: Box::new(other),
        },
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `state_dir`, as the one writer.
    pub fn open(state_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::StateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(STORE_FILE);
        let db = open_writer(&path)?;
        Ok(EmbeddedStore {
            slot: Arc::new(RwLock::new(Slot {
                db: Some(Arc::new(db)),
                next_reopen: Instant::now(),
            })),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database, reopening it if an I/O error closed it.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = &self.slot.read().unwrap_or_else(|e| e.into_inner()).db {
            return Ok(db.clone());
        }
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = &slot.db {
            return Ok(db.clone());
        }
        let now = Instant::now();
        if now < slot.next_reopen {
            return Err(StoreError::Closed);
        }
        slot.next_reopen = now + REOPEN_EVERY;
        // Fails with Locked while a transaction still holds the old handle, and
        // with an I/O error while the disk is still full; a later use tries again.
        let db = Arc::new(open_writer(&self.path)?);
        tracing::warn!(path = ?self.path, "store reopened after an I/O error");
        slot.db = Some(db.clone());
        Ok(db)
    }

    /// Runs `f`; an I/O failure closes the database so the next use reopens it.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let result = f(&db);
        if let Err(e) = &result
            && e.is_io()
        {
            let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
            if slot.db.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &db)) {
                tracing::error!(path = ?self.path, error = %e, "store I/O failed: closing it, writes fail until it reopens");
                slot.db = None;
            }
        }
        result
    }

    /// The enrollment registry, and how many rows were skipped as undecodable.
    pub fn load_registry(&self) -> Result<(Registry, usize), StoreError> {
        self.with_db(nodes::load)
    }

    /// Applies enrollment changes in one durable transaction.
    pub fn commit_registry(&self, changes: &[RegistryChange]) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write().map_err(Box::new)?;
            nodes::commit(&tx, changes)?;
            tx.commit().map_err(Box::new)?;
            Ok(())
        })
    }

    /// The newest `limit` health reports of a node, oldest first.
    pub fn health_history(
        &self,
        node: &NodeId,
        limit: usize,
    ) -> Result<Vec<StoredHealth>, StoreError> {
        self.with_db(|db| nodes::health(db, node, limit))
    }
}

/// Opens (creating if needed) the store file as its one writer, verified.
fn open_writer(path: &Path) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .set_cache_size(CACHE_BYTES)
        // Verify every page on open: a damaged file fails with an error, never a panic.
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| open_error(path, e))?;
    // Make sure the tables exist, so read-only openers find them.
    let tx = db.begin_write().map_err(Box::new)?;
    tx.open_table(LEASES).map_err(Box::new)?;
    tx.open_table(FALLBACK).map_err(Box::new)?;
    nodes::create_tables(&tx)?;
    tx.commit().map_err(Box::new)?;
    Ok(db)
}

/// Reads the store without becoming its writer: works while the hub runs.
pub fn load_read_only(state_dir: &Path) -> Result<Loaded, StoreError> {
    let path = state_dir.join(STORE_FILE);
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .set_cache_size(CACHE_BYTES)
        .open_read_only(&path)
        .map_err(|e| open_error(&path, e))?;
    load_from(&db)
}

fn load_from(db: &impl ReadableDatabase) -> Result<Loaded, StoreError> {
    let tx = db.begin_read().map_err(Box::new)?;
    let mut loaded = Loaded::default();
    let leases = tx.open_table(LEASES).map_err(Box::new)?;
    for row in leases.iter().map_err(Box::new)? {
        let Ok((k, v)) = row else {
            loaded.skipped += 1;
            continue;
        };
        let addr = Ipv4Addr::from(k.value());
        match decode_lease(addr, v.value()) {
            Some(l) => loaded.leases.push(l),
            None => {
                tracing::warn!(%addr, "skipping undecodable lease row");
                loaded.skipped += 1;
            }
        }
    }
    let fallback = tx.open_table(FALLBACK).map_err(Box::new)?;
    for row in fallback.iter().map_err(Box::new)? {
        match row
            .ok()
            .and_then(|(k, _)| <[u8; 6]>::try_from(k.value()).ok())
        {
            Some(mac) => loaded.fallback.push(MacAddr(mac)),
            None => loaded.skipped += 1,
        }
    }
    Ok(loaded)
}

impl Store for EmbeddedStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        self.with_db(load_from)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.with_db(|db| commit_leases(db, changes))
    }
}

fn commit_leases(db: &Database, changes: &[Change]) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(Box::new)?;
    {
        let mut leases = tx.open_table(LEASES).map_err(Box::new)?;
        let mut fallback = tx.open_table(FALLBACK).map_err(Box::new)?;
        for change in changes {
            match change {
                Change::PutLease(l) => {
                    leases
                        .insert(u32::from(l.addr), encode_lease(l).as_slice())
                        .map_err(Box::new)?;
                }
                Change::DeleteLease(addr) => {
                    leases.remove(u32::from(*addr)).map_err(Box::new)?;
                }
                Change::Fallback(mac) => {
                    fallback.insert(mac.0.as_slice(), 1u64).map_err(Box::new)?;
                }
            }
        }
    }
    tx.commit().map_err(Box::new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::lease;

    #[test]
    fn commits_survive_reopen_and_bad_rows_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = EmbeddedStore::open(dir.path()).expect("open");
            s.commit(&[
                Change::PutLease(lease(1)),
                Change::PutLease(lease(2)),
                Change::Fallback(MacAddr([2, 0, 0, 0, 0, 9])),
            ])
            .expect("commit");
            s.commit(&[Change::DeleteLease(lease(2).addr)])
                .expect("commit");
            // A row no version of ours wrote.
            let tx = s.db().expect("db").begin_write().expect("tx");
            tx.open_table(LEASES)
                .expect("t")
                .insert(u32::from(Ipv4Addr::new(10, 0, 0, 99)), &b"\x01{nope"[..])
                .expect("i");
            tx.commit().expect("c");
        }
        let s = EmbeddedStore::open(dir.path()).expect("reopen");
        let loaded = s.load().expect("load");
        assert_eq!(loaded.leases, vec![lease(1)]);
        assert_eq!(loaded.fallback, vec![MacAddr([2, 0, 0, 0, 0, 9])]);
        assert_eq!(loaded.skipped, 1);
        // Another process-style reader can look while the writer is open.
        let ro = load_read_only(dir.path()).expect("read-only while open");
        assert_eq!(ro.leases.len(), 1);
    }

    #[test]
    fn second_writer_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = EmbeddedStore::open(dir.path()).expect("open");
        let err = EmbeddedStore::open(dir.path()).expect_err("second writer");
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    }
}
