//! The site's Talos cluster as the hub holds it: the secrets bundle (loaded
//! or created once at start, `<state>/talos/secrets.yaml`, 0600), the
//! render settings from `[talos]`, and the hardware profiles. The admin API
//! exports the bundle and mints `talosconfig`s from here; config delivery
//! to enrolled nodes renders from here.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use crate::config::TalosConfig;
use crate::profiles::{ProfileError, Profiles};
use crate::talos::render::Site;
use crate::talos::secrets::{self, SecretsBundle, SecretsError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Profiles(#[from] ProfileError),
}

#[derive(Debug)]
pub struct ClusterService {
    secrets: SecretsBundle,
    site: Site,
    profiles: Profiles,
}

impl ClusterService {
    /// Loads (or on first start generates) the bundle; `endpoint_host` is
    /// the hub's address, the default control-plane endpoint.
    pub fn open(
        state_dir: &Path,
        talos: &TalosConfig,
        endpoint_host: IpAddr,
        now: SystemTime,
    ) -> Result<ClusterService, ClusterError> {
        let (secrets, created) = secrets::load_or_create(state_dir, now)?;
        if created {
            tracing::info!(path = ?secrets::path(state_dir), "cluster secrets generated");
        }
        Ok(ClusterService {
            secrets,
            site: talos.site(endpoint_host),
            profiles: Profiles::load(talos.profiles_dir.as_deref())?,
        })
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    pub fn secrets(&self) -> &SecretsBundle {
        &self.secrets
    }

    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The control-plane endpoint's host, the default talosconfig endpoint.
    pub fn endpoint_host(&self) -> String {
        let e = &self.site.endpoint;
        // Checked when the config loaded (or built from an address): valid.
        crate::talos::validate::endpoint_host(e)
            .unwrap_or(e)
            .to_owned()
    }

    /// A fresh `os:admin` talosconfig for the operator.
    pub fn talosconfig(
        &self,
        endpoints: &[String],
        now: SystemTime,
    ) -> Result<String, SecretsError> {
        let endpoints = if endpoints.is_empty() {
            vec![self.endpoint_host()]
        } else {
            endpoints.to_vec()
        };
        self.secrets
            .talosconfig(&self.site.cluster_name, &endpoints, now)
    }
}
