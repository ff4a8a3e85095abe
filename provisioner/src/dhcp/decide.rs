//! The DHCP decision core: given one request, where it arrived, the policy and the
//! lease table, decide the reply (and its destination) or why there is none.
//!
//! Pure: no sockets, no clock reads, no store handles. It mutates the in-memory
//! lease table and returns the changes the shell must persist *before* sending
//! the reply. It does not retransmit, rate-limit or touch ARP tables; the shell does.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};

use crate::boot::{BootTable, BootTarget, Firmware};
use crate::config::{DhcpConfig, DhcpMode, LeaseKey, MacAddr, Subnet, valid_hostname};

use super::classify::{self, BootClass};
use super::fallback::Fallback;
use super::leases::{ClientKey, Lease, LeaseState, LeaseTable, Secs};
use super::wire;

/// UDP ports (RFC 2131 §4.1; PXE 2.1 §2.2.4 for the boot-server port).
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const PXE_BOOT_SERVER_PORT: u16 = 4011;

/// RFC 2131 §2: minimum message size a client must accept is 576 bytes of IP
/// datagram; minus 20 (IP) and 8 (UDP) headers.
const DEFAULT_MAX_DHCP: usize = 576 - 28;
/// RFC 1542 §3.3: BOOTP replies are padded to at least 300 bytes; old ROMs drop shorter ones.
const MIN_REPLY_LEN: usize = 300;
/// iPXE encapsulated options (option 175), sub-option 176 `no-pxedhcp`: skip the ProxyDHCP wait.
const OPT_IPXE_ENCAP: u8 = 175;
const IPXE_NO_PXEDHCP: u8 = 176;
/// PXE vendor option 43 sub-option 6, PXE_DISCOVERY_CONTROL; bit 3 (value 8) = "boot file in
/// the offer, download it directly" (PXE 2.1 spec table 2-2).
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_USE_BOOTFILE: u8 = 8;

/// On which port a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicePort {
    /// 67: DHCP proper.
    Dhcp,
    /// 4011: PXE boot-server requests (ProxyDHCP step 2).
    PxeBootServer,
}

/// Where and how a request reached us; filled in by the shell from packet info.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Our address on the arrival interface: the server identifier we use.
    pub local: Ipv4Addr,
    /// The packet's destination address (broadcast vs unicast tells REBINDING from RENEWING).
    pub dst: Ipv4Addr,
    pub src: SocketAddrV4,
    pub port: ServicePort,
}

/// What the decision needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub dhcp: &'a DhcpConfig,
    pub boot: &'a BootTable,
}

/// Everything the core remembers between packets.
#[derive(Debug, Default)]
pub struct State {
    pub leases: LeaseTable,
    pub fallback: Fallback,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255:68 on the arrival interface.
    Broadcast,
    /// A plain unicast: ciaddr:68, giaddr:67, or the 4011 requester.
    Unicast(SocketAddrV4),
    /// yiaddr:68 to a client that has no address yet: the shell must first add
    /// an ARP entry for it, since the client cannot answer ARP.
    UnicastHw { addr: Ipv4Addr, mac: MacAddr },
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub kind: MessageType,
    /// Encoded, padded, and within the client's size limit.
    pub bytes: Vec<u8>,
    pub dest: Dest,
    pub yiaddr: Ipv4Addr,
    pub firmware: Option<Firmware>,
    /// The boot file or URL handed out, if any.
    pub file: Option<String>,
}

/// Why no reply was sent. Not an error: logged at debug with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignore {
    ModeOff,
    NotDhcpMessage,
    UnsupportedMessageType(u8),
    /// Proxy mode answers only network-boot clients.
    NotBootClient,
    UnsupportedArch(u16),
    NoSubnet,
    PoolExhausted,
    /// SELECTING: the client chose another server (RFC 2131 §4.3.2).
    NotOurServerId,
    /// INIT-REBOOT from a client we have no record of: stay silent (§4.3.2).
    UnknownClientInitReboot,
    MissingRequestedAddress,
    /// DECLINE/RELEASE for an address this client does not hold.
    NotClientsLease,
    ReplyTooLarge,
    /// A 4011 request from a client that is not PXE.
    BootServerNotPxe,
    /// DECLINE and RELEASE are answered with silence.
    NoReplyExpected,
    /// A proxy has nothing to say to firmware whose first stage is not served.
    NoBootFile(Firmware),
}

/// What the shell persists before it sends the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutLease(Lease),
    DeleteLease(Ipv4Addr),
    /// This MAC ignored ProxyDHCP; serve it fully from now on.
    Fallback(MacAddr),
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Result<Reply, Ignore>,
    pub persist: Vec<Change>,
}

impl Outcome {
    fn ignore(why: Ignore) -> Outcome {
        Outcome {
            verdict: Err(why),
            persist: Vec::new(),
        }
    }
}

/// Facts about the request, read once.
struct Req<'a> {
    msg: &'a Message,
    raw: &'a [u8],
    kind: MessageType,
    class: BootClass,
    mac: Option<MacAddr>,
    key: ClientKey,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
}

/// Decides what to do with one request. `raw` is the datagram `msg` was decoded
/// from (it passed `wire::check`), used to echo option 82 byte for byte.
pub fn decide(
    msg: &Message,
    raw: &[u8],
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
) -> Outcome {
    if msg.opcode() != Opcode::BootRequest {
        return Outcome::ignore(Ignore::NotDhcpMessage);
    }
    let Some(kind) = msg.opts().msg_type() else {
        return Outcome::ignore(Ignore::NotDhcpMessage);
    };
    let mac = (u8::from(msg.htype()) == 1 && msg.hlen() == 6)
        .then(|| <[u8; 6]>::try_from(msg.chaddr()).ok().map(MacAddr))
        .flatten();
    let client_id = match msg.opts().get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id))
            if (2..=wire::MAX_CLIENT_ID_LEN).contains(&id.len()) =>
        {
            Some(id)
        }
        _ => None,
    };
    let key = match (policy.dhcp.lease_key, client_id) {
        (LeaseKey::ClientId, Some(id)) => ClientKey::client_id(id),
        _ => ClientKey::hw(u8::from(msg.htype()), msg.chaddr()),
    };
    let req = Req {
        msg,
        raw,
        kind,
        class: classify::classify(msg),
        mac,
        key,
        requested: match msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        },
        server_id: match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        },
    };

    if arrival.port == ServicePort::PxeBootServer {
        return boot_server(&req, arrival, policy, state);
    }
    match policy.dhcp.mode {
        DhcpMode::Off => Outcome::ignore(Ignore::ModeOff),
        DhcpMode::Full => full(&req, arrival, policy, state, now),
        DhcpMode::Proxy => proxy(&req, arrival, policy),
        DhcpMode::Auto => auto(&req, arrival, policy, state, now),
    }
}

// ---------------------------------------------------------------- auto

fn auto(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
) -> Outcome {
    let Some(mac) = req.mac else {
        return proxy(req, arrival, policy);
    };
    let boot_client = matches!(req.class, BootClass::Boot(_));
    // A MAC that fell back is served fully while it boots; and whoever holds one of
    // our leases keeps being served for it (renew, release, decline).
    if (boot_client && state.fallback.is_fallen_back(mac))
        || state.leases.of_client(&req.key).is_some()
    {
        return full(req, arrival, policy, state, now);
    }
    // Retries of PXE firmware (not iPXE, which honours ProxyDHCP) count towards the fallback.
    let counts = req.kind == MessageType::Discover
        && matches!(req.class, BootClass::Boot(f) if f != Firmware::Ipxe);
    if counts
        && state.fallback.observe(
            mac,
            req.msg.xid(),
            now,
            policy.dhcp.fallback_window_secs,
            policy.dhcp.fallback_after,
        )
    {
        tracing::info!(%mac, xid = req.msg.xid(), "client ignores ProxyDHCP offers: falling back to a full reply");
        state.fallback.fall_back(mac);
        let mut out = full(req, arrival, policy, state, now);
        out.persist.push(Change::Fallback(mac));
        return out;
    }
    proxy(req, arrival, policy)
}

// ---------------------------------------------------------------- proxy

fn proxy(req: &Req<'_>, arrival: &Arrival, policy: &Policy<'_>) -> Outcome {
    let firmware = match boot_firmware(req.class, Ignore::NotBootClient) {
        Ok(f) => f,
        Err(why) => return Outcome::ignore(why),
    };
    if req.kind != MessageType::Discover {
        // REQUESTs on 67 belong to the address-serving DHCP server; ours come on 4011.
        return Outcome::ignore(Ignore::UnsupportedMessageType(u8::from(req.kind)));
    }
    let mut reply = base_reply(req.msg, MessageType::Offer, arrival.local);
    reply.set_yiaddr(Ipv4Addr::UNSPECIFIED);
    if !add_boot(&mut reply, req, firmware, arrival.local, policy.boot, true) {
        return Outcome::ignore(Ignore::NoBootFile(firmware));
    }
    let dest = if !req.msg.giaddr().is_unspecified() {
        Dest::Unicast(SocketAddrV4::new(req.msg.giaddr(), SERVER_PORT))
    } else if !req.msg.ciaddr().is_unspecified() {
        Dest::Unicast(SocketAddrV4::new(req.msg.ciaddr(), CLIENT_PORT))
    } else {
        Dest::Broadcast
    };
    finish(
        req,
        reply,
        MessageType::Offer,
        dest,
        Some(firmware),
        Vec::new(),
    )
}

/// The firmware of a network-boot client, or why a proxy does not answer it.
fn boot_firmware(class: BootClass, plain: Ignore) -> Result<Firmware, Ignore> {
    match class {
        BootClass::Boot(f) => Ok(f),
        BootClass::UnsupportedArch(a) => Err(Ignore::UnsupportedArch(a)),
        BootClass::Plain => Err(plain),
    }
}

/// Port 4011: a PXE client that took our ProxyDHCP offer asks the boot server
/// for its boot file (PXE 2.1 §2.2.6). Reply to where it came from.
fn boot_server(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
) -> Outcome {
    let firmware = match boot_firmware(req.class, Ignore::BootServerNotPxe) {
        Ok(f) => f,
        Err(why) => return Outcome::ignore(why),
    };
    if !matches!(req.kind, MessageType::Request | MessageType::Inform) {
        return Outcome::ignore(Ignore::UnsupportedMessageType(u8::from(req.kind)));
    }
    if let Some(mac) = req.mac {
        // It honoured our proxy offer: no fallback needed.
        state.fallback.honoured(mac);
    }
    let mut reply = base_reply(req.msg, MessageType::Ack, arrival.local);
    reply.set_ciaddr(req.msg.ciaddr());
    if !add_boot(&mut reply, req, firmware, arrival.local, policy.boot, true) {
        return Outcome::ignore(Ignore::NoBootFile(firmware));
    }
    let dest = if arrival.src.ip().is_unspecified() {
        Dest::Broadcast
    } else {
        Dest::Unicast(arrival.src)
    };
    finish(
        req,
        reply,
        MessageType::Ack,
        dest,
        Some(firmware),
        Vec::new(),
    )
}

// ---------------------------------------------------------------- full

fn full(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
) -> Outcome {
    if let BootClass::UnsupportedArch(a) = req.class {
        // We can still give it an address, but nothing to boot: log and serve as plain.
        tracing::debug!(arch = a, "PXE client of an architecture with no boot file");
    }
    match req.kind {
        MessageType::Discover => discover(req, arrival, policy, state, now),
        MessageType::Request => request(req, arrival, policy, state, now),
        MessageType::Decline => decline(req, arrival, policy, state, now),
        MessageType::Release => release(req, arrival, state),
        MessageType::Inform => inform(req, arrival, policy),
        other => Outcome::ignore(Ignore::UnsupportedMessageType(u8::from(other))),
    }
}

/// The subnet a request belongs to: the relay's (giaddr) or the arrival interface's.
fn subnet_for<'a>(req: &Req<'_>, arrival: &Arrival, policy: &Policy<'a>) -> Option<&'a Subnet> {
    let giaddr = req.msg.giaddr();
    let anchor = if giaddr.is_unspecified() {
        arrival.local
    } else {
        giaddr
    };
    policy.dhcp.subnet_containing(anchor)
}

/// Whether `addr` is one this client may hold in `subnet`: its reservation, or a pool address.
fn assignable(subnet: &Subnet, addr: Ipv4Addr, mac: Option<MacAddr>) -> bool {
    match subnet.reservation_of_addr(addr) {
        Some(r) => Some(r.mac) == mac,
        None => subnet.in_pool(addr),
    }
}

fn discover(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
) -> Outcome {
    let Some(subnet) = subnet_for(req, arrival, policy) else {
        return Outcome::ignore(Ignore::NoSubnet);
    };
    let key = &req.key;
    let mac = req.mac;
    let leases = &mut state.leases;
    // RFC 2131 §4.3.1 order: reservation, current/previous binding, requested address, pool.
    let reserved = mac
        .and_then(|m| subnet.reservation_for_mac(m))
        .map(|r| r.address);
    let previous = leases
        .of_client(key)
        .filter(|l| l.state != LeaseState::Declined && assignable(subnet, l.addr, mac))
        .map(|l| l.addr);
    let requested = req.requested.filter(|&a| assignable(subnet, a, mac));
    let candidate = [reserved, previous, requested]
        .into_iter()
        .flatten()
        .find(|&a| leases.available(subnet, a, key, mac, now));
    let Some(addr) = candidate.or_else(|| leases.allocate(subnet, key, mac, now)) else {
        tracing::warn!(network = %subnet.network, client = %key, "pool exhausted");
        return Outcome::ignore(Ignore::PoolExhausted);
    };
    // Hold the address for the offer, unless the client already has it bound.
    let already_bound = leases
        .get(addr)
        .is_some_and(|l| &l.key == key && l.state == LeaseState::Bound && l.expires > now);
    if !already_bound {
        leases.put(new_lease(
            req,
            addr,
            LeaseState::Offered,
            now,
            now + u64::from(policy.dhcp.offer_hold_secs),
            subnet,
        ));
    }
    let mut reply = base_reply(req.msg, MessageType::Offer, arrival.local);
    reply.set_yiaddr(addr);
    add_lease_options(&mut reply, subnet, true, hostname_for(req, subnet, addr));
    let firmware = req
        .class
        .firmware()
        .filter(|&f| add_boot(&mut reply, req, f, arrival.local, policy.boot, false));
    let dest = reply_dest(req.msg, addr, mac);
    finish(req, reply, MessageType::Offer, dest, firmware, Vec::new())
}

fn request(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
) -> Outcome {
    let ciaddr = req.msg.ciaddr();
    if let Some(sid) = req.server_id {
        // SELECTING (§4.3.2).
        if sid != arrival.local {
            // The client took another server's offer: free what we held for it.
            if let Some(l) = state.leases.of_client(&req.key)
                && l.state == LeaseState::Offered
            {
                let addr = l.addr;
                state.leases.remove(addr);
            }
            return Outcome::ignore(Ignore::NotOurServerId);
        }
        let Some(addr) = req
            .requested
            .or((!ciaddr.is_unspecified()).then_some(ciaddr))
        else {
            return Outcome::ignore(Ignore::MissingRequestedAddress);
        };
        return bind_or_nak(req, arrival, policy, state, now, addr);
    }
    if ciaddr.is_unspecified() {
        // INIT-REBOOT (§4.3.2): verify the client's remembered address.
        let Some(addr) = req.requested else {
            return Outcome::ignore(Ignore::MissingRequestedAddress);
        };
        let Some(subnet) = subnet_for(req, arrival, policy) else {
            return Outcome::ignore(Ignore::NoSubnet);
        };
        if !subnet.network.contains(&addr) {
            return nak(req, arrival, "requested address is on the wrong network");
        }
        let Some(current) = state.leases.of_client(&req.key).map(|l| l.addr) else {
            return Outcome::ignore(Ignore::UnknownClientInitReboot);
        };
        if current != addr {
            return nak(req, arrival, "requested address is not the client's lease");
        }
        return bind_or_nak(req, arrival, policy, state, now, addr);
    }
    // RENEWING (unicast to us) or REBINDING (broadcast): ciaddr is the client's address.
    let Some(subnet) = subnet_for(req, arrival, policy) else {
        return Outcome::ignore(Ignore::NoSubnet);
    };
    if !subnet.network.contains(&ciaddr) {
        return nak(req, arrival, "client address is on the wrong network");
    }
    bind_or_nak(req, arrival, policy, state, now, ciaddr)
}

/// ACK `addr` to the client if it may have it, else NAK.
fn bind_or_nak(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
    addr: Ipv4Addr,
) -> Outcome {
    let Some(subnet) = subnet_for(req, arrival, policy) else {
        return Outcome::ignore(Ignore::NoSubnet);
    };
    if !assignable(subnet, addr, req.mac) {
        return nak(req, arrival, "address is not assignable to this client");
    }
    if !state.leases.available(subnet, addr, &req.key, req.mac, now) {
        return nak(
            req,
            arrival,
            "address is held by another client or quarantined",
        );
    }
    // An existing binding of this client elsewhere in the subnet is superseded.
    if let Some(old) = state.leases.of_client(&req.key).map(|l| l.addr)
        && old != addr
    {
        state.leases.remove(old);
    }
    let lease = new_lease(
        req,
        addr,
        LeaseState::Bound,
        now,
        now + u64::from(subnet.lease_time),
        subnet,
    );
    state.leases.put(lease.clone());
    let mut reply = base_reply(req.msg, MessageType::Ack, arrival.local);
    reply.set_yiaddr(addr);
    reply.set_ciaddr(req.msg.ciaddr());
    add_lease_options(&mut reply, subnet, true, lease.hostname.clone());
    let firmware = req
        .class
        .firmware()
        .filter(|&f| add_boot(&mut reply, req, f, arrival.local, policy.boot, false));
    let dest = reply_dest(req.msg, addr, req.mac);
    finish(
        req,
        reply,
        MessageType::Ack,
        dest,
        firmware,
        vec![Change::PutLease(lease)],
    )
}

fn nak(req: &Req<'_>, arrival: &Arrival, why: &'static str) -> Outcome {
    tracing::debug!(client = %req.key, reason = why, "NAK");
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_xid(req.msg.xid())
        .set_htype(req.msg.htype())
        .set_chaddr(req.msg.chaddr())
        .set_giaddr(req.msg.giaddr());
    reply
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Nak));
    reply
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(arrival.local));
    reply
        .opts_mut()
        .insert(DhcpOption::Message(why.to_string()));
    // §4.3.2: a NAK goes to the relay with the broadcast bit set, else it is broadcast.
    let dest = if req.msg.giaddr().is_unspecified() {
        Dest::Broadcast
    } else {
        reply.set_flags(Flags::default().set_broadcast());
        Dest::Unicast(SocketAddrV4::new(req.msg.giaddr(), SERVER_PORT))
    };
    finish(req, reply, MessageType::Nak, dest, None, Vec::new())
}

fn decline(
    req: &Req<'_>,
    arrival: &Arrival,
    policy: &Policy<'_>,
    state: &mut State,
    now: Secs,
) -> Outcome {
    if req.server_id.is_some_and(|s| s != arrival.local) {
        return Outcome::ignore(Ignore::NotOurServerId);
    }
    let Some(addr) = req.requested else {
        return Outcome::ignore(Ignore::MissingRequestedAddress);
    };
    let Some(lease) = state.leases.get(addr).filter(|l| l.key == req.key).cloned() else {
        return Outcome::ignore(Ignore::NotClientsLease);
    };
    tracing::warn!(%addr, client = %req.key, "address declined: in use by someone else; quarantined");
    let quarantined = Lease {
        state: LeaseState::Declined,
        starts: now,
        expires: now + u64::from(policy.dhcp.decline_quarantine_secs),
        ..lease
    };
    state.leases.put(quarantined.clone());
    no_reply(vec![Change::PutLease(quarantined)])
}

fn release(req: &Req<'_>, arrival: &Arrival, state: &mut State) -> Outcome {
    if req.server_id.is_some_and(|s| s != arrival.local) {
        return Outcome::ignore(Ignore::NotOurServerId);
    }
    let addr = req.msg.ciaddr();
    let Some(lease) = state
        .leases
        .get(addr)
        .filter(|l| l.key == req.key && l.state == LeaseState::Bound)
        .cloned()
    else {
        return Outcome::ignore(Ignore::NotClientsLease);
    };
    let released = Lease {
        state: LeaseState::Released,
        ..lease
    };
    state.leases.put(released.clone());
    no_reply(vec![Change::PutLease(released)])
}

fn inform(req: &Req<'_>, arrival: &Arrival, policy: &Policy<'_>) -> Outcome {
    let ciaddr = req.msg.ciaddr();
    let anchor = if ciaddr.is_unspecified() {
        *arrival.src.ip()
    } else {
        ciaddr
    };
    let Some(subnet) = policy
        .dhcp
        .subnet_containing(anchor)
        .or_else(|| subnet_for(req, arrival, policy))
    else {
        return Outcome::ignore(Ignore::NoSubnet);
    };
    let mut reply = base_reply(req.msg, MessageType::Ack, arrival.local);
    reply.set_ciaddr(ciaddr);
    // RFC 2131 §4.3.5: no lease time, no yiaddr.
    add_lease_options(&mut reply, subnet, false, None);
    let firmware = req
        .class
        .firmware()
        .filter(|&f| add_boot(&mut reply, req, f, arrival.local, policy.boot, false));
    let dest = if !req.msg.giaddr().is_unspecified() {
        Dest::Unicast(SocketAddrV4::new(req.msg.giaddr(), SERVER_PORT))
    } else if !anchor.is_unspecified() {
        Dest::Unicast(SocketAddrV4::new(anchor, CLIENT_PORT))
    } else {
        Dest::Broadcast
    };
    finish(req, reply, MessageType::Ack, dest, firmware, Vec::new())
}

/// DECLINE and RELEASE have no reply (RFC 2131 §4.3.3, §4.3.4), only changes to persist.
fn no_reply(persist: Vec<Change>) -> Outcome {
    Outcome {
        verdict: Err(Ignore::NoReplyExpected),
        persist,
    }
}

// ---------------------------------------------------------------- building replies

/// RFC 2131 §4.1 destination for OFFER/ACK.
fn reply_dest(msg: &Message, yiaddr: Ipv4Addr, mac: Option<MacAddr>) -> Dest {
    if !msg.giaddr().is_unspecified() {
        Dest::Unicast(SocketAddrV4::new(msg.giaddr(), SERVER_PORT))
    } else if !msg.ciaddr().is_unspecified() {
        Dest::Unicast(SocketAddrV4::new(msg.ciaddr(), CLIENT_PORT))
    } else if msg.flags().broadcast() {
        Dest::Broadcast
    } else if let Some(mac) = mac {
        Dest::UnicastHw { addr: yiaddr, mac }
    } else {
        Dest::Broadcast
    }
}

fn base_reply(req: &Message, kind: MessageType, server: Ipv4Addr) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_htype(req.htype())
        .set_chaddr(req.chaddr())
        .set_giaddr(req.giaddr());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    m
}

fn hostname_for(req: &Req<'_>, subnet: &Subnet, addr: Ipv4Addr) -> Option<String> {
    if let Some(r) = subnet.reservation_of_addr(addr)
        && r.hostname.is_some()
    {
        return r.hostname.clone();
    }
    match req.msg.opts().get(OptionCode::Hostname) {
        // Client data is stored only once validated.
        Some(DhcpOption::Hostname(h)) if valid_hostname(h) => Some(h.clone()),
        _ => None,
    }
}

fn new_lease(
    req: &Req<'_>,
    addr: Ipv4Addr,
    state: LeaseState,
    now: Secs,
    expires: Secs,
    subnet: &Subnet,
) -> Lease {
    Lease {
        addr,
        key: req.key.clone(),
        htype: u8::from(req.msg.htype()),
        chaddr: req.msg.chaddr().to_vec(),
        hostname: hostname_for(req, subnet, addr),
        state,
        starts: now,
        expires,
    }
}

fn add_lease_options(m: &mut Message, subnet: &Subnet, with_times: bool, hostname: Option<String>) {
    let o = m.opts_mut();
    if with_times {
        o.insert(DhcpOption::AddressLeaseTime(subnet.lease_time));
        o.insert(DhcpOption::Renewal(subnet.renew_time));
        o.insert(DhcpOption::Rebinding(subnet.rebind_time));
    }
    o.insert(DhcpOption::SubnetMask(subnet.network.netmask()));
    o.insert(DhcpOption::BroadcastAddr(subnet.network.broadcast()));
    if !subnet.routers.is_empty() {
        o.insert(DhcpOption::Router(subnet.routers.clone()));
    }
    if !subnet.dns.is_empty() {
        o.insert(DhcpOption::DomainNameServer(subnet.dns.clone()));
    }
    if let Some(d) = &subnet.domain {
        o.insert(DhcpOption::DomainName(d.clone()));
    }
    if let Some(h) = hostname {
        o.insert(DhcpOption::Hostname(h));
    }
}

/// Boot information for a network-boot client. `proxy` adds what ProxyDHCP needs
/// (PXE spec §2.2.5): vendor class and PXE vendor options. Returns false, adding
/// nothing, when that firmware's file is not served.
fn add_boot(
    m: &mut Message,
    req: &Req<'_>,
    firmware: Firmware,
    server: Ipv4Addr,
    boot: &BootTable,
    proxy: bool,
) -> bool {
    let http_client = classify::is_http_client(req.msg);
    let file = match boot.target(firmware) {
        Some(BootTarget::Tftp(name)) => name.to_string(),
        Some(BootTarget::Http(path)) => boot.url(server, path),
        None => return false,
    };
    // Always name ourselves as next server: iPXE ignores a (proxy) offer's boot file
    // unless siaddr is set too (iPXE dhcp.c `dhcp_has_pxeopts`), even for an HTTP URL.
    m.set_siaddr(server);
    // The `file` field holds 128 bytes including the terminating NUL (RFC 2131 §2);
    // a longer name goes in option 67 only. (dhcproto panics past 128.)
    let fits = file.len() < 128;
    if fits {
        m.set_fname_str(&file);
    }
    let wants = |code: OptionCode| match req.msg.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(list)) => list.contains(&code),
        _ => false,
    };
    if wants(OptionCode::TFTPServerName) {
        m.opts_mut()
            .insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
    }
    if !fits || wants(OptionCode::BootfileName) {
        m.opts_mut()
            .insert(DhcpOption::BootfileName(file.into_bytes()));
    }
    if http_client {
        // UEFI HTTP boot ignores offers without it (UEFI spec §24.7.2).
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(classify::HTTP_CLIENT.to_vec()));
    } else if proxy {
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(classify::PXE_CLIENT.to_vec()));
        m.opts_mut().insert(DhcpOption::VendorExtensions(vec![
            PXE_DISCOVERY_CONTROL,
            1,
            PXE_USE_BOOTFILE,
            255,
        ]));
    }
    if let Some(DhcpOption::ClientMachineIdentifier(uuid)) =
        req.msg.opts().get(OptionCode::ClientMachineIdentifier)
    {
        // PXE spec §2.2.5: mirror the client's UUID (option 97).
        m.opts_mut()
            .insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
    if firmware == Firmware::Ipxe {
        m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(OPT_IPXE_ENCAP),
            vec![IPXE_NO_PXEDHCP, 1, 1],
        )));
    }
    true
}

/// Options dropped first, in order, when a reply is over the client's size limit.
const TRIM_ORDER: &[OptionCode] = &[
    OptionCode::DomainName,
    OptionCode::Hostname,
    OptionCode::BroadcastAddr,
    OptionCode::TFTPServerName,
    OptionCode::BootfileName,
    OptionCode::DomainNameServer,
    OptionCode::Message,
];

/// Echoes option 82, fits the reply into the client's limit, encodes and pads it.
fn finish(
    req: &Req<'_>,
    mut reply: Message,
    kind: MessageType,
    dest: Dest,
    firmware: Option<Firmware>,
    persist: Vec<Change>,
) -> Outcome {
    if let Some(info) = wire::raw_option(req.raw, wire::OPT_RELAY_AGENT_INFO) {
        // RFC 3046 §2.2: echo the relay agent information unchanged.
        reply
            .opts_mut()
            .insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::RelayAgentInformation,
                info.to_vec(),
            )));
    }
    // RFC 2132 §9.10: option 57 is the largest DHCP message the client accepts;
    // never below the 576-byte minimum.
    let limit = match req.msg.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => {
            usize::from(*n).saturating_sub(28).max(DEFAULT_MAX_DHCP)
        }
        _ => DEFAULT_MAX_DHCP,
    };
    let mut trim = TRIM_ORDER.iter();
    let bytes = loop {
        match encode(&reply) {
            Some(b) if b.len() <= limit => break b,
            Some(_) => match trim.next() {
                Some(code) => {
                    reply.opts_mut().remove(*code);
                }
                None => {
                    return Outcome {
                        verdict: Err(Ignore::ReplyTooLarge),
                        persist,
                    };
                }
            },
            None => {
                return Outcome {
                    verdict: Err(Ignore::ReplyTooLarge),
                    persist,
                };
            }
        }
    };
    let yiaddr = reply.yiaddr();
    let file = match reply.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
        _ => reply.fname().map(|f| {
            String::from_utf8_lossy(f)
                .trim_end_matches('\0')
                .to_string()
        }),
    };
    Outcome {
        verdict: Ok(Reply {
            kind,
            bytes,
            dest,
            yiaddr,
            firmware,
            file,
        }),
        persist,
    }
}

fn encode(m: &Message) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(MIN_REPLY_LEN + 64);
    m.encode(&mut Encoder::new(&mut buf)).ok()?;
    if buf.len() < MIN_REPLY_LEN {
        buf.resize(MIN_REPLY_LEN, 0);
    }
    Some(buf)
}
