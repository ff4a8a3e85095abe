//! iPXE scripts, rendered from typed inputs (pure). Nothing served to firmware
//! carries a secret: these scripts name public boot files and the hub's URL only.
//!
//! `/boot.ipxe` is static: it chains to `/ipxe?...` with what iPXE knows about the
//! machine. The per-machine script is chosen from the machine's state; today every
//! machine is unknown and gets the discovery image.

use std::fmt::Write;

/// Path of the per-machine script.
pub const MACHINE_SCRIPT_PATH: &str = "/ipxe";
pub const DISCOVERY_KERNEL: &str = "/boot/discovery-vmlinuz";
pub const DISCOVERY_INITRD: &str = "/boot/discovery-initramfs.gz";

/// The entry script. Relative URL: iPXE resolves it against this script's URI, so
/// the same script works whatever address the machine reached us at. `:uristring`
/// URL-encodes the serial (serials contain spaces); it must not be applied to
/// `${uuid}`, whose type would then encode the 16 raw bytes (a NUL truncates the
/// request) instead of the 36-character text. `:hexhyp` gives a MAC with hyphens.
pub fn boot_script() -> String {
    format!(
        "#!ipxe\n\
         echo provisioner: ${{net0/mac}} ${{platform}}/${{buildarch}}\n\
         chain {MACHINE_SCRIPT_PATH}?mac=${{net0/mac:hexhyp}}&uuid=${{uuid}}&serial=${{serial:uristring}}&buildarch=${{buildarch}}&platform=${{platform}} || goto failed\n\
         :failed\n\
         echo provisioner: could not fetch the machine script; retrying in 10 s\n\
         sleep 10\n\
         chain /boot.ipxe\n"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Pcbios,
    Efi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildArch {
    I386,
    X86_64,
    Arm64,
}

/// What `/ipxe?...` told us, validated. Everything here came from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineQuery {
    pub mac: [u8; 6],
    pub uuid: Option<String>,
    pub serial: Option<String>,
    /// `None` when iPXE left it empty (Debian 12's 2019 iPXE has no `buildarch`).
    pub buildarch: Option<BuildArch>,
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    MissingMac,
    BadMac,
    BadUuid,
    BadSerial,
    BadBuildArch,
    BadPlatform,
    Duplicate(&'static str),
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Percent-decodes a query value; `None` for malformed escapes or non-UTF-8.
fn decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses the per-machine query. Unknown keys are ignored; every known key is
/// validated; an empty value (iPXE prints unset settings as empty) means absent.
pub fn parse_query(query: &str) -> Result<MachineQuery, QueryError> {
    let mut mac = None;
    let mut uuid = None;
    let mut serial = None;
    let mut buildarch = None;
    let mut platform = None;
    for pair in query.split('&').filter(|p| !p.is_empty()).take(32) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let field = match k {
            "mac" => "mac",
            "uuid" => "uuid",
            "serial" => "serial",
            "buildarch" => "buildarch",
            "platform" => "platform",
            _ => continue,
        };
        let v = decode(v).ok_or(match field {
            "mac" => QueryError::BadMac,
            "uuid" => QueryError::BadUuid,
            "serial" => QueryError::BadSerial,
            "buildarch" => QueryError::BadBuildArch,
            _ => QueryError::BadPlatform,
        })?;
        let dup = QueryError::Duplicate(field);
        match field {
            "mac" => {
                if mac.is_some() {
                    return Err(dup);
                }
                mac = Some(parse_mac(&v).ok_or(QueryError::BadMac)?);
            }
            "uuid" => {
                if uuid.is_some() {
                    return Err(dup);
                }
                let ok = v.is_empty()
                    || (v.len() == 36 && v.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'));
                if !ok {
                    return Err(QueryError::BadUuid);
                }
                uuid = Some(v.to_ascii_lowercase());
            }
            "serial" => {
                if serial.is_some() {
                    return Err(dup);
                }
                if v.len() > 64 || !v.bytes().all(|c| c.is_ascii_graphic() || c == b' ') {
                    return Err(QueryError::BadSerial);
                }
                serial = Some(v.trim().to_string());
            }
            "buildarch" => {
                buildarch = match v.as_str() {
                    "" => None,
                    "i386" => Some(BuildArch::I386),
                    "x86_64" => Some(BuildArch::X86_64),
                    "arm64" => Some(BuildArch::Arm64),
                    _ => return Err(QueryError::BadBuildArch),
                }
            }
            _ => {
                platform = match v.as_str() {
                    "" => None,
                    "pcbios" => Some(Platform::Pcbios),
                    "efi" => Some(Platform::Efi),
                    _ => return Err(QueryError::BadPlatform),
                }
            }
        }
    }
    Ok(MachineQuery {
        mac: mac.ok_or(QueryError::MissingMac)?,
        uuid: uuid.filter(|u| !u.is_empty()),
        serial: serial.filter(|s| !s.is_empty()),
        buildarch,
        platform,
    })
}

/// Inputs of the discovery script.
#[derive(Debug, Clone)]
pub struct Discovery<'a> {
    /// `http://host:port` as the machine reached us.
    pub base: &'a str,
    /// `None` (unknown): both BIOS and UEFI measures are taken; each is harmless on the other.
    pub platform: Option<Platform>,
    /// False when the discovery image is not among the verified assets.
    pub available: bool,
    pub console: &'a str,
    /// How the node agent reaches the enrollment service; `None` when it is off.
    pub enroll: Option<EnrollArgs<'a>>,
    /// The node agent archive is served: load it as a second initrd.
    pub agent: bool,
}

/// Kernel arguments for the node agent. Nothing secret: the CA fingerprint is
/// public, and the join token is the hub's short-lived discovery token, which
/// only lets a machine wait for approval (BRIEF security model).
#[derive(Debug, Clone, Copy)]
pub struct EnrollArgs<'a> {
    /// `sha256:<hex>` of the hub CA certificate.
    pub ca: &'a str,
    pub token: &'a str,
    /// The enrollment service's port, on the host the machine reached.
    pub port: u16,
}

/// The host part of `http://host[:port]`.
fn url_host(base: &str) -> &str {
    let rest = base.strip_prefix("http://").unwrap_or(base);
    match rest.rsplit_once(':') {
        // An IPv6 literal keeps its brackets; only a trailing :port is cut.
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => rest,
    }
}

/// The discovery script: boots the discovery kernel + initramfs. On BIOS, `imgfree`
/// first, or every image still loaded becomes an initrd; on UEFI the kernel needs
/// `initrd=<name>` on its command line to find the initramfs (BRIEF lab notes).
pub fn discovery_script(d: &Discovery<'_>) -> String {
    let mut s = String::from("#!ipxe\n");
    if !d.available {
        s.push_str(
            "echo provisioner: the discovery image is not on this hub (run boot-assets/build-discovery.sh)\n\
             sleep 10\n\
             exit 1\n",
        );
        return s;
    }
    let base = d.base;
    let initrd_name = DISCOVERY_INITRD.rsplit('/').next().unwrap_or("initrd");
    let mut args = format!("console={} provisioner.url={base}", d.console);
    if let Some(e) = d.enroll {
        let _ = write!(
            args,
            " provisioner.grpc={}:{} provisioner.ca={} provisioner.token={}",
            url_host(base),
            e.port,
            e.ca,
            e.token
        );
    }
    let agent_name = crate::agent_image::AGENT_INITRD
        .rsplit('/')
        .next()
        .unwrap_or("agent");
    // The agent archive goes first. The EFI stub concatenates `initrd=` files
    // back to back, and the kernel only finds an uncompressed cpio at a 4-byte
    // aligned offset: after the gzip'd discovery initramfs (any length) it
    // would be skipped; the agent archive is padded to 512 bytes, so whatever
    // follows it is aligned.
    if d.platform != Some(Platform::Pcbios) {
        args = format!("initrd={initrd_name} {args}");
        if d.agent {
            args = format!("initrd={agent_name} {args}");
        }
    }
    if d.platform != Some(Platform::Efi) {
        s.push_str("imgfree\n");
    }
    let _ = writeln!(s, "kernel {base}{DISCOVERY_KERNEL} {args}");
    if d.agent {
        let _ = writeln!(s, "initrd {base}{}", crate::agent_image::AGENT_INITRD);
    }
    let _ = writeln!(s, "initrd {base}{DISCOVERY_INITRD}");
    s.push_str("boot\n");
    s
}

/// An installed machine's script: leave for the local disk, the way its
/// hardware profile says. `exit` hands back to the firmware, which boots the
/// next entry of its boot order; `sanboot` boots the first BIOS disk
/// directly (falling back to `exit` if that fails).
pub fn local_boot_script(node: &str, how: crate::profiles::HandOff) -> String {
    let mut s =
        format!("#!ipxe\necho provisioner: node {node} is installed; booting from its disk\n");
    match how {
        crate::profiles::HandOff::Exit => s.push_str("exit\n"),
        crate::profiles::HandOff::Sanboot => {
            s.push_str("sanboot --no-describe --drive 0x80 || exit\n")
        }
    }
    s
}

/// Whether a Host header is safe to echo into a script: host or host:port.
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_table() {
        let ok = MachineQuery {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            uuid: Some("11111111-2222-3333-4444-555555555555".into()),
            serial: Some("SER 123".into()),
            buildarch: Some(BuildArch::X86_64),
            platform: Some(Platform::Efi),
        };
        let full = "mac=52-54-00-12-34-56&uuid=11111111-2222-3333-4444-555555555555&serial=SER%20123&buildarch=x86_64&platform=efi";
        let cases: Vec<(&str, String, Result<MachineQuery, QueryError>)> = vec![
            ("full", full.into(), Ok(ok.clone())),
            (
                "colons and unknown keys",
                full.replace('-', ":")
                    .replace("mac=52:54:00:12:34:56", "mac=52:54:00:12:34:56&x=1")
                    .replace(
                        "uuid=11111111:2222:3333:4444:555555555555",
                        "uuid=11111111-2222-3333-4444-555555555555",
                    ),
                Ok(ok.clone()),
            ),
            (
                "unset settings are empty",
                "mac=52-54-00-12-34-56&uuid=&serial=&buildarch=i386&platform=pcbios".into(),
                Ok(MachineQuery {
                    uuid: None,
                    serial: None,
                    buildarch: Some(BuildArch::I386),
                    platform: Some(Platform::Pcbios),
                    ..ok.clone()
                }),
            ),
            (
                "no mac",
                "buildarch=x86_64&platform=efi".into(),
                Err(QueryError::MissingMac),
            ),
            (
                "bad mac",
                full.replace("52-54", "zz-54"),
                Err(QueryError::BadMac),
            ),
            (
                "short mac",
                full.replace("-56&", "&"),
                Err(QueryError::BadMac),
            ),
            (
                "two macs",
                format!("{full}&mac=52-54-00-00-00-01"),
                Err(QueryError::Duplicate("mac")),
            ),
            (
                "bad uuid",
                full.replace("uuid=1111", "uuid=zzzz"),
                Err(QueryError::BadUuid),
            ),
            (
                "script injection in serial",
                full.replace("SER%20123", "x%0Ashell"),
                Err(QueryError::BadSerial),
            ),
            (
                "bad escape",
                full.replace("SER%20123", "SER%zz3"),
                Err(QueryError::BadSerial),
            ),
            (
                "long serial",
                full.replace("SER%20123", &"A".repeat(65)),
                Err(QueryError::BadSerial),
            ),
            (
                "bad platform",
                full.replace("efi", "uboot"),
                Err(QueryError::BadPlatform),
            ),
            (
                "bad arch",
                full.replace("x86_64", "mips"),
                Err(QueryError::BadBuildArch),
            ),
            ("garbage", "%%%&&==&".into(), Err(QueryError::MissingMac)),
        ];
        for (name, q, want) in cases {
            assert_eq!(parse_query(&q), want, "case {name}");
        }
    }

    #[test]
    fn discovery_scripts_per_platform() {
        let bios = discovery_script(&Discovery {
            base: "http://10.0.0.1:8080",
            platform: Some(Platform::Pcbios),
            available: true,
            console: "ttyS0",
            enroll: None,
            agent: false,
        });
        assert_eq!(
            bios,
            "#!ipxe\nimgfree\nkernel http://10.0.0.1:8080/boot/discovery-vmlinuz console=ttyS0 provisioner.url=http://10.0.0.1:8080\ninitrd http://10.0.0.1:8080/boot/discovery-initramfs.gz\nboot\n"
        );
        let efi = discovery_script(&Discovery {
            base: "http://10.0.0.1:8080",
            platform: Some(Platform::Efi),
            available: true,
            console: "ttyS0",
            enroll: None,
            agent: false,
        });
        assert!(!efi.contains("imgfree"));
        assert!(efi.contains(
            "kernel http://10.0.0.1:8080/boot/discovery-vmlinuz initrd=discovery-initramfs.gz "
        ));
        let none = discovery_script(&Discovery {
            base: "x",
            platform: Some(Platform::Efi),
            available: false,
            console: "ttyS0",
            enroll: None,
            agent: false,
        });
        assert!(none.contains("exit 1") && !none.contains("kernel"));
        let unknown = discovery_script(&Discovery {
            base: "http://h",
            platform: None,
            available: true,
            console: "ttyS0",
            enroll: None,
            agent: false,
        });
        assert!(
            unknown.contains("imgfree") && unknown.contains("initrd=discovery-initramfs.gz"),
            "unknown platform: both"
        );
    }

    #[test]
    fn discovery_script_carries_enrollment_arguments() {
        let e = EnrollArgs {
            ca: "sha256:ab12",
            token: "abcdef.0123456789abcdef",
            port: 9443,
        };
        for (base, grpc) in [
            ("http://10.0.0.1:8080", "10.0.0.1:9443"),
            ("http://10.0.0.1", "10.0.0.1:9443"),
            ("http://[fd00::1]:8080", "[fd00::1]:9443"),
        ] {
            let s = discovery_script(&Discovery {
                base,
                platform: Some(Platform::Pcbios),
                available: true,
                console: "ttyS0",
                enroll: Some(e),
                agent: true,
            });
            assert!(s.contains("initrd http://"), "{s}");
            assert!(
                s.contains(&format!(
                    "initrd {base}/boot/node-agent.cpio\ninitrd {base}/boot/discovery-initramfs.gz\n"
                )),
                "{s}"
            );
            let want = format!(
                " provisioner.grpc={grpc} provisioner.ca=sha256:ab12 provisioner.token=abcdef.0123456789abcdef\n"
            );
            assert!(s.contains(&want), "base {base}: {s}");
        }
        // UEFI: the agent archive first (alignment of the concatenated initrds).
        let efi = discovery_script(&Discovery {
            base: "http://10.0.0.1:8080",
            platform: Some(Platform::Efi),
            available: true,
            console: "ttyS0",
            enroll: Some(e),
            agent: true,
        });
        assert!(
            efi.contains(" initrd=node-agent.cpio initrd=discovery-initramfs.gz console="),
            "{efi}"
        );
    }

    #[test]
    fn boot_script_chains_relatively_with_encoded_settings() {
        let s = boot_script();
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(
            "chain /ipxe?mac=${net0/mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&buildarch=${buildarch}&platform=${platform}"
        ));
        assert!(
            !s.contains("uuid:"),
            "a typed uuid would be encoded as raw bytes"
        );
    }

    #[test]
    fn local_boot_scripts() {
        use crate::profiles::HandOff;
        assert_eq!(
            local_boot_script("n0123456789ab", HandOff::Exit),
            "#!ipxe\necho provisioner: node n0123456789ab is installed; booting from its disk\nexit\n"
        );
        let s = local_boot_script("n0123456789ab", HandOff::Sanboot);
        assert!(
            s.ends_with("sanboot --no-describe --drive 0x80 || exit\n"),
            "{s}"
        );
        assert!(
            !s.contains("kernel"),
            "no discovery image for installed machines"
        );
    }

    #[test]
    fn host_header_validation() {
        for (h, ok) in [
            ("10.0.0.1:8080", true),
            ("hub.local", true),
            ("[fe80::1]:80", true),
            ("", false),
            ("a b", false),
            ("x\nshell", false),
            ("a/b", false),
        ] {
            assert_eq!(valid_host(h), ok, "{h:?}");
        }
    }
}
