//! Lowercase hexadecimal, for digests, serial numbers and stored byte strings.

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// `None` unless `s` is an even number of hex digits (either case).
pub fn decode(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a leading '+'.
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)), Some(all));
        assert_eq!(encode(&[0x0a, 0xff]), "0aff");
        assert_eq!(decode("0AFF"), Some(vec![0x0a, 0xff]));
        for bad in ["0", "zz", "+1", "é1"] {
            assert_eq!(decode(bad), None, "case {bad:?}");
        }
    }
}
