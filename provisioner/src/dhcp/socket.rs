//! DHCP sockets: one UDP socket per (interface, port), bound to its device, with
//! packet info so every datagram's arrival interface and destination are known,
//! and sends that pick the source address and interface explicitly.
//!
//! Also the one piece of ARP handling DHCP needs: RFC 2131 §4.1 asks for a unicast
//! reply to a client that has no address yet and did not set the broadcast bit.
//! The client cannot answer ARP, so we add its entry first (SIOCSARP), like ISC
//! dhcpd and dnsmasq do. If that fails we broadcast instead, which clients accept.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use ipnet::Ipv4Net;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};

use super::decide::{CLIENT_PORT, Dest, ServicePort};
pub use crate::udp::RecvInfo;

/// A network interface we serve on.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub addrs: Vec<Ipv4Net>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("interface {name:?} does not exist")]
    NoInterface { name: String },
    #[error("interface {name:?} has no IPv4 address to serve from")]
    NoAddress { name: String },
    #[error("listing interfaces")]
    ListInterfaces(#[source] nix::Error),
    #[error("binding UDP port {port} on {iface:?} (is another DHCP server running?)")]
    Bind {
        iface: String,
        port: u16,
        #[source]
        source: io::Error,
    },
}

/// Looks up an interface and its IPv4 addresses.
pub fn lookup_iface(name: &str) -> Result<Iface, SocketError> {
    let index = nix::net::if_::if_nametoindex(name).map_err(|_| SocketError::NoInterface {
        name: name.to_owned(),
    })?;
    let mut addrs = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(SocketError::ListInterfaces)? {
        if ifa.interface_name != name {
            continue;
        }
        let (Some(addr), Some(mask)) = (
            ifa.address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|s| s.ip()),
            ifa.netmask
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .map(|s| s.ip()),
        ) else {
            continue;
        };
        if let Ok(net) = Ipv4Net::with_netmask(addr, mask) {
            addrs.push(net);
        }
    }
    if addrs.is_empty() {
        return Err(SocketError::NoAddress {
            name: name.to_owned(),
        });
    }
    Ok(Iface {
        name: name.to_owned(),
        index,
        addrs,
    })
}

#[derive(Debug)]
pub struct DhcpSocket {
    sock: tokio::net::UdpSocket,
    pub iface: Iface,
    pub port: ServicePort,
}

/// Socket buffer size asked for in each direction.
const SOCKET_BUFFER: usize = 4 << 20;

/// ARP flag "completed entry" (linux/if_arp.h); not exported by libc.
const ATF_COM: libc::c_int = 0x02;

impl DhcpSocket {
    /// Binds 0.0.0.0:`port` on `iface` only. Several of these (one per interface)
    /// coexist through SO_REUSEADDR + SO_BINDTODEVICE.
    pub fn bind(iface: Iface, port: ServicePort) -> Result<DhcpSocket, SocketError> {
        let number = match port {
            ServicePort::Dhcp => super::decide::SERVER_PORT,
            ServicePort::PxeBootServer => super::decide::PXE_BOOT_SERVER_PORT,
        };
        let err = |source: io::Error| SocketError::Bind {
            iface: iface.name.clone(),
            port: number,
            source,
        };
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
        sock.set_reuse_address(true).map_err(err)?;
        sock.set_broadcast(true).map_err(err)?;
        sock.bind_device(Some(iface.name.as_bytes())).map_err(err)?;
        crate::udp::enable_packet_info(&sock).map_err(err)?;
        // Boot storms arrive in bursts; a larger buffer absorbs them. SO_RCVBUFFORCE
        // (we run privileged) is not capped by net.core.rmem_max (208 KiB on stock hosts).
        crate::udp::storm_buffers(&sock, SOCKET_BUFFER);
        sock.set_nonblocking(true).map_err(err)?;
        sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, number).into())
            .map_err(err)?;
        let sock = tokio::net::UdpSocket::from_std(sock.into()).map_err(err)?;
        Ok(DhcpSocket { sock, iface, port })
    }

    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Waits for a datagram, then receives it with its packet info.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<RecvInfo> {
        crate::udp::recv_with_info(&self.sock, buf).await
    }

    /// Sends a reply from `local` out of this socket's interface.
    pub fn send(&self, bytes: &[u8], dest: Dest, local: Ipv4Addr) -> io::Result<()> {
        let to = match dest {
            Dest::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Dest::Unicast(a) => a,
            Dest::UnicastHw { addr, mac } => match self.add_arp(addr, mac.0) {
                Ok(()) => SocketAddrV4::new(addr, CLIENT_PORT),
                Err(error) => {
                    tracing::debug!(%addr, %mac, %error, "ARP entry not added; broadcasting instead");
                    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
                }
            },
        };
        let pi = libc::in_pktinfo {
            ipi_ifindex: self.iface.index as libc::c_int,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(local).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let cmsgs = [ControlMessage::Ipv4PacketInfo(&pi)];
        let addr = SockaddrIn::from(to);
        nix::sys::socket::sendmsg(
            self.raw_fd(),
            &[io::IoSlice::new(bytes)],
            &cmsgs,
            MsgFlags::empty(),
            Some(&addr),
        )
        .map_err(io::Error::from)?;
        Ok(())
    }

    /// Adds (or replaces) a complete ARP entry `addr → mac` on this interface.
    fn add_arp(&self, addr: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: arpreq is plain old data; all-zero is a valid value.
        let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
        let pa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(addr).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in and sockaddr have the same size (16) on Linux; we copy bytes.
        req.arp_pa = unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(pa) };
        req.arp_ha.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.arp_ha.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
        req.arp_flags = ATF_COM;
        for (dst, src) in req.arp_dev.iter_mut().zip(self.iface.name.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        // SAFETY: SIOCSARP reads a fully initialised arpreq; the fd is a valid socket.
        let rc = unsafe { libc::ioctl(self.raw_fd(), libc::SIOCSARP, &req as *const libc::arpreq) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
