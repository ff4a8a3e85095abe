//! The bundle against the formats in `../shared/talos/NOTES.md` (a), checked
//! with an X.509 parser rather than with our own code.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::*;

use super::*;

const NOW: Duration = Duration::from_secs(1_790_000_000);

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + NOW
}

/// One generated bundle for every test (RSA-4096 generation is the slow part).
fn bundle() -> &'static SecretsBundle {
    static B: OnceLock<SecretsBundle> = OnceLock::new();
    B.get_or_init(|| SecretsBundle::generate(now()).unwrap())
}

fn der(pem: &str) -> Vec<u8> {
    proto::pem::decode(pem, "CERTIFICATE").unwrap()
}

fn check_ca(pair: &CertAndKey, org: Option<&str>, key_oid: &str, key_label: &str) {
    let der = der(&pair.crt);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(cert.is_ca());
    let orgs: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(orgs, org.into_iter().collect::<Vec<_>>());
    if org.is_none() {
        assert_eq!(
            cert.subject().iter().count(),
            0,
            "aggregator CA has an empty subject"
        );
    }
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        key_oid
    );
    cert.verify_signature(None)
        .expect("self-signature verifies");
    let validity = cert.validity();
    assert_eq!(validity.not_before.timestamp(), NOW.as_secs() as i64);
    assert_eq!(
        validity.not_after.timestamp() - validity.not_before.timestamp(),
        87_600 * 3600,
        "10 years"
    );
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.digital_signature());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(cert.raw_serial().len(), 16, "128-bit serial");
    let ski = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.len()),
            _ => None,
        });
    assert_eq!(ski, Some(20));
    assert!(
        pair.key
            .starts_with(&format!("-----BEGIN {key_label}-----\n")),
        "{}",
        pair.key
    );
}

#[test]
fn cas_have_talos_key_types_subjects_and_extensions() {
    let b = bundle();
    check_ca(&b.os, Some("talos"), "1.3.101.112", "ED25519 PRIVATE KEY");
    check_ca(
        &b.k8s,
        Some("kubernetes"),
        "1.2.840.10045.2.1",
        "EC PRIVATE KEY",
    );
    check_ca(&b.etcd, Some("etcd"), "1.2.840.10045.2.1", "EC PRIVATE KEY");
    check_ca(&b.aggregator, None, "1.2.840.10045.2.1", "EC PRIVATE KEY");
    // Each key belongs to its certificate.
    for pair in [&b.k8s, &b.etcd, &b.aggregator] {
        let pkcs8 =
            keys::p256_pkcs8_from_sec1(&proto::pem::decode(&pair.key, "EC PRIVATE KEY").unwrap())
                .unwrap();
        let key = KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let d = der(&pair.crt);
        let (_, cert) = X509Certificate::from_der(&d).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }
    let os_key = b.talos_ca_key().unwrap();
    let d = der(&b.os.crt);
    let (_, cert) = X509Certificate::from_der(&d).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        os_key.public_key_raw()
    );
    let body = proto::pem::decode(&b.os.key, "ED25519 PRIVATE KEY").unwrap();
    assert_eq!(body.len(), 48, "PKCS#8 v1, as Go writes it");
}

#[test]
fn service_account_key_is_rsa_4096_pkcs1() {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let b = bundle();
    assert!(
        b.service_account_key
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
    );
    let key = rsa::RsaPrivateKey::from_pkcs1_pem(&b.service_account_key).unwrap();
    assert_eq!(key.size() * 8, 4096);
    key.validate().unwrap();
}

#[test]
fn tokens_and_random_values_have_talos_formats() {
    let b = bundle();
    let token = |s: &str| {
        let (id, secret) = s.split_once('.').unwrap();
        id.len() == 6
            && secret.len() == 16
            && s.bytes()
                .all(|c| c == b'.' || c.is_ascii_digit() || c.is_ascii_lowercase())
    };
    assert!(token(&b.bootstrap_token), "{}", b.bootstrap_token);
    assert!(token(&b.trustd_token));
    assert_ne!(b.bootstrap_token, b.trustd_token);
    assert_eq!(
        proto::pem::base64_decode(&b.cluster_secret).unwrap().len(),
        32
    );
    assert_eq!(
        proto::pem::base64_decode(&b.secretbox_secret)
            .unwrap()
            .len(),
        32
    );
    assert_eq!(b.cluster_id.len(), 44);
    assert!(
        !b.cluster_id.contains(['+', '/']),
        "URL-safe: {}",
        b.cluster_id
    );
    let other = SecretsBundle::generate(now()).unwrap();
    assert_ne!(other.cluster_id, b.cluster_id);
    assert_ne!(other.os.key, b.os.key);
}

#[test]
fn yaml_round_trips_and_reads_talosctl_bundles() {
    let b = bundle();
    let text = b.to_yaml();
    assert_eq!(&SecretsBundle::from_yaml(&text).unwrap(), b);
    for key in [
        "cluster:",
        "bootstraptoken:",
        "secretboxencryptionsecret:",
        "trustdinfo:",
        "k8saggregator:",
        "k8sserviceaccount:",
    ] {
        assert!(text.contains(key), "missing {key}");
    }
    let upstream = include_str!("../../tests/fixtures/talos/upstream-secrets.yaml");
    let parsed = SecretsBundle::from_yaml(upstream).unwrap();
    assert_eq!(parsed.bootstrap_token, "inn7ol.u4ehnti8qyls9ymo");
    assert_eq!(
        parsed.cluster_id,
        "0raF93qnkMvF-FZNuvyGozXNdLiT2FOWSlyBaW4PR-w="
    );
    // Its (EC) service-account key and Ed25519 CA key are accepted.
    assert!(parsed.service_account_key.contains("EC PRIVATE KEY"));
    assert!(SecretsBundle::from_yaml(&parsed.to_yaml()).unwrap() == parsed);
}

#[test]
fn damaged_bundles_are_refused_with_the_field_named() {
    let text = bundle().to_yaml();
    let cases = [
        (
            text.replace(&bundle().bootstrap_token, "short.token"),
            "bootstraptoken",
        ),
        (text.replace("trustdinfo:", "trustd:"), "unknown field"),
        (
            text.replace(&b64(&bundle().os.key), "bm90IGEga2V5"),
            "certs.os.key",
        ),
        (
            text.replace(&bundle().secretbox_secret, "c2hvcnQ="),
            "secretbox",
        ),
    ];
    for (damaged, want) in cases {
        let err = SecretsBundle::from_yaml(&damaged).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn talosconfig_holds_an_admin_cert_chained_to_the_talos_ca() {
    let b = bundle();
    let text = b
        .talosconfig("site", &["10.0.0.5".to_owned()], now())
        .unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(v["context"].as_str(), Some("site"));
    let ctx = &v["contexts"]["site"];
    assert_eq!(ctx["endpoints"][0].as_str(), Some("10.0.0.5"));
    let pem = |k: &str| {
        String::from_utf8(proto::pem::base64_decode(ctx[k].as_str().unwrap()).unwrap()).unwrap()
    };
    assert_eq!(pem("ca"), b.os.crt);
    assert!(pem("key").starts_with("-----BEGIN ED25519 PRIVATE KEY-----"));
    let crt = der(&pem("crt"));
    let (_, cert) = X509Certificate::from_der(&crt).unwrap();
    let ca_der = der(&b.os.crt);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the Talos CA");
    assert_eq!(cert.issuer(), ca.subject());
    let orgs: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(orgs, ["os:admin"]);
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let v = cert.validity();
    assert_eq!(
        v.not_after.timestamp() - v.not_before.timestamp(),
        365 * 24 * 3600
    );
}

#[test]
fn stored_with_mode_0600_and_reloaded_unchanged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (first, created) = load_or_create(dir.path(), now()).unwrap();
    assert!(created);
    let meta = std::fs::metadata(path(dir.path())).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (again, created) = load_or_create(dir.path(), now()).unwrap();
    assert!(!created);
    assert_eq!(again, first);
    std::fs::set_permissions(path(dir.path()), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load_or_create(dir.path(), now()),
        Err(SecretsError::Mode { .. })
    ));
}

#[test]
fn debug_never_shows_keys() {
    let b = bundle();
    let text = format!("{b:?} {:?}", b.os);
    assert!(!text.contains("PRIVATE"), "{text}");
    assert!(!text.contains(&b.cluster_secret));
}
