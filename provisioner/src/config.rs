//! The hub's configuration: `RawConfig` is what the TOML file says (serde, unknown
//! fields refused); `Config` is what the hub runs on, validated and with derived
//! values filled in. Conversion binds nothing and touches no socket.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::boot::{BootTable, UefiX64Loader};

/// Errors from reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config {path:?}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address"));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(format!("{s:?} is not a MAC address"));
            }
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        Ok(MacAddr(mac))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------- raw (serde) form

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: PathBuf,
    #[serde(default)]
    pub dhcp: RawDhcp,
    #[serde(default)]
    pub boot: RawBoot,
    #[serde(default)]
    pub tftp: RawTftp,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub enroll: RawEnroll,
    #[serde(default)]
    pub talos: RawTalos,
}

/// `[talos]`: the cluster the hub builds, and how its machine configs look.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTalos {
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// `https://<host>:6443`; default: the hub's first address (it is the
    /// first control plane).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_kubernetes")]
    pub kubernetes_version: String,
    #[serde(default = "default_installer")]
    pub installer_image: String,
    #[serde(default = "default_cni")]
    pub cni: crate::talos::render::CniChoice,
    /// Talos's discovery service (turn off on air-gapped sites).
    #[serde(default = "yes")]
    pub discovery: bool,
    /// Strategic-merge patch files applied to every node's config.
    #[serde(default)]
    pub patches: Vec<PathBuf>,
    /// Local hardware profiles (`*.toml`) beside the shipped ones.
    #[serde(default)]
    pub profiles_dir: Option<PathBuf>,
    /// Static addressing for nodes (default: DHCP).
    #[serde(default)]
    pub network: Option<RawStaticNetwork>,
    /// The Talos disk image nodes install (`metal-amd64.raw`, or `.raw.zst`
    /// as Image Factory and the releases ship it). Hashed at start and served
    /// at `/boot/talos/<file name>`; without it nodes wait instead of installing.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Size of the STATE partition the install adds (holds the config).
    #[serde(default = "default_state_size")]
    pub state_size: String,
}

fn default_state_size() -> String {
    "100MiB".to_owned()
}

impl Default for RawTalos {
    fn default() -> Self {
        RawTalos {
            cluster_name: default_cluster_name(),
            endpoint: None,
            kubernetes_version: default_kubernetes(),
            installer_image: default_installer(),
            cni: default_cni(),
            discovery: true,
            patches: Vec::new(),
            profiles_dir: None,
            network: None,
            image: None,
            state_size: default_state_size(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticNetwork {
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub nameservers: Vec<Ipv4Addr>,
}

fn default_cluster_name() -> String {
    "site".to_owned()
}
fn default_kubernetes() -> String {
    crate::talos::render::DEFAULT_KUBERNETES.to_owned()
}
fn default_installer() -> String {
    format!(
        "ghcr.io/siderolabs/installer:{}",
        crate::talos::TALOS_VERSION
    )
}
fn default_cni() -> crate::talos::render::CniChoice {
    crate::talos::render::CniChoice::Flannel
}

/// `[enroll]`: the gRPC enrollment service for node agents (mTLS).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnroll {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_enroll_listen")]
    pub listen: SocketAddr,
    /// Extra DNS names in the hub's certificate (its IP addresses are always in it).
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default = "default_cert_ttl")]
    pub cert_ttl_secs: u64,
    #[serde(default = "default_cert_ttl")]
    pub ticket_ttl_secs: u64,
    #[serde(default = "default_boot_token_ttl")]
    pub boot_token_ttl_secs: u64,
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
    #[serde(default = "default_rate_per_sec")]
    pub rate_per_sec: f64,
    /// Machines matching a rule are approved without an operator.
    #[serde(default)]
    pub auto_approve: Vec<crate::enroll::registry::AutoApprove>,
    /// Advertise `_provisioner._tcp` over mDNS (on the DHCP interfaces, or all).
    #[serde(default = "yes")]
    pub mdns: bool,
}

fn default_enroll_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9443))
}
fn default_cert_ttl() -> u64 {
    24 * 3600
}
fn default_boot_token_ttl() -> u64 {
    4 * 3600
}
fn default_poll() -> u64 {
    10
}
fn default_rate_burst() -> u32 {
    20
}
fn default_rate_per_sec() -> f64 {
    2.0
}

impl Default for RawEnroll {
    fn default() -> Self {
        RawEnroll {
            enabled: true,
            listen: default_enroll_listen(),
            names: Vec::new(),
            cert_ttl_secs: default_cert_ttl(),
            ticket_ttl_secs: default_cert_ttl(),
            boot_token_ttl_secs: default_boot_token_ttl(),
            poll_secs: default_poll(),
            rate_burst: default_rate_burst(),
            rate_per_sec: default_rate_per_sec(),
            auto_approve: Vec::new(),
            mdns: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnrollConfig {
    pub enabled: bool,
    pub mdns: bool,
    pub listen: SocketAddr,
    pub names: Vec<String>,
    pub settings: crate::enroll::authority::AuthoritySettings,
}

fn validate_enroll(e: RawEnroll) -> Result<EnrollConfig, ConfigError> {
    use std::time::Duration;
    if e.listen.port() == 0 {
        return Err(invalid("enroll.listen needs a port"));
    }
    if e.cert_ttl_secs < 600 || e.cert_ttl_secs > 90 * 24 * 3600 {
        return Err(invalid(
            "enroll.cert_ttl_secs must be within 600..=7776000 (10 min to 90 days)",
        ));
    }
    if e.ticket_ttl_secs == 0
        || e.boot_token_ttl_secs < 600
        || e.poll_secs == 0
        || e.poll_secs > 3600
    {
        return Err(invalid(
            "enroll: ticket_ttl_secs > 0, boot_token_ttl_secs >= 600 and poll_secs within 1..=3600",
        ));
    }
    if e.rate_burst == 0 || !(e.rate_per_sec > 0.0 && e.rate_per_sec.is_finite()) {
        return Err(invalid("enroll.rate_burst and rate_per_sec must be > 0"));
    }
    for name in &e.names {
        if !valid_hostname(name) {
            return Err(invalid(format!("enroll.names: {name:?} is not a DNS name")));
        }
    }
    let mut settings = crate::enroll::authority::AuthoritySettings::default();
    settings.registry.cert_ttl = Duration::from_secs(e.cert_ttl_secs);
    settings.registry.ticket_ttl = Duration::from_secs(e.ticket_ttl_secs);
    settings.boot_token_ttl = Duration::from_secs(e.boot_token_ttl_secs);
    settings.poll = Duration::from_secs(e.poll_secs);
    settings.rate.burst = e.rate_burst;
    settings.rate.per_sec = e.rate_per_sec;
    if e.auto_approve
        .iter()
        .any(|r| r.vendor.is_none() && r.product.is_none() && r.serial_prefix.is_none())
    {
        return Err(invalid(
            "enroll.auto_approve: every rule needs vendor, product or serial_prefix",
        ));
    }
    settings.rules = e.auto_approve;
    Ok(EnrollConfig {
        enabled: e.enabled,
        mdns: e.mdns,
        listen: e.listen,
        names: e.names,
        settings,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its port is also the one in the boot URLs DHCP hands out.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Boot files sent at once; further GETs wait their turn (never refused).
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            enabled: true,
            listen: default_http_listen(),
            max_streams: default_max_streams(),
        }
    }
}

fn default_max_streams() -> usize {
    256
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub max_streams: usize,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Hand out addresses from pools; answer everyone.
    Full,
    /// PXE ProxyDHCP beside another DHCP server: boot information only, no addresses.
    Proxy,
    /// Proxy, with a full reply for firmware that keeps ignoring ProxyDHCP offers.
    Auto,
    /// No DHCP from us: another server points clients at the hub.
    #[default]
    Off,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseKey {
    /// Key leases by client identifier (option 61), or by MAC when absent (RFC 2131 §4.2).
    #[default]
    ClientId,
    /// Key leases by MAC alone, so the PXE ROM, iPXE and the installed OS share one address.
    Mac,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDhcp {
    #[serde(default)]
    pub mode: DhcpMode,
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub lease_key: LeaseKey,
    #[serde(default = "default_offer_hold")]
    pub offer_hold_secs: u32,
    #[serde(default = "default_decline_quarantine")]
    pub decline_quarantine_secs: u32,
    #[serde(default = "default_reclaim_interval")]
    pub reclaim_interval_secs: u32,
    /// Boot-storm pacing (full mode): PXE DISCOVERs go unanswered while the TFTP
    /// queue is deeper than `tftp.max_transfers`; the firmware retries at 4, 8, 16, 32 s.
    #[serde(default = "yes")]
    pub pace: bool,
    #[serde(default)]
    pub auto: RawAuto,
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<RawSubnet>,
}

impl Default for RawDhcp {
    fn default() -> Self {
        RawDhcp {
            mode: DhcpMode::Off,
            interfaces: Vec::new(),
            lease_key: LeaseKey::ClientId,
            offer_hold_secs: default_offer_hold(),
            decline_quarantine_secs: default_decline_quarantine(),
            reclaim_interval_secs: default_reclaim_interval(),
            pace: true,
            auto: RawAuto::default(),
            subnets: Vec::new(),
        }
    }
}

fn default_offer_hold() -> u32 {
    30
}
fn default_decline_quarantine() -> u32 {
    3600
}
fn default_reclaim_interval() -> u32 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuto {
    /// How many DISCOVERs (new transactions) after our proxy offer make us give up on ProxyDHCP.
    #[serde(default = "default_fallback_after")]
    pub fallback_after: u32,
    /// The window in which those DISCOVERs must arrive.
    #[serde(default = "default_fallback_window")]
    pub window_secs: u32,
}

impl Default for RawAuto {
    fn default() -> Self {
        RawAuto {
            fallback_after: default_fallback_after(),
            window_secs: default_fallback_window(),
        }
    }
}

fn default_fallback_after() -> u32 {
    2
}
fn default_fallback_window() -> u32 {
    120
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubnet {
    pub network: Ipv4Net,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    pub renew_time: Option<u32>,
    pub rebind_time: Option<u32>,
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    #[serde(default, rename = "reservation")]
    pub reservations: Vec<RawReservation>,
}

fn default_lease_time() -> u32 {
    3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReservation {
    pub mac: MacAddr,
    pub address: Ipv4Addr,
    pub hostname: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoot {
    /// Which iPXE build UEFI x64 firmware gets over TFTP.
    #[serde(default)]
    pub uefi_x64: UefiX64Loader,
    /// Directory holding the boot assets (default: `<state_dir>/assets`).
    pub assets_dir: Option<PathBuf>,
    /// A manifest to use instead of the one built into the binary.
    pub manifest: Option<PathBuf>,
    /// The statically linked node agent packed into the discovery image
    /// (default: `node-agent` beside the `provisioner` executable).
    pub node_agent: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTftp {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_tftp_listen")]
    pub listen: SocketAddrV4,
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
    #[serde(default = "default_max_per_client")]
    pub max_per_client: usize,
    #[serde(default = "default_requests_per_sec")]
    pub requests_per_sec: u32,
    /// Requests waiting for a transfer slot when all `max_transfers` are taken.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// A waiting request whose client sent no RRQ retransmission for this long is dropped.
    #[serde(default = "default_max_wait")]
    pub max_wait_secs: u64,
    #[serde(default = "default_max_blksize")]
    pub max_blksize: u16,
    #[serde(default = "default_max_window")]
    pub max_window: u16,
    /// Retransmission timeout when the client does not ask for one (RFC 2349).
    #[serde(default = "default_tftp_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_tftp_retries")]
    pub retries: u32,
    #[serde(default = "default_transfer_timeout")]
    pub transfer_timeout_secs: u64,
}

impl Default for RawTftp {
    fn default() -> Self {
        RawTftp {
            enabled: true,
            listen: default_tftp_listen(),
            max_transfers: default_max_transfers(),
            max_per_client: default_max_per_client(),
            requests_per_sec: default_requests_per_sec(),
            max_queue: default_max_queue(),
            max_wait_secs: default_max_wait(),
            max_blksize: default_max_blksize(),
            max_window: default_max_window(),
            timeout_ms: default_tftp_timeout_ms(),
            retries: default_tftp_retries(),
            transfer_timeout_secs: default_transfer_timeout(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_tftp_listen() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 69)
}
fn default_max_transfers() -> usize {
    1024
}
fn default_max_queue() -> usize {
    crate::tftp::gate::Admission::default().max_queue
}
fn default_max_wait() -> u64 {
    crate::tftp::gate::Admission::default().max_wait.as_secs()
}
fn default_max_per_client() -> usize {
    16
}
fn default_requests_per_sec() -> u32 {
    50
}
fn default_max_blksize() -> u16 {
    crate::tftp::packet::MAX_BLKSIZE
}
fn default_max_window() -> u16 {
    64
}
fn default_tftp_timeout_ms() -> u64 {
    1000
}
fn default_tftp_retries() -> u32 {
    5
}
fn default_transfer_timeout() -> u64 {
    600
}

// ---------------------------------------------------------------- validated form

/// The validated configuration the hub runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub dhcp: DhcpConfig,
    pub boot: BootTable,
    pub assets_dir: PathBuf,
    /// `None`: the manifest built into the binary.
    pub manifest: Option<PathBuf>,
    /// The node agent binary for the discovery image, if any.
    pub node_agent: Option<PathBuf>,
    pub tftp: TftpConfig,
    pub http: HttpConfig,
    pub enroll: EnrollConfig,
    pub talos: TalosConfig,
}

/// `[talos]`, checked: names, endpoint, patches parsed, profiles loaded.
#[derive(Debug, Clone)]
pub struct TalosConfig {
    pub cluster_name: String,
    pub endpoint: Option<String>,
    pub kubernetes_version: String,
    pub installer_image: String,
    pub cni: crate::talos::render::CniChoice,
    pub discovery: bool,
    pub patches: Vec<crate::talos::patch::Patch>,
    pub profiles_dir: Option<PathBuf>,
    pub network: Option<crate::talos::render::StaticNetwork>,
    pub image: Option<PathBuf>,
    pub state_size_bytes: u64,
}

impl TalosConfig {
    /// The site's render settings; `endpoint_host` fills a missing endpoint.
    pub fn site(&self, endpoint_host: std::net::IpAddr) -> crate::talos::render::Site {
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| match endpoint_host {
                std::net::IpAddr::V6(v6) => format!("https://[{v6}]:6443"),
                v4 => format!("https://{v4}:6443"),
            });
        let mut site = crate::talos::render::Site::new(&self.cluster_name, &endpoint);
        site.kubernetes_version = self.kubernetes_version.clone();
        site.installer_image = Some(self.installer_image.clone());
        site.cni = self.cni;
        site.discovery = self.discovery;
        site.patches = self.patches.clone();
        site.network = self.network.clone();
        site
    }
}

fn validate_talos(t: RawTalos) -> Result<TalosConfig, ConfigError> {
    use crate::talos::validate::{dns_name, endpoint_ok};
    if !dns_name(&t.cluster_name) {
        return Err(invalid(format!(
            "talos.cluster_name {:?} is not a DNS label",
            t.cluster_name
        )));
    }
    if let Some(e) = &t.endpoint
        && let Err(why) = endpoint_ok(e)
    {
        return Err(invalid(format!("talos.endpoint {e:?}: {why}")));
    }
    let version_ok = t.kubernetes_version.split('.').count() == 3
        && t.kubernetes_version
            .split('.')
            .all(|p| p.parse::<u32>().is_ok());
    if !version_ok {
        return Err(invalid(format!(
            "talos.kubernetes_version {:?} is not X.Y.Z",
            t.kubernetes_version
        )));
    }
    let mut patches = Vec::new();
    for path in &t.patches {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("talos.patches: {path:?}: {e}")))?;
        patches.push(
            crate::talos::patch::Patch::parse(&path.display().to_string(), &text)
                .map_err(|e| invalid(format!("talos.patches: {e}")))?,
        );
    }
    crate::profiles::Profiles::load(t.profiles_dir.as_deref())
        .map_err(|e| invalid(format!("talos.profiles_dir: {e}")))?;
    let network = match t.network {
        None => None,
        Some(n) if n.prefix_len == 0 || n.prefix_len > 32 => {
            return Err(invalid("talos.network.prefix_len must be within 1..=32"));
        }
        Some(n) => Some(crate::talos::render::StaticNetwork {
            prefix_len: n.prefix_len,
            gateway: n.gateway,
            nameservers: n.nameservers,
        }),
    };
    let state_size_bytes = crate::talos::validate::parse_size(&t.state_size)
        .filter(|&b| (STATE_MIN..=STATE_MAX).contains(&b))
        .ok_or_else(|| {
            invalid(format!(
                "talos.state_size {:?}: a size from 100MiB to 1GiB (Talos needs at least 100 MiB)",
                t.state_size
            ))
        })?;
    Ok(TalosConfig {
        cluster_name: t.cluster_name,
        endpoint: t.endpoint,
        kubernetes_version: t.kubernetes_version,
        installer_image: t.installer_image,
        cni: t.cni,
        discovery: t.discovery,
        patches,
        profiles_dir: t.profiles_dir,
        network,
        image: t.image,
        state_size_bytes,
    })
}

const STATE_MIN: u64 = 100 << 20;
const STATE_MAX: u64 = 1 << 30;

#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub enabled: bool,
    pub listen: SocketAddrV4,
    pub admission: crate::tftp::server::Admission,
    pub limits: crate::tftp::session::Limits,
}

#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    pub interfaces: Vec<String>,
    pub lease_key: LeaseKey,
    pub offer_hold_secs: u32,
    pub decline_quarantine_secs: u32,
    pub reclaim_interval_secs: u32,
    pub pace: bool,
    pub fallback_after: u32,
    pub fallback_window_secs: u32,
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub network: Ipv4Net,
    pub pools: Vec<Pool>,
    pub lease_time: u32,
    pub renew_time: u32,
    pub rebind_time: u32,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub reservations: Vec<Reservation>,
}

/// An inclusive range of addresses handed out dynamically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.start <= addr && addr <= self.end
    }
    pub fn size(&self) -> u64 {
        u64::from(u32::from(self.end)) - u64::from(u32::from(self.start)) + 1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub mac: MacAddr,
    pub address: Ipv4Addr,
    pub hostname: Option<String>,
}

impl Subnet {
    pub fn in_pool(&self, addr: Ipv4Addr) -> bool {
        self.pools.iter().any(|p| p.contains(addr))
    }
    pub fn reservation_for_mac(&self, mac: MacAddr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.mac == mac)
    }
    pub fn reservation_of_addr(&self, addr: Ipv4Addr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.address == addr)
    }
    /// Whether `addr` is a usable host address of this subnet (not network, not broadcast).
    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.network.contains(&addr)
            && (self.network.prefix_len() >= 31
                || (addr != self.network.network() && addr != self.network.broadcast()))
    }
}

impl DhcpConfig {
    pub fn subnet_containing(&self, addr: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.network.contains(&addr))
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })?;
        Config::try_from(raw)
    }
}

/// A hostname we are willing to send or store: RFC 1123 labels, at most 253 bytes.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir is empty"));
        }
        let dhcp = validate_dhcp(raw.dhcp)?;
        if raw.http.listen.port() == 0 {
            return Err(invalid("http.listen needs a port"));
        }
        let boot = BootTable::new(raw.http.listen.port(), raw.boot.uefi_x64);
        if raw.http.max_streams == 0 {
            return Err(invalid("http.max_streams must be > 0"));
        }
        let http = HttpConfig {
            enabled: raw.http.enabled,
            listen: raw.http.listen,
            max_streams: raw.http.max_streams,
        };
        let tftp = validate_tftp(raw.tftp)?;
        let enroll = validate_enroll(raw.enroll)?;
        let talos = validate_talos(raw.talos)?;
        let assets_dir = raw
            .boot
            .assets_dir
            .unwrap_or_else(|| raw.state_dir.join("assets"));
        Ok(Config {
            state_dir: raw.state_dir,
            dhcp,
            boot,
            assets_dir,
            manifest: raw.boot.manifest,
            node_agent: raw
                .boot
                .node_agent
                .or_else(crate::agent_image::default_path),
            tftp,
            http,
            enroll,
            talos,
        })
    }
}

fn validate_tftp(t: RawTftp) -> Result<TftpConfig, ConfigError> {
    use crate::tftp::packet::{MAX_BLKSIZE, MIN_BLKSIZE};
    if t.max_transfers == 0 || t.max_per_client == 0 || t.requests_per_sec == 0 {
        return Err(invalid(
            "tftp.max_transfers, max_per_client and requests_per_sec must be > 0",
        ));
    }
    if t.max_wait_secs == 0 && t.max_queue > 0 {
        return Err(invalid(
            "tftp.max_wait_secs must be > 0 (or max_queue = 0: no queue)",
        ));
    }
    if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&t.max_blksize) {
        return Err(invalid(
            "tftp.max_blksize must be within 8..=65464 (RFC 2348)",
        ));
    }
    // Above 32768 a window could not tell two u16 block numbers apart.
    if t.max_window == 0 || t.max_window > 32768 {
        return Err(invalid("tftp.max_window must be within 1..=32768"));
    }
    if t.timeout_ms == 0 || t.transfer_timeout_secs == 0 {
        return Err(invalid(
            "tftp.timeout_ms and tftp.transfer_timeout_secs must be > 0",
        ));
    }
    Ok(TftpConfig {
        enabled: t.enabled,
        listen: t.listen,
        admission: crate::tftp::server::Admission {
            max_transfers: t.max_transfers,
            max_per_client: t.max_per_client,
            requests_per_sec: t.requests_per_sec,
            max_queue: t.max_queue,
            max_wait: std::time::Duration::from_secs(t.max_wait_secs),
        },
        limits: crate::tftp::session::Limits {
            max_blksize: t.max_blksize,
            max_window: t.max_window,
            default_timeout: std::time::Duration::from_millis(t.timeout_ms),
            max_retries: t.retries,
            transfer_timeout: std::time::Duration::from_secs(t.transfer_timeout_secs),
        },
    })
}

fn validate_dhcp(raw: RawDhcp) -> Result<DhcpConfig, ConfigError> {
    if raw.mode != DhcpMode::Off && raw.interfaces.is_empty() {
        return Err(invalid(
            "dhcp.interfaces is empty but dhcp.mode is not \"off\"",
        ));
    }
    let mut seen_ifaces = HashSet::new();
    for name in &raw.interfaces {
        // IFNAMSIZ is 16 including the NUL (linux/if.h).
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            return Err(invalid(format!(
                "dhcp.interfaces: {name:?} is not an interface name"
            )));
        }
        if !seen_ifaces.insert(name) {
            return Err(invalid(format!(
                "dhcp.interfaces: {name:?} is listed twice"
            )));
        }
    }
    if raw.offer_hold_secs == 0 || raw.reclaim_interval_secs == 0 {
        return Err(invalid(
            "dhcp.offer_hold_secs and dhcp.reclaim_interval_secs must be > 0",
        ));
    }
    if raw.auto.fallback_after == 0 {
        return Err(invalid("dhcp.auto.fallback_after must be > 0"));
    }
    let mut subnets: Vec<Subnet> = Vec::new();
    let mut macs = HashSet::new();
    for s in raw.subnets {
        let subnet = validate_subnet(s)?;
        if let Some(other) = subnets.iter().find(|o| {
            o.network.contains(&subnet.network.network())
                || subnet.network.contains(&o.network.network())
        }) {
            return Err(invalid(format!(
                "subnets {} and {} overlap",
                other.network, subnet.network
            )));
        }
        for r in &subnet.reservations {
            if !macs.insert(r.mac) {
                return Err(invalid(format!("MAC {} is reserved twice", r.mac)));
            }
        }
        subnets.push(subnet);
    }
    let has_pool = subnets
        .iter()
        .any(|s| !s.pools.is_empty() || !s.reservations.is_empty());
    match raw.mode {
        DhcpMode::Full | DhcpMode::Auto if !has_pool => {
            return Err(invalid(format!(
                "dhcp.mode {:?} needs at least one [[dhcp.subnet]] with a pool or reservation",
                raw.mode
            )));
        }
        _ => {}
    }
    Ok(DhcpConfig {
        mode: raw.mode,
        interfaces: raw.interfaces,
        lease_key: raw.lease_key,
        offer_hold_secs: raw.offer_hold_secs,
        decline_quarantine_secs: raw.decline_quarantine_secs,
        reclaim_interval_secs: raw.reclaim_interval_secs,
        pace: raw.pace,
        fallback_after: raw.auto.fallback_after,
        fallback_window_secs: raw.auto.window_secs,
        subnets,
    })
}

fn validate_subnet(s: RawSubnet) -> Result<Subnet, ConfigError> {
    let net = s.network;
    if net != net.trunc() {
        return Err(invalid(format!(
            "subnet {net}: host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    if net.prefix_len() > 30 {
        return Err(invalid(format!(
            "subnet {net}: prefix longer than /30 leaves no pool"
        )));
    }
    let host = |a: Ipv4Addr| a != net.network() && a != net.broadcast() && net.contains(&a);
    let mut pools: Vec<Pool> = Vec::new();
    for p in s.pools {
        if p.start > p.end {
            return Err(invalid(format!(
                "subnet {net}: pool {}-{} is backwards",
                p.start, p.end
            )));
        }
        if !host(p.start) || !host(p.end) {
            return Err(invalid(format!(
                "subnet {net}: pool {}-{} is not inside the subnet's host range",
                p.start, p.end
            )));
        }
        let pool = Pool {
            start: p.start,
            end: p.end,
        };
        if let Some(o) = pools
            .iter()
            .find(|o| o.start <= pool.end && pool.start <= o.end)
        {
            return Err(invalid(format!(
                "subnet {net}: pools {}-{} and {}-{} overlap",
                o.start, o.end, pool.start, pool.end
            )));
        }
        pools.push(pool);
    }
    if s.lease_time < 60 {
        return Err(invalid(format!(
            "subnet {net}: lease_time must be at least 60 seconds"
        )));
    }
    // RFC 2131 §4.4.5: T1 defaults to 0.5 × lease, T2 to 0.875 × lease.
    let renew = s.renew_time.unwrap_or(s.lease_time / 2);
    let rebind = s
        .rebind_time
        .unwrap_or((u64::from(s.lease_time) * 7 / 8) as u32);
    if !(renew < rebind && rebind < s.lease_time) {
        return Err(invalid(format!(
            "subnet {net}: need renew_time ({renew}) < rebind_time ({rebind}) < lease_time ({})",
            s.lease_time
        )));
    }
    for r in &s.routers {
        if !host(*r) {
            return Err(invalid(format!(
                "subnet {net}: router {r} is not in the subnet"
            )));
        }
    }
    if let Some(d) = &s.domain
        && !valid_hostname(d)
    {
        return Err(invalid(format!(
            "subnet {net}: domain {d:?} is not a valid domain name"
        )));
    }
    let mut addrs = HashSet::new();
    for r in &s.reservations {
        if !host(r.address) {
            return Err(invalid(format!(
                "subnet {net}: reservation {} is not in the subnet",
                r.address
            )));
        }
        if !addrs.insert(r.address) {
            return Err(invalid(format!(
                "subnet {net}: address {} is reserved twice",
                r.address
            )));
        }
        if let Some(h) = &r.hostname
            && !valid_hostname(h)
        {
            return Err(invalid(format!(
                "subnet {net}: reservation hostname {h:?} is not valid"
            )));
        }
    }
    let reservations = s
        .reservations
        .into_iter()
        .map(|r| Reservation {
            mac: r.mac,
            address: r.address,
            hostname: r.hostname,
        })
        .collect();
    Ok(Subnet {
        network: net,
        pools,
        lease_time: s.lease_time,
        renew_time: renew,
        rebind_time: rebind,
        routers: s.routers,
        dns: s.dns,
        domain: s.domain,
        reservations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../provisioner.example.toml");

    #[test]
    fn shipped_example_parses() {
        let config = Config::parse(EXAMPLE).expect("example config must be valid");
        assert_eq!(config.dhcp.mode, DhcpMode::Full);
        assert!(!config.dhcp.subnets.is_empty());
    }

    #[test]
    fn invalid_configs_are_refused_with_a_reason() {
        let base = "state_dir = \"/tmp/x\"\n";
        let cases: &[(&str, &str, &str)] = &[
            ("unknown field", "bogus = 1\n", "unknown field"),
            (
                "full without pool",
                "[dhcp]\nmode = \"full\"\ninterfaces = [\"eth0\"]\n",
                "needs at least one",
            ),
            (
                "mode without interface",
                "[dhcp]\nmode = \"proxy\"\n",
                "interfaces is empty",
            ),
            (
                "pool outside subnet",
                "[dhcp]\nmode=\"full\"\ninterfaces=[\"e\"]\n[[dhcp.subnet]]\nnetwork=\"10.0.0.0/24\"\npools=[{start=\"10.0.1.1\",end=\"10.0.1.9\"}]\n",
                "not inside",
            ),
            (
                "host bits",
                "[dhcp]\nmode=\"full\"\ninterfaces=[\"e\"]\n[[dhcp.subnet]]\nnetwork=\"10.0.0.1/24\"\n",
                "host bits",
            ),
            (
                "t1 after t2",
                "[dhcp]\nmode=\"full\"\ninterfaces=[\"e\"]\n[[dhcp.subnet]]\nnetwork=\"10.0.0.0/24\"\nrenew_time=900\nrebind_time=800\npools=[{start=\"10.0.0.10\",end=\"10.0.0.20\"}]\n",
                "renew_time",
            ),
            (
                "overlapping subnets",
                "[dhcp]\nmode=\"full\"\ninterfaces=[\"e\"]\n[[dhcp.subnet]]\nnetwork=\"10.0.0.0/16\"\n[[dhcp.subnet]]\nnetwork=\"10.0.3.0/24\"\n",
                "overlap",
            ),
            (
                "bad mac",
                "[dhcp]\nmode=\"full\"\ninterfaces=[\"e\"]\n[[dhcp.subnet]]\nnetwork=\"10.0.0.0/24\"\n[[dhcp.subnet.reservation]]\nmac=\"zz:00:00:00:00:00\"\naddress=\"10.0.0.5\"\n",
                "MAC",
            ),
        ];
        for (name, extra, want) in cases {
            let err = Config::parse(&format!("{base}{extra}"))
                .expect_err(name)
                .to_string();
            let err = format!("{err} {:?}", err);
            assert!(
                err.contains(want),
                "case {name}: error {err:?} should mention {want:?}"
            );
        }
    }

    #[test]
    fn derived_renew_and_rebind_follow_rfc2131() {
        let c = Config::parse(
            "state_dir=\"/s\"\n[dhcp]\nmode=\"full\"\ninterfaces=[\"e\"]\n[[dhcp.subnet]]\nnetwork=\"10.0.0.0/24\"\nlease_time=800\npools=[{start=\"10.0.0.10\",end=\"10.0.0.20\"}]\n",
        )
        .expect("valid");
        let s = &c.dhcp.subnets[0];
        assert_eq!((s.renew_time, s.rebind_time), (400, 700));
    }
}
