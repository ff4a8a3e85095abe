//! Pure: site settings + node facts + secrets -> the node's multi-document
//! Talos v1.13 machine config. Same inputs, byte-identical output (no clock,
//! no randomness; every map is ordered).
//!
//! Order of work: the typed documents `gen config` would write for this role
//! -> our site choices (install disk and image, CNI, network, hostname) ->
//! strategic-merge patches (the hardware profile's, then the site's) -> the
//! semantic rules (`validate`) -> YAML.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::model::*;
use super::patch::{self, Patch};
use super::secrets::{SecretsBundle, b64};
use super::validate::{self, Finding};
use super::yaml::{self, Value};

/// The Talos release whose config contract we emit.
pub const TALOS_CONTRACT: &str = "v1.13";
/// `constants.DefaultKubernetesVersion` of Talos v1.13.9.
pub const DEFAULT_KUBERNETES: &str = "1.36.3";

/// What the config is for: the registry's role (`enroll::registry::Role`),
/// with the one-node cluster's control plane as its own flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The only node: control plane that also runs workloads.
    SingleNode,
    Controlplane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SingleNode => "single-node",
            Role::Controlplane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CniChoice {
    /// Talos's default.
    Flannel,
    /// CNI `none` and kube-proxy disabled; Cilium is installed afterwards
    /// (Helm, or a site patch with `cluster.inlineManifests`).
    Cilium,
}

/// Static addressing for the site's nodes (else DHCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetwork {
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub nameservers: Vec<Ipv4Addr>,
}

/// Settings shared by every node of the site.
#[derive(Debug, Clone)]
pub struct Site {
    pub cluster_name: String,
    /// `https://<host>:6443`.
    pub endpoint: String,
    pub kubernetes_version: String,
    /// `machine.install.image` (from boot-assets).
    pub installer_image: Option<String>,
    pub cni: CniChoice,
    pub dns_domain: String,
    pub pod_subnets: Vec<String>,
    pub service_subnets: Vec<String>,
    /// Talos's discovery service (off for air-gapped sites).
    pub discovery: bool,
    pub network: Option<StaticNetwork>,
    pub patches: Vec<Patch>,
}

impl Site {
    /// `gen config`'s defaults for a cluster name and endpoint.
    pub fn new(cluster_name: &str, endpoint: &str) -> Site {
        Site {
            cluster_name: cluster_name.to_owned(),
            endpoint: endpoint.to_owned(),
            kubernetes_version: DEFAULT_KUBERNETES.to_owned(),
            installer_image: None,
            cni: CniChoice::Flannel,
            dns_domain: "cluster.local".to_owned(),
            pod_subnets: vec!["10.244.0.0/16".to_owned()],
            service_subnets: vec!["10.96.0.0/12".to_owned()],
            discovery: true,
            network: None,
            patches: Vec::new(),
        }
    }
}

/// Where Talos installs, as the profile and the inventory decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstallTarget {
    pub disk: Option<String>,
    pub selector: Option<DiskSelector>,
    /// BIOS (not UEFI) firmware: mark the partition bootable for old BIOSes.
    pub legacy_bios: bool,
}

/// One node's facts.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub role: Role,
    /// A fixed hostname, else Talos's `auto: stable`.
    pub hostname: Option<String>,
    pub install: InstallTarget,
    /// The boot NIC's MAC: static addressing is bound to it.
    pub mac: Option<String>,
    /// Static address (with the site's prefix), if the site is static.
    pub address: Option<Ipv4Addr>,
    /// The hardware profile's patches, applied before the site's.
    pub profile_patches: Vec<Patch>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("the rendered config breaks Talos's rules: {}", list(.0))]
    Invalid(Vec<Finding>),
    #[error("the site uses static addressing but the node has no {0}")]
    StaticNeeds(&'static str),
}

fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A rendered config: the YAML and the warnings that did not stop it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub yaml: String,
    pub warnings: Vec<Finding>,
}

fn pem(crt: &str, key: Option<&str>) -> PemEncoded {
    PemEncoded {
        crt: b64(crt),
        key: key.map(b64).unwrap_or_default(),
    }
}

fn admission_control() -> Vec<Value> {
    let text = "name: PodSecurity\nconfiguration:\n  apiVersion: pod-security.admission.config.k8s.io/v1alpha1\n  defaults:\n    audit: restricted\n    audit-version: latest\n    enforce: baseline\n    enforce-version: latest\n    warn: restricted\n    warn-version: latest\n  exemptions:\n    namespaces:\n      - kube-system\n    runtimeClasses: []\n    usernames: []\n  kind: PodSecurityConfiguration\n";
    yaml::parse_all(text).unwrap_or_default()
}

fn audit_policy() -> Value {
    let text = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n";
    yaml::parse_all(text)
        .ok()
        .and_then(|mut d| d.pop())
        .unwrap_or(Value::Null)
}

/// The `v1alpha1` document `gen config` writes for this role (v1.13 contract).
pub fn base_document(site: &Site, secrets: &SecretsBundle, role: Role) -> V1Alpha1 {
    let cp = role != Role::Worker;
    let k8s = &site.kubernetes_version;
    let image = |name: &str| format!("registry.k8s.io/{name}:v{k8s}");
    V1Alpha1 {
        version: "v1alpha1".to_owned(),
        debug: false,
        machine: Machine {
            machine_type: if cp {
                MachineType::Controlplane
            } else {
                MachineType::Worker
            },
            token: secrets.trustd_token.clone(),
            ca: pem(&secrets.os.crt, cp.then_some(secrets.os.key.as_str())),
            cert_sans: Vec::new(),
            kubelet: Kubelet {
                image: format!("ghcr.io/siderolabs/kubelet:v{k8s}"),
                default_runtime_seccomp_profile_enabled: true,
                disable_manifests_directory: true,
            },
            install: Install {
                disk: None,
                disk_selector: None,
                image: None,
                wipe: false,
                legacy_bios_support: false,
                grub_use_uki_cmdline: true,
            },
            features: Features {
                disk_quota_support: true,
                kube_prism: KubePrism {
                    enabled: true,
                    port: 7445,
                },
                host_dns: HostDns {
                    enabled: true,
                    forward_kube_dns_to_host: true,
                },
            },
            node_labels: cp.then(|| {
                BTreeMap::from([(
                    "node.kubernetes.io/exclude-from-external-load-balancers".to_owned(),
                    String::new(),
                )])
            }),
        },
        cluster: Cluster {
            id: secrets.cluster_id.clone(),
            secret: secrets.cluster_secret.clone(),
            control_plane: ControlPlane {
                endpoint: site.endpoint.clone(),
            },
            cluster_name: site.cluster_name.clone(),
            network: ClusterNetwork {
                cni: None,
                dns_domain: site.dns_domain.clone(),
                pod_subnets: site.pod_subnets.clone(),
                service_subnets: site.service_subnets.clone(),
            },
            token: secrets.bootstrap_token.clone(),
            secretbox_encryption_secret: cp.then(|| secrets.secretbox_secret.clone()),
            ca: pem(&secrets.k8s.crt, cp.then_some(secrets.k8s.key.as_str())),
            aggregator_ca: cp.then(|| pem(&secrets.aggregator.crt, Some(&secrets.aggregator.key))),
            service_account: cp.then(|| KeyOnly {
                key: b64(&secrets.service_account_key),
            }),
            api_server: cp.then(|| ApiServer {
                image: image("kube-apiserver"),
                admission_control: admission_control(),
                audit_policy: audit_policy(),
            }),
            controller_manager: cp.then(|| ImageOnly {
                image: image("kube-controller-manager"),
            }),
            proxy: cp.then(|| Proxy {
                image: Some(image("kube-proxy")),
                disabled: false,
            }),
            scheduler: cp.then(|| ImageOnly {
                image: image("kube-scheduler"),
            }),
            discovery: Discovery {
                enabled: true,
                registries: Registries {
                    kubernetes: Disabled { disabled: true },
                    service: Empty {},
                },
            },
            etcd: cp.then(|| Etcd {
                ca: pem(&secrets.etcd.crt, Some(&secrets.etcd.key)),
            }),
            allow_scheduling_on_control_planes: None,
        },
    }
}

const API: &str = "v1alpha1";
/// The alias static addressing gives the boot NIC.
pub const BOOT_LINK: &str = "net0";

/// The typed documents before patches: `gen config`'s plus our site choices.
pub fn documents(
    site: &Site,
    secrets: &SecretsBundle,
    node: &NodeSpec,
) -> Result<Vec<Value>, RenderError> {
    let mut main = base_document(site, secrets, node.role);
    let install = &mut main.machine.install;
    install.disk = node.install.disk.clone();
    install.disk_selector = node.install.selector.clone();
    install.image = site.installer_image.clone();
    install.legacy_bios_support = node.install.legacy_bios;
    if node.role == Role::SingleNode {
        main.cluster.allow_scheduling_on_control_planes = Some(true);
        // One node serves LoadBalancer traffic too (Talos docs, single-node).
        main.machine.node_labels = None;
    }
    if !site.discovery {
        main.cluster.discovery.enabled = false;
    }
    if site.cni == CniChoice::Cilium {
        main.cluster.network.cni = Some(Cni {
            name: "none".to_owned(),
        });
        if node.role != Role::Worker {
            main.cluster.proxy = Some(Proxy {
                image: None,
                disabled: true,
            });
        }
    }
    let mut docs = vec![yaml::to_value(&main)];
    docs.push(yaml::to_value(&HostnameConfig {
        api_version: API.to_owned(),
        kind: "HostnameConfig".to_owned(),
        auto: node.hostname.is_none().then(|| "stable".to_owned()),
        hostname: node.hostname.clone(),
    }));
    if let Some(net) = &site.network {
        let mac = node.mac.as_ref().ok_or(RenderError::StaticNeeds("MAC"))?;
        let address = node.address.ok_or(RenderError::StaticNeeds("address"))?;
        docs.push(yaml::to_value(&LinkAliasConfig {
            api_version: API.to_owned(),
            kind: "LinkAliasConfig".to_owned(),
            name: BOOT_LINK.to_owned(),
            selector: LinkSelector {
                expr: format!(
                    "mac(link.permanent_addr) == \"{}\"",
                    mac.to_ascii_lowercase()
                ),
            },
        }));
        docs.push(yaml::to_value(&LinkConfig {
            api_version: API.to_owned(),
            kind: "LinkConfig".to_owned(),
            name: BOOT_LINK.to_owned(),
            up: true,
            addresses: vec![Address {
                address: format!("{address}/{}", net.prefix_len),
            }],
            routes: vec![Route {
                gateway: net.gateway.to_string(),
            }],
        }));
        if !net.nameservers.is_empty() {
            docs.push(yaml::to_value(&ResolverConfig {
                api_version: API.to_owned(),
                kind: "ResolverConfig".to_owned(),
                nameservers: net
                    .nameservers
                    .iter()
                    .map(|a| Address {
                        address: a.to_string(),
                    })
                    .collect(),
            }));
        }
    }
    Ok(docs)
}

/// The node's config: documents, patches, the semantic rules, YAML.
pub fn render(
    site: &Site,
    secrets: &SecretsBundle,
    node: &NodeSpec,
) -> Result<Rendered, RenderError> {
    let mut docs = documents(site, secrets, node)?;
    for p in node.profile_patches.iter().chain(&site.patches) {
        patch::apply(&mut docs, p);
    }
    let findings = validate::validate(&docs, validate::Mode::Metal);
    let (errors, warnings): (Vec<_>, Vec<_>) = findings.into_iter().partition(Finding::is_error);
    if !errors.is_empty() {
        return Err(RenderError::Invalid(errors));
    }
    Ok(Rendered {
        yaml: yaml::join(&docs),
        warnings,
    })
}
