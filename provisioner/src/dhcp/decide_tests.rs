#![allow(clippy::type_complexity)] // case tables read best inline
//! Table-driven tests of the decision core, one case per rule.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{Architecture, DhcpOption, Flags, HType, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::decide::*;
use super::leases::{ClientKey, LeaseState, Secs};
use crate::boot::Firmware;
use crate::config::{Config, DhcpMode, LeaseKey, MacAddr};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const NOW: Secs = 1_000_000;

/// The fuzz target's DHCP config (two subnets, a 3-address pool, a reservation).
fn config(mode: DhcpMode, key: LeaseKey) -> Config {
    crate::fuzz::dhcp_config(mode, key)
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

/// A request builder.
fn req(kind: MessageType, m: u8) -> Message {
    let mut msg = Message::default();
    msg.set_xid(0x1000 + u32::from(m))
        .set_htype(HType::Eth)
        .set_chaddr(&mac(m));
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    msg
}

fn with(mut msg: Message, opts: Vec<DhcpOption>) -> Message {
    for o in opts {
        msg.opts_mut().insert(o);
    }
    msg
}

fn pxe(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        DhcpOption::ClientMachineIdentifier(vec![
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ]),
    ]
}

fn bytes(msg: &Message) -> Vec<u8> {
    let mut b = Vec::new();
    msg.encode(&mut Encoder::new(&mut b)).expect("encode");
    b
}

fn arrival_bcast() -> Arrival {
    Arrival {
        local: LOCAL,
        dst: Ipv4Addr::BROADCAST,
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        port: ServicePort::Dhcp,
    }
}

fn run(c: &Config, st: &mut State, msg: &Message, arrival: Arrival, now: Secs) -> Outcome {
    let raw = bytes(msg);
    super::wire::check(&raw).expect("test request must pass the wire check");
    decide(
        msg,
        &raw,
        &arrival,
        &Policy {
            dhcp: &c.dhcp,
            boot: &c.boot,
        },
        st,
        now,
    )
}

fn reply(o: &Outcome) -> (Message, Dest) {
    let r = o
        .verdict
        .as_ref()
        .unwrap_or_else(|why| panic!("expected a reply, got {why:?}"));
    assert!(
        r.bytes.len() >= 300,
        "replies are padded to the BOOTP minimum"
    );
    (
        Message::decode(&mut Decoder::new(&r.bytes)).expect("reply decodes"),
        r.dest,
    )
}

/// The `file` field as a client reads it: up to the first NUL.
fn file(m: &Message) -> Option<&[u8]> {
    m.fname()
        .map(|f| f.split(|&b| b == 0).next().unwrap_or_default())
}

fn kind(m: &Message) -> MessageType {
    m.opts().msg_type().expect("type")
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

/// DISCOVER then SELECTING REQUEST; returns the bound address.
fn bind(c: &Config, st: &mut State, m: u8) -> Ipv4Addr {
    let offer = run(c, st, &req(MessageType::Discover, m), arrival_bcast(), NOW);
    let (offer, _) = reply(&offer);
    let r = with(
        req(MessageType::Request, m),
        vec![
            DhcpOption::ServerIdentifier(LOCAL),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ],
    );
    let ack = run(c, st, &r, arrival_bcast(), NOW);
    let (ack_msg, _) = reply(&ack);
    assert_eq!(kind(&ack_msg), MessageType::Ack);
    ack_msg.yiaddr()
}

#[test]
fn dora_offers_from_pool_and_acks_only_with_a_durable_change() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    let out = run(
        &c,
        &mut st,
        &req(MessageType::Discover, 1),
        arrival_bcast(),
        NOW,
    );
    assert!(out.persist.is_empty(), "offers are never persisted");
    let (offer, _) = reply(&out);
    assert_eq!(kind(&offer), MessageType::Offer);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(
        opt(&offer, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(LOCAL))
    );
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        opt(&offer, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(300))
    );
    assert_eq!(
        opt(&offer, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(525))
    );
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );

    let r = with(
        req(MessageType::Request, 1),
        vec![
            DhcpOption::ServerIdentifier(LOCAL),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ],
    );
    let out = run(&c, &mut st, &r, arrival_bcast(), NOW);
    let (ack, _) = reply(&out);
    assert_eq!(kind(&ack), MessageType::Ack);
    match out.persist.as_slice() {
        [Change::PutLease(l)] => {
            assert_eq!(
                (l.addr, l.state, l.expires),
                (offer.yiaddr(), LeaseState::Bound, NOW + 600)
            );
        }
        other => panic!("ACK must carry exactly its lease to persist, got {other:?}"),
    }
}

#[test]
fn reply_destination_follows_rfc2131_section_4_1() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let giaddr = Ipv4Addr::new(10, 9, 0, 1);
    let cases: Vec<(&str, Message, Dest)> = vec![
        (
            "broadcast bit",
            {
                let mut m = req(MessageType::Discover, 1);
                m.set_flags(Flags::default().set_broadcast());
                m
            },
            Dest::Broadcast,
        ),
        (
            "no address, no broadcast bit: unicast to chaddr",
            req(MessageType::Discover, 1),
            Dest::UnicastHw {
                addr: Ipv4Addr::new(10, 0, 0, 100),
                mac: MacAddr(mac(1)),
            },
        ),
        (
            "relayed: to giaddr:67",
            {
                let mut m = req(MessageType::Discover, 1);
                m.set_giaddr(giaddr);
                m
            },
            Dest::Unicast(SocketAddrV4::new(giaddr, 67)),
        ),
        (
            "ciaddr set: to ciaddr:68",
            {
                let mut m = req(MessageType::Discover, 1);
                m.set_ciaddr(Ipv4Addr::new(10, 0, 0, 77));
                m
            },
            Dest::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 68)),
        ),
    ];
    for (name, m, want) in cases {
        let mut st = State::default();
        let out = run(&c, &mut st, &m, arrival_bcast(), NOW);
        assert_eq!(reply(&out).1, want, "case {name}");
    }
}

#[test]
fn address_choice_order_reservation_previous_requested_pool() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    // Reservation wins over a requested address.
    let m = with(
        req(MessageType::Discover, 0xaa),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 101))],
    );
    let (offer, _) = reply(&run(&c, &mut st, &m, arrival_bcast(), NOW));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 50));
    assert_eq!(
        opt(&offer, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("reserved".into()))
    );
    // A free requested pool address is honoured.
    let m = with(
        req(MessageType::Discover, 2),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 102))],
    );
    assert_eq!(
        reply(&run(&c, &mut st, &m, arrival_bcast(), NOW))
            .0
            .yiaddr(),
        Ipv4Addr::new(10, 0, 0, 102)
    );
    // A requested address outside the pool is not; the pool is used.
    let m = with(
        req(MessageType::Discover, 3),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 7))],
    );
    assert_eq!(
        reply(&run(&c, &mut st, &m, arrival_bcast(), NOW))
            .0
            .yiaddr(),
        Ipv4Addr::new(10, 0, 0, 100)
    );
    // A reserved address is never handed to someone else, even on request.
    let m = with(
        req(MessageType::Discover, 4),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 50))],
    );
    assert_eq!(
        reply(&run(&c, &mut st, &m, arrival_bcast(), NOW))
            .0
            .yiaddr(),
        Ipv4Addr::new(10, 0, 0, 101)
    );
    // The pool (3 addresses) is now held by offers: the next client gets nothing.
    let out = run(
        &c,
        &mut st,
        &req(MessageType::Discover, 5),
        arrival_bcast(),
        NOW,
    );
    assert_eq!(out.verdict.err(), Some(Ignore::PoolExhausted));
    // Offers expire after offer_hold_secs; then the pool frees up.
    let out = run(
        &c,
        &mut st,
        &req(MessageType::Discover, 5),
        arrival_bcast(),
        NOW + 31,
    );
    assert!(out.verdict.is_ok(), "expired offers free their addresses");
}

#[test]
fn a_client_keeps_its_address_across_discovers() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    let a = bind(&c, &mut st, 1);
    bind(&c, &mut st, 2);
    let (offer, _) = reply(&run(
        &c,
        &mut st,
        &req(MessageType::Discover, 1),
        arrival_bcast(),
        NOW + 100,
    ));
    assert_eq!(offer.yiaddr(), a);
}

#[test]
fn request_state_rules_of_section_4_3_2() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let other_server = Ipv4Addr::new(10, 0, 0, 254);
    let unicast = Arrival {
        dst: LOCAL,
        src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100), 68),
        ..arrival_bcast()
    };
    type Setup = fn(&Config, &mut State);
    let none: Setup = |_, _| {};
    let bound1: Setup = |c, st| {
        bind(c, st, 1);
    };
    let bound2: Setup = |c, st| {
        bind(c, st, 2);
    };
    let a100 = Ipv4Addr::new(10, 0, 0, 100);
    let cases: Vec<(&str, Setup, Message, Arrival, Result<MessageType, Ignore>)> = vec![
        (
            "selecting another server",
            none,
            with(
                req(MessageType::Request, 1),
                vec![
                    DhcpOption::ServerIdentifier(other_server),
                    DhcpOption::RequestedIpAddress(a100),
                ],
            ),
            arrival_bcast(),
            Err(Ignore::NotOurServerId),
        ),
        (
            "selecting an address held by someone else",
            bound2,
            with(
                req(MessageType::Request, 1),
                vec![
                    DhcpOption::ServerIdentifier(LOCAL),
                    DhcpOption::RequestedIpAddress(a100),
                ],
            ),
            arrival_bcast(),
            Ok(MessageType::Nak),
        ),
        (
            "selecting an address outside pool",
            none,
            with(
                req(MessageType::Request, 1),
                vec![
                    DhcpOption::ServerIdentifier(LOCAL),
                    DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 9)),
                ],
            ),
            arrival_bcast(),
            Ok(MessageType::Nak),
        ),
        (
            "init-reboot, unknown client: silent",
            none,
            with(
                req(MessageType::Request, 1),
                vec![DhcpOption::RequestedIpAddress(a100)],
            ),
            arrival_bcast(),
            Err(Ignore::UnknownClientInitReboot),
        ),
        (
            "init-reboot, wrong network: NAK",
            none,
            with(
                req(MessageType::Request, 1),
                vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                    192, 168, 1, 5,
                ))],
            ),
            arrival_bcast(),
            Ok(MessageType::Nak),
        ),
        (
            "init-reboot, own lease: ACK",
            bound1,
            with(
                req(MessageType::Request, 1),
                vec![DhcpOption::RequestedIpAddress(a100)],
            ),
            arrival_bcast(),
            Ok(MessageType::Ack),
        ),
        (
            "init-reboot, another address than its lease: NAK",
            bound1,
            with(
                req(MessageType::Request, 1),
                vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 101))],
            ),
            arrival_bcast(),
            Ok(MessageType::Nak),
        ),
        (
            "renewing own lease: ACK",
            bound1,
            {
                let mut m = req(MessageType::Request, 1);
                m.set_ciaddr(a100);
                m
            },
            unicast,
            Ok(MessageType::Ack),
        ),
        (
            "rebinding own lease: ACK",
            bound1,
            {
                let mut m = req(MessageType::Request, 1);
                m.set_ciaddr(a100);
                m
            },
            arrival_bcast(),
            Ok(MessageType::Ack),
        ),
        (
            "renewing someone else's address: NAK",
            bound2,
            {
                let mut m = req(MessageType::Request, 1);
                m.set_ciaddr(a100);
                m
            },
            unicast,
            Ok(MessageType::Nak),
        ),
        (
            "renewing from the wrong network: NAK",
            none,
            {
                let mut m = req(MessageType::Request, 1);
                m.set_ciaddr(Ipv4Addr::new(192, 168, 7, 7));
                m
            },
            unicast,
            Ok(MessageType::Nak),
        ),
        (
            "no server id, no requested address, no ciaddr",
            none,
            req(MessageType::Request, 1),
            arrival_bcast(),
            Err(Ignore::MissingRequestedAddress),
        ),
    ];
    for (name, setup, msg, arrival, want) in cases {
        let mut st = State::default();
        setup(&c, &mut st);
        let out = run(&c, &mut st, &msg, arrival, NOW + 10);
        let got = out.verdict.as_ref().map(|r| r.kind).map_err(|e| *e);
        assert_eq!(got, want, "case {name}");
        if want == Ok(MessageType::Nak) {
            assert_eq!(
                out.verdict.as_ref().map(|r| r.dest).ok(),
                Some(Dest::Broadcast),
                "case {name}: NAK is broadcast"
            );
            assert!(
                out.persist.is_empty(),
                "case {name}: a NAK persists nothing"
            );
        }
    }
}

#[test]
fn renew_extends_and_replies_to_ciaddr() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    let a = bind(&c, &mut st, 1);
    let mut m = req(MessageType::Request, 1);
    m.set_ciaddr(a);
    let arrival = Arrival {
        dst: LOCAL,
        src: SocketAddrV4::new(a, 68),
        ..arrival_bcast()
    };
    let out = run(&c, &mut st, &m, arrival, NOW + 300);
    let (ack, dest) = reply(&out);
    assert_eq!(
        (kind(&ack), ack.yiaddr(), ack.ciaddr()),
        (MessageType::Ack, a, a)
    );
    assert_eq!(dest, Dest::Unicast(SocketAddrV4::new(a, 68)));
    assert!(matches!(out.persist.as_slice(), [Change::PutLease(l)] if l.expires == NOW + 900));
}

#[test]
fn release_frees_and_decline_quarantines() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    let a = bind(&c, &mut st, 1);
    bind(&c, &mut st, 2);
    bind(&c, &mut st, 5);
    // A RELEASE from someone else is ignored.
    let mut rel = with(
        req(MessageType::Release, 2),
        vec![DhcpOption::ServerIdentifier(LOCAL)],
    );
    rel.set_ciaddr(a);
    assert_eq!(
        run(&c, &mut st, &rel, arrival_bcast(), NOW).verdict.err(),
        Some(Ignore::NotClientsLease)
    );
    let out = run(
        &c,
        &mut st,
        &req(MessageType::Discover, 3),
        arrival_bcast(),
        NOW,
    );
    assert_eq!(
        out.verdict.err(),
        Some(Ignore::PoolExhausted),
        "pool full before the release"
    );
    let mut rel = with(
        req(MessageType::Release, 1),
        vec![DhcpOption::ServerIdentifier(LOCAL)],
    );
    rel.set_ciaddr(a);
    let out = run(&c, &mut st, &rel, arrival_bcast(), NOW);
    assert_eq!(out.verdict.err(), Some(Ignore::NoReplyExpected));
    assert!(
        matches!(out.persist.as_slice(), [Change::PutLease(l)] if l.state == LeaseState::Released)
    );
    // Released: another client may now get it.
    let (offer, _) = reply(&run(
        &c,
        &mut st,
        &req(MessageType::Discover, 3),
        arrival_bcast(),
        NOW,
    ));
    assert_eq!(offer.yiaddr(), a);

    let mut st = State::default();
    let a = bind(&c, &mut st, 1);
    let dec = with(
        req(MessageType::Decline, 1),
        vec![
            DhcpOption::ServerIdentifier(LOCAL),
            DhcpOption::RequestedIpAddress(a),
        ],
    );
    let out = run(&c, &mut st, &dec, arrival_bcast(), NOW);
    assert!(
        matches!(out.persist.as_slice(), [Change::PutLease(l)] if l.state == LeaseState::Declined && l.expires == NOW + 3600)
    );
    // The same client's next DISCOVER gets another address; the declined one stays out.
    let (offer, _) = reply(&run(
        &c,
        &mut st,
        &req(MessageType::Discover, 1),
        arrival_bcast(),
        NOW + 1,
    ));
    assert_ne!(offer.yiaddr(), a);
    let (offer, _) = reply(&run(
        &c,
        &mut st,
        &req(MessageType::Discover, 4),
        arrival_bcast(),
        NOW + 1,
    ));
    assert_ne!(offer.yiaddr(), a);
}

#[test]
fn inform_acks_without_lease_time_to_ciaddr() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    let mut m = req(MessageType::Inform, 1);
    m.set_ciaddr(Ipv4Addr::new(10, 0, 0, 33));
    let out = run(&c, &mut st, &m, arrival_bcast(), NOW);
    let (ack, dest) = reply(&out);
    assert_eq!(kind(&ack), MessageType::Ack);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&ack, OptionCode::Router).is_some());
    assert_eq!(
        dest,
        Dest::Unicast(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 33), 68))
    );
    assert!(out.persist.is_empty());
}

#[test]
fn relayed_requests_use_giaddr_subnet_and_echo_option_82_exactly() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let mut st = State::default();
    let giaddr = Ipv4Addr::new(10, 9, 0, 1);
    let mut m = req(MessageType::Discover, 1);
    m.set_giaddr(giaddr);
    let mut raw = bytes(&m);
    // Append option 82 with sub-options in an order and with an unknown sub-option
    // that a re-encode would not preserve.
    let o82: &[u8] = &[
        9, 3, 0xde, 0xad, 0xbe, 2, 2, 0x0a, 0x0b, 1, 4, b'e', b't', b'h', b'0',
    ];
    let end = raw.iter().rposition(|&b| b == 255).expect("END");
    raw.truncate(end);
    raw.extend_from_slice(&[82, o82.len() as u8]);
    raw.extend_from_slice(o82);
    raw.push(255);
    super::wire::check(&raw).expect("valid");
    let msg = Message::decode(&mut Decoder::new(&raw)).expect("decode");
    let out = decide(
        &msg,
        &raw,
        &arrival_bcast(),
        &Policy {
            dhcp: &c.dhcp,
            boot: &c.boot,
        },
        &mut st,
        NOW,
    );
    let r = out.verdict.expect("offer");
    assert_eq!(r.dest, Dest::Unicast(SocketAddrV4::new(giaddr, 67)));
    let offer = Message::decode(&mut Decoder::new(&r.bytes)).expect("decode");
    assert_eq!(
        offer.yiaddr(),
        Ipv4Addr::new(10, 9, 0, 10),
        "subnet chosen by giaddr"
    );
    assert_eq!(offer.giaddr(), giaddr);
    assert_eq!(
        super::wire::raw_option(&r.bytes, 82),
        Some(o82),
        "option 82 echoed byte for byte"
    );

    // A relayed NAK goes to the relay with the broadcast bit set.
    let mut n = with(
        req(MessageType::Request, 1),
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 100))],
    );
    n.set_giaddr(giaddr);
    let out = run(&c, &mut st, &n, arrival_bcast(), NOW);
    let (nak, dest) = reply(&out);
    assert_eq!(kind(&nak), MessageType::Nak);
    assert!(nak.flags().broadcast());
    assert_eq!(dest, Dest::Unicast(SocketAddrV4::new(giaddr, 67)));
}

#[test]
fn lease_key_mac_merges_pxe_rom_ipxe_and_os() {
    for (key, same) in [(LeaseKey::Mac, true), (LeaseKey::ClientId, false)] {
        let c = config(DhcpMode::Full, key);
        let mut st = State::default();
        let rom = bind(&c, &mut st, 1); // no option 61, like most PXE ROMs
        let os = with(
            req(MessageType::Discover, 1),
            vec![DhcpOption::ClientIdentifier(vec![
                255, 0, 0, 0, 1, 0, 4, 9, 9,
            ])],
        );
        let (offer, _) = reply(&run(&c, &mut st, &os, arrival_bcast(), NOW));
        assert_eq!(offer.yiaddr() == rom, same, "lease_key {key:?}");
    }
}

#[test]
fn max_message_size_is_respected() {
    let mut c = config(DhcpMode::Full, LeaseKey::ClientId);
    c.dhcp.subnets[0].dns = (1..=62).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
    c.dhcp.subnets[0].domain = Some(format!("{}.example", "d".repeat(60)));
    let mut st = State::default();
    // No option 57: 576-byte datagram limit, so the 240-byte DNS list is trimmed.
    let (small, _) = reply(&run(
        &c,
        &mut st,
        &req(MessageType::Discover, 1),
        arrival_bcast(),
        NOW,
    ));
    assert!(bytes(&small).len() <= 548);
    assert!(
        opt(&small, OptionCode::DomainName).is_none(),
        "optional options trimmed to fit"
    );
    assert!(
        opt(&small, OptionCode::SubnetMask).is_some(),
        "essential options kept"
    );
    let big = with(
        req(MessageType::Discover, 2),
        vec![DhcpOption::MaxMessageSize(1500)],
    );
    let (big, _) = reply(&run(&c, &mut st, &big, arrival_bcast(), NOW));
    assert!(
        opt(&big, OptionCode::DomainNameServer).is_some(),
        "fits in 1500"
    );
    assert!(opt(&big, OptionCode::DomainName).is_some(), "fits in 1500");
}

#[test]
fn boot_file_by_client_class_in_full_mode() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    let ipxe = |arch: u16| {
        let mut v = pxe(arch);
        v.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        v
    };
    let http = vec![
        DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture::from(16)),
    ];
    let cases: Vec<(&str, Vec<DhcpOption>, &str, Option<Ipv4Addr>, Option<&[u8]>)> = vec![
        ("bios", pxe(0), "undionly.kpxe", Some(LOCAL), None),
        ("uefi x64", pxe(7), "ipxe.efi", Some(LOCAL), None),
        ("uefi arm64", pxe(11), "ipxe-arm64.efi", Some(LOCAL), None),
        (
            "ipxe",
            ipxe(0),
            "http://10.0.0.1:8080/boot.ipxe",
            None,
            None,
        ),
        (
            "uefi http boot",
            http,
            "http://10.0.0.1:8080/boot/ipxe.efi",
            None,
            Some(b"HTTPClient"),
        ),
    ];
    for (name, opts, want_file, siaddr, vendor) in cases {
        let mut st = State::default();
        let out = run(
            &c,
            &mut st,
            &with(req(MessageType::Discover, 1), opts),
            arrival_bcast(),
            NOW,
        );
        let (offer, _) = reply(&out);
        let fname = String::from_utf8_lossy(file(&offer).unwrap_or_default()).to_string();
        assert_eq!(fname, want_file, "case {name}");
        assert_eq!(
            offer.yiaddr(),
            Ipv4Addr::new(10, 0, 0, 100),
            "case {name}: full mode assigns"
        );
        if let Some(s) = siaddr {
            assert_eq!(offer.siaddr(), s, "case {name}: next-server");
        }
        assert_eq!(
            offer.siaddr(),
            LOCAL,
            "case {name}: siaddr always names the hub (iPXE needs it)"
        );
        match vendor {
            Some(v) => assert_eq!(
                opt(&offer, OptionCode::ClassIdentifier),
                Some(&DhcpOption::ClassIdentifier(v.to_vec())),
                "case {name}"
            ),
            None => assert!(
                opt(&offer, OptionCode::ClassIdentifier).is_none(),
                "case {name}: no vendor class in full mode"
            ),
        }
        let is_ipxe = name == "ipxe";
        let o175 = super::wire::raw_option(&out.verdict.as_ref().expect("r").bytes, 175);
        assert_eq!(
            o175.is_some(),
            is_ipxe,
            "case {name}: option 175 only for iPXE"
        );
        if is_ipxe {
            assert_eq!(o175, Some(&[176u8, 1, 1][..]), "no-pxedhcp = 1");
        }
    }
}

#[test]
fn proxy_mode_answers_boot_clients_without_an_address() {
    let c = config(DhcpMode::Proxy, LeaseKey::ClientId);
    let cases: Vec<(&str, Vec<DhcpOption>, Result<&str, Ignore>)> = vec![
        ("bios", pxe(0), Ok("undionly.kpxe")),
        ("uefi x64", pxe(9), Ok("ipxe.efi")),
        ("uefi arm64", pxe(11), Ok("ipxe-arm64.efi")),
        ("plain client", vec![], Err(Ignore::NotBootClient)),
        ("ia32 efi", pxe(6), Err(Ignore::UnsupportedArch(6))),
    ];
    for (name, opts, want) in cases {
        let mut st = State::default();
        let out = run(
            &c,
            &mut st,
            &with(req(MessageType::Discover, 1), opts),
            arrival_bcast(),
            NOW,
        );
        assert!(
            out.persist.is_empty(),
            "case {name}: proxy persists nothing"
        );
        match want {
            Err(why) => assert_eq!(out.verdict.err(), Some(why), "case {name}"),
            Ok(file_want) => {
                let (offer, dest) = reply(&out);
                assert_eq!(dest, Dest::Broadcast, "case {name}");
                assert_eq!(
                    offer.yiaddr(),
                    Ipv4Addr::UNSPECIFIED,
                    "case {name}: no address"
                );
                assert_eq!(file(&offer), Some(file_want.as_bytes()), "case {name}");
                assert!(
                    opt(&offer, OptionCode::AddressLeaseTime).is_none(),
                    "case {name}"
                );
                assert_eq!(
                    opt(&offer, OptionCode::ClassIdentifier),
                    Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
                );
                assert_eq!(
                    opt(&offer, OptionCode::VendorExtensions),
                    Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
                );
                assert!(
                    matches!(opt(&offer, OptionCode::ClientMachineIdentifier), Some(DhcpOption::ClientMachineIdentifier(u)) if u.len() == 17),
                    "case {name}: option 97 mirrored"
                );
                assert!(st.leases.is_empty());
            }
        }
    }
    // iPXE in proxy mode: HTTP script URL, with siaddr set, or iPXE ignores the offer.
    let mut st = State::default();
    let mut v = pxe(0);
    v.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let (offer, _) = reply(&run(
        &c,
        &mut st,
        &with(req(MessageType::Discover, 1), v),
        arrival_bcast(),
        NOW,
    ));
    assert_eq!(file(&offer), Some(&b"http://10.0.0.1:8080/boot.ipxe"[..]));
    assert_eq!(offer.siaddr(), LOCAL, "iPXE dhcp_has_pxeopts needs siaddr");
    // REQUESTs on 67 belong to the other server.
    let mut st = State::default();
    let r = with(req(MessageType::Request, 1), pxe(0));
    assert!(run(&c, &mut st, &r, arrival_bcast(), NOW).verdict.is_err());
    // Port 4011: the boot-server ACK goes back to the requester.
    let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 150), 68);
    let mut r = with(req(MessageType::Request, 1), pxe(7));
    r.set_ciaddr(*src.ip());
    let arrival = Arrival {
        dst: LOCAL,
        src,
        port: ServicePort::PxeBootServer,
        ..arrival_bcast()
    };
    let (ack, dest) = reply(&run(&c, &mut st, &r, arrival, NOW));
    assert_eq!((kind(&ack), dest), (MessageType::Ack, Dest::Unicast(src)));
    assert_eq!(file(&ack), Some(&b"ipxe.efi"[..]));
}

#[test]
fn auto_mode_falls_back_for_firmware_that_ignores_proxy_offers() {
    let c = config(DhcpMode::Auto, LeaseKey::ClientId);
    let mut st = State::default();
    let discover = |xid: u32| {
        let mut m = with(req(MessageType::Discover, 1), pxe(7));
        m.set_xid(xid);
        m
    };
    for (xid, t) in [(1, 0), (1, 2), (2, 10)] {
        let out = run(&c, &mut st, &discover(xid), arrival_bcast(), NOW + t);
        let (offer, _) = reply(&out);
        assert_eq!(
            offer.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "xid {xid}: still a proxy offer"
        );
    }
    // An iPXE DISCOVER does not count towards the fallback.
    let mut ipxe = with(req(MessageType::Discover, 1), pxe(7));
    ipxe.opts_mut()
        .insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    ipxe.set_xid(77);
    assert_eq!(
        reply(&run(&c, &mut st, &ipxe, arrival_bcast(), NOW + 11))
            .0
            .yiaddr(),
        Ipv4Addr::UNSPECIFIED
    );
    // The third new transaction: full offer, and the fallback is persisted.
    let out = run(&c, &mut st, &discover(3), arrival_bcast(), NOW + 20);
    assert_eq!(out.persist, vec![Change::Fallback(MacAddr(mac(1)))]);
    let (offer, _) = reply(&out);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(file(&offer), Some(&b"ipxe.efi"[..]));
    // Remembered: the next boot is served fully at once, and iPXE from it too.
    assert!(st.fallback.is_fallen_back(MacAddr(mac(1))));
    let (offer, _) = reply(&run(&c, &mut st, &ipxe, arrival_bcast(), NOW + 30));
    assert_ne!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    // Another client is unaffected, and plain (non-boot) clients are left to the site's server.
    let other = with(req(MessageType::Discover, 2), pxe(7));
    assert_eq!(
        reply(&run(&c, &mut st, &other, arrival_bcast(), NOW))
            .0
            .yiaddr(),
        Ipv4Addr::UNSPECIFIED
    );
    assert_eq!(
        run(
            &c,
            &mut st,
            &req(MessageType::Discover, 3),
            arrival_bcast(),
            NOW
        )
        .verdict
        .err(),
        Some(Ignore::NotBootClient)
    );
    assert_eq!(Firmware::UefiX64.to_string(), "uefi-x64");
}

#[test]
fn unvalidated_hostnames_are_not_stored() {
    let c = config(DhcpMode::Full, LeaseKey::ClientId);
    for (name, host, stored) in [
        ("valid", "node-1", true),
        ("spaces", "bad host", false),
        ("too long label", &"a".repeat(64)[..], false),
    ] {
        let mut st = State::default();
        let d = with(
            req(MessageType::Discover, 1),
            vec![DhcpOption::Hostname(host.into())],
        );
        let (offer, _) = reply(&run(&c, &mut st, &d, arrival_bcast(), NOW));
        let r = with(
            req(MessageType::Request, 1),
            vec![
                DhcpOption::ServerIdentifier(LOCAL),
                DhcpOption::RequestedIpAddress(offer.yiaddr()),
                DhcpOption::Hostname(host.into()),
            ],
        );
        let out = run(&c, &mut st, &r, arrival_bcast(), NOW);
        let Some(Change::PutLease(l)) = out.persist.first() else {
            panic!("case {name}: no lease")
        };
        assert_eq!(l.hostname.is_some(), stored, "case {name}");
    }
    let _ = ClientKey::hw(1, &mac(1));
}

#[test]
fn unserved_boot_files_are_never_advertised() {
    let mut c = config(DhcpMode::Proxy, LeaseKey::ClientId);
    // As on Debian 12: no arm64 iPXE asset.
    c.boot
        .restrict(|t| !matches!(t, crate::boot::BootTarget::Tftp("ipxe-arm64.efi")));
    let mut st = State::default();
    let out = run(
        &c,
        &mut st,
        &with(req(MessageType::Discover, 1), pxe(11)),
        arrival_bcast(),
        NOW,
    );
    assert_eq!(
        out.verdict.err(),
        Some(Ignore::NoBootFile(Firmware::UefiArm64))
    );
    let out = run(
        &c,
        &mut st,
        &with(req(MessageType::Discover, 1), pxe(7)),
        arrival_bcast(),
        NOW,
    );
    assert!(out.verdict.is_ok(), "x64 is still served");
    // In full mode the client still gets an address, without a boot file.
    c.dhcp.mode = DhcpMode::Full;
    let out = run(
        &c,
        &mut st,
        &with(req(MessageType::Discover, 1), pxe(11)),
        arrival_bcast(),
        NOW,
    );
    let (offer, _) = reply(&out);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(file(&offer), None);
    assert_eq!(out.verdict.as_ref().map(|r| r.firmware).ok(), Some(None));
    assert!(
        !c.boot
            .advertised()
            .iter()
            .any(|(f, _)| *f == Firmware::UefiArm64)
    );
}
