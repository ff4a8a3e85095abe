//! PCI functions by id (/sys/bus/pci/devices/*/{vendor,device,class}), and
//! the PCI address helper the disk and NIC collectors share. Names are left
//! to the hub, which can look ids up in pci.ids without shipping it here.

use super::model::PciDevice;
use super::source::{Source, link_name, read_text};

pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// "dddd:bb:dd.f" with hex digits; the domain may be longer than four digits
/// (Intel VMD domains start at 10000).
pub fn is_pci_address(s: &str) -> bool {
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(devfn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    let hex = |t: &str, min: usize, max: usize| {
        (min..=max).contains(&t.len()) && t.chars().all(|c| c.is_ascii_hexdigit())
    };
    hex(domain, 4, 8) && hex(bus, 2, 2) && hex(dev, 2, 2) && hex(func, 1, 1)
}

/// The PCI function nearest the end of a sysfs device path: for
/// ".../0000:00:02.0/0000:01:00.0/virtio1/block/vda" that is "0000:01:00.0".
pub fn pci_address_in_path(path: &str) -> Option<String> {
    path.rsplit('/')
        .find(|c| is_pci_address(c))
        .map(str::to_string)
}

/// A sysfs hex id such as "0x8086" or "0x020000".
pub fn parse_hex_id(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 16).ok()
}

pub fn collect(src: &dyn Source) -> Vec<PciDevice> {
    let mut out: Vec<PciDevice> = src
        .list(PCI_DEVICES)
        .into_iter()
        .filter(|name| is_pci_address(name))
        .map(|address| {
            let dir = format!("{PCI_DEVICES}/{address}");
            let id = |file: &str| {
                read_text(src, &format!("{dir}/{file}")).and_then(|t| parse_hex_id(&t))
            };
            PciDevice {
                vendor_id: id("vendor")
                    .filter(|&v| v <= 0xFFFF)
                    .map(|v| format!("{v:04x}")),
                device_id: id("device")
                    .filter(|&v| v <= 0xFFFF)
                    .map(|v| format!("{v:04x}")),
                class: id("class")
                    .filter(|&c| c <= 0xFF_FFFF)
                    .map(|c| format!("{c:06x}")),
                driver: link_name(src, &format!("{dir}/driver")),
                address,
            }
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        let cases: &[(&str, bool)] = &[
            ("0000:00:1f.2", true),
            ("10000:e1:00.0", true),
            ("0000:00:1f", false),
            ("0000:00:1f.22", false),
            ("pci0000:00", false),
            ("0000:0g:00.0", false),
            ("0000:00:00.0:1", false),
            ("", false),
        ];
        for (s, want) in cases {
            assert_eq!(is_pci_address(s), *want, "case {s:?}");
        }
        let paths: &[(&str, Option<&str>)] = &[
            (
                "../../devices/pci0000:00/0000:00:02.0/0000:01:00.0/virtio1/net/eth0",
                Some("0000:01:00.0"),
            ),
            ("../../devices/virtual/net/lo", None),
            ("../devices/platform/host0/block/sda", None),
        ];
        for (p, want) in paths {
            assert_eq!(pci_address_in_path(p).as_deref(), *want, "case {p}");
        }
    }

    #[test]
    fn hex_ids() {
        let cases: &[(&str, Option<u32>)] = &[
            ("0x8086\n", Some(0x8086)),
            ("0x020000", Some(0x02_0000)),
            ("1af4", Some(0x1af4)),
            ("0x", None),
            ("0xzz", None),
            ("", None),
            ("0x1ffffffff", None),
        ];
        for (t, want) in cases {
            assert_eq!(parse_hex_id(t), *want, "case {t:?}");
        }
    }
}
