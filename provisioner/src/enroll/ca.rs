//! The hub's internal CA (rcgen, ring). It signs two kinds of certificate:
//! node client certificates from a CSR, and the hub's own TLS server
//! certificate. A CSR is never trusted: its self-signature is checked and its
//! public key is the only thing taken from it; subject, SAN, key usage, EKU
//! (clientAuth only), `CA:FALSE` and validity are the hub's.
//!
//! The CA key lives in `<state>/ca/ca.key`, created with mode 0600 (never
//! widened afterwards, never logged); the certificate beside it is public.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use super::NodeId;

/// SAN URI prefix of node certificates; the node id follows.
pub const NODE_URI_PREFIX: &str = "urn:provisioner:node:";
/// Issued certificates start this much in the past, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path:?}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?} is readable by others (mode {mode:o}); it must be 0600")]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("the CA in {path:?} does not parse: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("the CSR does not parse")]
    CsrParse,
    #[error("the CSR's signature does not verify")]
    CsrSignature,
    #[error("the CSR's public key is not supported: {0}")]
    CsrKey(#[source] rcgen::Error),
    #[error("signing a certificate: {0}")]
    Sign(#[source] rcgen::Error),
    #[error("time out of range")]
    Time,
}

/// A certificate the CA signed.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: CertificateDer<'static>,
    /// The serial number's bytes, as in the certificate (what revocation names).
    pub serial: Vec<u8>,
    pub not_after: u64,
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    fingerprint: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn offset(t: SystemTime) -> Result<time::OffsetDateTime, CaError> {
    let secs = i64::try_from(unix(t)).map_err(|_| CaError::Time)?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::Time)
}

/// `sha256:<hex>` of a certificate's DER: what `provisioner.ca=` pins.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    format!("sha256:{}", proto::hex::encode(&digest))
}

/// 16 random bytes with the top bit clear: a positive, unpredictable serial.
pub(crate) fn random_serial() -> Vec<u8> {
    let mut serial = super::random_bytes::<16>().to_vec();
    serial[0] &= 0x7f;
    serial[0] |= 0x01 << 6; // never a leading zero byte, so DER keeps all 16
    serial
}

/// Writes `data` to a new file created with `mode` (never wider, even briefly),
/// then renames it into place.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let err = |source| CaError::Write {
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Ca {
    /// A new CA (ECDSA P-256), valid from `now` for 20 years.
    pub fn generate(name: &str, now: SystemTime) -> Result<Ca, CaError> {
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "provisioner");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
        params.not_after = offset(now + CA_VALIDITY)?;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let cert = params.self_signed(&key).map_err(CaError::Sign)?;
        let cert_der = cert.der().clone();
        Ok(Ca {
            fingerprint: fingerprint(&cert_der),
            issuer: Issuer::new(params, key),
            cert_der,
        })
    }

    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), creating it on first use.
    pub fn load_or_create(dir: &Path, name: &str, now: SystemTime) -> Result<Ca, CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if !key_path.exists() {
            std::fs::create_dir_all(dir).map_err(|source| CaError::Write {
                path: dir.to_owned(),
                source,
            })?;
            let ca = Ca::generate(name, now)?;
            // Key first: a certificate without its key would be useless.
            write_new(&key_path, ca.key_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
            tracing::info!(fingerprint = %ca.fingerprint, dir = ?dir, "created the hub CA");
            return Ok(ca);
        }
        use std::os::unix::fs::PermissionsExt;
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let meta = std::fs::metadata(&key_path).map_err(|source| CaError::Read {
            path: key_path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyMode {
                path: key_path,
                mode,
            });
        }
        fn parse(path: &Path) -> impl FnOnce(rcgen::Error) -> CaError + '_ {
            move |source| CaError::Parse {
                path: path.to_owned(),
                source,
            }
        }
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(parse(&key_path))?;
        let cert_pem = read(&cert_path)?;
        let cert_der = pem_decode(&cert_pem, "CERTIFICATE").ok_or(CaError::Parse {
            path: cert_path.clone(),
            source: rcgen::Error::CouldNotParseCertificate,
        })?;
        let cert_der = CertificateDer::from(cert_der);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(parse(&cert_path))?;
        Ok(Ca {
            fingerprint: fingerprint(&cert_der),
            issuer,
            cert_der,
        })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> String {
        proto::pem::encode("CERTIFICATE", &self.cert_der)
    }

    fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A node client certificate for `public_key` (SubjectPublicKeyInfo DER,
    /// from `csr_public_key`).
    pub fn issue_node(
        &self,
        public_key: &[u8],
        node: &NodeId,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let public_key = SubjectPublicKeyInfo::from_der(public_key).map_err(CaError::CsrKey)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        let uri = format!("{NODE_URI_PREFIX}{}", node.as_str());
        let uri = uri.try_into().map_err(CaError::Sign)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &public_key, now, ttl)
    }

    /// The hub's TLS server certificate (and its fresh key) for `names` and `ips`.
    pub fn issue_server(
        &self,
        names: &[String],
        ips: &[IpAddr],
        now: SystemTime,
        ttl: Duration,
    ) -> Result<(Issued, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate().map_err(CaError::Sign)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "provisioner hub");
        for name in names {
            let name = name.clone().try_into().map_err(CaError::Sign)?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issued = self.sign(params, &key, now, ttl)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((issued, key_der))
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
        let not_after = now + ttl;
        params.not_after = offset(not_after)?;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(CaError::Sign)?;
        Ok(Issued {
            der: cert.der().clone(),
            serial,
            not_after: unix(not_after),
        })
    }
}

/// The public key (SubjectPublicKeyInfo DER) of a PKCS#10 request whose
/// self-signature verifies; nothing else of the request is looked at.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, CaError> {
    use x509_parser::prelude::FromDer;
    let (rest, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
            .map_err(|_| CaError::CsrParse)?;
    if !rest.is_empty() {
        return Err(CaError::CsrParse);
    }
    csr.verify_signature().map_err(|_| CaError::CsrSignature)?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// The DER inside the first PEM block labelled `label`.
pub use proto::pem::decode as pem_decode;

/// Facts read back from a certificate the hub issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub node: Option<NodeId>,
    pub serial: Vec<u8>,
    pub not_after: u64,
}

/// Reads the node id (SAN URI), serial and expiry of a certificate.
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let node = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(uri) => {
                    uri.strip_prefix(NODE_URI_PREFIX).and_then(NodeId::parse)
                }
                _ => None,
            })
        });
    Some(CertFacts {
        node,
        serial: cert.raw_serial().to_vec(),
        not_after: u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
    })
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
