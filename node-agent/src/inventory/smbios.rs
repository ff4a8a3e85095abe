//! SMBIOS: the entry point, the structure walk, and decoders for the types
//! the inventory uses (0 BIOS, 1 system, 2 baseboard, 3 chassis, 4 processor,
//! 17 memory device, 38 IPMI, 42 Redfish host interface, 43 TPM).
//!
//! Offsets and encodings are from DMTF DSP0134 (SMBIOS 3.7) and, for type 42's
//! protocol records, DSP0270 (Redfish Host Interface 1.3). The kernel exposes
//! the table as /sys/firmware/dmi/tables/DMI and the entry point next to it.
//!
//! Every read is bounds-checked: a structure whose formatted area or string
//! set runs past the table ends the walk, and a field past a structure's
//! length reads as absent, so a truncated or hostile table yields what could
//! be decoded and never panics. This module does not verify checksums: the
//! kernel already did before exposing the table, and a fixture may be
//! hand-made.

use super::model::{
    Baseboard, Chassis, CpuPackage, Dimm, IpmiDevice, RedfishHostInterface, System,
};

/// End-of-table structure (DSP0134 §7.45).
const TYPE_END: u8 = 127;
/// Smallest structure: type, length, handle.
const HEADER_LEN: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmbiosError {
    #[error("entry point has no _SM_, _SM3_ or _DMI_ anchor")]
    UnknownAnchor,
    #[error("entry point of {len} bytes is shorter than its format ({need})")]
    EntryPointTruncated { len: usize, need: usize },
    #[error("structure at offset {offset} has length {length}, less than its 4-byte header")]
    ShortStructure { offset: usize, length: u8 },
    #[error("structure at offset {offset} runs past the end of the table")]
    StructureTruncated { offset: usize },
    #[error("strings of the structure at offset {offset} are not terminated by a double NUL")]
    UnterminatedStrings { offset: usize },
}

/// What the entry point says about the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    pub major: u8,
    pub minor: u8,
    /// Docrev (3.x only; 0 for 2.x).
    pub docrev: u8,
    /// Table length (2.x) or maximum table size (3.x).
    pub table_len: u32,
}

impl EntryPoint {
    /// "3.0.0" for 3.x (which has a docrev), "2.8" for 2.x.
    pub fn version_string(&self) -> String {
        if self.major >= 3 {
            format!("{}.{}.{}", self.major, self.minor, self.docrev)
        } else {
            format!("{}.{}", self.major, self.minor)
        }
    }

    /// SMBIOS 2.6 changed the byte order of the UUID's first three fields.
    fn uuid_little_endian(&self) -> bool {
        (self.major, self.minor) >= (2, 6)
    }
}

/// Parses a 64-bit (`_SM3_`, 3.0+), 32-bit (`_SM_`, 2.1+) or legacy (`_DMI_`) entry point.
pub fn parse_entry_point(bytes: &[u8]) -> Result<EntryPoint, SmbiosError> {
    let need = |n: usize| {
        if bytes.len() < n {
            Err(SmbiosError::EntryPointTruncated {
                len: bytes.len(),
                need: n,
            })
        } else {
            Ok(())
        }
    };
    if bytes.starts_with(b"_SM3_") {
        // DSP0134 §5.2.2: 24 bytes; major 07h, minor 08h, docrev 09h, max size 0Ch (dword).
        need(0x18)?;
        return Ok(EntryPoint {
            major: byte(bytes, 0x07).unwrap_or(0),
            minor: byte(bytes, 0x08).unwrap_or(0),
            docrev: byte(bytes, 0x09).unwrap_or(0),
            table_len: dword(bytes, 0x0C).unwrap_or(0),
        });
    }
    if bytes.starts_with(b"_SM_") {
        // DSP0134 §5.2.1: major 06h, minor 07h; table length at 16h inside the _DMI_ part.
        need(0x1F)?;
        return Ok(EntryPoint {
            major: byte(bytes, 0x06).unwrap_or(0),
            minor: byte(bytes, 0x07).unwrap_or(0),
            docrev: 0,
            table_len: u32::from(word(bytes, 0x16).unwrap_or(0)),
        });
    }
    if bytes.starts_with(b"_DMI_") {
        // Legacy DMI 2.0 entry point: length at 06h, BCD revision at 0Eh.
        need(0x0F)?;
        let bcd = byte(bytes, 0x0E).unwrap_or(0);
        return Ok(EntryPoint {
            major: bcd >> 4,
            minor: bcd & 0x0F,
            docrev: 0,
            table_len: u32::from(word(bytes, 0x06).unwrap_or(0)),
        });
    }
    Err(SmbiosError::UnknownAnchor)
}

/// One structure: its formatted area (header included) and its strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    pub handle: u16,
    pub formatted: &'a [u8],
    pub strings: Vec<&'a [u8]>,
}

impl Structure<'_> {
    /// Byte at `offset` of the formatted area, if the structure is that long.
    pub fn byte(&self, offset: usize) -> Option<u8> {
        byte(self.formatted, offset)
    }
    pub fn word(&self, offset: usize) -> Option<u16> {
        word(self.formatted, offset)
    }
    pub fn dword(&self, offset: usize) -> Option<u32> {
        dword(self.formatted, offset)
    }
    pub fn qword(&self, offset: usize) -> Option<u64> {
        qword(self.formatted, offset)
    }

    /// The string whose 1-based number is at `offset`; `None` for 0, a
    /// number past the string set, or a placeholder (see [`firmware_string`]).
    pub fn string(&self, offset: usize) -> Option<String> {
        let n = usize::from(self.byte(offset)?);
        let raw = self.strings.get(n.checked_sub(1)?)?;
        firmware_string(&String::from_utf8_lossy(raw))
    }
}

/// Result of walking a table: the structures read before the end (or before
/// the first malformed one), and why the walk stopped early, if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk<'a> {
    pub structures: Vec<Structure<'a>>,
    pub stopped: Option<SmbiosError>,
}

/// Walks the structures of `table` until type 127 or the end of the bytes.
pub fn walk(table: &[u8]) -> Walk<'_> {
    let mut out = Walk::default();
    let mut offset = 0usize;
    // Each structure consumes at least 6 bytes (header + double NUL), so the
    // loop ends; the slice bounds come from `get`, never from indexing.
    while offset.saturating_add(usize::from(HEADER_LEN)) <= table.len() {
        let Some(rest) = table.get(offset..) else {
            break;
        };
        let (Some(kind), Some(length), Some(handle)) =
            (byte(rest, 0), byte(rest, 1), word(rest, 2))
        else {
            break;
        };
        if length < HEADER_LEN {
            out.stopped = Some(SmbiosError::ShortStructure { offset, length });
            break;
        }
        let Some(formatted) = rest.get(..usize::from(length)) else {
            out.stopped = Some(SmbiosError::StructureTruncated { offset });
            break;
        };
        let Some(after) = rest.get(usize::from(length)..) else {
            out.stopped = Some(SmbiosError::StructureTruncated { offset });
            break;
        };
        let Some(end) = after.windows(2).position(|w| w == [0, 0]) else {
            out.stopped = Some(SmbiosError::UnterminatedStrings { offset });
            break;
        };
        let strings = after
            .get(..end)
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .collect();
        out.structures.push(Structure {
            kind,
            handle,
            formatted,
            strings,
        });
        if kind == TYPE_END {
            break;
        }
        offset = offset
            .saturating_add(usize::from(length))
            .saturating_add(end)
            .saturating_add(2);
    }
    out
}

/// Strings vendors put where they have nothing to say. Seen in AMI and
/// Insyde defaults and in the Linux kernel's DMI quirk tables; kept short on
/// purpose, so a real value is never thrown away.
const PLACEHOLDERS: &[&str] = &[
    "not specified",
    "not available",
    "not applicable",
    "not present",
    "to be filled by o.e.m.",
    "to be filled by o.e.m",
    "default string",
    "unknown",
    "none",
    "n/a",
    "system serial number",
    "system product name",
    "system manufacturer",
    "system version",
    "base board serial number",
    "chassis serial number",
    "0123456789",
    "123456789",
];

/// A firmware-provided string, trimmed, or `None` when it is blank or a placeholder.
pub fn firmware_string(raw: &str) -> Option<String> {
    let s = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if s.is_empty() || PLACEHOLDERS.iter().any(|p| s.eq_ignore_ascii_case(p)) {
        return None;
    }
    Some(s.to_string())
}

/// Formats a 16-byte SMBIOS UUID; `None` for all zeros (not set) or all 0xFF
/// (not present). Since SMBIOS 2.6 the first three fields are little-endian
/// (DSP0134 §7.2.1); earlier tables store them in network order.
pub fn format_uuid(raw: &[u8; 16], little_endian: bool) -> Option<String> {
    if raw.iter().all(|&b| b == 0) || raw.iter().all(|&b| b == 0xFF) {
        return None;
    }
    let mut b = *raw;
    if little_endian {
        b[..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    hyphenate(&hex)
}

/// 32 lowercase hex digits as `8-4-4-4-12`.
pub(crate) fn hyphenate(hex: &str) -> Option<String> {
    Some(format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8)?,
        hex.get(8..12)?,
        hex.get(12..16)?,
        hex.get(16..20)?,
        hex.get(20..32)?
    ))
}

/// Type 0 facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bios {
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub date: Option<String>,
}

/// Type 43 (TPM Device) facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpmInfo {
    pub vendor: Option<String>,
    /// "2.0", "1.2".
    pub spec_version: Option<String>,
}

/// Everything the inventory takes from SMBIOS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smbios {
    pub entry_point: Option<EntryPoint>,
    pub bios: Option<Bios>,
    pub system: Option<System>,
    pub baseboard: Option<Baseboard>,
    pub chassis: Option<Chassis>,
    pub processors: Vec<CpuPackage>,
    /// Type 17 entries, empty slots included (`None`).
    pub memory_slots: Vec<Option<Dimm>>,
    pub ipmi: Vec<IpmiDevice>,
    pub redfish: Vec<RedfishHostInterface>,
    pub tpm: Vec<TpmInfo>,
    /// Why the walk stopped before the end-of-table structure, if it did.
    pub stopped: Option<SmbiosError>,
}

/// Decodes a table. Without a readable entry point the version is unknown and
/// the UUID is read the SMBIOS 2.6+ way, as every firmware of the last decade writes it.
pub fn decode(entry_point: Option<&[u8]>, table: &[u8]) -> Smbios {
    let ep = entry_point.and_then(|b| parse_entry_point(b).ok());
    let little_endian_uuid = ep.is_none_or(|e| e.uuid_little_endian());
    let walk = walk(table);
    let mut out = Smbios {
        entry_point: ep,
        stopped: walk.stopped,
        ..Smbios::default()
    };
    for s in &walk.structures {
        match s.kind {
            // Only the first of the single-instance types counts; a second one is a firmware bug.
            0 if out.bios.is_none() => out.bios = Some(decode_bios(s)),
            1 if out.system.is_none() => out.system = Some(decode_system(s, little_endian_uuid)),
            2 if out.baseboard.is_none() => out.baseboard = Some(decode_baseboard(s)),
            3 if out.chassis.is_none() => out.chassis = Some(decode_chassis(s)),
            4 => out.processors.push(decode_processor(s)),
            17 => out.memory_slots.push(decode_memory_device(s)),
            38 => out.ipmi.push(decode_ipmi(s)),
            42 => out.redfish.extend(decode_host_interface(s)),
            43 => out.tpm.push(decode_tpm(s)),
            _ => {}
        }
    }
    out
}

fn decode_bios(s: &Structure) -> Bios {
    Bios {
        vendor: s.string(0x04),
        version: s.string(0x05),
        date: s.string(0x08),
    }
}

fn decode_system(s: &Structure, little_endian_uuid: bool) -> System {
    let uuid = s
        .formatted
        .get(0x08..0x18)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .and_then(|raw| format_uuid(&raw, little_endian_uuid));
    System {
        vendor: s.string(0x04),
        product: s.string(0x05),
        version: s.string(0x06),
        serial: s.string(0x07),
        uuid,
        sku: s.string(0x19),
        family: s.string(0x1A),
    }
}

fn decode_baseboard(s: &Structure) -> Baseboard {
    Baseboard {
        vendor: s.string(0x04),
        product: s.string(0x05),
        version: s.string(0x06),
        serial: s.string(0x07),
        asset_tag: s.string(0x08),
    }
}

/// Chassis type names, DSP0134 §7.4.1 (table 17), indexed by code.
const CHASSIS_TYPES: &[&str] = &[
    "",
    "Other",
    "Unknown",
    "Desktop",
    "Low Profile Desktop",
    "Pizza Box",
    "Mini Tower",
    "Tower",
    "Portable",
    "Laptop",
    "Notebook",
    "Hand Held",
    "Docking Station",
    "All in One",
    "Sub Notebook",
    "Space-saving",
    "Lunch Box",
    "Main Server Chassis",
    "Expansion Chassis",
    "SubChassis",
    "Bus Expansion Chassis",
    "Peripheral Chassis",
    "RAID Chassis",
    "Rack Mount Chassis",
    "Sealed-case PC",
    "Multi-system chassis",
    "Compact PCI",
    "Advanced TCA",
    "Blade",
    "Blade Enclosure",
    "Tablet",
    "Convertible",
    "Detachable",
    "IoT Gateway",
    "Embedded PC",
    "Mini PC",
    "Stick PC",
];

/// A chassis with only its type set, from a type code (low 7 bits; 0 = none).
pub fn chassis_from_code(code: u8) -> Chassis {
    let code = Some(code & 0x7F).filter(|&c| c != 0);
    // 2 is "Unknown": a code, but not a fact worth a name.
    let name = code
        .filter(|&c| c != 2)
        .and_then(|c| CHASSIS_TYPES.get(usize::from(c)))
        .map(|n| (*n).to_string());
    Chassis {
        type_code: code,
        type_name: name,
        ..Chassis::default()
    }
}

fn decode_chassis(s: &Structure) -> Chassis {
    // Bit 7 of the type byte is the "chassis lock present" flag.
    let typed = chassis_from_code(s.byte(0x05).unwrap_or(0));
    Chassis {
        vendor: s.string(0x04),
        version: s.string(0x06),
        serial: s.string(0x07),
        asset_tag: s.string(0x08),
        ..typed
    }
}

/// Core and thread counts: the byte field, or the 3.0 word field when the byte says 0xFF.
fn count(s: &Structure, byte_at: usize, word_at: usize) -> Option<u32> {
    match s.byte(byte_at)? {
        0 => None,
        0xFF => s
            .word(word_at)
            .filter(|&w| w != 0 && w != 0xFFFF)
            .map(u32::from),
        n => Some(u32::from(n)),
    }
}

fn decode_processor(s: &Structure) -> CpuPackage {
    CpuPackage {
        socket: s.string(0x04),
        // Status (18h) bit 6: CPU socket populated.
        populated: s.byte(0x18).is_some_and(|b| b & 0x40 != 0),
        manufacturer: s.string(0x07),
        version: s.string(0x10),
        max_speed_mhz: s.word(0x14).filter(|&w| w != 0).map(u32::from),
        cores: count(s, 0x23, 0x2A),
        threads: count(s, 0x25, 0x2E),
    }
}

/// Memory types, DSP0134 §7.18.2 (table 76), indexed by code; "" = reserved.
const MEMORY_TYPES: &[&str] = &[
    "",
    "Other",
    "",
    "DRAM",
    "EDRAM",
    "VRAM",
    "SRAM",
    "RAM",
    "ROM",
    "FLASH",
    "EEPROM",
    "FEPROM",
    "EPROM",
    "CDRAM",
    "3DRAM",
    "SDRAM",
    "SGRAM",
    "RDRAM",
    "DDR",
    "DDR2",
    "DDR2 FB-DIMM",
    "",
    "",
    "",
    "DDR3",
    "FBD2",
    "DDR4",
    "LPDDR",
    "LPDDR2",
    "LPDDR3",
    "LPDDR4",
    "Logical non-volatile device",
    "HBM",
    "HBM2",
    "DDR5",
    "LPDDR5",
    "HBM3",
];

/// Memory form factors, DSP0134 §7.18.1 (table 75); "" = unknown.
const FORM_FACTORS: &[&str] = &[
    "",
    "Other",
    "",
    "SIMM",
    "SIP",
    "Chip",
    "DIP",
    "ZIP",
    "Proprietary Card",
    "DIMM",
    "TSOP",
    "Row of chips",
    "RIMM",
    "SODIMM",
    "SRIMM",
    "FB-DIMM",
    "Die",
    "CAMM",
];

fn table_name(table: &[&str], code: Option<u8>) -> Option<String> {
    let name = table.get(usize::from(code?))?;
    (!name.is_empty()).then(|| (*name).to_string())
}

/// Module size from the word at 0Ch and, when that says 0x7FFF, the extended
/// size dword at 1Ch (DSP0134 §7.18.5). `Some(None)`: no module installed.
fn dimm_size(s: &Structure) -> Option<Option<u64>> {
    const MIB: u64 = 1 << 20;
    match s.word(0x0C)? {
        0 => None,
        0xFFFF => Some(None),
        0x7FFF => {
            // Bits 30:0 in MiB; bit 31 is reserved.
            let ext = s.dword(0x1C).map(|d| u64::from(d & 0x7FFF_FFFF));
            Some(ext.filter(|&m| m != 0).map(|m| m * MIB))
        }
        // Bit 15: 0 = MiB, 1 = KiB.
        w if w & 0x8000 != 0 => Some(Some(u64::from(w & 0x7FFF) * 1024)),
        w => Some(Some(u64::from(w) * MIB)),
    }
}

/// A speed word, or the extended dword when the word says 0xFFFF (SMBIOS 3.3).
fn speed(s: &Structure, word_at: usize, ext_at: usize) -> Option<u32> {
    match s.word(word_at)? {
        0 => None,
        0xFFFF => s.dword(ext_at).map(|d| d & 0x7FFF_FFFF).filter(|&d| d != 0),
        w => Some(u32::from(w)),
    }
}

/// `None` for an empty slot (size word 0, DSP0134 §7.18.5).
fn decode_memory_device(s: &Structure) -> Option<Dimm> {
    let size_bytes = dimm_size(s)?;
    Some(Dimm {
        locator: s.string(0x10),
        bank_locator: s.string(0x11),
        size_bytes,
        kind: table_name(MEMORY_TYPES, s.byte(0x12)),
        form_factor: table_name(FORM_FACTORS, s.byte(0x0E)),
        speed_mts: speed(s, 0x15, 0x54),
        configured_speed_mts: speed(s, 0x20, 0x58),
        manufacturer: s.string(0x17),
        part_number: s.string(0x1A),
        serial: s.string(0x18),
    })
}

/// Type 38 (IPMI Device Information), DSP0134 §7.39.
fn decode_ipmi(s: &Structure) -> IpmiDevice {
    let kind = s.byte(0x04);
    let interface = match kind {
        Some(1) => Some("kcs"),
        Some(2) => Some("smic"),
        Some(3) => Some("bt"),
        Some(4) => Some("ssif"),
        _ => None,
    };
    let spec_version = s
        .byte(0x05)
        .filter(|&b| b != 0)
        .map(|b| format!("{}.{}", b >> 4, b & 0x0F));
    let raw = s.qword(0x08);
    let (base_address, address_space) = match (kind, raw) {
        // SSIF: the base address field holds the SMBus target address.
        (Some(4), Some(a)) => (Some(a), None),
        (_, Some(a)) => {
            // Bit 0 selects I/O space; the real LSB of the address is bit 4 of
            // the base address modifier at 10h (when the structure has it).
            let lsb = s.byte(0x10).map_or(0, |m| u64::from((m >> 4) & 1));
            let space = if a & 1 == 1 { "io" } else { "memory" };
            (Some((a & !1) | lsb), Some(space.to_string()))
        }
        (_, None) => (None, None),
    };
    IpmiDevice {
        interface: interface.map(str::to_string),
        spec_version,
        base_address: base_address.filter(|&a| a != 0).map(|a| format!("{a:#x}")),
        address_space,
    }
}

/// Protocol identifier of "Redfish over IP" (DSP0270 table 7).
const PROTOCOL_REDFISH_OVER_IP: u8 = 0x04;

/// Type 42 (Management Controller Host Interface), DSP0134 §7.43 with the
/// Redfish-over-IP protocol record of DSP0270 §8. One entry per Redfish
/// record (none for a host interface carrying other protocols).
fn decode_host_interface(s: &Structure) -> Vec<RedfishHostInterface> {
    let Some(interface_type) = s.byte(0x04) else {
        return Vec::new();
    };
    let data_len = usize::from(s.byte(0x05).unwrap_or(0));
    let device_type = if data_len > 0 {
        match s.byte(0x06) {
            Some(0x02) => Some("usb"),
            Some(0x03) => Some("pci"),
            Some(0x04) => Some("usb-v2"),
            Some(0x05) => Some("pci-v2"),
            Some(0x80..=0xFF) => Some("oem"),
            _ => None,
        }
    } else {
        None
    };
    let base = RedfishHostInterface {
        interface_type,
        device_type: device_type.map(str::to_string),
        ..RedfishHostInterface::default()
    };
    let records_at = 0x06 + data_len;
    let Some(count) = s.byte(records_at) else {
        return vec![base];
    };
    let mut out = Vec::new();
    let mut at = records_at + 1;
    for _ in 0..count {
        let (Some(protocol), Some(len)) = (s.byte(at), s.byte(at + 1)) else {
            break;
        };
        let Some(data) = s.formatted.get(at + 2..at + 2 + usize::from(len)) else {
            break;
        };
        if protocol == PROTOCOL_REDFISH_OVER_IP {
            out.push(redfish_over_ip(&base, data));
        }
        at += 2 + usize::from(len);
    }
    if out.is_empty() { vec![base] } else { out }
}

/// The Redfish-over-IP protocol-specific data, DSP0270 table 8.
fn redfish_over_ip(base: &RedfishHostInterface, d: &[u8]) -> RedfishHostInterface {
    let service_address = match byte(d, 51) {
        Some(1) => d
            .get(52..56)
            .map(|a| a.iter().map(u8::to_string).collect::<Vec<_>>().join(".")),
        Some(2) => d
            .get(52..68)
            .and_then(|a| <[u8; 16]>::try_from(a).ok())
            .map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    };
    let service_discovery = match byte(d, 50) {
        Some(1) => Some("static"),
        Some(2) => Some("dhcp"),
        Some(3) => Some("auto"),
        Some(4) => Some("host-selected"),
        _ => None,
    };
    let hostname = byte(d, 90)
        .and_then(|n| d.get(91..91 + usize::from(n)))
        .and_then(|h| firmware_string(&String::from_utf8_lossy(h)));
    RedfishHostInterface {
        service_address: service_address.filter(|a| a != "0.0.0.0" && a != "::"),
        service_port: word(d, 84).filter(|&p| p != 0),
        service_vlan: dword(d, 86).filter(|&v| v != 0),
        service_hostname: hostname,
        service_discovery: service_discovery.map(str::to_string),
        ..base.clone()
    }
}

/// Type 43 (TPM Device), DSP0134 §7.44.
fn decode_tpm(s: &Structure) -> TpmInfo {
    // The vendor id is four ASCII characters, NUL-padded (e.g. "IFX\0").
    let vendor = s.formatted.get(0x04..0x08).and_then(|v| {
        let text: String = v
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect();
        (text.chars().all(|c| c.is_ascii_graphic() || c == ' '))
            .then_some(text)
            .and_then(|t| firmware_string(&t))
    });
    let spec_version = match (s.byte(0x08), s.byte(0x09)) {
        (Some(major), Some(minor)) if major != 0 => Some(format!("{major}.{minor}")),
        _ => None,
    };
    TpmInfo {
        vendor,
        spec_version,
    }
}

fn byte(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn word(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn dword(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn qword(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples on purpose
#[path = "smbios_tests.rs"]
mod tests;
