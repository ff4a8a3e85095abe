//! Structural checks on a raw DHCPv4 datagram before anything decodes it, and
//! raw access to options whose bytes must be kept exactly (option 82).
//!
//! dhcproto trusts `hlen` (it slices `chaddr` by it) and silently stops at a
//! malformed option; both are unacceptable for hostile input, so every datagram
//! passes `check` first. This module allocates nothing and never panics.

use std::fmt;

/// Fixed BOOTP header: op..file, RFC 2131 §2 figure 1.
pub const FIXED_LEN: usize = 236;
/// RFC 2131 §3: magic cookie 99.130.83.99 starts the options field.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// BOOTREQUEST op code (RFC 951).
pub const OP_BOOTREQUEST: u8 = 1;
/// Option codes (RFC 2132 unless noted).
pub const OPT_PAD: u8 = 0;
pub const OPT_END: u8 = 255;
pub const OPT_CLIENT_ID: u8 = 61;
/// RFC 3046: relay agent information.
pub const OPT_RELAY_AGENT_INFO: u8 = 82;
/// Longest client identifier we accept. The wire allows 255 (or more with
/// RFC 3396 concatenation); real ones are DUIDs of at most 130 bytes (RFC 8415 §11.1).
pub const MAX_CLIENT_ID_LEN: usize = 130;

/// Why a datagram was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    TooShort {
        len: usize,
    },
    NotBootRequest {
        op: u8,
    },
    HardwareLenTooLong {
        hlen: u8,
    },
    BadMagicCookie,
    TruncatedOption {
        code: u8,
        at: usize,
    },
    MissingEnd,
    ClientIdLength {
        len: usize,
    },
    MessageTypeMissing,
    /// An option whose length is fixed by its RFC came with another length, or
    /// more than once (dhcproto asserts these lengths in debug builds and reads
    /// past them otherwise).
    OptionLength {
        code: u8,
        len: usize,
    },
}

/// Options with a fixed length (or minimum, for 81) that dhcproto decodes
/// without checking it: `(code, min, max)` of the concatenated value.
const FIXED_LENGTHS: &[(u8, usize, usize)] = &[
    (80, 0, 0),   // rapid commit (RFC 4039)
    (81, 3, 255), // client FQDN: flags, rcode1, rcode2, name (RFC 4702)
    (94, 3, 3),   // PXE client network interface: type, major, minor (RFC 4578)
    (152, 4, 4),  // bulk leasequery times (RFC 6926)
    (153, 4, 4),
    (154, 4, 4),
    (155, 4, 4),
];

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::TooShort { len } => {
                write!(f, "datagram of {len} bytes is shorter than a DHCP header")
            }
            Malformed::NotBootRequest { op } => write!(f, "op {op} is not BOOTREQUEST"),
            Malformed::HardwareLenTooLong { hlen } => write!(f, "hlen {hlen} exceeds 16"),
            Malformed::BadMagicCookie => write!(f, "bad magic cookie"),
            Malformed::TruncatedOption { code, at } => {
                write!(f, "option {code} at offset {at} runs past the end")
            }
            Malformed::MissingEnd => write!(f, "options have no END"),
            Malformed::ClientIdLength { len } => write!(f, "client identifier of {len} bytes"),
            Malformed::MessageTypeMissing => write!(f, "no DHCP message type (option 53)"),
            Malformed::OptionLength { code, len } => {
                write!(f, "option {code} with {len} bytes (or repeated)")
            }
        }
    }
}

/// Iterates `(code, data)` over an options area; stops at END. Yields `Err` once on a
/// truncated option and then stops.
struct Options<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
    saw_end: bool,
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8]), Malformed>;
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(&code) = self.buf.get(self.pos) else {
                self.done = true;
                return None;
            };
            match code {
                OPT_PAD => self.pos += 1,
                OPT_END => {
                    self.done = true;
                    self.saw_end = true;
                    return None;
                }
                _ => {
                    let at = FIXED_LEN + 4 + self.pos;
                    let Some(&len) = self.buf.get(self.pos + 1) else {
                        self.done = true;
                        return Some(Err(Malformed::TruncatedOption { code, at }));
                    };
                    let start = self.pos + 2;
                    let end = start + usize::from(len);
                    let Some(data) = self.buf.get(start..end) else {
                        self.done = true;
                        return Some(Err(Malformed::TruncatedOption { code, at }));
                    };
                    self.pos = end;
                    return Some(Ok((code, data)));
                }
            }
        }
        None
    }
}

fn options(datagram: &[u8]) -> Options<'_> {
    Options {
        buf: datagram.get(FIXED_LEN + 4..).unwrap_or(&[]),
        pos: 0,
        done: false,
        saw_end: false,
    }
}

/// Checks that `datagram` is a structurally sound BOOTREQUEST with DHCP options.
pub fn check(datagram: &[u8]) -> Result<(), Malformed> {
    if datagram.len() < FIXED_LEN + 4 {
        return Err(Malformed::TooShort {
            len: datagram.len(),
        });
    }
    if datagram[0] != OP_BOOTREQUEST {
        return Err(Malformed::NotBootRequest { op: datagram[0] });
    }
    if datagram[2] > 16 {
        return Err(Malformed::HardwareLenTooLong { hlen: datagram[2] });
    }
    if datagram[FIXED_LEN..FIXED_LEN + 4] != MAGIC_COOKIE {
        return Err(Malformed::BadMagicCookie);
    }
    let mut it = options(datagram);
    let mut client_id_len = None::<usize>;
    let mut msg_type = false;
    let mut seen_fixed = [false; FIXED_LENGTHS.len()];
    for opt in &mut it {
        let (code, data) = opt?;
        match code {
            // RFC 3396: repeated instances concatenate.
            OPT_CLIENT_ID => *client_id_len.get_or_insert(0) += data.len(),
            53 => msg_type = data.len() == 1,
            _ => {
                if let Some(i) = FIXED_LENGTHS.iter().position(|&(c, _, _)| c == code) {
                    let (_, min, max) = FIXED_LENGTHS[i];
                    if seen_fixed[i] || !(min..=max).contains(&data.len()) {
                        return Err(Malformed::OptionLength {
                            code,
                            len: data.len(),
                        });
                    }
                    seen_fixed[i] = true;
                }
            }
        }
    }
    if !it.saw_end {
        return Err(Malformed::MissingEnd);
    }
    if let Some(len) = client_id_len
        && !(2..=MAX_CLIENT_ID_LEN).contains(&len)
    {
        // RFC 2132 §9.14: minimum length 2.
        return Err(Malformed::ClientIdLength { len });
    }
    if !msg_type {
        return Err(Malformed::MessageTypeMissing);
    }
    Ok(())
}

/// The raw data of the first instance of option `code`, as received.
pub fn raw_option(datagram: &[u8], code: u8) -> Option<&[u8]> {
    options(datagram)
        .filter_map(Result::ok)
        .find(|(c, _)| *c == code)
        .map(|(_, d)| d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid DISCOVER, for tests to mutate.
    pub(crate) fn discover_bytes() -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = 1; // op
        b[1] = 1; // htype ethernet
        b[2] = 6; // hlen
        b[28..34].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        b.extend_from_slice(&MAGIC_COOKIE);
        b.extend_from_slice(&[53, 1, 1, 255]);
        b
    }

    #[test]
    fn check_table() {
        let ok = discover_bytes();
        let with_opts = |opts: &[u8]| {
            let mut b = ok[..FIXED_LEN + 4].to_vec();
            b.extend_from_slice(opts);
            b
        };
        let mut bad_cookie = ok.clone();
        bad_cookie[FIXED_LEN] = 0;
        let mut big_hlen = ok.clone();
        big_hlen[2] = 17;
        let mut reply = ok.clone();
        reply[0] = 2;
        let mut long_id = vec![53, 1, 1];
        for _ in 0..2 {
            long_id.extend_from_slice(&[61, 100]);
            long_id.extend_from_slice(&[7u8; 100]);
        }
        long_id.push(255);
        let cases: Vec<(&str, Vec<u8>, Result<(), Malformed>)> = vec![
            ("valid discover", ok.clone(), Ok(())),
            ("empty", vec![], Err(Malformed::TooShort { len: 0 })),
            (
                "header only",
                ok[..FIXED_LEN].to_vec(),
                Err(Malformed::TooShort { len: FIXED_LEN }),
            ),
            ("bad cookie", bad_cookie, Err(Malformed::BadMagicCookie)),
            (
                "hlen 17",
                big_hlen,
                Err(Malformed::HardwareLenTooLong { hlen: 17 }),
            ),
            ("a reply", reply, Err(Malformed::NotBootRequest { op: 2 })),
            (
                "truncated option",
                with_opts(&[53, 1, 1, 61, 9, 1, 2]),
                Err(Malformed::TruncatedOption { code: 61, at: 243 }),
            ),
            (
                "length byte missing",
                with_opts(&[53, 1, 1, 12]),
                Err(Malformed::TruncatedOption { code: 12, at: 243 }),
            ),
            ("no end", with_opts(&[53, 1, 1]), Err(Malformed::MissingEnd)),
            ("pad then end", with_opts(&[0, 0, 53, 1, 3, 0, 255]), Ok(())),
            (
                "client id too long (concatenated)",
                with_opts(&long_id),
                Err(Malformed::ClientIdLength { len: 200 }),
            ),
            (
                "client id of one byte",
                with_opts(&[53, 1, 1, 61, 1, 1, 255]),
                Err(Malformed::ClientIdLength { len: 1 }),
            ),
            (
                "no message type",
                with_opts(&[12, 1, b'a', 255]),
                Err(Malformed::MessageTypeMissing),
            ),
            // Found by the dhcp fuzz target: dhcproto debug-asserts these lengths.
            (
                "bulk leasequery time of 1 byte",
                with_opts(&[53, 1, 1, 154, 1, 0, 255]),
                Err(Malformed::OptionLength { code: 154, len: 1 }),
            ),
            (
                "rapid commit with data",
                with_opts(&[53, 1, 1, 80, 1, 0, 255]),
                Err(Malformed::OptionLength { code: 80, len: 1 }),
            ),
            ("rapid commit", with_opts(&[53, 1, 1, 80, 0, 255]), Ok(())),
            (
                "PXE network interface of 2 bytes",
                with_opts(&[53, 1, 1, 94, 2, 1, 2, 255]),
                Err(Malformed::OptionLength { code: 94, len: 2 }),
            ),
            (
                "PXE network interface twice (would concatenate to 6)",
                with_opts(&[53, 1, 1, 94, 3, 1, 2, 1, 94, 3, 1, 2, 1, 255]),
                Err(Malformed::OptionLength { code: 94, len: 3 }),
            ),
            (
                "empty client FQDN",
                with_opts(&[53, 1, 1, 81, 0, 255]),
                Err(Malformed::OptionLength { code: 81, len: 0 }),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(check(&input), want, "case {name}");
        }
    }

    #[test]
    fn raw_option_returns_exact_bytes() {
        let mut b = discover_bytes();
        b.truncate(FIXED_LEN + 4);
        b.extend_from_slice(&[53, 1, 1, 82, 6, 1, 2, 0xaa, 0xbb, 9, 0, 255]);
        assert_eq!(raw_option(&b, 82), Some(&[1, 2, 0xaa, 0xbb, 9, 0][..]));
        assert_eq!(raw_option(&b, 61), None);
    }
}
