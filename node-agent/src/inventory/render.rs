//! Renderings of an [`Inventory`]: the stable JSON of `node-agent inventory
//! --json` (and its parser, for the hub), and the short text of
//! `node-agent inventory`.
//!
//! JSON is stable because the struct tree is: fields serialize in
//! declaration order, lists are sorted by the collectors, and no map with
//! unordered keys appears anywhere.

use std::fmt::Write as _;

use super::InventoryError;
use super::model::{Disk, FirmwareMode, Inventory, Nic, Transport};

/// Pretty JSON with a final newline.
pub fn to_json(inv: &Inventory) -> Result<String, InventoryError> {
    let mut s = serde_json::to_string_pretty(inv).map_err(InventoryError::Json)?;
    s.push('\n');
    Ok(s)
}

/// Parses what [`to_json`] wrote (the hub's side).
pub fn from_json(text: &str) -> Result<Inventory, InventoryError> {
    serde_json::from_str(text).map_err(InventoryError::Json)
}

const UNKNOWN: &str = "unknown";

fn or_unknown(v: Option<&str>) -> &str {
    v.unwrap_or(UNKNOWN)
}

/// "512 MiB", "9.5 GiB": binary units, one decimal when not whole.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut whole = n;
    while whole >= 1024 && unit + 1 < UNITS.len() {
        whole /= 1024;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    let divisor = 1024f64.powi(i32::try_from(unit).unwrap_or(0));
    // Precision loss above 2^53 bytes only touches the printed decimal.
    #[allow(clippy::cast_precision_loss)]
    let value = n as f64 / divisor;
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0} {name}")
    } else {
        format!("{value:.1} {name}")
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Nvme => "nvme",
        Transport::Sata => "sata",
        Transport::Sas => "sas",
        Transport::Fc => "fc",
        Transport::Iscsi => "iscsi",
        Transport::Usb => "usb",
        Transport::Virtio => "virtio",
        Transport::Mmc => "mmc",
        Transport::Scsi => "scsi",
        Transport::Xen => "xen",
    }
}

fn join_some(parts: &[Option<&str>]) -> Option<String> {
    let v: Vec<&str> = parts.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| v.join(" "))
}

fn disk_line(d: &Disk) -> String {
    let mut line = format!(
        "  {:<10} {:>10}  {:<7}",
        d.name,
        d.size_bytes
            .map_or_else(|| UNKNOWN.to_string(), human_bytes),
        d.transport.map_or(UNKNOWN, transport_name),
    );
    let _ = write!(
        line,
        " {}",
        join_some(&[d.vendor.as_deref(), d.model.as_deref()])
            .as_deref()
            .unwrap_or("-")
    );
    if let Some(s) = &d.serial {
        let _ = write!(line, " serial={s}");
    }
    if let Some(w) = &d.wwn {
        let _ = write!(line, " wwn={w}");
    }
    if d.rotational == Some(true) {
        // Not "hdd": virtio-blk and many RAID volumes report rotational too.
        line.push_str(" rotational");
    }
    if d.removable == Some(true) {
        line.push_str(" removable");
    }
    line
}

fn nic_line(n: &Nic) -> String {
    let link = match (n.link, n.speed_mbps) {
        (Some(true), Some(s)) => format!("up {s} Mb/s"),
        (Some(true), None) => "up".to_string(),
        (Some(false), _) => "no link".to_string(),
        (None, _) => n.operstate.clone().unwrap_or_else(|| UNKNOWN.to_string()),
    };
    format!(
        "  {:<10} {:<17}  {:<10} {:<12} {}",
        n.name,
        or_unknown(n.mac.as_deref()),
        or_unknown(n.driver.as_deref()),
        n.pci_address.as_deref().unwrap_or("-"),
        link
    )
}

/// A few lines per section, for people at a console.
pub fn render_text(inv: &Inventory) -> String {
    let mut o = String::new();
    let s = &inv.system;
    let _ = writeln!(
        o,
        "System:    {}",
        join_some(&[s.vendor.as_deref(), s.product.as_deref()])
            .as_deref()
            .unwrap_or(UNKNOWN)
    );
    let _ = writeln!(
        o,
        "           serial {}, uuid {}",
        or_unknown(s.serial.as_deref()),
        or_unknown(s.uuid.as_deref())
    );
    let b = &inv.baseboard;
    let _ = writeln!(
        o,
        "Baseboard: {}, serial {}",
        join_some(&[b.vendor.as_deref(), b.product.as_deref()])
            .as_deref()
            .unwrap_or(UNKNOWN),
        or_unknown(b.serial.as_deref())
    );
    let c = &inv.chassis;
    let _ = writeln!(
        o,
        "Chassis:   {}, serial {}",
        join_some(&[c.vendor.as_deref(), c.type_name.as_deref()])
            .as_deref()
            .unwrap_or(UNKNOWN),
        or_unknown(c.serial.as_deref())
    );
    let f = &inv.firmware;
    let mode = match f.mode {
        Some(FirmwareMode::Uefi) => "UEFI",
        Some(FirmwareMode::Bios) => "BIOS",
        None => UNKNOWN,
    };
    let secure = match (f.mode, f.secure_boot) {
        (Some(FirmwareMode::Bios), _) => String::new(),
        (_, Some(true)) => ", Secure Boot on".to_string(),
        (_, Some(false)) => ", Secure Boot off".to_string(),
        (_, None) => ", Secure Boot unknown".to_string(),
    };
    let _ = writeln!(
        o,
        "Firmware:  {mode}{secure}; {} {} ({}); SMBIOS {}",
        or_unknown(f.bios_vendor.as_deref()),
        or_unknown(f.bios_version.as_deref()),
        or_unknown(f.bios_date.as_deref()),
        or_unknown(f.smbios_version.as_deref())
    );
    let cpu = &inv.cpu;
    let n = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let _ = writeln!(
        o,
        "CPU:       {}; {} sockets, {} cores, {} threads",
        or_unknown(cpu.model.as_deref()),
        n(cpu.sockets),
        n(cpu.cores),
        n(cpu.threads)
    );
    let m = &inv.memory;
    let _ = writeln!(
        o,
        "Memory:    {} usable, {} installed in {} of {} slots",
        m.total_bytes
            .map_or_else(|| UNKNOWN.to_string(), human_bytes),
        m.installed_bytes
            .map_or_else(|| UNKNOWN.to_string(), human_bytes),
        m.dimms.len(),
        n(m.slots)
    );
    for d in &m.dimms {
        let _ = writeln!(
            o,
            "  {:<12} {:>8} {} {} {}",
            or_unknown(d.locator.as_deref()),
            d.size_bytes
                .map_or_else(|| UNKNOWN.to_string(), human_bytes),
            or_unknown(d.kind.as_deref()),
            d.speed_mts
                .map_or_else(|| "? MT/s".to_string(), |s| format!("{s} MT/s")),
            join_some(&[d.manufacturer.as_deref(), d.part_number.as_deref()])
                .as_deref()
                .unwrap_or("")
        );
    }
    let _ = writeln!(o, "Disks:     {}", inv.disks.len());
    for d in &inv.disks {
        let _ = writeln!(o, "{}", disk_line(d));
    }
    let _ = writeln!(o, "NICs:      {}", inv.nics.len());
    for nic in &inv.nics {
        let _ = writeln!(o, "{}", nic_line(nic));
    }
    let _ = writeln!(o, "PCI:       {} functions", inv.pci.len());
    let t = &inv.tpm;
    let tpm = if t.present {
        format!("present, version {}", or_unknown(t.version.as_deref()))
    } else {
        "not detected".to_string()
    };
    let _ = writeln!(o, "TPM:       {tpm}");
    let bmc = &inv.bmc;
    let bmc_line = match (bmc.host_interface_address(), bmc.ipmi.first()) {
        (Some(addr), _) => format!("Redfish host interface at {addr}"),
        (None, Some(ipmi)) => format!(
            "IPMI {} {} (address unknown)",
            or_unknown(ipmi.interface.as_deref()),
            or_unknown(ipmi.spec_version.as_deref())
        ),
        (None, None) if bmc.ipmi_device_node => "IPMI device present (address unknown)".to_string(),
        (None, None) => UNKNOWN.to_string(),
    };
    let _ = writeln!(o, "BMC:       {bmc_line}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (512 << 20, "512 MiB"),
            (10 * (1 << 30) + (1 << 29), "10.5 GiB"),
            (480_103_981_056, "447.1 GiB"),
            (u64::MAX, "16 EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_bytes(*n), *want, "case {n}");
        }
    }

    #[test]
    fn empty_inventory_renders_unknowns() {
        let text = render_text(&super::super::empty());
        for needle in [
            "System:    unknown",
            "TPM:       not detected",
            "BMC:       unknown",
            "Disks:     0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn json_round_trips() {
        let inv = super::super::empty();
        let json = to_json(&inv).unwrap();
        assert_eq!(from_json(&json).unwrap(), inv);
        assert!(from_json("{").is_err());
    }
}
