//! DNS capture: `cgroup/sendmsg4|6` (and the UDP case of `cgroup/connect4|6`) send a
//! pod's DNS datagrams to the agent's resolver on loopback; `cgroup/recvmsg4|6` show its
//! answers as coming from the server the pod asked, which stub resolvers check.

use agent_common::{
    AF_INET, DNS_ORIGINAL_CAPACITY, DNS_PORT, Decision, ENROLLED_DNS, ENROLLED_NETNS_CAPACITY,
    OriginalDst, SockAddr, is_agent_mark,
};
use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use crate::capture::{ENROLLED_NETNS, count, is_loopback_v6, read_user_ip6, write_user_ip6};

/// Verdict of `sendmsg*` and `recvmsg*`: go on (with what the program left in `ctx`).
const ALLOW: i32 = 1;
const DNS: u16 = 53;

#[map]
static DNS_ORIGINAL: LruHashMap<u64, OriginalDst> =
    LruHashMap::with_max_entries(DNS_ORIGINAL_CAPACITY, 0);

#[map]
static DNS_UPSTREAM: HashMap<u64, OriginalDst> =
    HashMap::with_max_entries(ENROLLED_NETNS_CAPACITY, 0);

#[cgroup_sock_addr(sendmsg4)]
pub fn weft_sendmsg4(ctx: SockAddrContext) -> i32 {
    if let Some(d) = try_redirect(&ctx, AF_INET) {
        count(d);
    }
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn weft_sendmsg6(ctx: SockAddrContext) -> i32 {
    if let Some(d) = try_redirect(&ctx, agent_common::AF_INET6) {
        count(d);
    }
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn weft_recvmsg4(ctx: SockAddrContext) -> i32 {
    if let Some(d) = try_restore(&ctx, AF_INET) {
        count(d);
    }
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn weft_recvmsg6(ctx: SockAddrContext) -> i32 {
    if let Some(d) = try_restore(&ctx, agent_common::AF_INET6) {
        count(d);
    }
    ALLOW
}

/// A UDP datagram or `connect()` to port 53 of a namespace whose DNS the agent answers:
/// to the resolver, with the server asked recorded for the socket and the namespace.
/// `None` for everything that is not DNS (most UDP), which is not counted.
#[inline(always)]
pub(crate) fn try_redirect(ctx: &SockAddrContext, family: u16) -> Option<Decision> {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context the kernel passed; `user_port` and `sk` are readable
    // in `cgroup/sendmsg*` and `cgroup/connect*` (4-byte loads).
    let (port_be, sk) = unsafe {
        (
            read_volatile(addr_of!((*sa).user_port)),
            (*sa).__bindgen_anon_1.sk,
        )
    };
    if u16::from_be(port_be as u16) != DNS {
        return None;
    }
    // SAFETY: the netns cookie helper takes the program's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let enrolled = *unsafe { ENROLLED_NETNS.get(netns_cookie) }?;
    if enrolled.flags & ENROLLED_DNS == 0 {
        return None;
    }
    // SAFETY: `sk` is this socket, typed non-null by the verifier; `mark` is readable.
    if is_agent_mark(unsafe { read_volatile(addr_of!((*sk).mark)) }) {
        return Some(Decision::AgentSocket);
    }
    let addr = if family == AF_INET {
        // SAFETY: 4-byte load of `user_ip4`.
        let ip = unsafe { read_volatile(addr_of!((*sa).user_ip4)) };
        if ip.to_ne_bytes()[0] == 127 {
            return Some(Decision::Loopback);
        }
        SockAddr::v4_mapped(ip)
    } else {
        let addr = SockAddr::v6(read_user_ip6(sa));
        if is_loopback_v6(&addr) {
            return Some(Decision::Loopback);
        }
        addr
    };
    let original = OriginalDst {
        dst: SockAddr {
            addr,
            port: DNS,
            family,
            _pad: 0,
        },
    };
    // SAFETY: the socket cookie helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if DNS_ORIGINAL.insert(cookie, original, 0).is_err() {
        return Some(Decision::RecordFailed);
    }
    // Best effort: where the agent forwards what it does not answer.
    let _ = DNS_UPSTREAM.insert(netns_cookie, original, 0);
    let port_be = u32::from(DNS_PORT.to_be());
    if family == AF_INET {
        // SAFETY: 4-byte stores of `user_ip4` and `user_port`, allowed here.
        unsafe {
            write_volatile(
                addr_of_mut!((*sa).user_ip4),
                u32::from_ne_bytes([127, 0, 0, 1]),
            );
            write_volatile(addr_of_mut!((*sa).user_port), port_be);
        }
    } else {
        write_user_ip6(sa, loopback_for(&addr));
        // SAFETY: 4-byte store of `user_port`.
        unsafe { write_volatile(addr_of_mut!((*sa).user_port), port_be) };
    }
    Some(Decision::DnsRedirected)
}

/// The resolver's address for a destination: `::ffff:127.0.0.1` for an IPv4 one asked
/// through an IPv6 socket, else `::1`.
#[inline(always)]
fn loopback_for(addr: &[u8; 16]) -> [u32; 4] {
    if addr[10] == 0xff && addr[11] == 0xff && addr[0] == 0 && addr[8] == 0 {
        [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes([127, 0, 0, 1]),
        ]
    } else {
        [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
    }
}

/// An answer from the resolver to a socket that asked another server: shown as from
/// that server.
#[inline(always)]
fn try_restore(ctx: &SockAddrContext, family: u16) -> Option<Decision> {
    // SAFETY: the socket cookie helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let original = *unsafe { DNS_ORIGINAL.get(cookie) }?;
    let sa = ctx.sock_addr;
    // SAFETY: 4-byte load of `user_port`, readable in `cgroup/recvmsg*`.
    let port_be = unsafe { read_volatile(addr_of!((*sa).user_port)) };
    if u16::from_be(port_be as u16) != DNS_PORT {
        return None;
    }
    let dst = original.dst;
    let original_port_be = u32::from(dst.port.to_be());
    if family == AF_INET {
        // SAFETY: 4-byte load of `user_ip4`.
        let ip = unsafe { read_volatile(addr_of!((*sa).user_ip4)) };
        if ip != u32::from_ne_bytes([127, 0, 0, 1]) {
            return None;
        }
        let a = dst.addr;
        // SAFETY: 4-byte stores of `user_ip4` and `user_port`, allowed in recvmsg4.
        unsafe {
            write_volatile(
                addr_of_mut!((*sa).user_ip4),
                u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
            );
            write_volatile(addr_of_mut!((*sa).user_port), original_port_be);
        }
    } else {
        let from = SockAddr::v6(read_user_ip6(sa));
        if !is_loopback_v6(&from) {
            return None;
        }
        let a = dst.addr;
        write_user_ip6(
            sa,
            [
                u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
                u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
                u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
                u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
            ],
        );
        // SAFETY: 4-byte store of `user_port`.
        unsafe { write_volatile(addr_of_mut!((*sa).user_port), original_port_be) };
    }
    Some(Decision::DnsReplyRestored)
}
