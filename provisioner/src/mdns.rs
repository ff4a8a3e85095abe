//! DNS-SD over mDNS (RFC 6762/6763): the hub advertises `_provisioner._tcp`
//! with the enrollment port, its HTTP port and the CA fingerprint in TXT, so a
//! node agent with no `provisioner.url` on its command line (booted from a
//! BMC's virtual media, say) can still find it. The fingerprint in TXT is only
//! a hint: an agent that has a pin checks it against the pin, and every agent
//! checks the CA it downloads against the fingerprint it settled on.
//!
//! The responder is mdns-sd's daemon (its own thread); `run` shuts it down on
//! cancellation.

use std::net::IpAddr;

use mdns_sd::{ServiceDaemon, ServiceInfo};
use tokio_util::sync::CancellationToken;

/// The DNS-SD service type of the hub.
pub const SERVICE_TYPE: &str = "_provisioner._tcp.local.";

#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error("mDNS: {0}")]
    Daemon(#[from] mdns_sd::Error),
}

/// What the hub advertises.
#[derive(Debug, Clone)]
pub struct Advert {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    /// Interfaces to answer on (empty: every interface but loopback).
    pub interfaces: Vec<String>,
    pub grpc_port: u16,
    pub http_port: u16,
    /// `sha256:<hex>` of the hub CA.
    pub ca: String,
}

pub struct Advertiser {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Advertiser")
    }
}

impl Advertiser {
    /// Starts the responder and registers the service.
    pub fn start(advert: &Advert) -> Result<Advertiser, MdnsError> {
        let daemon = ServiceDaemon::new()?;
        if !advert.interfaces.is_empty() {
            daemon.disable_interface(mdns_sd::IfKind::All)?;
            for name in &advert.interfaces {
                daemon.enable_interface(mdns_sd::IfKind::Name(name.clone()))?;
            }
        }
        let host = format!("{}.local.", advert.hostname);
        let properties = [
            ("ca", advert.ca.clone()),
            ("grpc", advert.grpc_port.to_string()),
            ("http", advert.http_port.to_string()),
            ("v", "1".to_owned()),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &format!("provisioner hub {}", advert.hostname),
            &host,
            advert.ips.as_slice(),
            advert.grpc_port,
            &properties[..],
        )?;
        daemon.register(info)?;
        tracing::info!(service = SERVICE_TYPE, host = %host, ips = ?advert.ips, "mDNS advertising");
        Ok(Advertiser { daemon })
    }

    /// Keeps advertising until `cancel`, then withdraws (goodbye packets) and stops.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), MdnsError> {
        cancel.cancelled().await;
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::task::spawn_blocking(move || {
                rx.recv_timeout(std::time::Duration::from_secs(2))
            })
            .await;
        }
        Ok(())
    }
}
