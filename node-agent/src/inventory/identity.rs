//! The facts the hub identifies a machine by: SMBIOS system UUID, system
//! serial and the set of physical NIC MACs, each normalized so two
//! inventories of the same machine compare equal as strings.
//!
//! None of them is trusted alone (cloned VMs share UUIDs, cheap boards share
//! serials); deciding which to believe is the hub's job, not this module's.

use super::firmware::normalize_uuid;
use super::model::Inventory;
use super::net::normalize_mac;

/// Normalized identity of one inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Lowercase canonical UUID; `None` when unset (all zeros / all 0xFF).
    pub uuid: Option<String>,
    /// System serial; `None` when blank or a vendor placeholder.
    pub serial: Option<String>,
    /// Sorted, deduplicated MAC-48 addresses of physical NICs (unicast, non-zero).
    pub macs: Vec<String>,
}

impl Inventory {
    pub fn identity(&self) -> Identity {
        Identity {
            uuid: self.system_uuid(),
            serial: self.system_serial(),
            macs: self.nic_macs(),
        }
    }

    pub fn system_uuid(&self) -> Option<String> {
        normalize_uuid(self.system.uuid.as_deref()?)
    }

    pub fn system_serial(&self) -> Option<String> {
        let s = self.system.serial.as_deref()?.trim();
        (!s.is_empty()).then(|| s.to_string())
    }

    /// MAC-48 addresses only: InfiniBand's 20-byte addresses are not stable
    /// identities (they embed a queue pair number) and multicast ones are not NICs.
    pub fn nic_macs(&self) -> Vec<String> {
        let mut macs: Vec<String> = self
            .nics
            .iter()
            .filter_map(|n| normalize_mac(n.mac.as_deref()?))
            .filter(|m| m.len() == 17 && is_unicast(m))
            .collect();
        macs.sort();
        macs.dedup();
        macs
    }
}

/// Bit 0 of the first octet is the group (multicast) bit, IEEE 802-2014 §8.2.
fn is_unicast(mac: &str) -> bool {
    mac.get(0..2)
        .and_then(|o| u8::from_str_radix(o, 16).ok())
        .is_some_and(|o| o & 1 == 0)
}

#[cfg(test)]
mod tests {
    use super::super::model::{Nic, System};
    use super::*;

    fn inventory(uuid: Option<&str>, serial: Option<&str>, macs: &[Option<&str>]) -> Inventory {
        let mut inv = super::super::empty();
        inv.system = System {
            uuid: uuid.map(str::to_string),
            serial: serial.map(str::to_string),
            ..System::default()
        };
        inv.nics = macs
            .iter()
            .enumerate()
            .map(|(i, m)| Nic {
                name: format!("eth{i}"),
                mac: m.map(str::to_string),
                ..Nic::default()
            })
            .collect();
        inv
    }

    #[test]
    fn identity_is_normalized() {
        let cases: &[(&str, Inventory, Identity)] = &[
            ("empty", inventory(None, None, &[]), Identity::default()),
            (
                "upper case uuid, sorted macs",
                inventory(
                    Some("4C4C4544-0042-3510-8052-B4C04F4E4A32"),
                    Some(" CN0WW56 "),
                    &[
                        Some("52:54:00:BB:00:02"),
                        Some("52:54:00:aa:00:01"),
                        None,
                        Some("52:54:00:aa:00:01"),
                    ],
                ),
                Identity {
                    uuid: Some("4c4c4544-0042-3510-8052-b4c04f4e4a32".into()),
                    serial: Some("CN0WW56".into()),
                    macs: vec!["52:54:00:aa:00:01".into(), "52:54:00:bb:00:02".into()],
                },
            ),
            (
                "unset uuid, multicast and infiniband macs dropped",
                inventory(
                    Some("00000000-0000-0000-0000-000000000000"),
                    Some(""),
                    &[
                        Some("01:00:5e:00:00:01"),
                        Some("80:00:00:48:fe:80:00:00:00:00:00:00:02:c9:03:00:0a:0b:0c:0d"),
                    ],
                ),
                Identity::default(),
            ),
        ];
        for (name, inv, want) in cases {
            assert_eq!(&inv.identity(), want, "case {name}");
        }
    }
}
