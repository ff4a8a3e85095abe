//! The wire contract between the hub and its node agents: the gRPC service of
//! `proto/provisioner.proto` (generated at build time) and the hardware
//! inventory model the agent sends as JSON.

#![allow(missing_debug_implementations)]

pub mod client;
pub mod hex;
pub mod pem;

/// Generated from `proto/provisioner.proto` (package `provisioner.v1`).
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("provisioner.v1");
}
