//! Disks: every whole-disk block device in /sys/block that is backed by
//! hardware (or a hypervisor's virtual hardware), with the identifiers an
//! install-disk selector needs.
//!
//! Left out, by name or because their device path is under
//! /sys/devices/virtual: loop, ram, zram, device-mapper, md, nbd and other
//! software devices, which sit on top of disks rather than being disks. The
//! exception is the NVMe multipath head (/devices/virtual/nvme-subsystem/…),
//! which is how Debian's kernel (CONFIG_NVME_MULTIPATH=y) presents every
//! NVMe namespace. Optical drives and card readers stay in (removable).
//!
//! The transport is read from the device path, since that is all sysfs
//! offers without udev: `/ata3/` is libata, `/end_device-` SAS, `/rport-`
//! Fibre Channel, and so on. A path this module does not recognise gives
//! `None`, not a guess.

use std::collections::BTreeMap;

use super::model::{Disk, Transport};
use super::pci::pci_address_in_path;
use super::source::{Source, read_bool, read_text, read_u64};

pub const SYS_BLOCK: &str = "/sys/block";
pub const BY_ID: &str = "/dev/disk/by-id";

/// Kernel names of software block devices.
const SOFTWARE_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "md", "nbd", "rbd", "drbd"];

/// Block sizes in /sys/block/*/size are always 512-byte sectors, whatever the
/// device's logical block size (include/linux/types.h, `sector_t`).
const SECTOR: u64 = 512;

/// Whether a /sys/block entry is a software device to leave out.
pub fn is_software(name: &str, device_path: Option<&str>) -> bool {
    if SOFTWARE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return true;
    }
    device_path.is_some_and(|p| p.contains("/devices/virtual/") && !p.contains("/nvme-subsystem/"))
}

/// The attachment a sysfs device path shows; `None` when it shows none this
/// module knows. USB comes first: a USB-SATA bridge's path also has a SCSI host.
pub fn transport_from_path(name: &str, device_path: &str) -> Option<Transport> {
    let parts: Vec<&str> = device_path.split('/').collect();
    let any = |f: &dyn Fn(&str) -> bool| parts.iter().any(|p| f(p));
    let numbered = |p: &str, prefix: &str| {
        p.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    if any(&|p| numbered(p, "usb")) {
        Some(Transport::Usb)
    } else if name.starts_with("nvme") || any(&|p| p == "nvme" || p == "nvme-subsystem") {
        Some(Transport::Nvme)
    } else if any(&|p| numbered(p, "ata")) {
        Some(Transport::Sata)
    } else if any(&|p| p.starts_with("end_device-")) {
        Some(Transport::Sas)
    } else if any(&|p| p.starts_with("rport-")) {
        Some(Transport::Fc)
    } else if any(&|p| numbered(p, "session")) {
        Some(Transport::Iscsi)
    } else if name.starts_with("mmcblk") || any(&|p| p == "mmc_host") {
        Some(Transport::Mmc)
    } else if any(&|p| p.starts_with("vbd-")) {
        Some(Transport::Xen)
    } else if any(&|p| numbered(p, "host")) {
        // Any other SCSI host, virtio-scsi included (its LUNs are SCSI disks).
        Some(Transport::Scsi)
    } else if any(&|p| numbered(p, "virtio")) {
        Some(Transport::Virtio)
    } else {
        None
    }
}

/// Transports whose disks are SCSI devices (libata and USB storage included).
fn is_scsi_family(t: &Transport) -> bool {
    matches!(
        t,
        Transport::Sata
            | Transport::Sas
            | Transport::Scsi
            | Transport::Usb
            | Transport::Fc
            | Transport::Iscsi
    )
}

/// Unit serial number from SCSI VPD page 80h (SPC-5 §7.7.17): 4-byte header
/// (page code 80h, big-endian length), then ASCII, space padded. libata
/// answers it with the ATA serial, so SATA disks get theirs this way.
pub fn parse_vpd_serial(bytes: &[u8]) -> Option<String> {
    let (Some(0x80), Some(hi), Some(lo)) = (bytes.get(1), bytes.get(2), bytes.get(3)) else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let body = bytes.get(4..)?;
    let body = body.get(..len.min(body.len()))?;
    let s = String::from_utf8_lossy(body);
    let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!s.is_empty()).then(|| s.to_string())
}

/// The world wide name udev would put in ID_WWN: "0x<hex>" for an NAA id,
/// the whole wwid for NVMe (60-persistent-storage.rules copies it), else none.
pub fn wwn_from_wwid(wwid: &str, transport: Option<Transport>) -> Option<String> {
    if transport == Some(Transport::Nvme) {
        return Some(wwid.to_string());
    }
    let hex = wwid.strip_prefix("naa.")?;
    (!hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("0x{}", hex.to_ascii_lowercase()))
}

/// /dev/disk/by-id names grouped by the device they point at ("sda", "nvme0n1p1").
fn by_id(src: &dyn Source) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in src.list(BY_ID) {
        let Some(target) = src.read_link(&format!("{BY_ID}/{name}")) else {
            continue;
        };
        let Some(dev) = target.rsplit('/').next().filter(|d| !d.is_empty()) else {
            continue;
        };
        map.entry(dev.to_string()).or_default().push(name);
    }
    map
}

pub fn collect(src: &dyn Source) -> Vec<Disk> {
    let mut ids = by_id(src);
    let mut out = Vec::new();
    for name in src.list(SYS_BLOCK) {
        let dir = format!("{SYS_BLOCK}/{name}");
        let path = src.read_link(&dir);
        if is_software(&name, path.as_deref()) {
            continue;
        }
        let text = |rel: &str| read_text(src, &format!("{dir}/{rel}"));
        // Without the link (a hand-made fixture, an odd sysfs) the name alone
        // still says NVMe or MMC.
        let transport = transport_from_path(&name, path.as_deref().unwrap_or(""));
        // NVMe controllers and virtio-blk disks have a serial attribute;
        // SCSI and SATA disks only have VPD page 80h.
        let serial = text("device/serial")
            .or_else(|| text("serial"))
            .or_else(|| {
                src.read(&format!("{dir}/device/vpd_pg80"))
                    .and_then(|b| parse_vpd_serial(&b))
            });
        let wwid = text("wwid").or_else(|| text("device/wwid"));
        let mut by_id = ids.remove(&name).unwrap_or_default();
        by_id.sort();
        out.push(Disk {
            size_bytes: read_u64(src, &format!("{dir}/size")).and_then(|s| s.checked_mul(SECTOR)),
            // SCSI devices name their vendor in text ("ATA", "DELL"); a virtio
            // device's `vendor` is its PCI vendor id, which says nothing here.
            vendor: transport
                .filter(is_scsi_family)
                .and_then(|_| text("device/vendor")),
            model: text("device/model"),
            serial,
            wwn: wwid.as_deref().and_then(|w| wwn_from_wwid(w, transport)),
            wwid,
            rotational: read_bool(src, &format!("{dir}/queue/rotational")),
            removable: read_bool(src, &format!("{dir}/removable")),
            transport,
            pci_address: path.as_deref().and_then(pci_address_in_path),
            by_id,
            name,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        let cases: &[(&str, &str, Option<Transport>)] = &[
            (
                "vda",
                "../devices/pci0000:00/0000:00:04.0/virtio2/block/vda",
                Some(Transport::Virtio),
            ),
            (
                "nvme0n1",
                "../devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1",
                Some(Transport::Nvme),
            ),
            (
                "nvme0n1",
                "../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1",
                Some(Transport::Nvme),
            ),
            (
                "sda",
                "../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                Some(Transport::Sata),
            ),
            (
                "sdb",
                "../devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                Some(Transport::Usb),
            ),
            (
                "sdc",
                "../devices/pci0000:00/0000:00:03.0/0000:02:00.0/host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block/sdc",
                Some(Transport::Sas),
            ),
            (
                "sdd",
                "../devices/pci0000:00/0000:00:03.0/0000:03:00.0/host1/rport-1:0-0/target1:0:0/1:0:0:0/block/sdd",
                Some(Transport::Fc),
            ),
            (
                "sde",
                "../devices/platform/host2/session1/target2:0:0/2:0:0:0/block/sde",
                Some(Transport::Iscsi),
            ),
            (
                "sdf",
                "../devices/pci0000:00/0000:00:03.0/virtio1/host0/target0:0:0/0:0:0:0/block/sdf",
                Some(Transport::Scsi),
            ),
            (
                "sdg",
                "../devices/pci0000:00/0000:00:03.0/0000:18:00.0/host3/target3:2:0/3:2:0:0/block/sdg",
                Some(Transport::Scsi),
            ),
            (
                "mmcblk0",
                "../devices/platform/soc/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
                Some(Transport::Mmc),
            ),
            (
                "xvda",
                "../devices/vbd-51712/block/xvda",
                Some(Transport::Xen),
            ),
            ("fd0", "../devices/platform/floppy.0/block/fd0", None),
            ("sdh", "../devices/ata-like/block/sdh", None),
            ("nvme1n1", "", Some(Transport::Nvme)),
            ("mmcblk1", "", Some(Transport::Mmc)),
            ("sdi", "", None),
        ];
        for (name, path, want) in cases {
            assert_eq!(transport_from_path(name, path), *want, "case {name} {path}");
        }
    }

    #[test]
    fn software_devices() {
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("loop0", Some("../devices/virtual/block/loop0"), true),
            ("dm-0", None, true),
            ("md127", None, true),
            ("zram0", None, true),
            ("foo0", Some("../devices/virtual/block/foo0"), true),
            (
                "nvme0n1",
                Some("../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"),
                false,
            ),
            (
                "sda",
                Some("../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"),
                false,
            ),
            ("sda", None, false),
        ];
        for (name, path, want) in cases {
            assert_eq!(is_software(name, *path), *want, "case {name} {path:?}");
        }
    }

    #[test]
    fn vpd_serials() {
        let cases: &[(&str, &[u8], Option<&str>)] = &[
            (
                "ata",
                b"\x00\x80\x00\x14QM00005             ",
                Some("QM00005"),
            ),
            (
                "length shorter than data",
                b"\x00\x80\x00\x02AB-rest",
                Some("AB"),
            ),
            (
                "length longer than data",
                b"\x00\x80\x00\xffABC",
                Some("ABC"),
            ),
            ("wrong page", b"\x00\x83\x00\x03ABC", None),
            ("blank", b"\x00\x80\x00\x04    ", None),
            ("header only", b"\x00\x80\x00", None),
            ("empty", b"", None),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(parse_vpd_serial(bytes).as_deref(), *want, "case {name}");
        }
    }

    #[test]
    fn wwns() {
        let cases: &[(&str, Option<Transport>, Option<&str>)] = &[
            (
                "naa.5000C500A1B2C3D4",
                Some(Transport::Sata),
                Some("0x5000c500a1b2c3d4"),
            ),
            (
                "eui.0050434d07000001",
                Some(Transport::Nvme),
                Some("eui.0050434d07000001"),
            ),
            (
                "nvme.1b36-6e766d65",
                Some(Transport::Nvme),
                Some("nvme.1b36-6e766d65"),
            ),
            (
                "t10.ATA     QEMU HARDDISK                           QM00005",
                Some(Transport::Sata),
                None,
            ),
            ("naa.", None, None),
            ("naa.xyz", None, None),
        ];
        for (wwid, transport, want) in cases {
            assert_eq!(
                wwn_from_wwid(wwid, *transport).as_deref(),
                *want,
                "case {wwid}"
            );
        }
    }
}
