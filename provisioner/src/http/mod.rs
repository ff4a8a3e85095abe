//! HTTP boot: iPXE scripts and boot assets, plus `/healthz` and `/metrics`.
//! Pure parts: `render` (scripts, query validation) and `range`; shell: `server`.

pub mod range;
pub mod render;
pub mod server;
