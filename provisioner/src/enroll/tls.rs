//! Our TLS acceptor for the enrollment service. tonic's built-in TLS has no
//! revocation hook, so the hub terminates TLS itself (rustls, ring provider):
//! client certificates are optional at the handshake (Enroll needs none) but,
//! when presented, must chain to the hub CA, carry clientAuth, be within their
//! validity, and not be revoked — a revoked certificate fails the handshake.
//! The connection then carries the peer's node id and serial to the service,
//! which takes the node identity from there and nowhere else.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::NodeId;
use super::authority::Revocations;
use super::ca::{Ca, CaError, cert_facts};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("building the client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("issuing the hub's server certificate: {0}")]
    Issue(#[from] CaError),
}

/// The authenticated node behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub node: NodeId,
    pub serial: Vec<u8>,
}

/// What the service learns about a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub cert: Option<ClientCert>,
}

/// A TLS connection with its peer facts, for tonic's `serve_with_incoming`.
#[derive(Debug)]
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl TlsConn {
    pub fn new(inner: tokio_rustls::server::TlsStream<TcpStream>, addr: SocketAddr) -> TlsConn {
        // Only certificates our verifier accepted get here; a chain without our
        // node URI (e.g. a hub server certificate used as a client) names no node.
        let cert = inner
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| cert_facts(leaf))
            .and_then(|facts| {
                Some(ClientCert {
                    node: facts.node?,
                    serial: facts.serial,
                })
            });
        TlsConn {
            inner,
            info: PeerInfo { addr, cert },
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// WebPKI client verification plus the hub's revocation list.
#[derive(Debug)]
struct NodeVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revocations: Arc<Revocations>,
}

impl ClientCertVerifier for NodeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let facts = cert_facts(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if self.revocations.is_revoked(&facts.serial) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The hub's server certificate, swapped in place when it is re-issued.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<(Arc<CertifiedKey>, u64)>,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    ttl: Duration,
}

fn certified(
    ca: &Ca,
    names: &[String],
    ips: &[IpAddr],
    ttl: Duration,
) -> Result<(Arc<CertifiedKey>, u64), TlsError> {
    let (issued, key) = ca.issue_server(names, ips, SystemTime::now(), ttl)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key)?;
    let chain = vec![issued.der, ca.cert_der().clone()];
    Ok((
        Arc::new(CertifiedKey::new(chain, signing)),
        issued.not_after,
    ))
}

impl ServerCert {
    /// Issues the first certificate, for the hub's `names` and `ips`.
    pub fn new(
        ca: &Ca,
        names: Vec<String>,
        ips: Vec<IpAddr>,
        ttl: Duration,
    ) -> Result<ServerCert, TlsError> {
        let current = certified(ca, &names, &ips, ttl)?;
        Ok(ServerCert {
            current: RwLock::new(current),
            names,
            ips,
            ttl,
        })
    }

    /// Re-issues when less than half the validity is left; true when it did.
    pub fn refresh(&self, ca: &Ca) -> Result<bool, TlsError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let not_after = self.current.read().map_or(0, |c| c.1);
        if not_after.saturating_sub(now) > self.ttl.as_secs() / 2 {
            return Ok(false);
        }
        let fresh = certified(ca, &self.names, &self.ips, self.ttl)?;
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
        Ok(true)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// The acceptor's configuration: our verifier, our certificate, HTTP/2 only.
pub fn server_config(
    ca: &Ca,
    cert: Arc<ServerCert>,
    revocations: Arc<Revocations>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(NodeVerifier { inner, revocations });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
