//! Fuzz entry points: each takes arbitrary bytes, runs one piece of the hub that
//! reads hostile input, and asserts what must hold for every input (a panic is
//! the finding). The targets in `fuzz/` call these, and `tests/fuzz_corpus.rs`
//! replays the committed corpus through them on every `cargo test`, so a crash
//! once found stays fixed without the fuzzer.
//!
//! Pure: no sockets, no store, no clock reads (time is derived from the input).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};

use crate::boot::{BootTable, UefiX64Loader};
use crate::config::{Config, DhcpMode, LeaseKey};
use crate::dhcp::decide::{self, Arrival, Change, Policy, ServicePort, State};
use crate::dhcp::wire;
use crate::enroll::NodeId;
use crate::enroll::ca::{self, Ca};
use crate::enroll::token::{JoinToken, TokenRecord};
use crate::http::{range, render};
use crate::profiles::{Facts, Profile};
use crate::tftp::packet::{self, Packet};
use crate::tftp::session::{Limits, Session, Step};

/// A fuzz entry point: any bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target, by the name its directory in `fuzz/corpus/` has.
pub const TARGETS: &[(&str, Target)] = &[
    ("dhcp", dhcp),
    ("tftp", tftp),
    ("csr", csr),
    ("config", config),
    ("profile", profile),
    ("ipxe_query", ipxe_query),
    ("token", token),
];

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Most datagrams one DHCP input may hold; enough to walk DISCOVER → REQUEST →
/// RENEW → RELEASE → DECLINE and back.
const MAX_DATAGRAMS: usize = 8;

/// The DHCP config the target (and the decision tests) run against: two
/// subnets, a small pool (three addresses) so exhaustion and reuse are
/// reachable, and a reservation.
pub(crate) fn dhcp_config(mode: DhcpMode, key: LeaseKey) -> Config {
    let text = r#"
state_dir = "/nonexistent"
[dhcp]
mode = "full"
interfaces = ["eth0"]
[[dhcp.subnet]]
network = "10.0.0.0/24"
pools = [{ start = "10.0.0.100", end = "10.0.0.102" }]
lease_time = 600
routers = ["10.0.0.1"]
dns = ["10.0.0.1"]
domain = "lab.internal"
[[dhcp.subnet.reservation]]
mac = "02:00:00:00:00:aa"
address = "10.0.0.50"
hostname = "reserved"
[[dhcp.subnet]]
network = "10.9.0.0/24"
pools = [{ start = "10.9.0.10", end = "10.9.0.20" }]
"#;
    let mut c = match Config::parse(text) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz DHCP config must parse: {e}"),
    };
    c.dhcp.mode = mode;
    c.dhcp.lease_key = key;
    c.boot = BootTable::new(8080, UefiX64Loader::IpxeEfi);
    c
}

/// One config per (mode, lease key), built once.
fn dhcp_configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let mut v = Vec::new();
        for mode in [DhcpMode::Full, DhcpMode::Proxy, DhcpMode::Auto] {
            for key in [LeaseKey::ClientId, LeaseKey::Mac] {
                v.push(dhcp_config(mode, key));
            }
        }
        v
    })
}

/// DHCP, from raw datagram to decision: `wire::check` → dhcproto decode →
/// `decide`, over a sequence of datagrams sharing one state.
///
/// Input: records of `[control, len_hi, len_lo, datagram...]`. The first
/// record's control picks the mode and lease key; every control picks the port
/// (bit 0), the destination (bit 1: broadcast or our address), the source
/// (bit 2: a relay or 0.0.0.0), and how far the clock moves before it (high nibble,
/// in steps of 100 s).
///
/// Invariants: no panic; a reply decodes, is a BOOTREPLY with the request's xid,
/// fits the client's limit (548 bytes without option 57), and gives an address
/// only from a configured subnet; an OFFER persists no lease; every lease the
/// state holds is inside a subnet, and no client holds two.
pub fn dhcp(data: &[u8]) {
    let configs = dhcp_configs();
    let mut rest = data;
    let mut state = State::default();
    let mut now: u64 = 1_000_000;
    let mut cfg: Option<&Config> = None;
    for _ in 0..MAX_DATAGRAMS {
        let [control, hi, lo, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        let config = *cfg.get_or_insert_with(|| &configs[usize::from(*control) % configs.len()]);
        now += u64::from(control >> 4) * 100;
        if wire::check(datagram).is_err() {
            continue;
        }
        let Ok(msg) = Message::decode(&mut Decoder::new(datagram)) else {
            continue;
        };
        let arrival = Arrival {
            local: SERVER,
            dst: if control & 2 != 0 {
                Ipv4Addr::BROADCAST
            } else {
                SERVER
            },
            src: if control & 4 != 0 {
                SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 67)
            } else {
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
            },
            port: if control & 1 != 0 {
                ServicePort::PxeBootServer
            } else {
                ServicePort::Dhcp
            },
        };
        let policy = Policy {
            dhcp: &config.dhcp,
            boot: &config.boot,
        };
        let outcome = decide::decide(&msg, datagram, &arrival, &policy, &mut state, now);
        if let Ok(reply) = &outcome.verdict {
            check_reply(&msg, reply, config, &outcome.persist);
        }
        check_leases(&state, config);
    }
}

fn check_reply(req: &Message, reply: &decide::Reply, config: &Config, persist: &[Change]) {
    let limit = match req.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => usize::from(*n).saturating_sub(28).max(548),
        _ => 548,
    };
    assert!(
        reply.bytes.len() <= limit,
        "reply of {} bytes over the client's limit {limit}",
        reply.bytes.len()
    );
    let decoded = match Message::decode(&mut Decoder::new(&reply.bytes)) {
        Ok(m) => m,
        Err(e) => panic!("our own reply does not decode: {e}"),
    };
    assert_eq!(decoded.opcode(), dhcproto::v4::Opcode::BootReply);
    assert_eq!(decoded.xid(), req.xid(), "reply xid");
    assert_eq!(decoded.opts().msg_type(), Some(reply.kind));
    if !reply.yiaddr.is_unspecified() {
        assert!(
            config.dhcp.subnet_containing(reply.yiaddr).is_some(),
            "address {} outside every subnet",
            reply.yiaddr
        );
    }
    if reply.kind == MessageType::Offer {
        assert!(
            !persist
                .iter()
                .any(|c| matches!(c, Change::PutLease(_) | Change::DeleteLease(_))),
            "an OFFER persisted a lease"
        );
    }
}

fn check_leases(state: &State, config: &Config) {
    let mut clients = std::collections::HashSet::new();
    for lease in state.leases.iter() {
        assert!(
            config.dhcp.subnet_containing(lease.addr).is_some(),
            "lease {} outside every subnet",
            lease.addr
        );
        assert!(
            clients.insert(lease.key.as_bytes().to_vec()),
            "one client holds two leases"
        );
    }
}

/// TFTP: request parsing, option negotiation and a whole read session.
///
/// Input: `[len_hi, len_lo, request..., size (4 bytes), events...]`; each event
/// is `[kind, hi, lo]`: ACK of wire block `hi lo`, a client ERROR, or the clock
/// moving by `lo` × 100 ms then the timer firing.
///
/// Invariants: no panic; the OACK names only what was asked and stays within the
/// limits; DATA blocks are within the file and at most one window per event; a
/// duplicate ACK never causes a retransmission; nothing follows Done/Failed; the
/// session ends within the retry budget once the client goes silent.
pub fn tftp(data: &[u8]) {
    let [hi, lo, tail @ ..] = data else { return };
    let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
    let (request, rest) = tail.split_at(len);
    let Ok(Packet::Read { options, .. }) = packet::parse(request) else {
        return;
    };
    let (size, events) = match rest {
        [a, b, c, d, events @ ..] => (u64::from(u32::from_be_bytes([*a, *b, *c, *d])), events),
        _ => (1000, &[][..]),
    };
    let limits = Limits {
        max_blksize: 1468,
        max_window: 16,
        default_timeout: Duration::from_secs(1),
        max_retries: 3,
        transfer_timeout: Duration::from_secs(60),
    };
    let t0 = Instant::now();
    let mut now = t0;
    let (mut s, steps) = Session::start(options, size, limits, now);
    let blksize = s.blksize();
    assert!((8..=u64::from(limits.max_blksize)).contains(&blksize) || blksize == 512);
    let last_block = size / blksize + 1;
    let window = u64::from(options.windowsize.unwrap_or(1).clamp(1, limits.max_window));
    let mut finished = false;
    let give_up_at = t0 + limits.transfer_timeout;
    let check = |steps: &[Step], finished: &mut bool, now: Instant| {
        let data = steps
            .iter()
            .filter(|s| matches!(s, Step::SendData { .. }))
            .count();
        assert!(
            data as u64 <= window,
            "{data} DATA for one event, window {window}"
        );
        for step in steps {
            assert!(!*finished, "a step after the end: {step:?}");
            match *step {
                Step::SendOack(agreed) => {
                    assert!(agreed.blksize.is_none_or(|b| b <= limits.max_blksize));
                    assert!(
                        agreed
                            .windowsize
                            .is_none_or(|w| (1..=limits.max_window).contains(&w))
                    );
                    assert_eq!(agreed.blksize.is_some(), options.blksize.is_some());
                    assert_eq!(agreed.tsize, options.tsize.then_some(size));
                    let mut out = Vec::new();
                    packet::encode_oack(&agreed, &mut out);
                    assert!(out.len() < 512, "OACK too long");
                }
                Step::SendData { block } => {
                    assert!(
                        (1..=last_block).contains(&block),
                        "block {block} of {last_block}"
                    );
                    assert!(now < give_up_at, "DATA after the whole-transfer limit");
                }
                Step::Done | Step::Failed(_) => *finished = true,
            }
        }
    };
    check(&steps, &mut finished, now);
    let mut last_ack: Option<u16> = None;
    for ev in events.chunks_exact(3).take(4096) {
        let arg = u16::from_be_bytes([ev[1], ev[2]]);
        let steps = match ev[0] % 3 {
            0 => {
                let steps = s.on_ack(arg, now);
                if last_ack == Some(arg) {
                    assert!(
                        !steps.iter().any(|s| matches!(s, Step::SendData { .. })),
                        "a duplicate ACK {arg} caused DATA"
                    );
                }
                last_ack = Some(arg);
                steps
            }
            1 => s.on_error(arg),
            _ => {
                now += Duration::from_millis(u64::from(ev[2]) * 100);
                s.on_timer(now)
            }
        };
        check(&steps, &mut finished, now);
        assert_eq!(finished, s.is_finished());
    }
    // The client goes silent: the timer alone must end the transfer, within the
    // retries (or the whole-transfer limit).
    let mut timer_steps = 0;
    while !s.is_finished() {
        now = now.max(s.deadline());
        let steps = s.on_timer(now);
        check(&steps, &mut finished, now);
        timer_steps += 1;
        assert!(timer_steps <= 2 + limits.max_retries, "no end in sight");
    }
}

fn fuzz_ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        match Ca::generate(
            "fuzz",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ) {
            Ok(ca) => ca,
            Err(e) => panic!("a CA for the fuzz target: {e}"),
        }
    })
}

/// CSR handling: DER (or PEM) → signature check → public key → a node
/// certificate, read back.
///
/// Invariants: no panic; a request that passes yields a certificate for exactly
/// the node we name, whatever the request asked for.
pub fn csr(data: &[u8]) {
    let der = match std::str::from_utf8(data) {
        Ok(text) if text.contains("-----BEGIN") => {
            match ca::pem_decode(text, "CERTIFICATE REQUEST") {
                Some(der) => der,
                None => return,
            }
        }
        _ => data.to_vec(),
    };
    let Ok(key) = ca::csr_public_key(&der) else {
        return;
    };
    let node = NodeId::parse("n0123456789ab").expect("a valid node id");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100);
    let issued = match fuzz_ca().issue_node(&key, &node, now, Duration::from_secs(3600)) {
        Ok(issued) => issued,
        // An algorithm rcgen cannot express is refused, not a crash.
        Err(_) => return,
    };
    let facts = ca::cert_facts(&issued.der).expect("our own certificate parses");
    assert_eq!(
        facts.node.as_ref(),
        Some(&node),
        "the certificate names our node"
    );
    assert_eq!(facts.serial, issued.serial);
}

/// The hub's TOML config: parse and validate.
///
/// Invariants: no panic; an accepted config's pools and reservations sit inside
/// their subnets, and an accepted config parses again from the same text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Config::parse(text) else { return };
    for subnet in &c.dhcp.subnets {
        for pool in &subnet.pools {
            assert!(subnet.network.contains(&pool.start) && subnet.network.contains(&pool.end));
        }
    }
    assert!(Config::parse(text).is_ok());
}

/// Hardware profiles: `profile TOML \0 inventory JSON`. Parse the profile, its
/// Talos patches, and match it against the inventory and choose a disk.
///
/// Invariants: no panic; a chosen disk is one of the inventory's.
pub fn profile(data: &[u8]) {
    let (toml_part, json_part) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(toml_part) else {
        return;
    };
    let facts = serde_json::from_slice::<serde_json::Value>(json_part)
        .map(|v| Facts::from_inventory(&v))
        .unwrap_or_default();
    let Ok(p) = Profile::parse("fuzz.toml", text) else {
        return;
    };
    let _ = p.patches();
    let _ = p.score(&facts);
    if let Ok(choice) = p.choose_disk(&facts) {
        assert!(
            facts
                .disks
                .iter()
                .any(|d| format!("/dev/{}", d.name) == choice.device),
            "chose {} which the inventory does not list",
            choice.device
        );
    }
}

/// The iPXE per-machine query, the Host header and the Range header: what the
/// HTTP boot path reads from the network before rendering a script.
///
/// Input: `query \n host \n range`.
///
/// Invariants: no panic; what parses renders a script in which no query value
/// starts a new line (no iPXE command injection); a range is inside the file.
pub fn ipxe_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let query = parts.next().unwrap_or("");
    let host = parts.next().unwrap_or("10.0.0.1:8080");
    let range_header = parts.next();
    for size in [0u64, 1, 850_528] {
        match range::span(range_header, size) {
            range::Span::Partial { start, end } => {
                assert!(start <= end && end < size, "range {start}-{end} of {size}")
            }
            range::Span::Full | range::Span::Unsatisfiable => {}
        }
    }
    let Ok(q) = render::parse_query(query) else {
        return;
    };
    for v in [q.uuid.as_deref(), q.serial.as_deref()]
        .into_iter()
        .flatten()
    {
        assert!(
            !v.contains(['\n', '\r', '\0']),
            "a control character survived: {v:?}"
        );
    }
    if !render::valid_host(host) {
        return;
    }
    let base = format!("http://{host}");
    let token = JoinToken::generate().reveal();
    let script = render::discovery_script(&render::Discovery {
        base: &base,
        platform: q.platform,
        available: true,
        console: "ttyS0",
        enroll: Some(render::EnrollArgs {
            ca: "sha256:00",
            token: &token,
            port: 9443,
        }),
        agent: true,
    });
    for line in script.lines() {
        let cmd = line.split_whitespace().next().unwrap_or("");
        assert!(
            ["#!ipxe", "imgfree", "kernel", "initrd", "boot"].contains(&cmd),
            "unexpected script line {line:?}"
        );
    }
}

/// Join tokens: parse, then check against a record of itself and of another.
///
/// Invariants: no panic; a parsed token prints back as its input and passes its
/// own record; a token with any other secret is refused.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = JoinToken::parse(text) else {
        return;
    };
    assert_eq!(t.reveal(), text);
    assert!(text.starts_with(t.id()));
    let own = TokenRecord::new(&t, String::new(), 100, 60, Some(1), false);
    assert!(own.validate());
    assert_eq!(own.check(&t, 120), Ok(()));
    assert!(own.check(&t, 160).is_err(), "expired");
    let other = JoinToken::generate();
    if other.reveal() != text {
        let theirs = TokenRecord::new(&other, String::new(), 100, 60, None, false);
        assert!(
            theirs.check(&t, 120).is_err(),
            "another token's record accepted"
        );
    }
    if let Some(t2) = text
        .get(..text.len() - 1)
        .and_then(|s| JoinToken::parse(s).ok())
    {
        panic!("a prefix parsed too: {t2:?}");
    }
}
