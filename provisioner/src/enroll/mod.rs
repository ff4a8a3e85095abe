//! Enrollment: the hub's internal CA, join tokens, hardware identity, the
//! approval gate and node records, served to node agents over gRPC with mTLS.
//!
//! Pure parts: `token` (format, hashing, checks), `identity` (who is this
//! machine?), `registry` (every lifecycle decision, returning the changes to
//! persist), `rate` (per-source limits). `ca` signs. Shells: `authority` (the
//! registry under a lock, committing before it answers), `tls` (our acceptor,
//! which enforces revocation), `service` (tonic).
//!
//! Security model (BRIEF.md): the node identity of an RPC comes from the client
//! certificate only; a CSR contributes its public key and nothing else; a join
//! token is useless without approval.

pub mod authority;
pub mod ca;
pub mod identity;
pub mod rate;
pub mod registry;
pub mod service;
pub mod tls;
pub mod token;

pub use authority::{Authority, AuthorityError};

/// A node's id: `n` + 12 lowercase hex digits, random at first enrollment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn random() -> NodeId {
        let b = random_bytes::<6>();
        NodeId(format!("n{}", hex(&b)))
    }

    pub fn parse(s: &str) -> Option<NodeId> {
        let hex = s.strip_prefix('n')?;
        (hex.len() == 12 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| NodeId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid node id"))
    }
}

/// Bytes from the operating system's CSPRNG (ring's `SystemRandom`).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    // getrandom(2) does not fail on Linux once the pool is initialised; if it
    // ever did, refusing to run is the only safe answer for key material.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the OS random number generator failed");
    out
}

/// Lowercase hex.
pub use proto::hex::encode as hex;
