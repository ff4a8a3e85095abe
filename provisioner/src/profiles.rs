//! Hardware profiles: data files (`hw-profiles/*.toml`, embedded; plus an
//! optional local directory) that say, per server model, how to recognise it
//! (SMBIOS), which disk Talos goes on, the console, the NIC drivers to
//! expect, BMC quirks, how iPXE hands off to the local disk, and Talos
//! patches. Pure: parsing, checking, matching, disk choice.
//!
//! Matching: a profile's selector fields must all match the node's SMBIOS
//! vendor/product (exact, or a `*`/`?` glob). The most specific match wins
//! (an exact field counts 2, a glob 1); a tie at the top is an error that
//! names both profiles, never a silent pick.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::talos::model::DiskSelector;
use crate::talos::patch::Patch;
pub use crate::talos::validate::parse_size;

/// The profiles shipped in the binary, `(file name, text)`.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "dell-poweredge-r660.toml",
        include_str!("../../hw-profiles/dell-poweredge-r660.toml"),
    ),
    (
        "dell-poweredge-r760.toml",
        include_str!("../../hw-profiles/dell-poweredge-r760.toml"),
    ),
    (
        "hpe-proliant-dl360-gen11.toml",
        include_str!("../../hw-profiles/hpe-proliant-dl360-gen11.toml"),
    ),
    (
        "generic-x86_64.toml",
        include_str!("../../hw-profiles/generic-x86_64.toml"),
    ),
    ("qemu.toml", include_str!("../../hw-profiles/qemu.toml")),
];

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    #[serde(rename = "match", default)]
    pub selector: Selector,
    pub boot_disk: BootDisk,
    pub console: Console,
    #[serde(default)]
    pub nics: Nics,
    pub bmc: Bmc,
    pub firmware: Firmware,
    pub local_boot: LocalBoot,
    #[serde(default)]
    pub talos: TalosPart,
}

/// SMBIOS `sys_vendor` / `product_name`; unset fields match anything.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub sys_vendor: Option<String>,
    pub product_name: Option<String>,
}

/// Which disk Talos is installed on.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BootDisk {
    /// Glob on the disk model (`Dell BOSS-N1*`).
    pub model: Option<String>,
    /// `nvme`, `sata`, `sas`, `scsi`, `virtio`, `usb`, `mmc`.
    pub transport: Option<Vec<String>>,
    /// Size bounds, `480GB`, `2TB`, `4GiB`.
    pub min_size: Option<String>,
    pub max_size: Option<String>,
    /// Refuse unless exactly one disk matches (a model's vendor boot device).
    #[serde(default)]
    pub expect_exactly_one: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Kernel console when nothing better is known (`ttyS1,115200n8`).
    pub serial: Option<String>,
    /// BIOS attributes (Redfish) to derive the port from at enrollment.
    #[serde(default)]
    pub bios_attributes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nics {
    #[serde(default)]
    pub expected_drivers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    /// `idrac9`, `ilo6`, `generic`, `none`.
    pub kind: String,
    pub min_firmware: Option<String>,
    /// Where virtual media lives: `systems`, `managers`, `auto`.
    pub virtual_media: Option<String>,
    #[serde(default)]
    pub quirks: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    /// `uefi`, or `any`.
    pub mode: String,
    /// `required`, `optional`, `unsupported`.
    pub secure_boot: String,
}

/// How an installed node's iPXE script leaves for the local disk.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalBoot {
    pub uefi: HandOff,
    pub bios: HandOff,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HandOff {
    /// Return to the firmware, which boots the next device in its order.
    Exit,
    /// `sanboot --no-describe --drive 0x80`: boot the first disk directly.
    Sanboot,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TalosPart {
    /// Strategic-merge patches (YAML), applied before the site's.
    #[serde(default)]
    pub patches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("profiles {0} and {1} match this machine equally well; make one more specific")]
    Tie(String, String),
    #[error("no profile matches (the generic profile is missing)")]
    NoMatch,
    #[error(
        "profile {profile}: {count} disks match its boot-disk rule ({candidates}); exactly one is needed"
    )]
    Disk {
        profile: String,
        count: usize,
        candidates: String,
    },
    #[error("{path:?}: {reason}")]
    Io { path: String, reason: String },
}

/// What the node's inventory says, as far as profiles care.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Facts {
    #[serde(default)]
    pub system: SystemFacts,
    #[serde(default)]
    pub disks: Vec<DiskFacts>,
    #[serde(default)]
    pub firmware: FirmwareFacts,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SystemFacts {
    pub vendor: Option<String>,
    pub product: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct FirmwareFacts {
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct DiskFacts {
    pub name: String,
    pub size_bytes: Option<u64>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwid: Option<String>,
    pub transport: Option<String>,
    pub rotational: Option<bool>,
    pub removable: Option<bool>,
}

impl Facts {
    /// From the agent's inventory JSON (unknown fields ignored).
    pub fn from_inventory(json: &serde_json::Value) -> Facts {
        Facts::deserialize(json).unwrap_or_default()
    }
}

/// `*` and `?` glob, whole string, case-sensitive (SMBIOS and sysfs strings
/// are compared as they are).
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn field_score(pattern: &Option<String>, value: Option<&str>) -> Option<u32> {
    match pattern {
        None => Some(0),
        Some(p) => {
            let v = value?;
            if !p.contains(['*', '?']) {
                (p == v).then_some(2)
            } else {
                glob(p, v).then_some(1)
            }
        }
    }
}

const TRANSPORTS: &[&str] = &["nvme", "sata", "sas", "scsi", "virtio", "usb", "mmc"];
const BMC_KINDS: &[&str] = &["idrac9", "idrac10", "ilo6", "generic", "none"];

impl Profile {
    pub fn parse(file: &str, text: &str) -> Result<Profile, ProfileError> {
        let invalid = |reason: String| ProfileError::Invalid {
            file: file.to_owned(),
            reason,
        };
        let p: Profile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        p.check().map_err(invalid)?;
        Ok(p)
    }

    /// Everything a profile promises, checked (patches parse, sizes parse, …).
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!("name {:?} must be [a-z0-9_-]+", self.name));
        }
        let d = &self.boot_disk;
        for s in [&d.min_size, &d.max_size].into_iter().flatten() {
            parse_size(s).ok_or_else(|| format!("boot_disk size {s:?} does not parse"))?;
        }
        for t in d.transport.iter().flatten() {
            if !TRANSPORTS.contains(&t.as_str()) {
                return Err(format!(
                    "boot_disk transport {t:?} is not one of {TRANSPORTS:?}"
                ));
            }
        }
        if !BMC_KINDS.contains(&self.bmc.kind.as_str()) {
            return Err(format!(
                "bmc kind {:?} is not one of {BMC_KINDS:?}",
                self.bmc.kind
            ));
        }
        if !["uefi", "any"].contains(&self.firmware.mode.as_str()) {
            return Err(format!(
                "firmware mode {:?} is not uefi or any",
                self.firmware.mode
            ));
        }
        if !["required", "optional", "unsupported"].contains(&self.firmware.secure_boot.as_str()) {
            return Err(format!(
                "secure_boot {:?} is not required, optional or unsupported",
                self.firmware.secure_boot
            ));
        }
        self.patches().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The profile's Talos patches, parsed.
    pub fn patches(&self) -> Result<Vec<Patch>, crate::talos::patch::PatchError> {
        self.talos
            .patches
            .iter()
            .enumerate()
            .map(|(i, text)| Patch::parse(&format!("profile {} patch {}", self.name, i + 1), text))
            .collect()
    }

    /// How well the profile fits the machine: `None` if it does not.
    pub fn score(&self, facts: &Facts) -> Option<u32> {
        Some(
            field_score(&self.selector.sys_vendor, facts.system.vendor.as_deref())?
                + field_score(&self.selector.product_name, facts.system.product.as_deref())?,
        )
    }

    fn disk_matches(&self, d: &DiskFacts) -> bool {
        let rule = &self.boot_disk;
        if d.removable == Some(true) {
            return false;
        }
        if let Some(m) = &rule.model
            && !d
                .model
                .as_deref()
                .is_some_and(|model| glob(m, model.trim()))
        {
            return false;
        }
        if let Some(ts) = &rule.transport
            && !d
                .transport
                .as_deref()
                .is_some_and(|t| ts.iter().any(|x| x == t))
        {
            return false;
        }
        let size = d.size_bytes;
        let bound = |s: &Option<String>| s.as_deref().and_then(parse_size);
        if let Some(min) = bound(&rule.min_size)
            && size.is_none_or(|s| s < min)
        {
            return false;
        }
        if let Some(max) = bound(&rule.max_size)
            && size.is_none_or(|s| s > max)
        {
            return false;
        }
        true
    }

    /// The install disk on this machine, pinned for Talos by serial (else
    /// WWID, else device name). Exactly one candidate is required: Talos
    /// itself would take the first of several, which is how the wrong disk
    /// gets wiped.
    pub fn choose_disk(&self, facts: &Facts) -> Result<DiskChoice, ProfileError> {
        let candidates: Vec<&DiskFacts> = facts
            .disks
            .iter()
            .filter(|d| self.disk_matches(d))
            .collect();
        let [disk] = candidates.as_slice() else {
            return Err(ProfileError::Disk {
                profile: self.name.clone(),
                count: candidates.len(),
                candidates: if candidates.is_empty() {
                    "none".to_owned()
                } else {
                    candidates
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        };
        let nonempty = |s: &Option<String>| s.as_ref().filter(|s| !s.trim().is_empty()).cloned();
        let selector = if let Some(serial) = nonempty(&disk.serial) {
            DiskSelector {
                serial: Some(serial),
                ..DiskSelector::default()
            }
        } else if let Some(wwid) = nonempty(&disk.wwid) {
            DiskSelector {
                wwid: Some(wwid),
                ..DiskSelector::default()
            }
        } else {
            DiskSelector {
                name: Some(format!("/dev/{}", disk.name)),
                ..DiskSelector::default()
            }
        };
        Ok(DiskChoice {
            device: format!("/dev/{}", disk.name),
            serial: nonempty(&disk.serial),
            wwid: nonempty(&disk.wwid),
            size_bytes: disk.size_bytes,
            selector,
        })
    }
}

/// The disk a node installs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskChoice {
    /// As the discovery kernel named it; the agent re-resolves by serial/WWID.
    pub device: String,
    pub serial: Option<String>,
    pub wwid: Option<String>,
    pub size_bytes: Option<u64>,
    pub selector: DiskSelector,
}

/// Every profile the hub knows: shipped, then local (same name: local wins).
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    pub all: Vec<Profile>,
}

impl Profiles {
    pub fn shipped() -> Result<Profiles, ProfileError> {
        let mut all = Vec::new();
        for (file, text) in SHIPPED {
            all.push(Profile::parse(file, text)?);
        }
        Ok(Profiles { all })
    }

    /// Shipped profiles plus every `*.toml` in `dir` (a local one replaces a
    /// shipped one of the same name).
    pub fn load(dir: Option<&Path>) -> Result<Profiles, ProfileError> {
        let mut profiles = Profiles::shipped()?;
        let Some(dir) = dir else {
            return Ok(profiles);
        };
        let io = |e: std::io::Error| ProfileError::Io {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let p = Profile::parse(&path.display().to_string(), &text)?;
            profiles.all.retain(|q| q.name != p.name);
            profiles.all.push(p);
        }
        Ok(profiles)
    }

    /// The most specific matching profile; a tie at the top is an error.
    pub fn matching(&self, facts: &Facts) -> Result<&Profile, ProfileError> {
        let mut scored: Vec<(u32, &Profile)> = self
            .all
            .iter()
            .filter_map(|p| p.score(facts).map(|s| (s, p)))
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        match scored.as_slice() {
            [] => Err(ProfileError::NoMatch),
            [(a, p), (b, q), ..] if a == b => {
                Err(ProfileError::Tie(p.name.clone(), q.name.clone()))
            }
            [(_, p), ..] => Ok(p),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Profile> {
        self.all.iter().find(|p| p.name == name)
    }
}

/// `profiles check`: each profile's patches applied to a rendered
/// control-plane config must pass Talos's rules, and no two profiles may
/// have the same selector (they would tie on every machine they match).
/// Returns `(profile, problem)` pairs.
pub fn check_all(profiles: &Profiles) -> Vec<(String, String)> {
    use crate::talos::render::{self, InstallTarget, NodeSpec, Role, Site};
    let mut problems = Vec::new();
    let secrets = match crate::talos::secrets::SecretsBundle::generate(std::time::SystemTime::now())
    {
        Ok(s) => s,
        Err(e) => return vec![("*".to_owned(), e.to_string())],
    };
    let site = Site::new("check", "https://192.0.2.1:6443");
    for (i, p) in profiles.all.iter().enumerate() {
        if let Some(q) = profiles.all[..i].iter().find(|q| q.selector == p.selector) {
            problems.push((
                p.name.clone(),
                format!("same selector as {}: they always tie", q.name),
            ));
        }
        let patches = match p.patches() {
            Ok(patches) => patches,
            Err(e) => {
                problems.push((p.name.clone(), e.to_string()));
                continue;
            }
        };
        let node = NodeSpec {
            role: Role::Controlplane,
            hostname: None,
            install: InstallTarget {
                disk: Some("/dev/sda".to_owned()),
                ..InstallTarget::default()
            },
            mac: None,
            address: None,
            profile_patches: patches,
        };
        if let Err(e) = render::render(&site, &secrets, &node) {
            problems.push((p.name.clone(), e.to_string()));
        }
    }
    problems
}

#[cfg(test)]
#[path = "profiles_tests.rs"]
mod tests;
