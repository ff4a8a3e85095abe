//! Installs, hub side: what an approved node is told to do (the plan: disk
//! from its profile and inventory, the Talos image, a single-use install
//! token), the delivery of its machine config, its progress, and the iPXE
//! hand-off to the local disk once it is installed.
//!
//! Delivery needs two things at once: the client certificate the hub issued
//! to the node (the gRPC shell passes its node id; nothing else names the
//! node) and the install token of the node's current assignment, which the
//! delivery spends. A request naming another node, a missing certificate, a
//! wrong, expired or replayed token are refused and written to the audit log.
//!
//! Blocking (renders, commits): async callers use `spawn_blocking`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use proto::v1::InstallPlan;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::Audit;
use crate::cluster::ClusterService;
use crate::enroll::registry::{EnrollError, Node, NodeState, Role};
use crate::enroll::{Authority, AuthorityError, NodeId};
use crate::http::render::Platform;
use crate::profiles::{DiskChoice, Facts, HandOff, Profile};
use crate::talos::render::{self, InstallTarget, NodeSpec};

/// Where the Talos disk image is served.
pub const IMAGE_HTTP_DIR: &str = "/boot/talos/";

/// The Talos disk image the hub serves, as hashed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TalosImage {
    /// HTTP path (`/boot/talos/<file>`).
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The served bytes are zstd-compressed (`.zst`).
    pub zstd: bool,
}

/// Why a config is not delivered; each is audited.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("a client certificate from the hub is required")]
    NoCertificate,
    #[error("the certificate is node {cert}'s; it asked for node {asked}'s config")]
    OtherNode { cert: NodeId, asked: String },
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    #[error("cannot render this node's config: {0}")]
    Render(String),
}

/// A delivered config.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub yaml: String,
    pub sha256: String,
    pub role: render::Role,
}

#[derive(Debug)]
pub struct Installs {
    authority: Arc<Authority>,
    cluster: Arc<ClusterService>,
    image: Option<TalosImage>,
    audit: Arc<Audit>,
    state_size: u64,
}

fn sha256_hex(b: &[u8]) -> String {
    proto::hex::encode(&Sha256::digest(b))
}

impl Installs {
    pub fn new(
        authority: Arc<Authority>,
        cluster: Arc<ClusterService>,
        image: Option<TalosImage>,
        audit: Arc<Audit>,
        state_size: u64,
    ) -> Installs {
        Installs {
            authority,
            cluster,
            image,
            audit,
            state_size,
        }
    }

    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// The install plan for an approved (or installing) node, with its
    /// token; `Err(reason)` when the node must wait (no image, no profile or
    /// disk, too many failures).
    pub fn plan(&self, id: &NodeId, now: SystemTime) -> Result<InstallPlan, String> {
        let image = self
            .image
            .as_ref()
            .ok_or("no Talos disk image on this hub ([talos] image)")?;
        let node = self
            .authority
            .node(id)
            .ok_or_else(|| format!("no node {id}"))?;
        let (_, profile, disk) = self.placement(&node.inventory.value())?;
        let grant = self
            .authority
            .install_grant(id, &disk.device, &profile.name, now)
            .map_err(|e| e.to_string())?;
        Ok(InstallPlan {
            disk: disk.device.trim_start_matches("/dev/").to_owned(),
            disk_serial: disk.serial.unwrap_or_default(),
            disk_wwid: disk.wwid.unwrap_or_default(),
            disk_size_bytes: disk.size_bytes.unwrap_or(0),
            image_path: image.path.clone(),
            image_sha256: image.sha256.clone(),
            image_size: image.size,
            image_zstd: image.zstd,
            install_token: grant.token,
            token_expires_unix: i64::try_from(grant.expires).unwrap_or(i64::MAX),
            profile: profile.name.clone(),
            state_size_bytes: self.state_size,
        })
    }

    /// The facts of a node's inventory, its profile and the install disk that profile picks.
    fn placement(
        &self,
        inventory: &serde_json::Value,
    ) -> Result<(Facts, &Profile, DiskChoice), String> {
        let facts = Facts::from_inventory(inventory);
        let profile = self
            .cluster
            .profiles()
            .matching(&facts)
            .map_err(|e| e.to_string())?;
        let disk = profile.choose_disk(&facts).map_err(|e| e.to_string())?;
        Ok((facts, profile, disk))
    }

    /// Renders the node's machine config (no token, no audit: callers are
    /// `machine_config` and the operator's admin socket).
    pub fn render(&self, node: &Node) -> Result<Delivered, String> {
        let inventory = node.inventory.value();
        let (facts, profile, disk) = self.placement(&inventory)?;
        let role = match node.role {
            Some(Role::Worker) => render::Role::Worker,
            // A role-less node is rendered as install_grant would assign it.
            Some(Role::Controlplane) | None
                if self.authority.other_controlplanes(&node.id) == 0 =>
            {
                render::Role::SingleNode
            }
            Some(Role::Controlplane) => render::Role::Controlplane,
            None => render::Role::Worker,
        };
        let spec = NodeSpec {
            role,
            hostname: None,
            install: InstallTarget {
                disk: None,
                selector: Some(disk.selector),
                legacy_bios: facts.firmware.mode.as_deref() == Some("bios"),
            },
            mac: boot_mac(&inventory),
            address: match node.peer {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            },
            profile_patches: profile.patches().map_err(|e| e.to_string())?,
        };
        let cluster = &self.cluster;
        let rendered =
            render::render(cluster.site(), cluster.secrets(), &spec).map_err(|e| e.to_string())?;
        Ok(Delivered {
            sha256: sha256_hex(rendered.yaml.as_bytes()),
            yaml: rendered.yaml,
            role,
        })
    }

    /// GetMachineConfig: `cert` is the node id of the verified client
    /// certificate (`None`: there was none), `asked` the optional node id in
    /// the request.
    pub fn machine_config(
        &self,
        cert: Option<&NodeId>,
        asked: &str,
        token: &str,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<Delivered, DeliveryError> {
        let refuse = |e: DeliveryError| {
            self.audit.record(
                "machine_config_refused",
                json!({
                    "node": cert.map(|n| n.to_string()),
                    "asked": asked,
                    "peer": peer.map(|p| p.to_string()),
                    "reason": e.to_string(),
                }),
            );
            tracing::warn!(node = ?cert.map(|n| n.to_string()), asked, ?peer, reason = %e, "machine config refused");
            e
        };
        let Some(id) = cert else {
            return Err(refuse(DeliveryError::NoCertificate));
        };
        if !asked.is_empty() && asked != id.as_str() {
            return Err(refuse(DeliveryError::OtherNode {
                cert: id.clone(),
                asked: asked.chars().take(64).collect(),
            }));
        }
        self.authority
            .check_install_token(id, token, now)
            .map_err(|e| refuse(e.into()))?;
        let node = self.authority.node(id).ok_or_else(|| {
            refuse(AuthorityError::from(EnrollError::UnknownNode(id.to_string())).into())
        })?;
        let delivered = self
            .render(&node)
            .map_err(|e| refuse(DeliveryError::Render(e)))?;
        // Spent under the registry's lock: of two racing requests with one
        // token, exactly one gets here.
        self.authority
            .spend_install_token(id, token, &delivered.sha256, now)
            .map_err(|e| refuse(e.into()))?;
        self.audit.record(
            "machine_config_delivered",
            json!({
                "node": id.to_string(),
                "peer": peer.map(|p| p.to_string()),
                "role": delivered.role.as_str(),
                "sha256": delivered.sha256,
            }),
        );
        tracing::info!(node_id = %id, role = delivered.role.as_str(), sha256 = %delivered.sha256, "machine config delivered");
        Ok(delivered)
    }

    /// How an installed machine's iPXE script leaves for its disk, from its
    /// profile: `None` unless the node with this MAC is installed.
    pub fn local_boot(
        &self,
        mac: crate::config::MacAddr,
        platform: Option<Platform>,
    ) -> Option<(NodeId, HandOff)> {
        let node = self.authority.node_by_mac(mac)?;
        if node.state != NodeState::Installed {
            return None;
        }
        let facts = Facts::from_inventory(&node.inventory.value());
        let how = match self.cluster.profiles().matching(&facts) {
            Ok(p) => match platform {
                Some(Platform::Pcbios) => p.local_boot.bios,
                Some(Platform::Efi) => p.local_boot.uefi,
                None if facts.firmware.mode.as_deref() == Some("bios") => p.local_boot.bios,
                None => p.local_boot.uefi,
            },
            // Exit is what every firmware understands.
            Err(_) => HandOff::Exit,
        };
        Some((node.id, how))
    }
}

/// The MAC static addressing binds to: the first NIC with link, else the first.
fn boot_mac(inventory: &serde_json::Value) -> Option<String> {
    let nics = inventory["nics"].as_array()?;
    let mac = |n: &serde_json::Value| n["mac"].as_str().map(str::to_owned);
    nics.iter()
        .find(|n| n["link"].as_bool() == Some(true))
        .and_then(mac)
        .or_else(|| nics.first().and_then(mac))
}
