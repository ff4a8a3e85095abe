//! Private-key encodings as Talos writes them, converted from and to the
//! PKCS#8 that ring (and so rcgen) reads and generates. Pure byte work:
//!
//! - Ed25519: PEM label `ED25519 PRIVATE KEY` over a PKCS#8 **v1** body (the
//!   seed only, 48 bytes), as Go's `x509.MarshalPKCS8PrivateKey` writes it.
//! - P-256: SEC1 `EC PRIVATE KEY` with the curve parameters and the public
//!   point (Go's `x509.MarshalECPrivateKey`).
//!
//! Only the shapes these two keys take are handled; anything else is `None`.

const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One DER element: (tag, contents, rest of the input).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let (l, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), rest)
        }
        _ => return None,
    };
    let (body, rest) = rest.split_at_checked(len)?;
    Some((tag, body, rest))
}

fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, body, rest) = tlv(input)?;
    (tag == want).then_some((body, rest))
}

fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n @ 0..=0x7f => out.push(n as u8),
        n @ 0x80..=0xff => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    encode(0x30, &parts.concat())
}

/// The 32-byte seed of an Ed25519 PKCS#8 key, v1 or v2 (ring writes v2).
pub fn ed25519_seed(pkcs8: &[u8]) -> Option<[u8; 32]> {
    let (body, rest) = expect(pkcs8, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (_version, body) = expect(body, 0x02)?;
    let (alg, body) = expect(body, 0x30)?;
    if alg != OID_ED25519 {
        return None;
    }
    let (wrapped, _) = expect(body, 0x04)?;
    let (seed, rest) = expect(wrapped, 0x04)?;
    if !rest.is_empty() {
        return None;
    }
    seed.try_into().ok()
}

/// PKCS#8 v1 of an Ed25519 seed: what Go writes and ring reads
/// (`from_pkcs8_maybe_unchecked`).
pub fn ed25519_pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
    seq(&[
        &[0x02, 0x01, 0x00],
        &seq(&[OID_ED25519]),
        &encode(0x04, &encode(0x04, seed)),
    ])
}

/// The scalar and the public point inside a P-256 ECPrivateKey.
fn ec_parts(ec_private_key: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (body, rest) = expect(ec_private_key, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (version, mut body) = expect(body, 0x02)?;
    if version != [1] {
        return None;
    }
    let scalar;
    (scalar, body) = expect(body, 0x04)?;
    let mut public = None;
    while !body.is_empty() {
        let (tag, inner, rest) = tlv(body)?;
        match tag {
            0xa0 if inner == OID_P256 => {}
            0xa1 => {
                let (bits, _) = expect(inner, 0x03)?;
                // A leading "unused bits" byte of 0, then 0x04 || X || Y.
                public = Some(bits.strip_prefix(&[0])?);
            }
            _ => return None,
        }
        body = rest;
    }
    (scalar.len() == 32 && public.is_none_or(|p| p.len() == 65)).then_some((scalar, public))
}

fn ec_private_key(scalar: &[u8], public: &[u8], with_params: bool) -> Vec<u8> {
    let params = encode(0xa0, OID_P256);
    let point = encode(0xa1, &encode(0x03, &[&[0u8][..], public].concat()));
    let mut parts: Vec<&[u8]> = vec![&[0x02, 0x01, 0x01]];
    let scalar = encode(0x04, scalar);
    parts.push(&scalar);
    if with_params {
        parts.push(&params);
    }
    parts.push(&point);
    seq(&parts)
}

/// SEC1 (`EC PRIVATE KEY`, with curve and public point) from ring's P-256 PKCS#8.
pub fn p256_sec1_from_pkcs8(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (body, rest) = expect(pkcs8, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (_version, body) = expect(body, 0x02)?;
    let (alg, body) = expect(body, 0x30)?;
    if alg != [OID_EC_PUBLIC_KEY, OID_P256].concat() {
        return None;
    }
    let (inner, _) = expect(body, 0x04)?;
    let (scalar, public) = ec_parts(inner)?;
    Some(ec_private_key(scalar, public?, true))
}

/// PKCS#8 (what ring reads) from a SEC1 P-256 key that carries its public point.
pub fn p256_pkcs8_from_sec1(sec1: &[u8]) -> Option<Vec<u8>> {
    let (scalar, public) = ec_parts(sec1)?;
    let inner = ec_private_key(scalar, public?, false);
    Some(seq(&[
        &[0x02, 0x01, 0x00],
        &seq(&[OID_EC_PUBLIC_KEY, OID_P256]),
        &encode(0x04, &inner),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Talos CA key of the upstream test bundle (examples/stability/secrets.yaml).
    const GO_ED25519: &str = "MC4CAQAwBQYDK2VwBCIEIMDWnIDuZRvXPqmmm+znMyIc+vNwf7gbK/JdwX/b7guE";
    /// Its etcd CA key (SEC1, from Go).
    const GO_SEC1: &str = "MHcCAQEEIM7Ceg2MFAnS3tN35zA74hVwTIdNKa+FpPyXTDBuN0TYoAoGCCqGSM49AwEHoUQDQgAE6lSy3SzDQFgALseItyQMii5ZIRdU1FRc3pFwox5AA5TwcgEUCLZ4p12R4jwdj3YxjnlKaoFcz7ATy0NfY7LUkw==";

    #[test]
    fn ed25519_go_key_round_trips_and_loads() {
        let der = proto::pem::base64_decode(GO_ED25519).unwrap();
        let seed = ed25519_seed(&der).unwrap();
        assert_eq!(ed25519_pkcs8_v1(&seed), der, "we write what Go writes");
        let key = rcgen::KeyPair::try_from(der.as_slice()).unwrap();
        assert!(key.is_compatible(&rcgen::PKCS_ED25519));
    }

    #[test]
    fn ring_ed25519_v2_gives_a_v1_with_the_same_public_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let seed = ed25519_seed(&key.serialize_der()).unwrap();
        let again = rcgen::KeyPair::try_from(ed25519_pkcs8_v1(&seed).as_slice()).unwrap();
        assert_eq!(again.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn p256_go_sec1_round_trips_through_pkcs8() {
        let sec1 = proto::pem::base64_decode(GO_SEC1).unwrap();
        let pkcs8 = p256_pkcs8_from_sec1(&sec1).unwrap();
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        assert!(key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256));
        assert_eq!(p256_sec1_from_pkcs8(&pkcs8).unwrap(), sec1);
    }

    #[test]
    fn ring_p256_key_converts_both_ways() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sec1 = p256_sec1_from_pkcs8(&key.serialize_der()).unwrap();
        assert_eq!(sec1.len(), 121, "Go's fixed-size P-256 SEC1");
        let back =
            rcgen::KeyPair::try_from(p256_pkcs8_from_sec1(&sec1).unwrap().as_slice()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn hostile_input_is_none_never_a_panic() {
        let sec1 = proto::pem::base64_decode(GO_SEC1).unwrap();
        for n in 0..sec1.len() {
            assert!(p256_pkcs8_from_sec1(&sec1[..n]).is_none());
        }
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            let mut bytes = sec1.clone();
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let i = state as usize % bytes.len();
            bytes[i] ^= (state >> 24) as u8 | 1;
            let _ = p256_pkcs8_from_sec1(&bytes);
            let _ = ed25519_seed(&bytes);
            let _ = p256_sec1_from_pkcs8(&bytes);
        }
    }
}
