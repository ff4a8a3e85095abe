//! Enrollment records in the embedded store: nodes, join tokens, revoked
//! certificate serials, duplicated UUIDs and each node's recent health
//! reports. Rows are versioned (first byte) JSON and validated on load; a bad
//! row is skipped and counted, like a lease row.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::enroll::NodeId;
use crate::enroll::registry::{Change, HealthRecord, Node, Registry};
use crate::enroll::token::TokenRecord;

pub(super) const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_nodes");
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_tokens");
/// Revoked serial (hex) -> the certificate's expiry.
pub(super) const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("enroll_revoked");
pub(super) const DUPLICATED: TableDefinition<&str, u64> = TableDefinition::new("enroll_dup_uuids");
/// `<node>/<index:020>` -> report, the newest `HEALTH_KEPT` per node.
pub(super) const HEALTH: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_health");

/// Health reports kept per node.
pub const HEALTH_KEPT: u64 = 1024;

const RECORD_V1: u8 = 1;

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    // Our own plain data structures serialize without error.
    serde_json::to_writer(&mut out, v).unwrap_or_default();
    out
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    let (&version, body) = bytes.split_first()?;
    (version == RECORD_V1).then_some(())?;
    serde_json::from_slice(body).ok()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StoredHealth {
    pub boot: String,
    pub report: HealthRecord,
}

fn health_key(node: &NodeId, index: u64) -> String {
    format!("{node}/{index:020}")
}

pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(NODES).map_err(Box::new)?;
    tx.open_table(TOKENS).map_err(Box::new)?;
    tx.open_table(REVOKED).map_err(Box::new)?;
    tx.open_table(DUPLICATED).map_err(Box::new)?;
    tx.open_table(HEALTH).map_err(Box::new)?;
    Ok(())
}

/// Loads the registry; returns it with the number of rows skipped.
pub(super) fn load(db: &impl ReadableDatabase) -> Result<(Registry, usize), StoreError> {
    let tx = db.begin_read().map_err(Box::new)?;
    let mut reg = Registry::default();
    let mut skipped = 0;
    for row in tx
        .open_table(NODES)
        .map_err(Box::new)?
        .iter()
        .map_err(Box::new)?
    {
        let node = row
            .ok()
            .and_then(|(k, v)| decode::<Node>(v.value()).filter(|n| n.id.as_str() == k.value()));
        match node {
            Some(n) => {
                reg.nodes.insert(n.id.clone(), n);
            }
            None => {
                tracing::warn!("skipping undecodable node row");
                skipped += 1;
            }
        }
    }
    for row in tx
        .open_table(TOKENS)
        .map_err(Box::new)?
        .iter()
        .map_err(Box::new)?
    {
        let token = row.ok().and_then(|(k, v)| {
            decode::<TokenRecord>(v.value()).filter(|t| t.id == k.value() && t.validate())
        });
        match token {
            Some(t) => {
                reg.tokens.insert(t.id.clone(), t);
            }
            None => skipped += 1,
        }
    }
    for row in tx
        .open_table(REVOKED)
        .map_err(Box::new)?
        .iter()
        .map_err(Box::new)?
    {
        match row {
            Ok((k, v)) => {
                reg.revoked.insert(k.value().to_owned(), v.value());
            }
            Err(_) => skipped += 1,
        }
    }
    for row in tx
        .open_table(DUPLICATED)
        .map_err(Box::new)?
        .iter()
        .map_err(Box::new)?
    {
        match row {
            Ok((k, _)) => {
                reg.duplicated.insert(k.value().to_owned());
            }
            Err(_) => skipped += 1,
        }
    }
    Ok((reg, skipped))
}

pub(super) fn commit(tx: &WriteTransaction, changes: &[Change]) -> Result<(), StoreError> {
    let mut nodes = tx.open_table(NODES).map_err(Box::new)?;
    let mut tokens = tx.open_table(TOKENS).map_err(Box::new)?;
    let mut revoked = tx.open_table(REVOKED).map_err(Box::new)?;
    let mut duplicated = tx.open_table(DUPLICATED).map_err(Box::new)?;
    let mut health = tx.open_table(HEALTH).map_err(Box::new)?;
    for change in changes {
        match change {
            Change::PutNode(n) => {
                nodes
                    .insert(n.id.as_str(), encode(n.as_ref()).as_slice())
                    .map_err(Box::new)?;
            }
            Change::PutToken(t) => {
                tokens
                    .insert(t.id.as_str(), encode(t).as_slice())
                    .map_err(Box::new)?;
            }
            Change::Revoke { serial, not_after } => {
                revoked
                    .insert(serial.as_str(), *not_after)
                    .map_err(Box::new)?;
            }
            Change::DuplicateUuid(u) => {
                duplicated.insert(u.as_str(), 1u64).map_err(Box::new)?;
            }
            Change::Health {
                node,
                index,
                boot,
                report,
            } => {
                let row = StoredHealth {
                    boot: boot.clone(),
                    report: (**report).clone(),
                };
                health
                    .insert(health_key(node, *index).as_str(), encode(&row).as_slice())
                    .map_err(Box::new)?;
                if *index > HEALTH_KEPT {
                    health
                        .remove(health_key(node, index - HEALTH_KEPT).as_str())
                        .map_err(Box::new)?;
                }
            }
        }
    }
    Ok(())
}

/// The newest `limit` health reports of `node`, oldest first.
pub(super) fn health(
    db: &impl ReadableDatabase,
    node: &NodeId,
    limit: usize,
) -> Result<Vec<StoredHealth>, StoreError> {
    let tx = db.begin_read().map_err(Box::new)?;
    let table = tx.open_table(HEALTH).map_err(Box::new)?;
    let start = format!("{node}/");
    let end = format!("{node}0");
    let mut out: Vec<StoredHealth> = table
        .range(start.as_str()..end.as_str())
        .map_err(Box::new)?
        .rev()
        .filter_map(|row| row.ok().and_then(|(_, v)| decode(v.value())))
        .take(limit)
        .collect();
    out.reverse();
    Ok(out)
}
