//! Many DHCP clients on one socket: every simulated machine has its own MAC and
//! transaction ids; one receiver task hands each reply to the exchange waiting
//! for its xid. Requests are broadcast with the broadcast flag set, so replies
//! come back broadcast and no address has to be configured (what PXE ROMs and
//! iPXE do before they have a lease).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Which firmware a simulated machine pretends to be (options 60, 77, 93, 94, 97).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain client (an OS, the node agent's DHCP): no PXE options.
    Plain,
    /// PXE firmware; `arch` is option 93 (0 BIOS, 7 UEFI x64).
    Pxe { arch: u16 },
    /// iPXE after the chainload: user class "iPXE".
    Ipxe { arch: u16 },
}

/// What a completed exchange gave the machine.
#[derive(Debug, Clone)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub server: Ipv4Addr,
    /// `siaddr`, where TFTP lives.
    pub next_server: Ipv4Addr,
    /// The boot file: `file` or option 67.
    pub file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NoOffer,
    NoAck,
    Nak,
}

type Waiters = Mutex<HashMap<u32, mpsc::UnboundedSender<Message>>>;

pub struct Clients {
    sock: UdpSocket,
    waiters: Waiters,
    next_xid: AtomicU32,
    /// How long to wait for an answer after each (re)transmission.
    waits: Vec<Duration>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

fn lock(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::UnboundedSender<Message>>> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clients {
    /// Port 68 on `iface`, broadcast allowed, a large receive buffer (replies to
    /// thousands of machines arrive in bursts). Each request is sent once per
    /// entry of `waits`, waiting that long for an answer, like firmware does.
    pub fn bind(iface: &str, xid_seed: u32, waits: &[Duration]) -> anyhow::Result<Arc<Clients>> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        let _ = s.set_recv_buffer_size(16 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).into())?;
        let clients = Arc::new(Clients {
            sock: UdpSocket::from_std(s.into())?,
            waiters: Mutex::new(HashMap::new()),
            next_xid: AtomicU32::new(xid_seed),
            waits: waits.to_vec(),
        });
        tokio::spawn(receive(clients.clone()));
        Ok(clients)
    }

    fn xid(&self) -> u32 {
        self.next_xid.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `msg` (retrying `self.retries` times, `self.wait` apart) until a
    /// reply with its xid passes `accept`.
    async fn exchange(&self, msg: &Message, accept: impl Fn(&Message) -> bool) -> Option<Message> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&self.waiters).insert(msg.xid(), tx);
        let mut bytes = Vec::with_capacity(512);
        let got = 'outer: {
            if msg.encode(&mut Encoder::new(&mut bytes)).is_err() {
                break 'outer None;
            }
            for wait in &self.waits {
                let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
                if self.sock.send_to(&bytes, to).await.is_err() {
                    tokio::time::sleep(*wait).await;
                    continue;
                }
                let deadline = tokio::time::Instant::now() + *wait;
                while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                    if accept(&reply) {
                        break 'outer Some(reply);
                    }
                }
            }
            None
        };
        lock(&self.waiters).remove(&msg.xid());
        got
    }

    /// DISCOVER → OFFER → REQUEST → ACK.
    pub async fn dora(&self, mac: [u8; 6], kind: Kind) -> Result<Lease, Failure> {
        let discover = request(self.xid(), mac, kind, MessageType::Discover);
        let offer = self
            .exchange(&discover, |m| {
                m.opts().msg_type() == Some(MessageType::Offer)
                    && !m.yiaddr().is_unspecified()
                    && m.chaddr().get(..6) == Some(&mac[..])
            })
            .await
            .ok_or(Failure::NoOffer)?;
        let server = server_id(&offer).ok_or(Failure::NoOffer)?;
        let mut req = request(discover.xid(), mac, kind, MessageType::Request);
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        self.finish(&req, mac).await
    }

    /// INIT-REBOOT (RFC 2131 §4.3.2): asks to keep `addr`, no server id.
    pub async fn init_reboot(
        &self,
        mac: [u8; 6],
        kind: Kind,
        addr: Ipv4Addr,
    ) -> Result<Lease, Failure> {
        let mut req = request(self.xid(), mac, kind, MessageType::Request);
        req.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        self.finish(&req, mac).await
    }

    async fn finish(&self, req: &Message, mac: [u8; 6]) -> Result<Lease, Failure> {
        let reply = self
            .exchange(req, |m| {
                matches!(
                    m.opts().msg_type(),
                    Some(MessageType::Ack | MessageType::Nak)
                ) && m.chaddr().get(..6) == Some(&mac[..])
            })
            .await
            .ok_or(Failure::NoAck)?;
        if reply.opts().msg_type() == Some(MessageType::Nak) {
            return Err(Failure::Nak);
        }
        // Firmware reads the name as a C string: dnsmasq NUL-terminates option 67.
        let raw = match reply.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => f.as_slice(),
            _ => reply.fname().unwrap_or(&[]),
        };
        let name = raw.split(|&b| b == 0).next().unwrap_or(&[]);
        let file = (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
        Ok(Lease {
            addr: reply.yiaddr(),
            server: server_id(&reply).unwrap_or(Ipv4Addr::UNSPECIFIED),
            next_server: reply.siaddr(),
            file,
        })
    }
}

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn request(xid: u32, mac: [u8; 6], kind: Kind, t: MessageType) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_htype(HType::Eth)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&mac);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(t));
    o.insert(DhcpOption::MaxMessageSize(1472));
    o.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainName,
        OptionCode::BootfileName,
        OptionCode::TFTPServerName,
    ]));
    let pxe = |o: &mut dhcproto::v4::DhcpOptions, arch: u16| {
        o.insert(DhcpOption::ClassIdentifier(
            format!("PXEClient:Arch:{arch:05}:UNDI:003016").into_bytes(),
        ));
        o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
            arch,
        )));
        o.insert(DhcpOption::ClientNetworkInterface(1, 3, 16));
        let mut guid = vec![0u8];
        guid.extend_from_slice(&[0x5a; 10]);
        guid.extend_from_slice(&mac);
        o.insert(DhcpOption::ClientMachineIdentifier(guid));
    };
    match kind {
        Kind::Plain => {}
        Kind::Pxe { arch } => pxe(o, arch),
        Kind::Ipxe { arch } => {
            pxe(o, arch);
            o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
    }
    m
}

/// Runs for the life of the process (the tool exits when its work is done).
async fn receive(c: Arc<Clients>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, _)) = c.sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        if msg.opcode() != Opcode::BootReply {
            continue;
        }
        let tx = lock(&c.waiters).get(&msg.xid()).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }
}
