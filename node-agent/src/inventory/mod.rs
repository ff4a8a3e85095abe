//! Hardware inventory of the machine the agent runs on: firmware identity,
//! CPUs, memory, disks, NICs, PCI functions, TPM and BMC, for
//! `node-agent inventory [--json]` and for enrollment.
//!
//! Everything is read through a [`Source`], so collection is a pure function
//! of the files it is given: [`RootSource`] on a live machine, a
//! [`Fixture`] in tests. A missing or unreadable source leaves its fields
//! `None` or empty and hostile contents are parsed with bounds checks, so
//! [`collect`] cannot fail and never panics.
//!
//! It reads sysfs, procfs and /dev/disk/by-id only; it runs no tools
//! (dmidecode, lsblk, ipmitool), sends no IPMI commands, and mounts nothing:
//! efivarfs must already be mounted for the Secure Boot state to be known.
//!
//! Sources by section:
//! - system, baseboard, chassis, BIOS, DIMMs, CPU sockets, IPMI, Redfish host
//!   interface, TPM: the SMBIOS table (/sys/firmware/dmi/tables), with
//!   /sys/class/dmi/id where the table is unreadable (it is root-only);
//! - firmware mode: /sys/firmware/efi; Secure Boot: efivarfs;
//! - CPUs: /proc/cpuinfo, then /sys/devices/system/cpu/cpu*/topology;
//! - memory total: /proc/meminfo; disks: /sys/block, /dev/disk/by-id;
//! - NICs: /sys/class/net; PCI: /sys/bus/pci/devices; TPM: /sys/class/tpm.

// Parsers of files a machine (or an attacker with root on it) controls: no
// panics of any kind, no unchecked indexing.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod block;
mod bmc;
mod cpu;
mod firmware;
pub mod fixture;
mod identity;
mod memory;
pub mod model;
mod net;
mod pci;
mod render;
pub mod smbios;
mod source;
mod tpm;

pub use fixture::{Fixture, FixtureError, Recorder};
pub use identity::Identity;
pub use model::*;
pub use render::{from_json, human_bytes, render_text, to_json};
pub use source::{RootSource, Source};

/// Failures at the edges of this module: JSON in and out.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("encoding or decoding inventory JSON")]
    Json(#[source] serde_json::Error),
}

/// Collects the inventory from `src`. Never fails: what cannot be read is unknown.
pub fn collect(src: &dyn Source) -> Inventory {
    let smb = firmware::read_smbios(src);
    Inventory {
        schema_version: SCHEMA_VERSION,
        system: firmware::system(src, &smb),
        baseboard: firmware::baseboard(src, &smb),
        chassis: firmware::chassis(src, &smb),
        firmware: firmware::firmware(src, &smb),
        cpu: cpu::collect(src, &smb),
        memory: memory::collect(src, &smb),
        disks: block::collect(src),
        nics: net::collect(src),
        pci: pci::collect(src),
        tpm: tpm::collect(src, &smb),
        bmc: bmc::collect(src, &smb),
    }
}

/// An inventory with nothing known (what `collect` returns for an empty source).
pub fn empty() -> Inventory {
    collect(&Fixture::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_source_is_all_unknown() {
        let inv = empty();
        assert_eq!(inv.schema_version, SCHEMA_VERSION);
        assert_eq!(inv.system, System::default());
        assert_eq!(inv.firmware.mode, None);
        assert_eq!(inv.cpu.threads, None);
        assert!(inv.disks.is_empty() && inv.nics.is_empty() && inv.pci.is_empty());
        assert!(!inv.tpm.present && !inv.bmc.detected());
    }
}
