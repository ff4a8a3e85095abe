//! The node agent: runs in the discovery image (and later on installed
//! nodes). `inventory` collects the hardware facts (pure over a `Source`);
//! `cmdline` finds the hub; `agent` enrolls over mTLS, reports `health`, and
//! follows the hub's assignment; `install` writes Talos and its config to disk.

pub mod agent;
pub mod cmdline;
pub mod discover;
pub mod health;
pub mod install;
pub mod inventory;
