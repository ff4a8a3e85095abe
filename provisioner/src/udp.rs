//! UDP receive with packet info (IP_PKTINFO), shared by the DHCP and TFTP shells:
//! which interface a datagram arrived on, its destination, and the local address
//! the kernel would answer from.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, sockopt};

/// Raises the receive and send buffers to `size` for a burst of a thousand
/// machines. SO_*BUFFORCE (we run privileged) is not capped by net.core.rmem_max
/// (208 KiB on stock hosts); unprivileged, the capped size is the best we get.
pub fn storm_buffers(sock: &socket2::Socket, size: usize) {
    force_buffer(sock, libc::SO_RCVBUFFORCE, size)
        .or_else(|_| sock.set_recv_buffer_size(size))
        .ok();
    force_buffer(sock, libc::SO_SNDBUFFORCE, size)
        .or_else(|_| sock.set_send_buffer_size(size))
        .ok();
}

fn force_buffer(sock: &socket2::Socket, option: libc::c_int, size: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from a live c_int; fd is valid.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What packet info told us about a received datagram.
#[derive(Debug, Clone, Copy)]
pub struct RecvInfo {
    pub len: usize,
    pub src: SocketAddrV4,
    pub ifindex: u32,
    /// Destination address of the datagram.
    pub dst: Ipv4Addr,
    /// The local address the kernel would answer from on that interface.
    pub local: Ipv4Addr,
}

/// Asks the kernel to attach IP_PKTINFO to every received datagram.
pub fn enable_packet_info(sock: &impl AsFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(sock, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)
}

/// Waits for a datagram on `sock`, then receives it with its packet info.
pub async fn recv_with_info(sock: &tokio::net::UdpSocket, buf: &mut [u8]) -> io::Result<RecvInfo> {
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || {
            recv_now(sock.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// One non-blocking receive; `WouldBlock` when nothing is queued.
fn recv_now(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<RecvInfo> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg =
        nix::sys::socket::recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
    let src = msg
        .address
        .map(|a| SocketAddrV4::new(a.ip(), a.port()))
        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let mut info = RecvInfo {
        len: msg.bytes,
        src,
        ifindex: 0,
        dst: Ipv4Addr::UNSPECIFIED,
        local: Ipv4Addr::UNSPECIFIED,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(pi) = c {
                info.ifindex = u32::try_from(pi.ipi_ifindex).unwrap_or(0);
                info.dst = Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr));
                info.local = Ipv4Addr::from(u32::from_be(pi.ipi_spec_dst.s_addr));
            }
        }
    }
    Ok(info)
}

/// The MAC the kernel's neighbour table holds for `addr` (from /proc/net/arp), for
/// peers whose address we did not hand out (proxy mode).
pub fn neighbour_mac(addr: Ipv4Addr) -> Option<crate::config::MacAddr> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    let ip = addr.to_string();
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device; flags 0x0 = incomplete.
        match cols.as_slice() {
            [a, _, flags, hw, ..] if *a == ip && *flags != "0x0" => hw.parse().ok(),
            _ => None,
        }
    })
}
