//! Finding the hub when the kernel command line does not say where it is:
//! browse DNS-SD `_provisioner._tcp` over mDNS and take the first hub whose
//! TXT `ca` fingerprint agrees with the pin (any hub when there is no pin; the
//! fingerprint it advertises then becomes the pin, and the CA downloaded from
//! it must match). The token never travels by mDNS.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent};

use crate::cmdline::parse_pin;

pub const SERVICE_TYPE: &str = "_provisioner._tcp.local.";

/// A hub found by mDNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub url: String,
    pub grpc: SocketAddr,
    /// Lowercase hex.
    pub ca_sha256: String,
}

/// What one resolved service says, if it is usable and agrees with `pin`.
pub fn accept(
    ips: &[IpAddr],
    ca: Option<&str>,
    grpc: Option<&str>,
    http: Option<&str>,
    pin: Option<&str>,
) -> Option<Found> {
    let ca = parse_pin(ca?)?;
    if pin.is_some_and(|p| p != ca) {
        return None;
    }
    let grpc: u16 = grpc?.parse().ok()?;
    let http: u16 = http?.parse().ok()?;
    // IPv4 first: the discovery image's network is IPv4.
    let ip = ips
        .iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .or_else(|| ips.first())?;
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Some(Found {
        url: format!("http://{host}:{http}"),
        grpc: SocketAddr::new(*ip, grpc),
        ca_sha256: ca,
    })
}

/// Browses for up to `timeout`. Blocking: call from a blocking thread.
pub fn browse(pin: Option<&str>, timeout: Duration) -> Option<Found> {
    let daemon = ServiceDaemon::new().ok()?;
    let rx = daemon.browse(SERVICE_TYPE).ok()?;
    let deadline = Instant::now() + timeout;
    let mut found = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(s)) => {
                let ips: Vec<IpAddr> = s.addresses.iter().map(|a| a.to_ip_addr()).collect();
                let p = &s.txt_properties;
                let hit = accept(
                    &ips,
                    p.get_property_val_str("ca"),
                    p.get_property_val_str("grpc"),
                    p.get_property_val_str("http"),
                    pin,
                );
                match hit {
                    Some(f) => {
                        tracing::info!(service = %s.fullname, url = %f.url, grpc = %f.grpc, "found the hub by mDNS");
                        found = Some(f);
                        break;
                    }
                    None => {
                        tracing::warn!(service = %s.fullname, "mDNS: a hub that does not match the pin, or malformed TXT; ignored")
                    }
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = daemon.shutdown();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_checks_the_pin_and_the_txt() {
        let pin = "ab".repeat(32);
        let ca = format!("sha256:{pin}");
        let ips: Vec<IpAddr> = vec![
            "fe80::1".parse().expect("ip"),
            "10.0.0.1".parse().expect("ip"),
        ];
        let want = Some(Found {
            url: "http://10.0.0.1:8080".into(),
            grpc: "10.0.0.1:9443".parse().expect("addr"),
            ca_sha256: pin.clone(),
        });
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<Found>,
        );
        let cases: Vec<Case> = vec![
            (
                "pinned match",
                Some(&ca),
                Some(&pin),
                Some("9443"),
                want.clone(),
            ),
            ("no pin", Some(&ca), None, Some("9443"), want.clone()),
            ("other hub", Some(&ca), Some("cd"), Some("9443"), None),
            ("no ca", None, None, Some("9443"), None),
            ("bad port", Some(&ca), None, Some("x"), None),
        ];
        for (name, ca, pin, grpc, want) in cases {
            assert_eq!(
                accept(&ips, ca, grpc, Some("8080"), pin),
                want,
                "case {name}"
            );
        }
        assert_eq!(
            accept(&[], Some(&ca), Some("1"), Some("2"), None),
            None,
            "no address"
        );
    }
}
