//! Identity and firmware facts: system, baseboard, chassis (SMBIOS types 1-3,
//! with /sys/class/dmi/id filling what the table does not give), BIOS version
//! (type 0), and the boot mode and Secure Boot state the running kernel sees.
//!
//! The raw table is root-only (0400) while most of /sys/class/dmi/id is not,
//! so an unprivileged run still gets vendor and product from the latter.

use super::model::{Baseboard, Chassis, Firmware, FirmwareMode, System};
use super::smbios::{self, Smbios};
use super::source::{Source, read_text};

pub const DMI_ID: &str = "/sys/class/dmi/id";
pub const SMBIOS_ENTRY_POINT: &str = "/sys/firmware/dmi/tables/smbios_entry_point";
pub const SMBIOS_TABLE: &str = "/sys/firmware/dmi/tables/DMI";
pub const EFI_DIR: &str = "/sys/firmware/efi";
/// EFI_GLOBAL_VARIABLE GUID 8BE4DF61-93CA-11D2-AA0D-00E098032B8C (UEFI 2.10 §3.3):
/// SecureBoot and SetupMode live under it.
pub const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
pub const SETUP_MODE_VAR: &str =
    "/sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c";
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Reads and decodes the SMBIOS table; empty when it is unreadable.
pub fn read_smbios(src: &dyn Source) -> Smbios {
    let entry_point = src.read(SMBIOS_ENTRY_POINT);
    match src.read(SMBIOS_TABLE) {
        Some(table) => smbios::decode(entry_point.as_deref(), &table),
        None => Smbios {
            entry_point: entry_point.and_then(|b| smbios::parse_entry_point(&b).ok()),
            ..Smbios::default()
        },
    }
}

/// One /sys/class/dmi/id attribute, placeholders dropped.
fn dmi_id(src: &dyn Source, name: &str) -> Option<String> {
    smbios::firmware_string(&read_text(src, &format!("{DMI_ID}/{name}"))?)
}

fn fill(field: &mut Option<String>, src: &dyn Source, name: &str) {
    if field.is_none() {
        *field = dmi_id(src, name);
    }
}

pub fn system(src: &dyn Source, smb: &Smbios) -> System {
    let mut s = smb.system.clone().unwrap_or_default();
    fill(&mut s.vendor, src, "sys_vendor");
    fill(&mut s.product, src, "product_name");
    fill(&mut s.version, src, "product_version");
    fill(&mut s.serial, src, "product_serial");
    fill(&mut s.sku, src, "product_sku");
    fill(&mut s.family, src, "product_family");
    if s.uuid.is_none() {
        s.uuid = dmi_id(src, "product_uuid").and_then(|u| normalize_uuid(&u));
    }
    s
}

pub fn baseboard(src: &dyn Source, smb: &Smbios) -> Baseboard {
    let mut b = smb.baseboard.clone().unwrap_or_default();
    fill(&mut b.vendor, src, "board_vendor");
    fill(&mut b.product, src, "board_name");
    fill(&mut b.version, src, "board_version");
    fill(&mut b.serial, src, "board_serial");
    fill(&mut b.asset_tag, src, "board_asset_tag");
    b
}

pub fn chassis(src: &dyn Source, smb: &Smbios) -> Chassis {
    let mut c = smb.chassis.clone().unwrap_or_default();
    fill(&mut c.vendor, src, "chassis_vendor");
    fill(&mut c.version, src, "chassis_version");
    fill(&mut c.serial, src, "chassis_serial");
    fill(&mut c.asset_tag, src, "chassis_asset_tag");
    if c.type_code.is_none() {
        // The kernel prints the type byte as a decimal number.
        let code =
            read_text(src, &format!("{DMI_ID}/chassis_type")).and_then(|t| t.parse::<u8>().ok());
        if let Some(code) = code.map(|c| c & 0x7F).filter(|&c| c != 0) {
            let decoded = smbios::chassis_from_code(code);
            c.type_code = decoded.type_code;
            c.type_name = decoded.type_name;
        }
    }
    c
}

pub fn firmware(src: &dyn Source, smb: &Smbios) -> Firmware {
    let bios = smb.bios.clone().unwrap_or_default();
    let mut f = Firmware {
        mode: firmware_mode(src),
        secure_boot: None,
        setup_mode: None,
        bios_vendor: bios.vendor,
        bios_version: bios.version,
        bios_date: bios.date,
        smbios_version: smb.entry_point.map(|e| e.version_string()),
    };
    fill(&mut f.bios_vendor, src, "bios_vendor");
    fill(&mut f.bios_version, src, "bios_version");
    fill(&mut f.bios_date, src, "bios_date");
    if f.mode == Some(FirmwareMode::Uefi) {
        f.secure_boot = match src.read(SECURE_BOOT_VAR) {
            Some(v) => parse_efi_bool(&v),
            // Firmware without Secure Boot support has no SecureBoot variable;
            // the kernel's EFI stub reads EFI_NOT_FOUND as "disabled" too
            // (drivers/firmware/efi/libstub/secureboot.c). An empty efivars
            // directory, though, only means efivarfs is not mounted.
            None if !src.list(EFIVARS).is_empty() => Some(false),
            None => None,
        };
        f.setup_mode = src.read(SETUP_MODE_VAR).and_then(|v| parse_efi_bool(&v));
    }
    f
}

/// The kernel creates /sys/firmware/efi only when it was started by UEFI;
/// /sys/firmware itself exists whenever sysfs is mounted, so its presence
/// without efi/ means BIOS and its absence means we cannot tell.
fn firmware_mode(src: &dyn Source) -> Option<FirmwareMode> {
    if src.exists(EFI_DIR) {
        Some(FirmwareMode::Uefi)
    } else if src.exists("/sys/firmware") {
        Some(FirmwareMode::Bios)
    } else {
        None
    }
}

/// An efivarfs file of a one-byte boolean variable: 4 attribute bytes, then
/// the value (UEFI 2.10 §3.3: SecureBoot and SetupMode are 0 or 1).
pub fn parse_efi_bool(bytes: &[u8]) -> Option<bool> {
    match bytes.get(4..)? {
        [0] => Some(false),
        [1] => Some(true),
        _ => None,
    }
}

/// A UUID string in any case, with or without hyphens, as lowercase
/// canonical text; `None` unless it is 32 hex digits, or when it is all
/// zeros or all F (SMBIOS "not set" / "not present").
pub fn normalize_uuid(text: &str) -> Option<String> {
    let hex: String = text.trim().chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    if hex.chars().all(|c| c == '0') || hex.chars().all(|c| c == 'f') {
        return None;
    }
    super::smbios::hyphenate(&hex)
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples on purpose
mod tests {
    use super::super::fixture::{Entry, Fixture};
    use super::*;

    #[test]
    fn efi_bool_variables() {
        let cases: &[(&str, &[u8], Option<bool>)] = &[
            ("enabled", &[6, 0, 0, 0, 1], Some(true)),
            ("disabled", &[6, 0, 0, 0, 0], Some(false)),
            ("odd value", &[6, 0, 0, 0, 2], None),
            ("attributes only", &[6, 0, 0, 0], None),
            ("too long", &[6, 0, 0, 0, 1, 0], None),
            ("empty", &[], None),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(parse_efi_bool(bytes), *want, "case {name}");
        }
    }

    #[test]
    fn uuid_normalization() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "canonical",
                "4C4C4544-0042-3510-8052-B4C04F4E4A32",
                Some("4c4c4544-0042-3510-8052-b4c04f4e4a32"),
            ),
            ("no hyphens", "4c4c454400423510 8052b4c04f4e4a32", None),
            (
                "bare hex",
                "4c4c4544004235108052b4c04f4e4a32",
                Some("4c4c4544-0042-3510-8052-b4c04f4e4a32"),
            ),
            ("zeros", "00000000-0000-0000-0000-000000000000", None),
            ("ones", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None),
            ("short", "4c4c4544-0042", None),
            ("not hex", "4c4c4544-0042-3510-8052-b4c04f4e4a3g", None),
            ("multibyte", "éééééééééééééééééééééééééééééééé", None),
        ];
        for (name, input, want) in cases {
            assert_eq!(normalize_uuid(input).as_deref(), *want, "case {name}");
        }
    }

    #[test]
    fn dmi_id_fills_what_the_table_lacks() {
        let mut fx = Fixture::from_files(&[
            ("/sys/class/dmi/id/sys_vendor", b"Dell Inc.\n"),
            ("/sys/class/dmi/id/product_name", b"PowerEdge R760\n"),
            (
                "/sys/class/dmi/id/product_serial",
                b"To Be Filled By O.E.M.\n",
            ),
            (
                "/sys/class/dmi/id/product_uuid",
                b"4C4C4544-0042-3510-8052-B4C04F4E4A32\n",
            ),
            ("/sys/class/dmi/id/chassis_type", b"23\n"),
            ("/sys/class/dmi/id/bios_version", b"1.2.3\n"),
        ]);
        fx.insert("/sys/firmware", Entry::Dir);
        let smb = read_smbios(&fx);
        let s = system(&fx, &smb);
        assert_eq!(s.vendor.as_deref(), Some("Dell Inc."));
        assert_eq!(s.product.as_deref(), Some("PowerEdge R760"));
        assert_eq!(s.serial, None, "placeholder serial is unknown");
        assert_eq!(
            s.uuid.as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4e4a32")
        );
        let c = chassis(&fx, &smb);
        assert_eq!(
            (c.type_code, c.type_name.as_deref()),
            (Some(23), Some("Rack Mount Chassis"))
        );
        let f = firmware(&fx, &smb);
        assert_eq!(f.mode, Some(FirmwareMode::Bios));
        assert_eq!(f.bios_version.as_deref(), Some("1.2.3"));
        assert_eq!(f.secure_boot, None, "no Secure Boot outside UEFI");
    }

    #[test]
    fn firmware_mode_and_secure_boot() {
        let cases: &[(
            &str,
            &[&str],
            Option<&[u8]>,
            Option<FirmwareMode>,
            Option<bool>,
        )] = &[
            ("no sysfs", &[], None, None, None),
            (
                "uefi, efivarfs mounted, no SecureBoot variable",
                &[
                    "/sys/firmware/efi",
                    "/sys/firmware/efi/efivars/BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c",
                ],
                None,
                Some(FirmwareMode::Uefi),
                Some(false),
            ),
            (
                "bios",
                &["/sys/firmware"],
                None,
                Some(FirmwareMode::Bios),
                None,
            ),
            (
                "uefi, efivarfs not mounted",
                &["/sys/firmware/efi"],
                None,
                Some(FirmwareMode::Uefi),
                None,
            ),
            (
                "uefi, secure boot on",
                &["/sys/firmware/efi"],
                Some(&[6, 0, 0, 0, 1]),
                Some(FirmwareMode::Uefi),
                Some(true),
            ),
            (
                "uefi, secure boot off",
                &["/sys/firmware/efi"],
                Some(&[6, 0, 0, 0, 0]),
                Some(FirmwareMode::Uefi),
                Some(false),
            ),
        ];
        for (name, dirs, var, want_mode, want_sb) in cases {
            let mut fx = Fixture::default();
            for d in *dirs {
                fx.insert(d, Entry::Dir);
            }
            if let Some(v) = var {
                fx.insert(SECURE_BOOT_VAR, Entry::File(v.to_vec()));
            }
            let f = firmware(&fx, &Smbios::default());
            assert_eq!(
                (f.mode, f.secure_boot),
                (*want_mode, *want_sb),
                "case {name}"
            );
        }
    }
}
