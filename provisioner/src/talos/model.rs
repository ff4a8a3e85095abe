//! The typed Talos v1.13 config contract: the documents and fields we emit,
//! in the order `talosctl gen config` writes them. Serde names are the YAML
//! keys; `deny_unknown_fields` makes a round-trip parse catch any key we
//! would emit by mistake (Talos refuses unknown keys).
//!
//! Free-form Kubernetes objects (admission plugin configuration, audit
//! policy) stay `Value`s: Talos passes them through without a schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::yaml::Value;

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    Controlplane,
    Worker,
}

/// A certificate with an optional key, both base64 of PEM. Workers carry
/// `key: ""`, as `gen config` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PemEncoded {
    pub crt: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyOnly {
    pub key: String,
}

/// The `v1alpha1` document (no `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Alpha1 {
    pub version: String,
    pub debug: bool,
    pub machine: Machine,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Machine {
    #[serde(rename = "type")]
    pub machine_type: MachineType,
    pub token: String,
    pub ca: PemEncoded,
    #[serde(rename = "certSANs")]
    pub cert_sans: Vec<String>,
    pub kubelet: Kubelet,
    pub install: Install,
    pub features: Features,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kubelet {
    pub image: String,
    pub default_runtime_seccomp_profile_enabled: bool,
    pub disable_manifests_directory: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Install {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_selector: Option<DiskSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub wipe: bool,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        rename = "legacyBIOSSupport"
    )]
    pub legacy_bios_support: bool,
    #[serde(rename = "grubUseUKICmdline")]
    pub grub_use_uki_cmdline: bool,
}

/// `machine.install.diskSelector`: every set field must match (sysfs values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub disk_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Features {
    pub disk_quota_support: bool,
    pub kube_prism: KubePrism,
    #[serde(rename = "hostDNS")]
    pub host_dns: HostDns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubePrism {
    pub enabled: bool,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostDns {
    pub enabled: bool,
    #[serde(rename = "forwardKubeDNSToHost")]
    pub forward_kube_dns_to_host: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    pub id: String,
    pub secret: String,
    pub control_plane: ControlPlane,
    pub cluster_name: String,
    pub network: ClusterNetwork,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secretbox_encryption_secret: Option<String>,
    pub ca: PemEncoded,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "aggregatorCA"
    )]
    pub aggregator_ca: Option<PemEncoded>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<KeyOnly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ImageOnly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ImageOnly>,
    pub discovery: Discovery,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_scheduling_on_control_planes: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<Cni>,
    pub dns_domain: String,
    pub pod_subnets: Vec<String>,
    pub service_subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cni {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    pub image: String,
    pub admission_control: Vec<Value>,
    pub audit_policy: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageOnly {
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    pub enabled: bool,
    pub registries: Registries,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    pub kubernetes: Disabled,
    pub service: Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disabled {
    pub disabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    pub ca: PemEncoded,
}

// ---- multi-document companions ---------------------------------------------------------------

/// `HostnameConfig`: a fixed name, or `auto: stable` (never both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `LinkAliasConfig`: a stable name for the link with a given MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkAliasConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub selector: LinkSelector,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSelector {
    #[serde(rename = "match")]
    pub expr: String,
}

/// `LinkConfig`: static addresses and routes on one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkConfig {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub up: bool,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub gateway: String,
}

/// `DHCPv4Config` for one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dhcpv4Config {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// `ResolverConfig`: static name servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolverConfig {
    pub api_version: String,
    pub kind: String,
    pub nameservers: Vec<Address>,
}
