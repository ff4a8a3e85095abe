//! TFTP, read-only, for the small first-stage boot files: a pure core (`packet`,
//! `session`, and `gate` for admission) and a socket shell (`server`). Serves exactly the files the
//! boot-assets manifest lists, by exact name; nothing else is reachable.

pub mod gate;
pub mod packet;
pub mod server;
pub mod session;
