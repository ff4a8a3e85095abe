//! Assembles the hub: `App::build` loads the boot assets, opens the store and
//! binds every socket (so a port in use fails before anything is served);
//! `App::run` runs all services in one `JoinSet` under one cancellation token:
//! the first service to stop stops the rest.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::assets::{AssetError, Assets, EMBEDDED_MANIFEST, parse_manifest};
use crate::boot::{BOOT_SCRIPT_PATH, BootTarget};
use crate::cluster::ClusterService;
use crate::config::Config;
use crate::dhcp::server::{DhcpError, DhcpServer};
use crate::enroll::service::{EnrollServer, ServiceError};
use crate::http::api::AdminServer;
use crate::http::server::{HttpError, HttpServer};
use crate::install::{IMAGE_HTTP_DIR, Installs, TalosImage};
use crate::metrics::Registry;
use crate::store::{EmbeddedStore, Store, StoreError};
use crate::tftp::server::{TftpError, TftpServer};
use crate::timeline::Timeline;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    #[error(transparent)]
    Tftp(#[from] TftpError),
    #[error(transparent)]
    Assets(#[from] AssetError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Enroll(#[from] ServiceError),
    #[error("talos cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("Talos disk image {path:?} ([talos] image)")]
    TalosImage {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path:?}")]
    Audit {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin socket {path:?}")]
    Admin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The name of the admin API socket in the state directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

/// Every address of this host's interfaces, for the hub's TLS certificate.
fn local_ips() -> Vec<std::net::IpAddr> {
    local_ips_on(&[])
}

/// The addresses of the named interfaces (all interfaces when `names` is empty).
fn local_ips_on(names: &[String]) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter(|a| names.is_empty() || names.contains(&a.interface_name))
                .filter_map(|a| {
                    let addr = a.address?;
                    addr.as_sockaddr_in()
                        .map(|s| std::net::IpAddr::V4(s.ip()))
                        .or_else(|| addr.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
                })
                .collect()
        })
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

#[derive(Debug)]
pub struct App {
    dhcp: DhcpServer,
    tftp: Option<TftpServer>,
    http: Option<HttpServer>,
    store: EmbeddedStore,
    timeline: Arc<Timeline>,
    enroll: Option<EnrollServer>,
    admin: Option<AdminServer>,
    mdns: Option<crate::mdns::Advertiser>,
}

/// Hashes the operator's Talos disk image and serves it at
/// `/boot/talos/<file name>`. A missing or unreadable image stops the hub:
/// it was configured, so silently not installing would be worse.
fn talos_image(assets: &mut Assets, path: &std::path::Path) -> Result<TalosImage, AppError> {
    let err = |source| AppError::TalosImage {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.starts_with('.')
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .ok_or_else(|| {
            err(std::io::Error::other(
                "the file name must be [A-Za-z0-9._-]",
            ))
        })?;
    let http = format!("{IMAGE_HTTP_DIR}{name}");
    let started = std::time::Instant::now();
    let spec = assets
        .insert_file(
            &format!("talos/{name}"),
            &http,
            path,
            format!("[talos] image = {}", path.display()),
        )
        .map_err(err)?;
    tracing::info!(image = ?path, sha256 = spec.sha256, size = spec.size, ms = started.elapsed().as_millis() as u64, "Talos disk image hashed");
    Ok(TalosImage {
        path: http,
        sha256: spec.sha256,
        size: spec.size,
        zstd: name.ends_with(".zst"),
    })
}

/// Loads the manifest (embedded or configured) and verifies the assets it lists.
pub fn load_assets(config: &Config) -> Result<Assets, AppError> {
    let text = match &config.manifest {
        None => EMBEDDED_MANIFEST.to_owned(),
        Some(path) => std::fs::read_to_string(path).map_err(|source| AssetError::ReadManifest {
            path: path.clone(),
            source,
        })?,
    };
    let (assets, unavailable) = Assets::load(parse_manifest(&text)?, &config.assets_dir);
    for (name, why) in &unavailable {
        tracing::warn!(asset = %name, reason = ?why, dir = ?config.assets_dir, "boot asset not served");
    }
    let mut assets = assets;
    if let Some(path) = &config.node_agent {
        match crate::agent_image::build(path) {
            Ok(archive) => {
                tracing::info!(agent = ?path, bytes = archive.len(), "node agent packed for the discovery image");
                assets.insert_generated(
                    "node-agent.cpio",
                    crate::agent_image::AGENT_INITRD,
                    format!("generated from {}", path.display()),
                    archive,
                );
            }
            Err(crate::agent_image::AgentImageError::Read { .. }) if !path.exists() => {
                tracing::info!(agent = ?path, "no node agent: the discovery image runs without it");
            }
            Err(e) => tracing::warn!(error = %e, "node agent not served"),
        }
    }
    tracing::info!(
        served = assets.len(),
        unavailable = unavailable.len(),
        "boot assets verified"
    );
    Ok(assets)
}

impl App {
    pub fn build(config: &Config) -> Result<App, AppError> {
        let mut assets = load_assets(config)?;
        let image = match (&config.talos.image, config.enroll.enabled) {
            (Some(path), true) => Some(talos_image(&mut assets, path)?),
            _ => None,
        };
        let assets = Arc::new(assets);
        let mut boot = config.boot.clone();
        // Advertise only what is served. The iPXE script is rendered by the HTTP service.
        boot.restrict(|target| match target {
            BootTarget::Tftp(name) => config.tftp.enabled && assets.has_tftp(name),
            BootTarget::Http(path) => {
                config.http.enabled && (*path == BOOT_SCRIPT_PATH || assets.has_http(path))
            }
        });
        let store = EmbeddedStore::open(&config.state_dir)?;
        tracing::info!(path = ?store.path(), "store open");
        let timeline = Arc::new(Timeline::default());
        let mut dhcp = DhcpServer::build(&config.dhcp, &boot, &store, timeline.clone())?;
        // The hub's addresses: in its server certificate, and the first one is
        // the default Kubernetes endpoint (the hub is the first control plane).
        let hub_ips = if config.enroll.listen.ip().is_unspecified() {
            local_ips()
        } else {
            vec![config.enroll.listen.ip()]
        };
        let mut enroll = if config.enroll.enabled {
            let server = EnrollServer::build(
                config.enroll.listen,
                store.clone(),
                &config.state_dir,
                config.enroll.settings.clone(),
                config.enroll.names.clone(),
                hub_ips.clone(),
                timeline.clone(),
            )?;
            tracing::info!(
                listen = %config.enroll.listen,
                ca = server.authority().ca().fingerprint(),
                "enrollment listening"
            );
            Some(server)
        } else {
            None
        };
        let cluster = match &enroll {
            Some(_) => {
                let host = hub_ips
                    .iter()
                    .copied()
                    .find(|ip| !ip.is_loopback())
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
                let cluster = ClusterService::open(
                    &config.state_dir,
                    &config.talos,
                    host,
                    std::time::SystemTime::now(),
                )?;
                tracing::info!(
                    cluster = cluster.site().cluster_name,
                    endpoint = cluster.site().endpoint,
                    profiles = cluster.profiles().all.len(),
                    "talos cluster ready"
                );
                Some(Arc::new(cluster))
            }
            None => None,
        };
        let installs = match (&mut enroll, &cluster) {
            (Some(server), Some(cluster)) => {
                let path = config.state_dir.join(crate::audit::FILE);
                let audit = crate::audit::Audit::open(&config.state_dir)
                    .map_err(|source| AppError::Audit { path, source })?;
                let installs = Arc::new(Installs::new(
                    server.authority().clone(),
                    cluster.clone(),
                    image,
                    Arc::new(audit),
                    config.talos.state_size_bytes,
                ));
                server.set_installs(installs.clone());
                Some(installs)
            }
            _ => None,
        };
        let admin = match &enroll {
            Some(server) => {
                let path = config.state_dir.join(ADMIN_SOCKET);
                let admin = AdminServer::bind(
                    path.clone(),
                    server.authority().clone(),
                    cluster.clone(),
                    installs.clone(),
                )
                .map_err(|source| AppError::Admin { path, source })?;
                Some(admin)
            }
            None => None,
        };
        let mdns = match &enroll {
            Some(server) if config.enroll.mdns => {
                let ips: Vec<std::net::IpAddr> = local_ips_on(&config.dhcp.interfaces)
                    .into_iter()
                    .filter(|ip| !ip.is_loopback())
                    .collect();
                let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .ok()
                    .filter(|h| crate::config::valid_hostname(h))
                    .unwrap_or_else(|| "provisioner".into());
                let advert = crate::mdns::Advert {
                    hostname,
                    ips,
                    interfaces: config.dhcp.interfaces.clone(),
                    grpc_port: config.enroll.listen.port(),
                    http_port: config.http.listen.port(),
                    ca: server.authority().ca().fingerprint().to_owned(),
                };
                match crate::mdns::Advertiser::start(&advert) {
                    Ok(a) => Some(a),
                    // Advertising is a convenience: the hub serves without it.
                    Err(e) => {
                        tracing::warn!(error = %e, "mDNS advertising unavailable");
                        None
                    }
                }
            }
            _ => None,
        };
        let enroll_info = enroll
            .as_ref()
            .map(|s| (s.authority().clone(), config.enroll.listen.port()));
        let tftp = if config.tftp.enabled {
            let server = TftpServer::bind(
                config.tftp.listen,
                assets.clone(),
                config.tftp.admission,
                config.tftp.limits,
                timeline.clone(),
            )?;
            tracing::info!(listen = %config.tftp.listen, "TFTP listening");
            dhcp.pace_on(crate::dhcp::server::Pacing {
                tftp: server.stats.clone(),
                max_waiting: config.tftp.admission.max_transfers as u64,
            });
            Some(server)
        } else {
            None
        };
        let http = if config.http.enabled {
            let metrics = Registry {
                dhcp: Some(dhcp.stats.clone()),
                tftp: tftp.as_ref().map(|t| t.stats.clone()),
                http: Arc::default(),
                enroll: enroll.as_ref().map(|e| e.authority().clone()),
            };
            let server = HttpServer::bind(
                config.http.listen,
                assets,
                metrics,
                timeline.clone(),
                enroll_info,
                installs,
                config.http.max_streams,
            )?;
            tracing::info!(listen = %config.http.listen, "HTTP listening");
            Some(server)
        } else {
            None
        };
        Ok(App {
            dhcp,
            tftp,
            http,
            store,
            timeline,
            enroll,
            admin,
            mdns,
        })
    }

    /// The enrollment authority, when enrollment is enabled.
    pub fn authority(&self) -> Option<Arc<crate::enroll::Authority>> {
        self.enroll.as_ref().map(|e| e.authority().clone())
    }

    /// The boot timeline the services record into.
    pub fn timeline(&self) -> Arc<Timeline> {
        self.timeline.clone()
    }

    /// Runs until `cancel` fires or a service fails.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), AppError> {
        let mut services: JoinSet<Result<(), AppError>> = JoinSet::new();
        let store: Box<dyn Store> = Box::new(self.store);
        let c = cancel.clone();
        services.spawn(async move { self.dhcp.run(store, c).await.map_err(AppError::from) });
        if let Some(http) = self.http {
            let c = cancel.clone();
            services.spawn(async move { http.run(c).await.map_err(AppError::from) });
        }
        if let Some(tftp) = self.tftp {
            let c = cancel.clone();
            services.spawn(async move { tftp.run(c).await.map_err(AppError::from) });
        }
        if let Some(enroll) = self.enroll {
            let c = cancel.clone();
            services.spawn(async move { enroll.run(c).await.map_err(AppError::from) });
        }
        if let Some(mdns) = self.mdns {
            let c = cancel.clone();
            services.spawn(async move {
                mdns.run(c).await.ok();
                Ok(())
            });
        }
        if let Some(admin) = self.admin {
            let c = cancel.clone();
            services.spawn(async move {
                admin.run(c).await.map_err(|source| AppError::Admin {
                    path: ADMIN_SOCKET.into(),
                    source,
                })
            });
        }
        let mut result = Ok(());
        while let Some(joined) = services.join_next().await {
            // The first service to stop, for whatever reason, stops the others.
            cancel.cancel();
            match joined {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Err(e) if e.is_panic() => tracing::error!(error = %e, "a service panicked"),
                _ => {}
            }
        }
        result
    }
}
