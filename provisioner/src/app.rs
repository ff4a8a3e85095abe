//! Assembles the hub: `App::build` opens the store and binds every socket (so a
//! port in use fails before anything is served); `App::run` runs all services
//! under one cancellation token until a signal or the first service stops.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dhcp::server::{DhcpError, DhcpServer};
use crate::store::{EmbeddedStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
}

#[derive(Debug)]
pub struct App {
    dhcp: DhcpServer,
    store: EmbeddedStore,
}

impl App {
    pub fn build(config: &Config) -> Result<App, AppError> {
        let store = EmbeddedStore::open(&config.state_dir)?;
        tracing::info!(path = ?store.path(), "store open");
        let dhcp = DhcpServer::build(&config.dhcp, &config.boot, &store)?;
        Ok(App { dhcp, store })
    }

    /// Runs until `cancel` fires or a service fails.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), AppError> {
        let store: Box<dyn Store> = Box::new(self.store);
        let result = self.dhcp.run(store, cancel.clone()).await;
        cancel.cancel();
        result.map_err(AppError::from)
    }
}
