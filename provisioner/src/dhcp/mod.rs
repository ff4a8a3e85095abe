//! DHCPv4: a pure decision core (`wire` → `classify` → `decide` over `leases`)
//! and a socket shell (`socket`, `server`). See ARCHITECTURE.md.

pub mod classify;
pub mod decide;
pub mod fallback;
pub mod leases;
pub mod server;
pub mod socket;
pub mod wire;

#[cfg(test)]
mod decide_tests;
