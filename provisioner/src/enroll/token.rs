//! Join tokens, kubeadm style: `[a-z0-9]{6}.[a-z0-9]{16}`. The first part is
//! the public id (how the token is named in lists and logs); the second is the
//! secret, stored only as its SHA-256 and compared in constant time. A token
//! has a TTL, an optional usage limit, and may carry the auto-approve flag.
//!
//! Pure: no clock reads (`now` is an argument), no store.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
pub const ID_LEN: usize = 6;
pub const SECRET_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a join token is 6 + 16 characters of [a-z0-9] joined by '.'")]
    Format,
}

/// A parsed token. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: String,
    secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({}.[redacted])", self.id)
    }
}

fn valid_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl JoinToken {
    pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
        let (id, secret) = s.split_once('.').ok_or(TokenError::Format)?;
        if !valid_part(id, ID_LEN) || !valid_part(secret, SECRET_LEN) {
            return Err(TokenError::Format);
        }
        Ok(JoinToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// A fresh token from the OS CSPRNG (rejection sampling: no modulo bias).
    pub fn generate() -> JoinToken {
        let mut chars = Vec::with_capacity(ID_LEN + SECRET_LEN);
        while chars.len() < ID_LEN + SECRET_LEN {
            for b in super::random_bytes::<32>() {
                // 252 = 7 * 36: bytes at or above it would bias the draw.
                if b < 252 && chars.len() < ID_LEN + SECRET_LEN {
                    chars.push(ALPHABET[usize::from(b % 36)]);
                }
            }
        }
        let s = String::from_utf8_lossy(&chars).into_owned();
        JoinToken {
            id: s[..ID_LEN].to_owned(),
            secret: s[ID_LEN..].to_owned(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full token text, for showing once to the operator who created it.
    pub fn reveal(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    pub fn secret_hash(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }
}

/// A stored token: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    #[serde(with = "hex32")]
    pub secret_sha256: [u8; 32],
    pub description: String,
    pub created: u64,
    pub expires: u64,
    /// `None`: unlimited.
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub auto_approve: bool,
    pub revoked: bool,
    /// Minted by the hub for its own discovery scripts.
    #[serde(default)]
    pub boot: bool,
}

/// Why a token was refused. The agent only ever hears "refused".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    WrongSecret,
    Expired,
    Exhausted,
    Revoked,
}

impl TokenRecord {
    pub fn new(
        token: &JoinToken,
        description: String,
        now: u64,
        ttl_secs: u64,
        max_uses: Option<u32>,
        auto_approve: bool,
    ) -> TokenRecord {
        TokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_hash(),
            description,
            created: now,
            expires: now.saturating_add(ttl_secs),
            max_uses,
            uses: 0,
            auto_approve,
            revoked: false,
            boot: false,
        }
    }

    /// Whether `token` may enroll one more machine at `now`.
    pub fn check(&self, token: &JoinToken, now: u64) -> Result<(), Refusal> {
        // Compare the secret first and always, so timing says nothing about state.
        let secret_ok: bool = self.secret_sha256.ct_eq(&token.secret_hash()).into();
        if !secret_ok {
            return Err(Refusal::WrongSecret);
        }
        if self.revoked {
            return Err(Refusal::Revoked);
        }
        if now >= self.expires {
            return Err(Refusal::Expired);
        }
        if self.max_uses.is_some_and(|max| self.uses >= max) {
            return Err(Refusal::Exhausted);
        }
        Ok(())
    }

    pub fn validate(&self) -> bool {
        valid_part(&self.id, ID_LEN) && self.created <= self.expires
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        proto::hex::decode(&s)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_the_kubeadm_format() {
        let cases: &[(&str, bool)] = &[
            ("abcdef.0123456789abcdef", true),
            ("abc123.zzzzzzzzzzzzzzzz", true),
            ("ABCDEF.0123456789abcdef", false),
            ("abcdef0123456789abcdef", false),
            ("abcde.0123456789abcdef", false),
            ("abcdef.0123456789abcde", false),
            ("abcdef.0123456789abcdef.", false),
            ("abcdef.0123456789abcd-f", false),
            ("", false),
            (".", false),
            ("abcdef.0123456789abcdéf", false),
        ];
        for (input, ok) in cases {
            assert_eq!(JoinToken::parse(input).is_ok(), *ok, "case {input:?}");
        }
    }

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = JoinToken::generate();
        let b = JoinToken::generate();
        assert_eq!(JoinToken::parse(&a.reveal()), Ok(a.clone()));
        assert_ne!(a, b);
        assert!(
            !format!("{a:?}").contains(&a.reveal()[7..]),
            "Debug leaks the secret"
        );
    }

    #[test]
    fn check_refuses_for_each_reason() {
        let t = JoinToken::generate();
        let base = TokenRecord::new(&t, "x".into(), 1000, 60, Some(2), false);
        let other = JoinToken::generate();
        let wrong = JoinToken::parse(&format!("{}.{}", t.id(), &other.reveal()[7..]))
            .expect("valid format");
        type Case<'a> = (
            &'a str,
            TokenRecord,
            &'a JoinToken,
            u64,
            Result<(), Refusal>,
        );
        let cases: Vec<Case> = vec![
            ("fresh", base.clone(), &t, 1000, Ok(())),
            (
                "wrong secret",
                base.clone(),
                &wrong,
                1000,
                Err(Refusal::WrongSecret),
            ),
            ("at expiry", base.clone(), &t, 1060, Err(Refusal::Expired)),
            ("just before expiry", base.clone(), &t, 1059, Ok(())),
            (
                "used up",
                TokenRecord {
                    uses: 2,
                    ..base.clone()
                },
                &t,
                1000,
                Err(Refusal::Exhausted),
            ),
            (
                "unlimited",
                TokenRecord {
                    uses: 999,
                    max_uses: None,
                    ..base.clone()
                },
                &t,
                1000,
                Ok(()),
            ),
            (
                "revoked",
                TokenRecord {
                    revoked: true,
                    ..base.clone()
                },
                &t,
                1000,
                Err(Refusal::Revoked),
            ),
        ];
        for (name, rec, token, now, want) in cases {
            assert_eq!(rec.check(token, now), want, "case {name}");
        }
    }

    #[test]
    fn record_round_trips_and_holds_no_secret() {
        let t = JoinToken::generate();
        let rec = TokenRecord::new(&t, "rack 3".into(), 5, 10, None, true);
        let json = serde_json::to_string(&rec).expect("serialize");
        assert!(!json.contains(&t.reveal()[7..]));
        assert_eq!(
            serde_json::from_str::<TokenRecord>(&json).expect("parse"),
            rec
        );
    }
}
