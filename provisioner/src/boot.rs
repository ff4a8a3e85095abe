//! The boot-file table: which first-stage file each kind of firmware is told to
//! fetch. DHCP advertises from this table; the TFTP and HTTP servers will serve
//! from the same table, so nothing is advertised that is not served.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What a DHCP client is, as far as booting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// Legacy BIOS PXE ROM (option 93 = 0).
    BiosX86,
    /// UEFI x64 PXE (option 93 = 7 or 9).
    UefiX64,
    /// UEFI arm64 PXE (option 93 = 11).
    UefiArm64,
    /// UEFI HTTP boot, x64 (vendor class `HTTPClient`, option 93 = 16).
    HttpUefiX64,
    /// UEFI HTTP boot, arm64 (option 93 = 19).
    HttpUefiArm64,
    /// iPXE already running (user class `iPXE`): gets the script, never iPXE again.
    Ipxe,
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::BiosX86 => "bios-x86",
            Firmware::UefiX64 => "uefi-x64",
            Firmware::UefiArm64 => "uefi-arm64",
            Firmware::HttpUefiX64 => "http-uefi-x64",
            Firmware::HttpUefiArm64 => "http-uefi-arm64",
            Firmware::Ipxe => "ipxe",
        })
    }
}

/// Which iPXE build UEFI x64 firmware loads: the full driver set or SNP only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UefiX64Loader {
    #[default]
    #[serde(rename = "ipxe.efi")]
    IpxeEfi,
    #[serde(rename = "snponly.efi")]
    SnpOnly,
}

/// Where a client is told to fetch its first stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTarget {
    /// A file name on the hub's TFTP server (the `file` field, with `siaddr` = hub).
    Tftp(&'static str),
    /// A path on the hub's HTTP server, advertised as a full URL.
    Http(&'static str),
}

/// The one table DHCP, TFTP and HTTP agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTable {
    http_port: u16,
    uefi_x64: UefiX64Loader,
    /// Firmware whose first stage is not served (its asset is missing): never advertised.
    unserved: Vec<Firmware>,
}

/// TFTP/HTTP names of the first-stage files.
pub const UNDIONLY_KPXE: &str = "undionly.kpxe";
pub const IPXE_EFI: &str = "ipxe.efi";
pub const SNPONLY_EFI: &str = "snponly.efi";
pub const IPXE_ARM64_EFI: &str = "ipxe-arm64.efi";
/// The static iPXE entry script; it chains to the per-machine script.
pub const BOOT_SCRIPT_PATH: &str = "/boot.ipxe";

impl BootTable {
    pub fn new(http_port: u16, uefi_x64: UefiX64Loader) -> BootTable {
        BootTable {
            http_port,
            uefi_x64,
            unserved: Vec::new(),
        }
    }

    /// What `firmware` is told to fetch, or `None` when that file is not served.
    pub fn target(&self, firmware: Firmware) -> Option<BootTarget> {
        (!self.unserved.contains(&firmware)).then(|| self.entry(firmware))
    }

    /// Stops advertising every target for which `served` is false.
    pub fn restrict(&mut self, served: impl Fn(&BootTarget) -> bool) {
        self.unserved = ALL_FIRMWARE
            .into_iter()
            .filter(|&f| !served(&self.entry(f)))
            .collect();
    }

    fn entry(&self, firmware: Firmware) -> BootTarget {
        match firmware {
            Firmware::BiosX86 => BootTarget::Tftp(UNDIONLY_KPXE),
            Firmware::UefiX64 => BootTarget::Tftp(self.uefi_x64_file()),
            Firmware::UefiArm64 => BootTarget::Tftp(IPXE_ARM64_EFI),
            Firmware::HttpUefiX64 => BootTarget::Http("/boot/ipxe.efi"),
            Firmware::HttpUefiArm64 => BootTarget::Http("/boot/ipxe-arm64.efi"),
            Firmware::Ipxe => BootTarget::Http(BOOT_SCRIPT_PATH),
        }
    }

    fn uefi_x64_file(&self) -> &'static str {
        match self.uefi_x64 {
            UefiX64Loader::IpxeEfi => IPXE_EFI,
            UefiX64Loader::SnpOnly => SNPONLY_EFI,
        }
    }

    /// The full URL for an HTTP target, as seen by a client that reached us at `server`.
    pub fn url(&self, server: Ipv4Addr, path: &str) -> String {
        format!("http://{server}:{}{path}", self.http_port)
    }

    /// Every file the DHCP side can advertise, for the serving side to check against.
    pub fn advertised(&self) -> Vec<(Firmware, BootTarget)> {
        ALL_FIRMWARE
            .into_iter()
            .filter_map(|f| self.target(f).map(|t| (f, t)))
            .collect()
    }
}

pub const ALL_FIRMWARE: [Firmware; 6] = [
    Firmware::BiosX86,
    Firmware::UefiX64,
    Firmware::UefiArm64,
    Firmware::HttpUefiX64,
    Firmware::HttpUefiArm64,
    Firmware::Ipxe,
];
