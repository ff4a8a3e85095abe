//! Memory: what the kernel can use (/proc/meminfo) and the modules SMBIOS
//! type 17 lists. The two differ by design: MemTotal excludes firmware and
//! kernel reservations, so it is always below the installed size.

use super::model::Memory;
use super::smbios::Smbios;
use super::source::{Source, read_text};

pub const MEMINFO: &str = "/proc/meminfo";

/// `MemTotal` of /proc/meminfo in bytes (the file counts in KiB, written "kB").
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

pub fn collect(src: &dyn Source, smb: &Smbios) -> Memory {
    let dimms: Vec<_> = smb.memory_slots.iter().flatten().cloned().collect();
    let sizes: Vec<u64> = dimms.iter().filter_map(|d| d.size_bytes).collect();
    Memory {
        total_bytes: read_text(src, MEMINFO).and_then(|t| parse_meminfo_total(&t)),
        installed_bytes: (!sizes.is_empty())
            .then(|| sizes.iter().fold(0u64, |acc, s| acc.saturating_add(*s))),
        slots: u32::try_from(smb.memory_slots.len())
            .ok()
            .filter(|&n| n > 0),
        dimms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            (
                "typical",
                "MemTotal:        8039352 kB\nMemFree:  1 kB\n",
                Some(8_039_352 * 1024),
            ),
            ("not first", "MemFree: 1 kB\nMemTotal: 2 kB\n", Some(2048)),
            ("no unit", "MemTotal: 2\n", None),
            ("other unit", "MemTotal: 2 MB\n", None),
            ("missing", "MemFree: 1 kB\n", None),
            ("not a number", "MemTotal: lots kB\n", None),
            ("overflow", "MemTotal: 18446744073709551615 kB\n", None),
            ("empty", "", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_meminfo_total(text), *want, "case {name}");
        }
    }
}
