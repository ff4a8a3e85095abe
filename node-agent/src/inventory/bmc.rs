//! What the host can see of its BMC: SMBIOS type 38 (IPMI system interface),
//! SMBIOS type 42 (Redfish Host Interface, with the address the host reaches
//! the Redfish service at), and whether the kernel's IPMI driver bound one.
//!
//! It does not ask the BMC for its LAN address: that takes IPMI commands
//! through /dev/ipmi0 (ioctl), which is a shell's job, not this parser's.
//! When none of these sources says anything, every field stays empty.

use super::model::Bmc;
use super::smbios::Smbios;
use super::source::Source;

/// Device nodes of the IPMI driver (devtmpfs, udev and devfs-style names)
/// and its sysfs class entry.
const IPMI_NODES: &[&str] = &[
    "/dev/ipmi0",
    "/dev/ipmi/0",
    "/dev/ipmidev/0",
    "/sys/class/ipmi/ipmi0",
];

pub fn collect(src: &dyn Source, smb: &Smbios) -> Bmc {
    Bmc {
        ipmi: smb.ipmi.clone(),
        ipmi_device_node: IPMI_NODES.iter().any(|p| src.exists(p)),
        redfish_host_interfaces: smb.redfish.clone(),
    }
}

impl Bmc {
    /// Where the host reaches its BMC over the network, as "addr:port" (or
    /// "[v6]:port"): the first Redfish Host Interface service address.
    /// `None` when firmware publishes none; nothing is guessed.
    pub fn host_interface_address(&self) -> Option<String> {
        self.redfish_host_interfaces.iter().find_map(|r| {
            let addr = r.service_address.as_deref()?;
            let host = if addr.contains(':') {
                format!("[{addr}]")
            } else {
                addr.to_string()
            };
            Some(match r.service_port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
    }

    /// True when anything shows a BMC: an IPMI entry, a driver node or a host interface.
    pub fn detected(&self) -> bool {
        !self.ipmi.is_empty() || self.ipmi_device_node || !self.redfish_host_interfaces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::RedfishHostInterface;
    use super::*;

    #[test]
    fn host_interface_address() {
        let hi = |addr: Option<&str>, port: Option<u16>| RedfishHostInterface {
            interface_type: 0x40,
            service_address: addr.map(str::to_string),
            service_port: port,
            ..RedfishHostInterface::default()
        };
        let cases: &[(&str, Vec<RedfishHostInterface>, Option<&str>)] = &[
            ("none", vec![], None),
            (
                "v4 with port",
                vec![hi(Some("169.254.0.17"), Some(443))],
                Some("169.254.0.17:443"),
            ),
            (
                "v6",
                vec![hi(Some("fe80::1"), Some(443))],
                Some("[fe80::1]:443"),
            ),
            (
                "no port",
                vec![hi(Some("169.254.0.17"), None)],
                Some("169.254.0.17"),
            ),
            (
                "first without address",
                vec![hi(None, Some(443)), hi(Some("10.0.0.2"), Some(8443))],
                Some("10.0.0.2:8443"),
            ),
        ];
        for (name, his, want) in cases {
            let bmc = Bmc {
                redfish_host_interfaces: his.clone(),
                ..Bmc::default()
            };
            assert_eq!(
                bmc.host_interface_address().as_deref(),
                *want,
                "case {name}"
            );
        }
    }
}
