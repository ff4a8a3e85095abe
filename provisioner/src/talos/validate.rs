//! Our port of the semantic rules `talosctl validate --mode metal` applies
//! (v1.13: the loader, `v1alpha1_validation.go`, the multi-doc `Validate`s,
//! plus the Kubernetes-version window of `RuntimeValidate`). The JSON schema
//! checks shapes; these are the cross-field rules it cannot express. See
//! `../shared/talos/NOTES.md` (e) for the list this follows.

use std::collections::HashSet;
use std::net::IpAddr;

use super::patch::identity;
use super::yaml::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Installs to disk: `machine.install` is required.
    Metal,
    /// What Talos checks when it reads a config from STATE (no install rule).
    Installed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// `v1alpha1`, `HostnameConfig`, …
    pub document: String,
    /// Dotted path inside the document.
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{level}: {} {}: {}",
            self.document, self.path, self.message
        )
    }
}

/// Document kinds of the v1.13 contract (schema `oneOf` plus code-only ones).
const KINDS: &[&str] = &[
    "ExistingVolumeConfig",
    "ExternalVolumeConfig",
    "RawVolumeConfig",
    "SwapVolumeConfig",
    "UserVolumeConfig",
    "VolumeConfig",
    "ZswapConfig",
    "RegistryAuthConfig",
    "RegistryMirrorConfig",
    "RegistryTLSConfig",
    "EthernetConfig",
    "PCIDriverRebindConfig",
    "BlackholeRouteConfig",
    "BondConfig",
    "BridgeConfig",
    "DHCPv4Config",
    "DHCPv6Config",
    "DummyLinkConfig",
    "HCloudVIPConfig",
    "HostnameConfig",
    "KubeSpanConfig",
    "KubeSpanEndpointsConfig",
    "Layer2VIPConfig",
    "LinkAliasConfig",
    "LinkConfig",
    "NetworkDefaultActionConfig",
    "NetworkRuleConfig",
    "ResolverConfig",
    "RoutingRuleConfig",
    "StaticHostConfig",
    "TCPProbeConfig",
    "TimeSyncConfig",
    "VLANConfig",
    "VRFConfig",
    "WireguardConfig",
    "EnvironmentConfig",
    "EventSinkConfig",
    "KmsgLogConfig",
    "OOMConfig",
    "WatchdogTimerConfig",
    "ImageVerificationConfig",
    "TrustedRootsConfig",
    "SideroLinkConfig",
    "ExtensionServiceConfig",
];

/// Kubelet `extraConfig` keys Talos owns.
const PROTECTED_KUBELET: &[&str] = &[
    "apiVersion",
    "authentication",
    "authorization",
    "cgroupRoot",
    "kind",
    "kubeletCgroups",
    "port",
    "protectKernelDefaults",
    "resolvConf",
    "rotateCertificates",
    "systemCgroups",
    "staticPodPath",
    "seccompDefault",
];

/// Talos 1.13 runs Kubernetes 1.31 to 1.36 (`compatibility/talos113`).
const K8S_MINORS: std::ops::RangeInclusive<u64> = 31..=36;

struct Check {
    document: String,
    out: Vec<Finding>,
}

impl Check {
    fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        self.out.push(Finding {
            severity,
            document: self.document.clone(),
            path: path.to_owned(),
            message: message.into(),
        });
    }
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }
}

/// `doc.a.b.c`, `None` when any step is missing.
fn at<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, k| v.get(k))
}

fn text<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    at(doc, path).and_then(Value::as_str)
}

fn non_empty(doc: &Value, path: &str) -> bool {
    text(doc, path).is_some_and(|s| !s.is_empty())
}

fn truthy(doc: &Value, path: &str) -> bool {
    at(doc, path).and_then(Value::as_bool) == Some(true)
}

/// A DNS name (RFC 1123 labels, a trailing dot allowed).
pub fn dns_name(s: &str) -> bool {
    crate::config::valid_hostname(s.strip_suffix('.').unwrap_or(s))
}

/// `siderolabs/net.ValidateEndpointURI`: scheme, non-empty host, IPv6 in
/// brackets, numeric port.
pub fn endpoint_ok(s: &str) -> Result<(), String> {
    endpoint_host(s).map(|_| ())
}

/// The host of a valid endpoint URI (an IPv6 address without brackets).
pub fn endpoint_host(s: &str) -> Result<&str, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("no scheme (want https://host:port)")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return Err(format!("bad scheme {scheme:?}"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or("unclosed [ in host")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{h:?} is not an IPv6 address"));
        }
        (h, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err("IPv6 host must be in brackets".into()),
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(format!("port {p:?} is not a number"));
    }
    Ok(host)
}

/// Kubernetes label key: `[prefix/]name`, prefix a DNS subdomain, name 1..=63.
fn label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(dns_name) && label_value(name) && !name.is_empty()
}

fn label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !v.starts_with(['-', '_', '.'])
        && !v.ends_with(['-', '_', '.'])
}

/// `480GB`, `2TB`, `4GiB`, `1000000` -> bytes (decimal and binary units, as
/// Talos's disk selector sizes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s.get(..digits)?.parse().ok()?;
    let mult: u64 = match s.get(digits..)?.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "PB" => 1000_u64.pow(5),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Disk selector size matchers: `4GB`, `> 1TB`, `<= 2TB`.
fn size_matcher(s: &str) -> bool {
    let s = s.trim();
    let size = ["==", ">=", "<=", ">", "<"]
        .iter()
        .find_map(|op| s.strip_prefix(op))
        .unwrap_or(s);
    parse_size(size).is_some()
}

fn cidr(s: &str) -> bool {
    s.parse::<ipnet::IpNet>().is_ok()
}

/// The Kubernetes minor version in an image tag `…:vX.Y.Z`.
fn k8s_minor(image: &str) -> Option<u64> {
    let tag = image.rsplit_once(':')?.1.strip_prefix('v')?;
    let mut parts = tag.split(['.', '-', '+']);
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: u64 = parts.next()?.parse().ok()?;
    let _patch: u64 = parts.next()?.parse().ok()?;
    (major == 1).then_some(minor)
}

/// Every finding for a multi-document config.
pub fn validate(docs: &[Value], mode: Mode) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut v1alpha1 = 0;
    for (i, doc) in docs.iter().enumerate() {
        let (api, kind, name) = identity(doc);
        let mut c = Check {
            document: if kind == "v1alpha1" {
                kind.clone()
            } else {
                format!("{kind}#{i}")
            },
            out: Vec::new(),
        };
        if !matches!(doc, Value::Mapping(_)) {
            c.error("", "a document must be a mapping");
        } else if kind == "v1alpha1" {
            v1alpha1 += 1;
            main_document(doc, mode, &mut c);
        } else {
            if api != "v1alpha1" {
                c.error(
                    "apiVersion",
                    format!("{api:?}: only v1alpha1 documents exist"),
                );
            }
            if !KINDS.contains(&kind.as_str()) {
                c.error("kind", format!("unknown document kind {kind:?}"));
            }
            companion(doc, &kind, docs, &mut c);
        }
        if !seen.insert((api, kind.clone(), name.clone())) {
            c.error("", format!("duplicate document {kind} {name:?}"));
        }
        out.append(&mut c.out);
    }
    if v1alpha1 == 0 {
        out.push(Finding {
            severity: Severity::Error,
            document: "v1alpha1".to_owned(),
            path: String::new(),
            message: "no v1alpha1 document: the config is not complete for boot".to_owned(),
        });
    }
    out
}

fn main_document(doc: &Value, mode: Mode, c: &mut Check) {
    if at(doc, "persist").and_then(Value::as_bool) == Some(false) {
        c.error("persist", "persist: false is not supported");
    }
    if text(doc, "version") != Some("v1alpha1") {
        c.error("version", "must be v1alpha1");
    }
    if at(doc, "machine").is_none() {
        c.error("machine", "machine instructions are required");
        return;
    }
    if at(doc, "cluster").is_none() {
        c.error("cluster", "cluster instructions are required");
        return;
    }
    let machine_type = text(doc, "machine.type").unwrap_or("");
    let cp = match machine_type {
        "controlplane" => true,
        "worker" => false,
        "init" => {
            c.error("machine.type", "init is deprecated and not in the schema");
            true
        }
        other => {
            c.error("machine.type", format!("unknown machine type {other:?}"));
            return;
        }
    };

    match text(doc, "cluster.controlPlane.endpoint") {
        None => c.error("cluster.controlPlane.endpoint", "required"),
        Some(e) => {
            if let Err(why) = endpoint_ok(e) {
                c.error("cluster.controlPlane.endpoint", format!("{e:?}: {why}"));
            }
        }
    }
    if let Some(d) = text(doc, "cluster.network.dnsDomain")
        && !dns_name(d)
    {
        c.error(
            "cluster.network.dnsDomain",
            format!("{d:?} is not a DNS name"),
        );
    }
    for field in ["podSubnets", "serviceSubnets"] {
        let path = format!("cluster.network.{field}");
        for s in at(doc, &path)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if !s.as_str().is_some_and(cidr) {
                c.error(&path, format!("{s:?} is not a CIDR"));
            }
        }
    }

    install(doc, mode, c);

    if truthy(doc, "machine.features.hostDNS.forwardKubeDNSToHost")
        && !truthy(doc, "machine.features.hostDNS.enabled")
    {
        c.error(
            "machine.features.hostDNS",
            "forwardKubeDNSToHost requires hostDNS.enabled",
        );
    }

    let has_ca = non_empty(doc, "machine.ca.crt")
        || at(doc, "machine.acceptedCAs")
            .and_then(Value::as_sequence)
            .is_some_and(|s| !s.is_empty());
    if !has_ca {
        c.error(
            "machine.ca",
            "machine.ca.crt or machine.acceptedCAs is required",
        );
    }
    if cp {
        if !non_empty(doc, "machine.ca.key") {
            c.error("machine.ca.key", "a control plane needs the Talos CA key");
        }
        cni(doc, c);
        for (path, what) in [
            ("cluster.ca.key", "the Kubernetes CA key"),
            ("cluster.etcd.ca.key", "the etcd CA key"),
            ("cluster.serviceAccount.key", "the service-account key"),
            ("cluster.aggregatorCA.key", "the aggregator CA key"),
        ] {
            if !non_empty(doc, path) {
                c.warn(
                    path,
                    format!("missing {what}: the node cannot form a control plane"),
                );
            }
        }
    } else {
        if non_empty(doc, "machine.ca.key") {
            c.error("machine.ca.key", "a worker must not carry the Talos CA key");
        }
        if non_empty(doc, "cluster.ca.key") {
            c.error(
                "cluster.ca.key",
                "a worker must not carry the Kubernetes CA key",
            );
        }
        if at(doc, "cluster.etcd").is_some() {
            c.error("cluster.etcd", "a worker must not have an etcd section");
        }
    }

    let discovery = truthy(doc, "cluster.discovery.enabled");
    let kubespan = truthy(doc, "machine.network.kubespan.enabled");
    if (discovery || kubespan)
        && !(non_empty(doc, "cluster.id") && non_empty(doc, "cluster.secret"))
    {
        c.error(
            "cluster.id",
            "discovery needs cluster.id and cluster.secret",
        );
    }
    if kubespan && !discovery {
        c.error(
            "machine.network.kubespan",
            "KubeSpan needs cluster discovery",
        );
    }

    if let Some(extra) = at(doc, "machine.kubelet.extraConfig").and_then(Value::as_mapping) {
        for k in extra.keys().filter_map(Value::as_str) {
            if PROTECTED_KUBELET.contains(&k) {
                c.error(
                    "machine.kubelet.extraConfig",
                    format!("{k} is managed by Talos"),
                );
            }
        }
    }
    for path in [
        "machine.kubelet.image",
        "cluster.apiServer.image",
        "cluster.controllerManager.image",
        "cluster.scheduler.image",
        "cluster.proxy.image",
    ] {
        let Some(image) = text(doc, path) else {
            continue;
        };
        match k8s_minor(image) {
            None => c.error(path, format!("{image:?}: the tag must be vX.Y.Z")),
            Some(m) if !K8S_MINORS.contains(&m) => c.error(
                path,
                format!("Kubernetes 1.{m} is outside Talos 1.13's range (1.31 to 1.36)"),
            ),
            Some(_) => {}
        }
    }

    let mut names = HashSet::new();
    for m in at(doc, "cluster.inlineManifests")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let name = m.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            c.error("cluster.inlineManifests", "a manifest has no name");
        } else if !names.insert(name.to_owned()) {
            c.error(
                "cluster.inlineManifests",
                format!("manifest name {name:?} is used twice"),
            );
        }
    }
    for (path, what) in [
        ("machine.nodeLabels", "label"),
        ("machine.nodeAnnotations", "annotation"),
    ] {
        for (k, v) in at(doc, path)
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            let key = k.as_str().unwrap_or("");
            if !label_key(key) {
                c.error(path, format!("{what} key {key:?} is invalid"));
            }
            if what == "label" && !v.as_str().is_some_and(label_value) {
                c.error(path, format!("label {key:?} has an invalid value {v:?}"));
            }
        }
    }
    if at(doc, "machine.network.hostname").is_some() {
        c.warn(
            "machine.network.hostname",
            "deprecated; use a HostnameConfig document",
        );
    }
}

fn install(doc: &Value, mode: Mode, c: &mut Check) {
    let Some(inst) = at(doc, "machine.install") else {
        if mode == Mode::Metal {
            c.error("machine.install", "required in metal mode");
        }
        return;
    };
    let selector = inst.get("diskSelector");
    if mode == Mode::Metal && !non_empty(inst, "disk") && selector.is_none() {
        c.error(
            "machine.install",
            "disk or diskSelector is required in metal mode",
        );
    }
    if let Some(sel) = selector {
        if sel.as_mapping().is_none_or(|m| m.is_empty()) {
            c.error(
                "machine.install.diskSelector",
                "an empty selector matches every disk",
            );
        }
        if let Some(size) = text(sel, "size")
            && !size_matcher(size)
        {
            c.error(
                "machine.install.diskSelector.size",
                format!("{size:?} is not a size matcher"),
            );
        }
        if let Some(t) = text(sel, "type")
            && !["ssd", "hdd", "nvme", "sd"].contains(&t)
        {
            c.error(
                "machine.install.diskSelector.type",
                format!("{t:?} is not ssd, hdd, nvme or sd"),
            );
        }
    }
    if at(inst, "extraKernelArgs").is_some() && truthy(inst, "grubUseUKICmdline") {
        c.error(
            "machine.install.extraKernelArgs",
            "cannot be combined with grubUseUKICmdline",
        );
    }
}

fn cni(doc: &Value, c: &mut Check) {
    let Some(cni) = at(doc, "cluster.network.cni") else {
        return;
    };
    let urls = cni.get("urls").and_then(Value::as_sequence);
    let has_urls = urls.is_some_and(|u| !u.is_empty());
    match cni.get("name").and_then(Value::as_str).unwrap_or("") {
        "flannel" if has_urls => c.error("cluster.network.cni.urls", "flannel takes no urls"),
        "none" if has_urls => c.error("cluster.network.cni.urls", "CNI none takes no urls"),
        "none" if cni.get("flannel").is_some() => c.error(
            "cluster.network.cni.flannel",
            "CNI none takes no flannel options",
        ),
        "flannel" | "none" => {}
        "custom" => {
            if !has_urls {
                c.warn("cluster.network.cni.urls", "custom CNI without urls");
            }
            for u in urls.into_iter().flatten() {
                if u.as_str().is_none_or(|s| endpoint_ok(s).is_err()) {
                    c.error("cluster.network.cni.urls", format!("{u:?} is not a URL"));
                }
            }
        }
        other => c.error(
            "cluster.network.cni.name",
            format!("{other:?} is not flannel, custom or none"),
        ),
    }
}

fn companion(doc: &Value, kind: &str, all: &[Value], c: &mut Check) {
    match kind {
        "HostnameConfig" => {
            let auto = text(doc, "auto");
            let host = text(doc, "hostname");
            match (auto, host) {
                (None, None) => c.error("", "either auto or hostname is required"),
                (Some(a), Some(_)) if a != "off" => {
                    c.error("auto", "hostname and auto together only with auto: off")
                }
                (Some(a), _) if !["stable", "off"].contains(&a) => {
                    c.error("auto", format!("{a:?} is not stable or off"))
                }
                _ => {}
            }
            if let Some(h) = host
                && !dns_name(h)
            {
                c.error("hostname", format!("{h:?} is not a valid host name"));
            }
            let legacy = all.iter().any(|d| {
                identity(d).1 == "v1alpha1" && at(d, "machine.network.hostname").is_some()
            });
            if legacy {
                c.error("", "conflicts with machine.network.hostname");
            }
        }
        "LinkConfig" | "LinkAliasConfig" | "DHCPv4Config" | "DHCPv6Config" => {
            if !non_empty(doc, "name") {
                c.error("name", "a link name is required");
            }
            if kind == "LinkAliasConfig" && !non_empty(doc, "selector.match") {
                c.error("selector.match", "a selector is required");
            }
            for a in doc
                .get("addresses")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if !text(a, "address").is_some_and(cidr) {
                    c.error("addresses", format!("{a:?} is not an address/prefix"));
                }
            }
            for r in doc
                .get("routes")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if let Some(g) = text(r, "gateway")
                    && g.parse::<IpAddr>().is_err()
                {
                    c.error("routes", format!("gateway {g:?} is not an address"));
                }
                if let Some(d) = text(r, "destination")
                    && !cidr(d)
                {
                    c.error("routes", format!("destination {d:?} is not a CIDR"));
                }
            }
        }
        "ResolverConfig" => {
            for n in doc
                .get("nameservers")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if text(n, "address").is_none_or(|a| a.parse::<IpAddr>().is_err()) {
                    c.error("nameservers", format!("{n:?} is not an address"));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_validate_endpoint_uri() {
        for ok in [
            "https://base:6443",
            "https://10.0.0.1:6443",
            "https://[fd00::1]:6443",
            "https://cp.example",
        ] {
            assert!(endpoint_ok(ok).is_ok(), "{ok}");
        }
        assert_eq!(endpoint_host("https://[fd00::1]:6443"), Ok("fd00::1"));
        assert_eq!(endpoint_host("https://base:6443/"), Ok("base"));
        assert_eq!(endpoint_host("https://10.0.0.1"), Ok("10.0.0.1"));
        for bad in [
            "10.0.0.1:6443",
            "https://:6443",
            "https://fd00::1:6443",
            "https://h:port",
            "https://[zz]:1",
        ] {
            assert!(endpoint_ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_sizes_and_versions() {
        assert!(
            dns_name("cluster.local") && dns_name("node-1") && !dns_name("-a") && !dns_name("a_b")
        );
        assert!(
            size_matcher("<= 2TB")
                && size_matcher("4GB")
                && size_matcher(">= 100GB")
                && !size_matcher("big")
        );
        assert_eq!(k8s_minor("ghcr.io/siderolabs/kubelet:v1.36.3"), Some(36));
        assert_eq!(k8s_minor("registry.k8s.io/kube-apiserver:latest"), None);
        assert!(label_key(
            "node.kubernetes.io/exclude-from-external-load-balancers"
        ));
        assert!(!label_key("bad key"));
    }
}
