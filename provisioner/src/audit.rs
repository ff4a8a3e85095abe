//! The audit log: who got which secret, and who was refused one.
//! `<state>/audit.log`, JSON lines, mode 0600, each line synced before the
//! call returns; at `ROTATE_AT` bytes the file moves to `audit.log.1`.
//!
//! Written for: machine-config deliveries and refusals (wrong node, no
//! certificate, bad or replayed install token), secrets exports and
//! talosconfigs minted. Never holds a secret itself: tokens appear as
//! nothing, configs as their SHA-256.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

pub const FILE: &str = "audit.log";
pub const ROTATE_AT: u64 = 16 << 20;

#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

fn open(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl Audit {
    pub fn open(state_dir: &Path) -> std::io::Result<Audit> {
        let path = state_dir.join(FILE);
        let file = open(&path)?;
        Ok(Audit {
            path,
            file: Mutex::new(Some(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event. `fields` is merged into `{"at", "event"}`. A
    /// failure to write is logged (the action itself already happened or
    /// was already refused; the log must not decide it).
    pub fn record(&self, event: &str, fields: Value) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut line = json!({ "at_ms": at, "event": event });
        if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        if let Err(e) = self.append(text.as_bytes()) {
            tracing::error!(error = %e, path = ?self.path, event, "audit log write failed");
        }
    }

    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let len = match guard.as_ref() {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        if guard.is_none() || len + bytes.len() as u64 > ROTATE_AT {
            if guard.is_some() {
                *guard = None;
                std::fs::rename(&self.path, self.path.with_extension("log.1"))?;
            }
            *guard = Some(open(&self.path)?);
        }
        let Some(file) = guard.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes)?;
        file.sync_data()
    }
}

/// Reads the audit log's events (for tests and the CLI).
pub fn read(path: &Path) -> std::io::Result<Vec<Value>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_0600_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::open(dir.path()).unwrap();
        a.record(
            "config_refused",
            json!({"node": "n-1", "reason": "other node"}),
        );
        let events = read(a.path()).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["event"], "config_refused");
        assert_eq!(events[0]["node"], "n-1");
        assert!(events[0]["at_ms"].as_u64().unwrap() > 0);
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Fill past the rotation size: the old lines move to audit.log.1.
        let big = "x".repeat(1 << 20);
        for _ in 0..17 {
            a.record("filler", json!({ "pad": big }));
        }
        assert!(dir.path().join("audit.log.1").exists());
        assert!(std::fs::metadata(a.path()).unwrap().len() <= ROTATE_AT);
        a.record("after", json!({}));
        assert_eq!(read(a.path()).unwrap().last().unwrap()["event"], "after");
    }
}
