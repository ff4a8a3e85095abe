//! The filesystem as the inventory sees it: four read-only questions about
//! absolute paths, answered by the live system ([`RootSource`]) or by a
//! captured fixture ([`super::fixture::Fixture`]).
//!
//! Every answer is optional: an unreadable, missing or oversized file is
//! `None`, an unlistable directory is empty. The collectors turn that into
//! "unknown"; nothing here reports errors, because for an inventory a missing
//! file is a fact, not a failure.

use std::fs;
use std::io::Read;
use std::path::PathBuf;

/// Largest file read whole. /proc/cpuinfo of a 512-thread machine is under
/// 1 MiB and SMBIOS 3 tables are at most a few hundred KiB; anything bigger
/// is not one of our sources behaving normally.
pub const MAX_READ: u64 = 4 << 20;

/// Read-only view of a filesystem, by absolute path ("/sys/block").
///
/// Paths are never resolved: `read("/sys/block/sda/size")` asks for exactly
/// that path (on the live system the kernel follows the symlinks; a fixture
/// stores the path as written).
pub trait Source {
    /// Whole content of a file (following symlinks), or `None`.
    fn read(&self, path: &str) -> Option<Vec<u8>>;
    /// Target of a symlink as stored (usually relative), or `None`.
    fn read_link(&self, path: &str) -> Option<String>;
    /// Names in a directory, sorted; empty when it is missing or unreadable.
    fn list(&self, dir: &str) -> Vec<String>;
    /// Whether something (file, directory, device node, link) is at `path`.
    fn exists(&self, path: &str) -> bool;
}

/// The live filesystem under `root` ("/" on the machine itself; a mounted
/// image or a copied tree in tests).
#[derive(Debug, Clone)]
pub struct RootSource {
    root: PathBuf,
}

impl RootSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Source for RootSource {
    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let file = fs::File::open(self.resolve(path)).ok()?;
        let mut buf = Vec::new();
        // One byte past the cap tells "exactly MAX_READ" from "larger".
        file.take(MAX_READ + 1).read_to_end(&mut buf).ok()?;
        (buf.len() as u64 <= MAX_READ).then_some(buf)
    }

    fn read_link(&self, path: &str) -> Option<String> {
        let target = fs::read_link(self.resolve(path)).ok()?;
        target.into_os_string().into_string().ok()
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.resolve(dir)) else {
            return Vec::new();
        };
        // Names that are not UTF-8 cannot be asked about through this trait; skip them.
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    fn exists(&self, path: &str) -> bool {
        fs::symlink_metadata(self.resolve(path)).is_ok()
    }
}

/// A file's content as trimmed text; `None` when missing or blank.
/// Invalid UTF-8 is replaced, not rejected: sysfs strings come from firmware.
pub fn read_text(src: &dyn Source, path: &str) -> Option<String> {
    let bytes = src.read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_string())
}

/// A file holding one unsigned decimal number.
pub fn read_u64(src: &dyn Source, path: &str) -> Option<u64> {
    read_text(src, path)?.parse().ok()
}

/// A file holding "0" or "1".
pub fn read_bool(src: &dyn Source, path: &str) -> Option<bool> {
    match read_text(src, path)?.as_str() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Last component of a symlink's target: the driver name of `.../driver`.
pub fn link_name(src: &dyn Source, path: &str) -> Option<String> {
    let target = src.read_link(path)?;
    let name = target.trim_end_matches('/').rsplit('/').next()?;
    (!name.is_empty() && name != "..").then(|| name.to_string())
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples on purpose
mod tests {
    use super::*;

    #[test]
    fn root_source_reads_a_tree() {
        let dir = std::env::temp_dir().join(format!("inventory-source-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sys/class/x")).unwrap();
        fs::write(dir.join("sys/class/x/value"), b" 42\n").unwrap();
        fs::write(dir.join("sys/class/x/flag"), b"1\n").unwrap();
        std::os::unix::fs::symlink("../../bus/drivers/e1000e", dir.join("sys/class/x/driver"))
            .unwrap();
        let src = RootSource::new(&dir);

        assert_eq!(read_u64(&src, "/sys/class/x/value"), Some(42));
        assert_eq!(read_bool(&src, "/sys/class/x/flag"), Some(true));
        assert_eq!(
            link_name(&src, "/sys/class/x/driver").as_deref(),
            Some("e1000e")
        );
        assert_eq!(src.list("/sys/class/x"), vec!["driver", "flag", "value"]);
        assert!(
            src.exists("/sys/class/x/driver"),
            "a dangling link still exists"
        );
        assert!(!src.exists("/sys/class/y"));
        assert_eq!(src.read("/sys/class/missing"), None);
        assert!(src.list("/nope").is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn text_helpers_degrade_to_none() {
        let cases: &[(&str, &[u8], Option<u64>, Option<bool>)] = &[
            ("empty", b"", None, None),
            ("blank", b" \n\0", None, None),
            ("number", b"7\n", Some(7), None),
            ("zero", b"0\n", Some(0), Some(false)),
            ("negative", b"-1\n", None, None),
            ("garbage", b"\xff\xfe", None, None),
            ("overflow", b"99999999999999999999999", None, None),
        ];
        for (name, bytes, want_u64, want_bool) in cases {
            let fx = super::super::fixture::Fixture::from_files(&[("/f", bytes)]);
            assert_eq!(read_u64(&fx, "/f"), *want_u64, "case {name}");
            assert_eq!(read_bool(&fx, "/f"), *want_bool, "case {name}");
        }
    }
}
