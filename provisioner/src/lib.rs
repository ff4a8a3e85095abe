//! The provisioning hub as a library: everything `main.rs` assembles.

pub mod agent_image;
pub mod app;
pub mod assets;
pub mod audit;
pub mod boot;
pub mod cluster;
pub mod config;
pub mod dhcp;
pub mod enroll;
pub mod fuzz;
pub mod http;
pub mod install;
pub mod lab;
pub mod mdns;
pub mod metrics;
pub mod profiles;
pub mod store;
pub mod talos;
pub mod tftp;
pub mod timeline;
pub mod udp;
