//! Who is this machine? A node's identity is a composite of its SMBIOS UUID,
//! its serial number and the set of its NIC MACs, all self-asserted by the
//! agent. No single part is trusted alone: firmware ships all-zero, all-F and
//! vendor placeholder UUIDs, cloned machines share UUIDs, and serials like
//! "To Be Filled By O.E.M." are common. A UUID seen on two machines that
//! otherwise differ is remembered as duplicated and never matches again.
//!
//! This decides recognition only; it grants nothing. Certificates still need
//! approval (registry).
//!
//! Pure: no store, no clock.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::config::MacAddr;

/// What a machine says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Canonical lowercase `8-4-4-4-12`.
    pub uuid: Option<String>,
    pub serial: Option<String>,
    pub macs: BTreeSet<MacAddr>,
}

/// UUIDs that firmware vendors ship on many machines (placeholders from
/// reference BIOS builds).
const PLACEHOLDER_UUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
    "12345678-1234-5678-90ab-cddeefaabbcc",
    "4c4c4544-0000-2010-8020-80c04f202020",
];

/// Serial strings that identify nothing.
const PLACEHOLDER_SERIALS: &[&str] = &[
    "to be filled by o.e.m.",
    "default string",
    "system serial number",
    "not specified",
    "not applicable",
    "none",
    "n/a",
    "na",
    "0123456789",
    "123456789",
    "1234567890",
    "chassis serial number",
    "serial",
    "unknown",
    "empty",
];

/// Normalises a UUID to canonical lowercase form; `None` if it is not one.
pub fn normalize_uuid(s: &str) -> Option<String> {
    let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// A UUID that cannot tell machines apart: a placeholder, or one hex digit repeated.
pub fn bogus_uuid(uuid: &str) -> bool {
    let mut digits = uuid.chars().filter(|c| *c != '-');
    let first = digits.next();
    PLACEHOLDER_UUIDS.contains(&uuid) || digits.all(|c| Some(c) == first)
}

/// A serial that cannot tell machines apart.
pub fn bogus_serial(serial: &str) -> bool {
    let s = serial.trim().to_ascii_lowercase();
    let mut chars = s.chars();
    let first = chars.next();
    s.len() < 3 || PLACEHOLDER_SERIALS.contains(&s.as_str()) || chars.all(|c| Some(c) == first)
}

impl Claim {
    /// Builds a claim from raw values, dropping what is malformed; `None` when
    /// nothing identifying is left.
    pub fn new(uuid: Option<&str>, serial: Option<&str>, macs: &[MacAddr]) -> Option<Claim> {
        let claim = Claim {
            uuid: uuid.and_then(normalize_uuid),
            serial: serial
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| !c.is_control()))
                .map(str::to_owned),
            macs: macs
                .iter()
                .copied()
                // Multicast and all-zero MACs are not a NIC's identity.
                .filter(|m| m.0[0] & 1 == 0 && m.0 != [0; 6])
                .collect(),
        };
        (claim.uuid.is_some() || claim.serial.is_some() || !claim.macs.is_empty()).then_some(claim)
    }

    fn good_uuid<'a>(&'a self, duplicated: &BTreeSet<String>) -> Option<&'a str> {
        self.uuid
            .as_deref()
            .filter(|u| !bogus_uuid(u) && !duplicated.contains(*u))
    }

    fn good_serial(&self) -> Option<&str> {
        self.serial.as_deref().filter(|s| !bogus_serial(s))
    }
}

/// How strongly a claim matches a known node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    /// Only NICs in common (UUID and serial unusable on one side or both).
    Macs,
    /// UUID, with NICs in common (serial unknown on one side).
    UuidAndMacs,
    /// UUID and serial both equal and usable.
    UuidAndSerial,
}

/// Whether `claim` is the machine `known`, and on what evidence. Two usable
/// serials that differ, or two NIC sets that do not meet, always mean two
/// machines, whatever the UUIDs say.
pub fn matches(claim: &Claim, known: &Claim, duplicated: &BTreeSet<String>) -> Option<Evidence> {
    let serials = (claim.good_serial(), known.good_serial());
    if let (Some(a), Some(b)) = serials
        && a != b
    {
        return None;
    }
    let macs_meet = claim.macs.intersection(&known.macs).next().is_some();
    let uuid_equal = matches!(
        (claim.good_uuid(duplicated), known.good_uuid(duplicated)),
        (Some(a), Some(b)) if a == b
    );
    let serial_equal = matches!(serials, (Some(a), Some(b)) if a == b);
    match (uuid_equal, serial_equal, macs_meet) {
        (true, true, _) => Some(Evidence::UuidAndSerial),
        (true, false, true) => Some(Evidence::UuidAndMacs),
        (_, _, true) => Some(Evidence::Macs),
        _ => None,
    }
}

/// The outcome of looking a claim up among known nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<K> {
    Known(K),
    /// A new machine. `duplicate_uuid` is set when its (usable-looking) UUID is
    /// already held by a different machine: from now on that UUID is bogus.
    New {
        duplicate_uuid: Option<String>,
    },
}

/// Finds the node `claim` is, by the strongest evidence; ties go to the first.
pub fn resolve<'a, K: Clone + 'a>(
    claim: &Claim,
    known: impl IntoIterator<Item = (&'a K, &'a Claim)>,
    duplicated: &BTreeSet<String>,
) -> Resolution<K> {
    let mut best: Option<(Evidence, K)> = None;
    let mut uuid_clash = false;
    let uuid = claim.good_uuid(duplicated);
    for (key, other) in known {
        match matches(claim, other, duplicated) {
            Some(e) if best.as_ref().is_none_or(|(b, _)| e > *b) => best = Some((e, key.clone())),
            Some(_) => {}
            None => uuid_clash |= uuid.is_some() && other.good_uuid(duplicated) == uuid,
        }
    }
    match best {
        Some((_, key)) => Resolution::Known(key),
        None => Resolution::New {
            duplicate_uuid: uuid.filter(|_| uuid_clash).map(str::to_owned),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn claim(uuid: &str, serial: &str, macs: &[u8]) -> Claim {
        let macs: Vec<MacAddr> = macs.iter().map(|n| mac(*n)).collect();
        Claim::new(
            (!uuid.is_empty()).then_some(uuid),
            (!serial.is_empty()).then_some(serial),
            &macs,
        )
        .expect("identifying")
    }

    const U1: &str = "6F1C2C6A-8E2B-4E43-9C57-0A1B2C3D4E5F";
    const U2: &str = "0b7e3a52-1d44-4a3e-8d0f-112233445566";
    const ZERO: &str = "00000000-0000-0000-0000-000000000000";

    #[test]
    fn bogus_values() {
        let uuids: &[(&str, bool)] = &[
            (ZERO, true),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", true),
            ("03000200-0400-0500-0006-000700080009", true),
            ("11111111-1111-1111-1111-111111111111", true),
            ("6f1c2c6a-8e2b-4e43-9c57-0a1b2c3d4e5f", false),
        ];
        for (u, want) in uuids {
            assert_eq!(bogus_uuid(u), *want, "uuid {u}");
        }
        let serials: &[(&str, bool)] = &[
            ("To Be Filled By O.E.M.", true),
            ("Default string", true),
            ("0000000", true),
            ("ab", true),
            ("CZ2D1234AB", false),
            ("7XK9Q24", false),
        ];
        for (s, want) in serials {
            assert_eq!(bogus_serial(s), *want, "serial {s}");
        }
        assert_eq!(
            normalize_uuid(U1).as_deref(),
            Some("6f1c2c6a-8e2b-4e43-9c57-0a1b2c3d4e5f")
        );
        assert_eq!(normalize_uuid("not-a-uuid"), None);
        assert_eq!(
            Claim::new(None, Some("  "), &[MacAddr([1, 0, 0, 0, 0, 0])]),
            None
        );
    }

    #[test]
    fn matching_table() {
        let none = BTreeSet::new();
        let cases: &[(&str, Claim, Claim, Option<Evidence>)] = &[
            (
                "same machine",
                claim(U1, "SN1", &[1]),
                claim(U1, "SN1", &[1, 2]),
                Some(Evidence::UuidAndSerial),
            ),
            (
                "NIC replaced, uuid+serial hold",
                claim(U1, "SN1", &[9]),
                claim(U1, "SN1", &[1]),
                Some(Evidence::UuidAndSerial),
            ),
            (
                "same uuid, different serial: two machines",
                claim(U1, "SN1", &[1]),
                claim(U1, "SN2", &[1]),
                None,
            ),
            (
                "same uuid, bogus serials, disjoint NICs: two machines",
                claim(U1, "Default string", &[1]),
                claim(U1, "Default string", &[2]),
                None,
            ),
            (
                "same uuid, bogus serials, shared NIC",
                claim(U1, "Default string", &[1]),
                claim(U1, "", &[1]),
                Some(Evidence::UuidAndMacs),
            ),
            (
                "zero uuid, different serials",
                claim(ZERO, "SN1", &[1]),
                claim(ZERO, "SN2", &[2]),
                None,
            ),
            (
                "zero uuid, same serial, disjoint NICs",
                claim(ZERO, "SN1", &[1]),
                claim(ZERO, "SN1", &[2]),
                None,
            ),
            (
                "zero uuid, shared NIC",
                claim(ZERO, "", &[1, 2]),
                claim(ZERO, "", &[2, 3]),
                Some(Evidence::Macs),
            ),
            (
                "different uuids, shared NIC, no serials",
                claim(U1, "", &[1]),
                claim(U2, "", &[1]),
                Some(Evidence::Macs),
            ),
            (
                "nothing in common",
                claim(U1, "SN1", &[1]),
                claim(U2, "SN2", &[2]),
                None,
            ),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(matches(a, b, &none), *want, "case {name}");
            assert_eq!(matches(b, a, &none), *want, "case {name} (reversed)");
        }
    }

    #[test]
    fn a_duplicated_uuid_stops_counting() {
        let dup: BTreeSet<String> = [normalize_uuid(U1).expect("uuid")].into();
        // Same UUID and NICs disjoint, serials unknown: only the UUID would join them.
        assert_eq!(
            matches(&claim(U1, "", &[1]), &claim(U1, "", &[2]), &dup),
            None
        );
        assert_eq!(
            matches(&claim(U1, "SN1", &[1]), &claim(U1, "SN1", &[2]), &dup),
            None,
            "a duplicated uuid is not evidence, even with equal serials"
        );
    }

    #[test]
    fn resolve_picks_strongest_and_flags_duplicates() {
        let none = BTreeSet::new();
        let known = [
            ("a", claim(U1, "SN1", &[1])),
            ("b", claim(U2, "", &[5])),
            ("c", claim(U2, "SN3", &[5, 6])),
        ];
        let it = || known.iter().map(|(k, c)| (k, c));
        assert_eq!(
            resolve(&claim(U1, "SN1", &[7]), it(), &none),
            Resolution::Known("a")
        );
        assert_eq!(
            resolve(&claim(U2, "SN3", &[5]), it(), &none),
            Resolution::Known("c"),
            "uuid+serial beats uuid+macs"
        );
        assert_eq!(
            resolve(&claim(U1, "SN9", &[8]), it(), &none),
            Resolution::New {
                duplicate_uuid: normalize_uuid(U1)
            },
            "second machine with U1"
        );
        assert_eq!(
            resolve(&claim(ZERO, "SN9", &[8]), it(), &none),
            Resolution::New {
                duplicate_uuid: None
            }
        );
    }
}
