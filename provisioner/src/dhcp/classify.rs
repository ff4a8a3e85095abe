//! Classifies a DHCP client for booting: is it PXE firmware, UEFI HTTP boot, or
//! iPXE already running, and for which architecture. Pure; reads options only.

use dhcproto::v4::{DhcpOption, Message, OptionCode};

use crate::boot::Firmware;

/// Option 60 prefix of PXE firmware (PXE 2.1 spec §2.2.5; RFC 4578).
pub const PXE_CLIENT: &[u8] = b"PXEClient";
/// Option 60 prefix of UEFI HTTP boot clients (UEFI 2.x spec §24.7.2).
pub const HTTP_CLIENT: &[u8] = b"HTTPClient";
/// Option 77 value iPXE sends (iPXE `DHCP_USER_CLASS`).
pub const IPXE_USER_CLASS: &[u8] = b"iPXE";

/// RFC 4578 §2.1 / IANA "Processor Architecture Types".
pub mod arch {
    pub const X86_BIOS: u16 = 0;
    pub const EFI_IA32: u16 = 6;
    pub const EFI_BC: u16 = 7;
    pub const EFI_X86_64: u16 = 9;
    pub const EFI_ARM64: u16 = 11;
    pub const HTTP_X86_64: u16 = 16;
    pub const HTTP_ARM64: u16 = 19;
}

/// How a client asked to boot, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootClass {
    /// Not a network-boot client (an OS, udhcpc, dhclient...).
    Plain,
    /// A network-boot client we know how to serve.
    Boot(Firmware),
    /// A PXE/HTTP client of an architecture we have nothing for (e.g. EFI IA32).
    UnsupportedArch(u16),
}

impl BootClass {
    pub fn firmware(self) -> Option<Firmware> {
        match self {
            BootClass::Boot(f) => Some(f),
            _ => None,
        }
    }
}

/// Whether option 77 says iPXE, in either encoding: iPXE's plain string, or an
/// RFC 3004 list of length-prefixed user classes one of which is `iPXE`.
pub fn is_ipxe_user_class(data: &[u8]) -> bool {
    if data == IPXE_USER_CLASS {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == IPXE_USER_CLASS {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

fn vendor_class(msg: &Message) -> Option<&[u8]> {
    match msg.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v),
        _ => None,
    }
}

/// The client's architecture from option 93 (first entry), if present.
pub fn client_arch(msg: &Message) -> Option<u16> {
    match msg.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    }
}

/// Classifies a request. iPXE wins over everything else so that iPXE never
/// chainloads itself again.
pub fn classify(msg: &Message) -> BootClass {
    if let Some(DhcpOption::UserClass(uc)) = msg.opts().get(OptionCode::UserClass)
        && is_ipxe_user_class(uc)
    {
        return BootClass::Boot(Firmware::Ipxe);
    }
    let vendor = vendor_class(msg).unwrap_or(&[]);
    let http = vendor.starts_with(HTTP_CLIENT);
    let pxe = vendor.starts_with(PXE_CLIENT);
    if !http && !pxe {
        return BootClass::Plain;
    }
    // PXE clients must send option 93 (RFC 4578 §2.1); treat its absence as BIOS,
    // which is what old PXE ROMs that omit it are.
    let arch = client_arch(msg).unwrap_or(if http {
        arch::HTTP_X86_64
    } else {
        arch::X86_BIOS
    });
    let firmware = match (http, arch) {
        (true, arch::HTTP_X86_64 | arch::EFI_X86_64 | arch::EFI_BC) => Firmware::HttpUefiX64,
        (true, arch::HTTP_ARM64 | arch::EFI_ARM64) => Firmware::HttpUefiArm64,
        (false, arch::X86_BIOS) => Firmware::BiosX86,
        (false, arch::EFI_BC | arch::EFI_X86_64) => Firmware::UefiX64,
        (false, arch::EFI_ARM64) => Firmware::UefiArm64,
        (_, other) => return BootClass::UnsupportedArch(other),
    };
    BootClass::Boot(firmware)
}

/// True when the vendor class says this is an HTTP boot client (its reply must carry `HTTPClient`).
pub fn is_http_client(msg: &Message) -> bool {
    vendor_class(msg).is_some_and(|v| v.starts_with(HTTP_CLIENT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Architecture, MessageType};

    fn msg(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    fn vc(s: &str) -> DhcpOption {
        DhcpOption::ClassIdentifier(s.as_bytes().to_vec())
    }
    fn a(n: u16) -> DhcpOption {
        DhcpOption::ClientSystemArchitecture(Architecture::from(n))
    }

    #[test]
    fn classify_table() {
        let cases: Vec<(&str, Message, BootClass)> = vec![
            ("plain client", msg(vec![]), BootClass::Plain),
            (
                "udhcpc vendor class",
                msg(vec![vc("udhcp 1.35.0")]),
                BootClass::Plain,
            ),
            (
                "bios pxe",
                msg(vec![vc("PXEClient:Arch:00000:UNDI:002001"), a(0)]),
                BootClass::Boot(Firmware::BiosX86),
            ),
            (
                "pxe without arch",
                msg(vec![vc("PXEClient")]),
                BootClass::Boot(Firmware::BiosX86),
            ),
            (
                "uefi bc",
                msg(vec![vc("PXEClient:Arch:00007:UNDI:003016"), a(7)]),
                BootClass::Boot(Firmware::UefiX64),
            ),
            (
                "uefi x86-64",
                msg(vec![vc("PXEClient:Arch:00009:UNDI:003016"), a(9)]),
                BootClass::Boot(Firmware::UefiX64),
            ),
            (
                "uefi arm64",
                msg(vec![vc("PXEClient:Arch:00011:UNDI:003000"), a(11)]),
                BootClass::Boot(Firmware::UefiArm64),
            ),
            (
                "uefi ia32 unsupported",
                msg(vec![vc("PXEClient:Arch:00006"), a(6)]),
                BootClass::UnsupportedArch(6),
            ),
            (
                "http boot x64",
                msg(vec![vc("HTTPClient:Arch:00016:UNDI:003001"), a(16)]),
                BootClass::Boot(Firmware::HttpUefiX64),
            ),
            (
                "http boot arm64",
                msg(vec![vc("HTTPClient:Arch:00019"), a(19)]),
                BootClass::Boot(Firmware::HttpUefiArm64),
            ),
            (
                "ipxe plain user class",
                msg(vec![
                    vc("PXEClient:Arch:00000:UNDI:002001"),
                    a(0),
                    DhcpOption::UserClass(b"iPXE".to_vec()),
                ]),
                BootClass::Boot(Firmware::Ipxe),
            ),
            (
                "ipxe rfc3004 user class",
                msg(vec![
                    vc("PXEClient:Arch:00007"),
                    a(7),
                    DhcpOption::UserClass(b"\x03foo\x04iPXE".to_vec()),
                ]),
                BootClass::Boot(Firmware::Ipxe),
            ),
            (
                "other user class",
                msg(vec![
                    vc("PXEClient:Arch:00007"),
                    a(7),
                    DhcpOption::UserClass(b"\x04iPXF".to_vec()),
                ]),
                BootClass::Boot(Firmware::UefiX64),
            ),
        ];
        for (name, m, want) in cases {
            assert_eq!(classify(&m), want, "case {name}");
        }
    }

    #[test]
    fn rfc3004_parser_rejects_bad_lengths() {
        for (name, data, want) in [
            ("plain", &b"iPXE"[..], true),
            ("rfc3004 single", b"\x04iPXE", true),
            ("zero length", b"\x00\x04iPXE", false),
            ("overlong length", b"\x09iPXE", false),
            ("empty", b"", false),
        ] {
            assert_eq!(is_ipxe_user_class(data), want, "case {name}");
        }
    }
}
