//! TFTP packets: parsing what clients send and encoding what we send.
//! RFC 1350 (protocol), RFC 2347 (options/OACK), RFC 2348 (blksize),
//! RFC 2349 (timeout, tsize), RFC 7440 (windowsize). Pure; never panics.

use std::fmt;

/// Opcodes (RFC 1350 §5, RFC 2347).
pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Error codes (RFC 1350 appendix, RFC 2347).
pub const ERR_UNDEFINED: u16 = 0;
pub const ERR_NOT_FOUND: u16 = 1;
pub const ERR_ACCESS: u16 = 2;
pub const ERR_ILLEGAL_OP: u16 = 4;
pub const ERR_UNKNOWN_TID: u16 = 5;
pub const ERR_OPTIONS: u16 = 8;

/// RFC 1350 default block size.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348 bounds.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// RFC 7440 bounds.
pub const MAX_WINDOWSIZE: u16 = 65535;

/// Longest request we parse; real ones are well under 512 bytes (RFC 2347 §2).
pub const MAX_REQUEST_LEN: usize = 1024;

/// Options a client asked for; `None` where it did not (or asked for nonsense,
/// which RFC 2347 says to ignore rather than refuse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requested {
    pub blksize: Option<u16>,
    pub timeout: Option<u8>,
    /// RFC 2349: a client sends tsize=0 on a read to learn the size.
    pub tsize: bool,
    pub windowsize: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Read {
        filename: &'a str,
        mode: Mode,
        options: Requested,
    },
    Write {
        filename: &'a str,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: &'a str,
    },
    /// DATA or OACK from a client: a protocol error for a read-only server.
    Unexpected {
        opcode: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    /// netascii: served as octets (iPXE binaries are binary; no client we serve asks for it).
    Netascii,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    TooShort,
    TooLong,
    UnknownOpcode(u16),
    NotTerminated,
    NotUtf8,
    BadMode,
    EmptyFilename,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort => f.write_str("packet too short"),
            ParseError::TooLong => f.write_str("request too long"),
            ParseError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            ParseError::NotTerminated => f.write_str("string field not NUL-terminated"),
            ParseError::NotUtf8 => f.write_str("string field is not UTF-8"),
            ParseError::BadMode => f.write_str("unknown transfer mode"),
            ParseError::EmptyFilename => f.write_str("empty file name"),
        }
    }
}

/// Splits NUL-terminated strings.
fn strings(mut rest: &[u8]) -> Result<Vec<&str>, ParseError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::NotTerminated)?;
        out.push(std::str::from_utf8(&rest[..end]).map_err(|_| ParseError::NotUtf8)?);
        rest = &rest[end + 1..];
    }
    Ok(out)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, ParseError> {
    let opcode = u16_at(datagram, 0).ok_or(ParseError::TooShort)?;
    match opcode {
        OP_RRQ | OP_WRQ => {
            if datagram.len() > MAX_REQUEST_LEN {
                return Err(ParseError::TooLong);
            }
            let fields = strings(&datagram[2..])?;
            let (filename, mode) = match fields.as_slice() {
                [f, m, ..] => (*f, *m),
                _ => return Err(ParseError::NotTerminated),
            };
            if filename.is_empty() {
                return Err(ParseError::EmptyFilename);
            }
            if opcode == OP_WRQ {
                return Ok(Packet::Write { filename });
            }
            let mode = match mode.to_ascii_lowercase().as_str() {
                "octet" => Mode::Octet,
                "netascii" => Mode::Netascii,
                _ => return Err(ParseError::BadMode),
            };
            let mut options = Requested::default();
            // RFC 2347: option names are case-insensitive; unknown ones are ignored.
            for pair in fields[2..].chunks(2) {
                let [name, value] = pair else { break };
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "blksize" => {
                        options.blksize = value
                            .parse::<u32>()
                            .ok()
                            .filter(|&v| v >= u32::from(MIN_BLKSIZE))
                            .map(|v| v.min(u32::from(MAX_BLKSIZE)) as u16)
                    }
                    "timeout" => options.timeout = value.parse::<u8>().ok().filter(|&v| v >= 1),
                    "tsize" => options.tsize = value.parse::<u64>().is_ok(),
                    "windowsize" => {
                        options.windowsize = value
                            .parse::<u32>()
                            .ok()
                            .filter(|&v| v >= 1)
                            .map(|v| v.min(65535) as u16)
                    }
                    _ => {}
                }
            }
            Ok(Packet::Read {
                filename,
                mode,
                options,
            })
        }
        OP_ACK => Ok(Packet::Ack {
            block: u16_at(datagram, 2).ok_or(ParseError::TooShort)?,
        }),
        OP_ERROR => {
            let code = u16_at(datagram, 2).ok_or(ParseError::TooShort)?;
            let text = &datagram[4..];
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            let message = std::str::from_utf8(&text[..end]).unwrap_or("");
            Ok(Packet::Error { code, message })
        }
        OP_DATA | OP_OACK => Ok(Packet::Unexpected { opcode }),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

/// Options we agreed to, echoed in an OACK (RFC 2347 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub blksize: Option<u16>,
    pub timeout: Option<u8>,
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

impl Agreed {
    pub fn is_empty(&self) -> bool {
        self.blksize.is_none()
            && self.timeout.is_none()
            && self.tsize.is_none()
            && self.windowsize.is_none()
    }
}

pub fn encode_oack(agreed: &Agreed, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_OACK.to_be_bytes());
    let mut put = |name: &str, value: String| {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    };
    if let Some(v) = agreed.blksize {
        put("blksize", v.to_string());
    }
    if let Some(v) = agreed.timeout {
        put("timeout", v.to_string());
    }
    if let Some(v) = agreed.tsize {
        put("tsize", v.to_string());
    }
    if let Some(v) = agreed.windowsize {
        put("windowsize", v.to_string());
    }
}

/// Writes the DATA header; the caller appends the payload.
pub fn encode_data_header(block: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

pub fn encode_error(code: u16, message: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(parts: &[&str]) -> Vec<u8> {
        let mut v = OP_RRQ.to_be_bytes().to_vec();
        for p in parts {
            v.extend_from_slice(p.as_bytes());
            v.push(0);
        }
        v
    }

    #[test]
    fn parse_table() {
        let all = Requested {
            blksize: Some(1468),
            timeout: Some(3),
            tsize: true,
            windowsize: Some(4),
        };
        let cases: Vec<(&str, Vec<u8>, Result<Packet<'static>, ParseError>)> = vec![
            (
                "plain rrq",
                rrq(&["undionly.kpxe", "octet"]),
                Ok(Packet::Read {
                    filename: "undionly.kpxe",
                    mode: Mode::Octet,
                    options: Requested::default(),
                }),
            ),
            (
                "ovmf options, mixed case",
                rrq(&[
                    "ipxe.efi",
                    "OCTET",
                    "tsize",
                    "0",
                    "BLKSIZE",
                    "1468",
                    "windowsize",
                    "4",
                    "timeout",
                    "3",
                ]),
                Ok(Packet::Read {
                    filename: "ipxe.efi",
                    mode: Mode::Octet,
                    options: all,
                }),
            ),
            (
                "out-of-range options are ignored, not refused",
                rrq(&[
                    "f",
                    "octet",
                    "blksize",
                    "4",
                    "timeout",
                    "0",
                    "windowsize",
                    "0",
                    "tsize",
                    "x",
                    "bogus",
                    "1",
                ]),
                Ok(Packet::Read {
                    filename: "f",
                    mode: Mode::Octet,
                    options: Requested::default(),
                }),
            ),
            (
                "huge blksize is clamped",
                rrq(&["f", "octet", "blksize", "99999999"]),
                Ok(Packet::Read {
                    filename: "f",
                    mode: Mode::Octet,
                    options: Requested {
                        blksize: Some(MAX_BLKSIZE),
                        ..Requested::default()
                    },
                }),
            ),
            (
                "wrq",
                {
                    let mut v = rrq(&["f", "octet"]);
                    v[1] = 2;
                    v
                },
                Ok(Packet::Write { filename: "f" }),
            ),
            (
                "ack",
                vec![0, 4, 0xff, 0xfe],
                Ok(Packet::Ack { block: 0xfffe }),
            ),
            (
                "error",
                vec![0, 5, 0, 8, b'n', b'o', 0],
                Ok(Packet::Error {
                    code: 8,
                    message: "no",
                }),
            ),
            (
                "error without nul",
                vec![0, 5, 0, 0],
                Ok(Packet::Error {
                    code: 0,
                    message: "",
                }),
            ),
            (
                "data from client",
                vec![0, 3, 0, 1],
                Ok(Packet::Unexpected { opcode: 3 }),
            ),
            ("empty", vec![], Err(ParseError::TooShort)),
            ("one byte", vec![0], Err(ParseError::TooShort)),
            ("short ack", vec![0, 4, 1], Err(ParseError::TooShort)),
            (
                "unknown opcode",
                vec![0, 9],
                Err(ParseError::UnknownOpcode(9)),
            ),
            (
                "unterminated",
                {
                    let mut v = rrq(&["f", "octet"]);
                    v.pop();
                    v
                },
                Err(ParseError::NotTerminated),
            ),
            ("no mode", rrq(&["f"]), Err(ParseError::NotTerminated)),
            ("bad mode", rrq(&["f", "mail"]), Err(ParseError::BadMode)),
            (
                "empty name",
                rrq(&["", "octet"]),
                Err(ParseError::EmptyFilename),
            ),
            (
                "not utf8",
                {
                    let mut v = vec![0, 1, 0xff, 0];
                    v.extend_from_slice(b"octet\0");
                    v
                },
                Err(ParseError::NotUtf8),
            ),
            (
                "too long",
                rrq(&[&"a".repeat(2000), "octet"]),
                Err(ParseError::TooLong),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse(&input), want, "case {name}");
        }
    }

    #[test]
    fn oack_echoes_only_agreed_options() {
        let mut out = Vec::new();
        encode_oack(
            &Agreed {
                blksize: Some(1468),
                timeout: None,
                tsize: Some(42),
                windowsize: Some(4),
            },
            &mut out,
        );
        assert_eq!(
            out,
            b"\x00\x06blksize\x001468\x00tsize\x0042\x00windowsize\x004\x00"
        );
    }
}
