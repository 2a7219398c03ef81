//! The original client address on the agent's leg to the application.
//!
//! A tunnelled connection ends in the agent, inside the destination pod's namespace,
//! and the agent connects to the application from there. Left alone, that connection
//! comes from the pod's own address, and the application sees itself as its peer. With
//! a transparent socket (`IP_TRANSPARENT`) the agent binds the client's address
//! instead. Two settings of the pod's namespace bring the answers back:
//!
//! - `net.ipv4.tcp_fwmark_accept = 1` (IPv4 and IPv6): a socket the application
//!   accepts takes the mark of the SYN, here [`CLIENT_ADDRESS_MARK`];
//! - a policy rule, per family, that looks packets with that mark up in a table whose
//!   only route is `local default dev lo`: they are delivered to this namespace, to
//!   the agent's socket, and never leave for the client's real address.
//!
//! No packet filter is involved; the rule and the route are made over rtnetlink from
//! the namespace's worker thread (a netlink socket belongs to its creator's namespace,
//! like any other).

use std::{fs, io, mem::size_of, net::IpAddr, os::fd::AsRawFd as _};

pub use agent_common::CLIENT_ADDRESS_MARK;
use socket2::Socket;

/// The routing table of marked packets (`ip route show table 22342`).
pub const TABLE: u32 = 0x5746;
/// The policy rule's priority: before `main` (32766), after `local` (0).
pub const RULE_PRIORITY: u32 = 0x5746;

const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fwmark_accept";

// rtnetlink, from <linux/rtnetlink.h> and <linux/fib_rules.h>.
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FR_ACT_TO_TBL: u8 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTN_LOCAL: u8 = 2;
const RT_SCOPE_HOST: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const LOOPBACK_IFINDEX: u32 = 1;

/// Sets the namespace up for transparent legs; run on its worker thread. Idempotent
/// (an agent that takes over finds the rule and the route in place). IPv6 is set up
/// where the namespace has it.
pub fn install() -> io::Result<()> {
    fs::write(SYSCTL, "1").map_err(|e| io::Error::new(e.kind(), format!("{SYSCTL}: {e}")))?;
    let netlink = Netlink::open()?;
    for family in [libc::AF_INET, libc::AF_INET6] {
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        for msg in [
            rule(RTM_NEWRULE, family, flags),
            route(RTM_NEWROUTE, family, flags),
        ] {
            match netlink.ask(&msg) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) if family == libc::AF_INET6 && without_ipv6(&e) => {
                    tracing::debug!(error = %e, "no IPv6 in the namespace; client addresses for IPv4 only");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Undoes [`install`] (an unenrolled pod that lives on); what is already gone is fine.
/// The sysctl stays: without the rule it changes nothing the pod can see.
pub fn remove() -> io::Result<()> {
    let netlink = Netlink::open()?;
    for family in [libc::AF_INET, libc::AF_INET6] {
        for msg in [rule(RTM_DELRULE, family, 0), route(RTM_DELROUTE, family, 0)] {
            match netlink.ask(&msg) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ESRCH | libc::EAFNOSUPPORT)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn without_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::ENODEV)
    )
}

/// Makes `socket` (not yet connected) leave from `client`: marked, transparent, bound
/// to the client's address with a port of the kernel's choice.
pub fn bind_as(socket: &Socket, client: IpAddr) -> io::Result<()> {
    socket.set_mark(CLIENT_ADDRESS_MARK)?;
    let (level, name) = match client {
        IpAddr::V4(_) => (libc::SOL_IP, libc::IP_TRANSPARENT),
        IpAddr::V6(_) => (libc::SOL_IPV6, libc::IPV6_TRANSPARENT),
    };
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the length passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(&std::net::SocketAddr::new(client, 0).into())
}

/// One rtnetlink request: a header, a fixed part and attributes, each 4-byte aligned.
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        b.extend_from_slice(fixed);
        Message(b)
    }

    fn u32(mut self, kind: u16, value: u32) -> Self {
        self.0.extend_from_slice(&8u16.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(&value.to_ne_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// `ip rule add fwmark CLIENT_ADDRESS_MARK lookup TABLE priority RULE_PRIORITY`.
fn rule(kind: u16, family: i32, flags: u16) -> Vec<u8> {
    // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action,
    // flags (u32).
    let fixed = [family as u8, 0, 0, 0, 0, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0];
    Message::new(kind, flags, &fixed)
        .u32(FRA_PRIORITY, RULE_PRIORITY)
        .u32(FRA_FWMARK, CLIENT_ADDRESS_MARK)
        .u32(FRA_FWMASK, u32::MAX)
        .u32(FRA_TABLE, TABLE)
        .finish()
}

/// `ip route add local default dev lo table TABLE`.
fn route(kind: u16, family: i32, flags: u16) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type,
    // flags (u32).
    let fixed = [
        family as u8,
        0,
        0,
        0,
        0,
        RTPROT_STATIC,
        RT_SCOPE_HOST,
        RTN_LOCAL,
        0,
        0,
        0,
        0,
    ];
    Message::new(kind, flags, &fixed)
        .u32(RTA_TABLE, TABLE)
        .u32(RTA_OIF, LOOPBACK_IFINDEX)
        .finish()
}

/// A NETLINK_ROUTE socket of the calling thread's namespace.
struct Netlink(Socket);

impl Netlink {
    fn open() -> io::Result<Self> {
        let socket = Socket::new(
            socket2::Domain::from(libc::AF_NETLINK),
            socket2::Type::RAW.cloexec(),
            Some(socket2::Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        socket.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        Ok(Netlink(socket))
    }

    /// Sends one request and reads the kernel's acknowledgement: `Ok` or its errno.
    fn ask(&self, msg: &[u8]) -> io::Result<()> {
        let mut kernel: libc::sockaddr_nl = {
            // SAFETY: an all-zero sockaddr_nl is valid (pid 0 = the kernel).
            unsafe { std::mem::zeroed() }
        };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` is valid for its length; `kernel` is a sockaddr_nl of the
        // size passed.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        ack(&buf[..n as usize])
    }
}

/// The result an `NLMSG_ERROR` acknowledgement carries (0: done).
fn ack(reply: &[u8]) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "a netlink answer that is not an ack",
        )
    };
    if reply.len() < 20 {
        return Err(bad());
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != NLMSG_ERROR {
        return Err(bad());
    }
    let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    match errno {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_request_has_the_kernel_layout() {
        let m = rule(RTM_NEWRULE, libc::AF_INET, NLM_F_CREATE);
        // 16 header + 12 fib_rule_hdr + 4 attributes of 8.
        assert_eq!(m.len(), 16 + 12 + 4 * 8);
        assert_eq!(
            u32::from_ne_bytes(m[..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWRULE);
        assert_eq!(
            u16::from_ne_bytes([m[6], m[7]]),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        );
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[16 + 7], FR_ACT_TO_TBL);
        // The mark attribute: length 8, type FRA_FWMARK, the mark.
        let attr = &m[16 + 12 + 8..16 + 12 + 16];
        assert_eq!(u16::from_ne_bytes([attr[2], attr[3]]), FRA_FWMARK);
        assert_eq!(
            u32::from_ne_bytes(attr[4..].try_into().unwrap()),
            CLIENT_ADDRESS_MARK
        );
    }

    #[test]
    fn acks_carry_the_kernels_errno() {
        let mut reply = vec![0u8; 36];
        reply[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(ack(&reply).is_ok());
        reply[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(ack(&reply).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert!(ack(&reply[..10]).is_err());
        reply[4..6].copy_from_slice(&16u16.to_ne_bytes());
        assert!(ack(&reply).is_err());
    }
}
