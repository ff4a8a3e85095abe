//! HTTP boot: iPXE scripts and boot assets, plus `/healthz` and `/metrics`.
//! Pure parts: `render` (scripts, query validation) and `range`; shells: `server`,
//! and `api` (the REST API for nodes and tokens, and the admin socket).

pub mod api;
pub mod range;
pub mod render;
pub mod server;
