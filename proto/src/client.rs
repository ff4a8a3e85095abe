//! Connecting to the hub's enrollment service over TLS: the agent (and tests)
//! trust exactly the hub CA they pinned, and present a node certificate once
//! they have one. tonic's own TLS is not used; rustls (ring) is, as on the hub.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A client configuration that trusts only `ca_der` and, when `identity` is
/// given, authenticates with it. HTTP/2 only.
pub fn client_config(
    ca_der: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A channel to the hub at `addr`, verifying its certificate for `addr`'s IP.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Channel, ClientError> {
    let name = ServerName::IpAddress(addr.ip().into());
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        let name = name.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    // The URI only names the authority for HTTP/2; the connector does the rest.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ClientError::Connect { addr, source })?
        .connect_timeout(timeout)
        .timeout(timeout);
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| ClientError::Connect { addr, source })
}
