//! Network interfaces backed by a device (PCI, USB, virtio, platform):
//! those with a `device` link in /sys/class/net. Loopback, bridges, bonds,
//! VLANs, veths and tunnels have none and are left out; they are
//! configuration, not hardware.

use super::model::Nic;
use super::pci::pci_address_in_path;
use super::source::{Source, link_name, read_bool, read_text};

pub const SYS_NET: &str = "/sys/class/net";

/// A link-layer address as lowercase colon-separated octets; `None` unless
/// every part is two hex digits, or when every octet is zero.
pub fn normalize_mac(text: &str) -> Option<String> {
    let t = text.trim().to_ascii_lowercase();
    let parts: Vec<&str> = t.split(':').collect();
    let valid = parts
        .iter()
        .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid || parts.iter().all(|p| *p == "00") {
        return None;
    }
    Some(t)
}

/// Speed in Mb/s; the kernel writes -1 (or fails the read) when the link is down.
pub fn parse_speed(text: &str) -> Option<u32> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|s| u32::try_from(s).ok())
        .filter(|&s| s > 0)
}

pub fn collect(src: &dyn Source) -> Vec<Nic> {
    let mut out = Vec::new();
    for name in src.list(SYS_NET) {
        let dir = format!("{SYS_NET}/{name}");
        if src.read_link(&format!("{dir}/device")).is_none() {
            continue;
        }
        // An enslaved interface shows the bond's MAC in `address`; the
        // burned-in one is kept by the bonding driver.
        let mac = read_text(src, &format!("{dir}/bonding_slave/perm_hwaddr"))
            .and_then(|m| normalize_mac(&m))
            .or_else(|| read_text(src, &format!("{dir}/address")).and_then(|m| normalize_mac(&m)));
        out.push(Nic {
            mac,
            driver: link_name(src, &format!("{dir}/device/driver")),
            speed_mbps: read_text(src, &format!("{dir}/speed")).and_then(|s| parse_speed(&s)),
            link: read_bool(src, &format!("{dir}/carrier")),
            operstate: read_text(src, &format!("{dir}/operstate")),
            pci_address: src.read_link(&dir).as_deref().and_then(pci_address_in_path),
            name,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Entry, Fixture};
    use super::*;

    #[test]
    fn macs() {
        let cases: &[(&str, Option<&str>)] = &[
            ("52:54:00:12:34:56\n", Some("52:54:00:12:34:56")),
            ("52:54:00:AB:CD:EF", Some("52:54:00:ab:cd:ef")),
            ("00:00:00:00:00:00", None),
            ("52:54:00:12:34", Some("52:54:00:12:34")),
            ("52-54-00-12-34-56", None),
            ("5:54:00:12:34:56", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(normalize_mac(text).as_deref(), *want, "case {text:?}");
        }
    }

    #[test]
    fn speeds() {
        let cases: &[(&str, Option<u32>)] = &[
            ("1000\n", Some(1000)),
            ("-1\n", None),
            ("0", None),
            ("fast", None),
            ("4294967296", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_speed(text), *want, "case {text:?}");
        }
    }

    #[test]
    fn physical_interfaces_only() {
        let mut fx = Fixture::from_files(&[
            ("/sys/class/net/lo/address", b"00:00:00:00:00:00\n"),
            ("/sys/class/net/br0/address", b"02:00:00:00:00:01\n"),
            ("/sys/class/net/eth0/address", b"02:00:00:00:00:01\n"),
            (
                "/sys/class/net/eth0/bonding_slave/perm_hwaddr",
                b"52:54:00:00:00:02\n",
            ),
            ("/sys/class/net/eth0/carrier", b"1\n"),
            ("/sys/class/net/eth0/speed", b"-1\n"),
            ("/sys/class/net/eth0/operstate", b"up\n"),
        ]);
        fx.insert(
            "/sys/class/net/eth0",
            Entry::Link("../../devices/pci0000:00/0000:00:03.0/virtio0/net/eth0".into()),
        );
        fx.insert(
            "/sys/class/net/eth0/device",
            Entry::Link("../../../virtio0".into()),
        );
        fx.insert(
            "/sys/class/net/eth0/device/driver",
            Entry::Link("../../../../bus/virtio/drivers/virtio_net".into()),
        );
        let got = collect(&fx);
        assert_eq!(got.len(), 1, "only eth0: {got:?}");
        let nic = got.first().cloned().unwrap_or_default();
        assert_eq!(
            nic.mac.as_deref(),
            Some("52:54:00:00:00:02"),
            "permanent MAC wins"
        );
        assert_eq!(nic.driver.as_deref(), Some("virtio_net"));
        assert_eq!(nic.pci_address.as_deref(), Some("0000:00:03.0"));
        assert_eq!((nic.link, nic.speed_mbps), (Some(true), None));
    }
}
