//! Talos Linux machine configs: the cluster secrets bundle, the typed v1.13
//! config model and its renderer, strategic-merge patches, and our port of
//! the semantic rules `talosctl validate --mode metal` applies.
//!
//! Everything here is pure except `secrets::load_or_create` (one file).

/// The Talos release the hub installs and whose config contract it emits.
pub const TALOS_VERSION: &str = "v1.13.9";

pub mod keys;
pub mod model;
pub mod patch;
pub mod render;
pub mod secrets;
pub mod validate;
pub mod yaml;
