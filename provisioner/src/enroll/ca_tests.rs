use super::*;
use std::os::unix::fs::PermissionsExt;

fn csr_of(key: &KeyPair) -> Vec<u8> {
    CertificateParams::default()
        .serialize_request(key)
        .expect("csr")
        .der()
        .to_vec()
}

#[test]
fn ca_is_created_once_with_a_private_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let a = Ca::load_or_create(dir.path(), "test", now).expect("create");
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let b = Ca::load_or_create(dir.path(), "test", now).expect("load");
    assert_eq!(a.fingerprint(), b.fingerprint(), "the same CA after reload");
    assert!(a.fingerprint().starts_with("sha256:") && a.fingerprint().len() == 7 + 64);
    assert!(
        !format!("{a:?}").contains("PRIVATE"),
        "Debug redacts the key"
    );

    // A node certificate issued by the reloaded CA chains to the original.
    let key = KeyPair::generate().expect("key");
    let id = NodeId::parse("n0123456789ab").expect("id");
    let issued = b
        .issue_node(
            &csr_public_key(&csr_of(&key)).expect("key"),
            &id,
            now,
            Duration::from_secs(60),
        )
        .expect("issue");
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).expect("parse");
    let (_, ca) = x509_parser::parse_x509_certificate(a.cert_der()).expect("parse ca");
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
    let facts = cert_facts(&issued.der).expect("facts");
    assert_eq!(facts.node, Some(id));
    assert_eq!(facts.serial, issued.serial);
    assert_eq!(facts.not_after, issued.not_after);
}

#[test]
fn a_world_readable_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    Ca::load_or_create(dir.path(), "test", SystemTime::now()).expect("create");
    let key = dir.path().join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = Ca::load_or_create(dir.path(), "test", SystemTime::now()).expect_err("refused");
    assert!(matches!(e, CaError::KeyMode { .. }), "{e:?}");
}

#[test]
fn bad_csrs_are_refused() {
    let ca = Ca::generate("t", SystemTime::now()).expect("ca");
    let id = NodeId::parse("n0123456789ab").expect("id");
    let good = csr_of(&KeyPair::generate().expect("key"));
    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x55;
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", vec![0x30, 0x82, 0xff, 0xff, 1, 2, 3]),
        ("bad signature", bad_sig),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("trailing bytes", trailing),
    ];
    for (name, csr) in cases {
        assert!(csr_public_key(&csr).is_err(), "case {name}");
    }
    assert!(
        ca.issue_node(
            b"not a key",
            &id,
            SystemTime::now(),
            Duration::from_secs(60)
        )
        .is_err()
    );
    assert!(
        csr_public_key(&good)
            .and_then(|key| ca.issue_node(&key, &id, SystemTime::now(), Duration::from_secs(60)))
            .is_ok()
    );
}
