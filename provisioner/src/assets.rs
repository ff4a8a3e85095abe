//! Boot assets: the manifest (`boot-assets/manifest.toml`, embedded in the binary
//! unless the config names another) and the verified files in the assets directory.
//!
//! At start every listed file is checked (inside the assets root, regular file,
//! size and sha256 as listed). Only verified files are served, over TFTP by exact
//! name and over HTTP by exact path, and only they are advertised by DHCP: there is
//! no path arithmetic anywhere, so traversal has nothing to work with.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest shipped with this build.
pub const EMBEDDED_MANIFEST: &str = include_str!("../../boot-assets/manifest.toml");

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("reading manifest {path:?}")]
    ReadManifest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing manifest: {0}")]
    Parse(#[from] Box<toml::de::Error>),
    #[error("manifest: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ipxe,
    Kernel,
    Initramfs,
    /// A whole-disk image nodes install (Talos `metal-amd64.raw[.zst]`).
    #[serde(rename = "disk-image")]
    DiskImage,
    /// Files that exist only in test manifests.
    Test,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Arm64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    Bios,
    Uefi,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    asset: Vec<RawAsset>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsset {
    pub name: String,
    pub kind: Kind,
    pub arch: Arch,
    pub firmware: FirmwareKind,
    pub sha256: String,
    pub size: u64,
    pub source: String,
    pub tftp: Option<String>,
    pub http: Option<String>,
}

/// A verified file the hub may serve.
#[derive(Debug, Clone)]
pub struct Asset {
    pub spec: RawAsset,
    pub path: PathBuf,
    /// The verified bytes, for files small enough to keep in memory: served from
    /// here, they are exactly what was hashed, and no file I/O sits on the hot path.
    pub data: Option<bytes::Bytes>,
}

/// Files up to this size are kept in memory after verification...
pub const CACHE_MAX_FILE: u64 = 256 << 20;
/// ...as long as all cached files together stay under this.
pub const CACHE_MAX_TOTAL: u64 = 1 << 30;

/// Why a listed asset is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    Missing,
    NotRegularFile,
    OutsideRoot,
    Size { want: u64, got: u64 },
    Sha256 { want: String, got: String },
    Unreadable(String),
}

/// The assets the hub serves, by TFTP name and HTTP path.
#[derive(Debug, Default)]
pub struct Assets {
    by_name: HashMap<String, Asset>,
    by_tftp: HashMap<String, String>,
    by_http: HashMap<String, String>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Parses and validates a manifest (names, paths, hashes, uniqueness).
pub fn parse_manifest(text: &str) -> Result<Vec<RawAsset>, AssetError> {
    let raw: RawManifest = toml::from_str(text).map_err(Box::new)?;
    let invalid = |m: String| Err(AssetError::Invalid(m));
    let (mut names, mut tftp, mut http) = (HashMap::new(), HashMap::new(), HashMap::new());
    for a in &raw.asset {
        if !valid_name(&a.name) {
            return invalid(format!("asset name {:?} must be [A-Za-z0-9._-]", a.name));
        }
        if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(format!("asset {}: sha256 must be 64 hex digits", a.name));
        }
        if let Some(t) = &a.tftp
            && !valid_name(t)
        {
            return invalid(format!(
                "asset {}: tftp name {t:?} must be [A-Za-z0-9._-]",
                a.name
            ));
        }
        if let Some(h) = &a.http
            && !(h.starts_with("/boot/") && valid_name(&h["/boot/".len()..]))
        {
            return invalid(format!(
                "asset {}: http path {h:?} must be /boot/<name>",
                a.name
            ));
        }
        for (map, key, what) in [
            (&mut names, Some(&a.name), "name"),
            (&mut tftp, a.tftp.as_ref(), "tftp name"),
            (&mut http, a.http.as_ref(), "http path"),
        ] {
            if let Some(k) = key
                && map.insert(k.clone(), ()).is_some()
            {
                return invalid(format!("{what} {k:?} is listed twice"));
            }
        }
    }
    Ok(raw.asset)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(proto::hex::encode(&h.finalize()))
}

/// The spec of an asset the hub adds itself: x86_64, any firmware, HTTP only.
fn http_spec(
    name: &str,
    http: &str,
    kind: Kind,
    sha256: String,
    size: u64,
    source: String,
) -> RawAsset {
    RawAsset {
        name: name.to_owned(),
        kind,
        arch: Arch::X86_64,
        firmware: FirmwareKind::Any,
        sha256,
        size,
        source,
        tftp: None,
        http: Some(http.to_owned()),
    }
}

fn verify(
    root: &Path,
    spec: &RawAsset,
    keep: bool,
) -> Result<(PathBuf, Option<bytes::Bytes>), Unavailable> {
    let path = root.join(&spec.name);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unavailable::Missing),
        Err(e) => return Err(Unavailable::Unreadable(e.to_string())),
    };
    // A symlink is followed only if it stays inside the root.
    let real = std::fs::canonicalize(&path).map_err(|e| Unavailable::Unreadable(e.to_string()))?;
    let real_root =
        std::fs::canonicalize(root).map_err(|e| Unavailable::Unreadable(e.to_string()))?;
    if !real.starts_with(&real_root) {
        return Err(Unavailable::OutsideRoot);
    }
    let meta = if meta.file_type().is_symlink() {
        std::fs::metadata(&real).map_err(|e| Unavailable::Unreadable(e.to_string()))?
    } else {
        meta
    };
    if !meta.is_file() {
        return Err(Unavailable::NotRegularFile);
    }
    if meta.len() != spec.size {
        return Err(Unavailable::Size {
            want: spec.size,
            got: meta.len(),
        });
    }
    let unreadable = |e: std::io::Error| Unavailable::Unreadable(e.to_string());
    let (got, data) = if keep {
        let data = std::fs::read(&real).map_err(unreadable)?;
        if data.len() as u64 != spec.size {
            return Err(Unavailable::Size {
                want: spec.size,
                got: data.len() as u64,
            });
        }
        let got = proto::hex::encode(&Sha256::digest(&data));
        (got, Some(bytes::Bytes::from(data)))
    } else {
        (sha256_file(&real).map_err(unreadable)?, None)
    };
    if !got.eq_ignore_ascii_case(&spec.sha256) {
        return Err(Unavailable::Sha256 {
            want: spec.sha256.clone(),
            got,
        });
    }
    Ok((real, data))
}

impl Assets {
    /// Verifies every asset of `manifest` in `root`. Returns what can be served and,
    /// for the rest, why not.
    pub fn load(manifest: Vec<RawAsset>, root: &Path) -> (Assets, Vec<(String, Unavailable)>) {
        let mut assets = Assets::default();
        let mut unavailable = Vec::new();
        let mut cached = 0u64;
        for spec in manifest {
            let keep = spec.size <= CACHE_MAX_FILE && cached + spec.size <= CACHE_MAX_TOTAL;
            match verify(root, &spec, keep) {
                Ok((path, data)) => {
                    cached += data.as_ref().map_or(0, |d| d.len() as u64);
                    if let Some(t) = &spec.tftp {
                        assets.by_tftp.insert(t.clone(), spec.name.clone());
                    }
                    if let Some(h) = &spec.http {
                        assets.by_http.insert(h.clone(), spec.name.clone());
                    }
                    assets
                        .by_name
                        .insert(spec.name.clone(), Asset { spec, path, data });
                }
                Err(why) => unavailable.push((spec.name, why)),
            }
        }
        (assets, unavailable)
    }

    /// Adds an asset the hub generated itself (served over HTTP only), hashed
    /// now; the bytes served are these bytes.
    pub fn insert_generated(&mut self, name: &str, http: &str, source: String, data: Vec<u8>) {
        let sha256 = proto::hex::encode(&Sha256::digest(&data));
        let spec = http_spec(
            name,
            http,
            Kind::Initramfs,
            sha256,
            data.len() as u64,
            source,
        );
        self.insert_http(spec, PathBuf::new(), Some(bytes::Bytes::from(data)));
    }

    /// Adds a local file the operator named (served over HTTP only, streamed
    /// from disk); hashed now. Returns its spec.
    pub fn insert_file(
        &mut self,
        name: &str,
        http: &str,
        path: &Path,
        source: String,
    ) -> std::io::Result<RawAsset> {
        let meta = std::fs::metadata(path)?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let spec = http_spec(
            name,
            http,
            Kind::DiskImage,
            sha256_file(path)?,
            meta.len(),
            source,
        );
        self.insert_http(spec.clone(), path.to_owned(), None);
        Ok(spec)
    }

    fn insert_http(&mut self, spec: RawAsset, path: PathBuf, data: Option<bytes::Bytes>) {
        if let Some(http) = &spec.http {
            self.by_http.insert(http.clone(), spec.name.clone());
        }
        self.by_name
            .insert(spec.name.clone(), Asset { spec, path, data });
    }

    /// The asset served over TFTP as `name`. One leading `/` is accepted (some
    /// firmware sends it); everything else must match exactly.
    pub fn tftp(&self, name: &str) -> Option<&Asset> {
        let name = name.strip_prefix('/').unwrap_or(name);
        self.by_tftp.get(name).and_then(|n| self.by_name.get(n))
    }

    pub fn http(&self, path: &str) -> Option<&Asset> {
        self.by_http.get(path).and_then(|n| self.by_name.get(n))
    }

    pub fn has_tftp(&self, name: &str) -> bool {
        self.by_tftp.contains_key(name)
    }

    pub fn has_http(&self, path: &str) -> bool {
        self.by_http.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_for(files: &[(&str, &[u8])]) -> String {
        let mut m = String::new();
        for (name, data) in files {
            let sha = proto::hex::encode(&Sha256::digest(data));
            m.push_str(&format!(
                "[[asset]]\nname = \"{name}\"\nkind = \"test\"\narch = \"x86_64\"\nfirmware = \"any\"\nsha256 = \"{sha}\"\nsize = {}\nsource = \"test\"\ntftp = \"{name}\"\nhttp = \"/boot/{name}\"\n",
                data.len()
            ));
        }
        m
    }

    #[test]
    fn embedded_manifest_is_valid() {
        let assets = parse_manifest(EMBEDDED_MANIFEST).expect("shipped manifest parses");
        assert!(
            assets
                .iter()
                .any(|a| a.tftp.as_deref() == Some("undionly.kpxe"))
        );
    }

    #[test]
    fn only_verified_files_are_served_and_lookups_are_exact() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("assets");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(root.join("good.bin"), b"hello").expect("w");
        std::fs::write(root.join("wrong-size.bin"), b"hello!").expect("w");
        std::fs::write(root.join("wrong-hash.bin"), b"HELLO").expect("w");
        std::fs::write(dir.path().join("secret"), b"hello").expect("w");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape.bin")).expect("ln");
        std::os::unix::fs::symlink(root.join("good.bin"), root.join("inside.bin")).expect("ln");
        std::fs::create_dir(root.join("dir.bin")).expect("mkdir");
        let text = manifest_for(&[
            ("good.bin", b"hello"),
            ("wrong-size.bin", b"hello"),
            ("wrong-hash.bin", b"hello"),
            ("escape.bin", b"hello"),
            ("inside.bin", b"hello"),
            ("dir.bin", b"hello"),
            ("missing.bin", b"hello"),
        ]);
        let (assets, bad) = Assets::load(parse_manifest(&text).expect("valid"), &root);
        let bad: HashMap<String, Unavailable> = bad.into_iter().collect();
        assert_eq!(bad["wrong-size.bin"], Unavailable::Size { want: 5, got: 6 });
        assert!(matches!(bad["wrong-hash.bin"], Unavailable::Sha256 { .. }));
        assert_eq!(bad["escape.bin"], Unavailable::OutsideRoot);
        assert_eq!(bad["dir.bin"], Unavailable::NotRegularFile);
        assert_eq!(bad["missing.bin"], Unavailable::Missing);
        assert_eq!(assets.len(), 2);
        assert_eq!(
            assets
                .tftp("good.bin")
                .and_then(|a| a.data.clone())
                .as_deref(),
            Some(&b"hello"[..]),
            "small files are kept verified in memory"
        );
        for (name, found) in [
            ("good.bin", true),
            ("/good.bin", true),
            ("inside.bin", true),
            ("//good.bin", false),
            ("../assets/good.bin", false),
            ("./good.bin", false),
            ("good.bin/", false),
            ("GOOD.BIN", false),
            ("good%2ebin", false),
            ("..\\good.bin", false),
            ("escape.bin", false),
            ("wrong-hash.bin", false),
        ] {
            assert_eq!(assets.tftp(name).is_some(), found, "tftp lookup {name:?}");
        }
        assert!(assets.http("/boot/good.bin").is_some());
        assert!(assets.http("/boot/../assets/good.bin").is_none());
    }

    #[test]
    fn invalid_manifests_are_refused() {
        let good = manifest_for(&[("a.bin", b"x")]);
        for (name, text, want) in [
            (
                "bad name",
                good.replace("name = \"a.bin\"", "name = \"../a\""),
                "asset name",
            ),
            (
                "bad http",
                good.replace("http = \"/boot/a.bin\"", "http = \"/etc/passwd\""),
                "http path",
            ),
            (
                "bad hash",
                good.replace("sha256 = \"", "sha256 = \"zz"),
                "sha256",
            ),
            ("duplicate", format!("{good}{good}"), "listed twice"),
            (
                "unknown key",
                format!("{good}colour = \"red\"\n"),
                "unknown field",
            ),
        ] {
            let err = parse_manifest(&text).expect_err(name).to_string();
            assert!(err.contains(want), "case {name}: {err}");
        }
    }
}
