//! Where the hub is, from the kernel command line the hub's iPXE script set:
//! `provisioner.url=` (HTTP base), `provisioner.grpc=` (enrollment service,
//! host:port), `provisioner.ca=sha256:<hex>` (the pinned CA) and
//! `provisioner.token=` (the join token). Pure.

use std::net::SocketAddr;

/// What the command line says about the hub. Every part is optional: mDNS
/// or flags can fill the gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubArgs {
    pub url: Option<String>,
    pub grpc: Option<SocketAddr>,
    /// Lowercase hex SHA-256 of the CA certificate (DER).
    pub ca_sha256: Option<String>,
    pub token: Option<String>,
}

/// `sha256:<64 hex>` -> lowercase hex; anything else is not a pin.
pub fn parse_pin(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Parses `/proc/cmdline`. Malformed values are dropped (and logged by the
/// caller as missing), never guessed.
pub fn parse(cmdline: &str) -> HubArgs {
    let mut args = HubArgs::default();
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "provisioner.url" if value.starts_with("http://") => args.url = Some(value.to_owned()),
            "provisioner.grpc" => args.grpc = value.parse().ok(),
            "provisioner.ca" => args.ca_sha256 = parse_pin(value),
            "provisioner.token" => args.token = Some(value.to_owned()),
            _ => {}
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_hub_script_sets() {
        let pin = "ab".repeat(32);
        let line = format!(
            "initrd=discovery-initramfs.gz console=ttyS0 provisioner.url=http://10.0.0.1:8080 \
             provisioner.grpc=10.0.0.1:9443 provisioner.ca=sha256:{} provisioner.token=abcdef.0123456789abcdef quiet\n",
            pin.to_uppercase()
        );
        assert_eq!(
            parse(&line),
            HubArgs {
                url: Some("http://10.0.0.1:8080".into()),
                grpc: Some("10.0.0.1:9443".parse().expect("addr")),
                ca_sha256: Some(pin),
                token: Some("abcdef.0123456789abcdef".into()),
            }
        );
    }

    #[test]
    fn malformed_values_are_dropped() {
        let cases: &[(&str, HubArgs)] = &[
            ("", HubArgs::default()),
            ("provisioner.ca=md5:abcd", HubArgs::default()),
            ("provisioner.ca=sha256:abcd", HubArgs::default()),
            ("provisioner.grpc=hub.local:9443", HubArgs::default()),
            ("provisioner.url=ftp://x", HubArgs::default()),
            ("provisioner.url", HubArgs::default()),
        ];
        for (line, want) in cases {
            assert_eq!(&parse(line), want, "case {line:?}");
        }
    }
}
