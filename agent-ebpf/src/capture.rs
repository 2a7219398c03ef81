//! Outbound capture: `cgroup/connect4`, `cgroup/connect6` and the `sockops` hand-over
//! (a UDP `connect()` to port 53 is DNS's, `dns.rs`).

use agent_common::{
    AF_INET, AF_INET6, AGENT_PORTS, Decision, ENROLLED_NETNS_CAPACITY, EXCLUDED_PORTS_CAPACITY,
    EnrolledNetns, ORIGINAL_DST_CAPACITY, OUTBOUND_PORT, OriginalDst, SockAddr, SocketKey,
    is_agent_mark,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_TCP_CONNECT_CB, bpf_sock_addr,
    },
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, SockOpsContext},
};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

/// Verdict of a `cgroup/connect*` program: let the `connect()` proceed (with whatever
/// destination the program left in the context).
const ALLOW: i32 = 1;
/// Verdict of a `sockops` program; the return value is ignored by the kernel.
const SOCKOPS_DONE: u32 = 1;

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;

#[map]
pub(crate) static ENROLLED_NETNS: HashMap<u64, EnrolledNetns> =
    HashMap::with_max_entries(ENROLLED_NETNS_CAPACITY, 0);

#[map]
pub(crate) static EXCLUDED_PORTS: HashMap<u16, u8> =
    HashMap::with_max_entries(EXCLUDED_PORTS_CAPACITY, 0);

#[map]
static ORIGINAL_DST_BY_COOKIE: LruHashMap<u64, OriginalDst> =
    LruHashMap::with_max_entries(ORIGINAL_DST_CAPACITY, 0);

#[map]
static ORIGINAL_DST_BY_SOCKET: LruHashMap<SocketKey, OriginalDst> =
    LruHashMap::with_max_entries(ORIGINAL_DST_CAPACITY, 0);

#[map]
static DECISIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Decision::COUNT, 0);

#[inline(always)]
pub(crate) fn count(decision: Decision) {
    if let Some(slot) = DECISIONS.get_ptr_mut(decision as u32) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, and a program
        // is not preempted by another program on the same CPU mid-update.
        unsafe { *slot += 1 };
    }
}

#[cgroup_sock_addr(connect4)]
pub fn weft_connect4(ctx: SockAddrContext) -> i32 {
    count(try_connect(&ctx, AF_INET));
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn weft_connect6(ctx: SockAddrContext) -> i32 {
    count(try_connect(&ctx, AF_INET6));
    ALLOW
}

/// Decides what to do with one `connect()` and, for a capture, rewrites the
/// destination in `ctx`. Never fails the `connect()` itself: when in doubt, the
/// connection is left alone.
#[inline(always)]
fn try_connect(ctx: &SockAddrContext, family: u16) -> Decision {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context pointer the kernel passed to this program; each field
    // read below is one the verifier allows for `cgroup/connect*` (4-byte loads).
    let (sock_type, protocol, port_be, sk) = unsafe {
        (
            read_volatile(addr_of!((*sa).type_)),
            read_volatile(addr_of!((*sa).protocol)),
            read_volatile(addr_of!((*sa).user_port)),
            (*sa).__bindgen_anon_1.sk,
        )
    };
    if sock_type == SOCK_DGRAM {
        // A connected UDP socket: DNS goes to the agent's resolver like `sendmsg`.
        return crate::dns::try_redirect(ctx, family).unwrap_or(Decision::NotTcp);
    }
    if sock_type != SOCK_STREAM || protocol != IPPROTO_TCP {
        return Decision::NotTcp;
    }

    // SAFETY: as above; the netns cookie helper takes the program's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: the value is only compared to `None`.
    if unsafe { ENROLLED_NETNS.get(netns_cookie) }.is_none() {
        return Decision::NotEnrolled;
    }

    // SAFETY: `sk` is the socket of this `connect()`; for `cgroup/connect*` the verifier
    // types it as a non-null socket pointer whose `mark` is readable.
    let mark = unsafe { read_volatile(addr_of!((*sk).mark)) };
    if is_agent_mark(mark) {
        return Decision::AgentSocket;
    }

    let port = u16::from_be(port_be as u16);
    let addr = if family == AF_INET {
        // SAFETY: 4-byte load of `user_ip4` from the context.
        let ip = unsafe { read_volatile(addr_of!((*sa).user_ip4)) };
        if ip.to_ne_bytes()[0] == 127 {
            return Decision::Loopback;
        }
        SockAddr::v4_mapped(ip)
    } else {
        let words = read_user_ip6(sa);
        let addr = SockAddr::v6(words);
        if is_loopback_v6(&addr) {
            return Decision::Loopback;
        }
        addr
    };

    let mut i = 0;
    while i < AGENT_PORTS.len() {
        if AGENT_PORTS[i] == port {
            return Decision::AgentPort;
        }
        i += 1;
    }
    // SAFETY: the value is only compared to `None`.
    if unsafe { EXCLUDED_PORTS.get(port) }.is_some() {
        return Decision::ExcludedPort;
    }

    let original = OriginalDst {
        dst: SockAddr {
            addr,
            port,
            family,
            _pad: 0,
        },
    };
    // SAFETY: the socket cookie helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if ORIGINAL_DST_BY_COOKIE.insert(cookie, original, 0).is_err() {
        return Decision::RecordFailed;
    }

    let outbound_port_be = u32::from(OUTBOUND_PORT.to_be());
    if family == AF_INET {
        // SAFETY: 4-byte stores to `user_ip4` and `user_port` are allowed for
        // `cgroup/connect4`.
        unsafe {
            write_volatile(
                addr_of_mut!((*sa).user_ip4),
                u32::from_ne_bytes([127, 0, 0, 1]),
            );
            write_volatile(addr_of_mut!((*sa).user_port), outbound_port_be);
        }
    } else {
        // An IPv4 destination reached through an IPv6 socket (`::ffff:a.b.c.d`) goes to
        // the IPv4 listener through the mapped loopback address; a native IPv6 one to
        // `::1`.
        let loopback: [u32; 4] = if is_v4_mapped(&addr) {
            [
                0,
                0,
                u32::from_ne_bytes([0, 0, 0xff, 0xff]),
                u32::from_ne_bytes([127, 0, 0, 1]),
            ]
        } else {
            [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]
        };
        write_user_ip6(sa, loopback);
        // SAFETY: 4-byte store to `user_port` is allowed for `cgroup/connect6`.
        unsafe { write_volatile(addr_of_mut!((*sa).user_port), outbound_port_be) };
    }
    Decision::Redirected
}

#[inline(always)]
pub(crate) fn read_user_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    // SAFETY: four separate 4-byte loads, the only access width the verifier accepts
    // for `user_ip6` on every kernel we support.
    unsafe {
        [
            read_volatile(addr_of!((*sa).user_ip6[0])),
            read_volatile(addr_of!((*sa).user_ip6[1])),
            read_volatile(addr_of!((*sa).user_ip6[2])),
            read_volatile(addr_of!((*sa).user_ip6[3])),
        ]
    }
}

#[inline(always)]
pub(crate) fn write_user_ip6(sa: *mut bpf_sock_addr, words: [u32; 4]) {
    // SAFETY: four separate 4-byte stores to `user_ip6`, allowed for `cgroup/connect6`.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), words[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), words[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), words[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), words[3]);
    }
}

#[inline(always)]
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// `::1`, or an IPv4-mapped address in `127.0.0.0/8`.
#[inline(always)]
pub(crate) fn is_loopback_v6(addr: &[u8; 16]) -> bool {
    if is_v4_mapped(addr) {
        return addr[12] == 127;
    }
    let mut i = 0;
    while i < 15 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[15] == 1
}

#[sock_ops]
pub fn weft_sockops(ctx: SockOpsContext) -> u32 {
    let decision = match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => try_sockops_connect(&ctx),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            crate::local::on_established(&ctx)
        }
        _ => None,
    };
    if let Some(decision) = decision {
        count(decision);
    }
    SOCKOPS_DONE
}

/// On a redirected connection's SYN, moves its original destination to the map keyed
/// by what the agent will see. Returns `None` for the (many) connections that were
/// never redirected.
#[inline(always)]
fn try_sockops_connect(ctx: &SockOpsContext) -> Option<Decision> {
    // SAFETY: the socket cookie helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let original = *unsafe { ORIGINAL_DST_BY_COOKIE.get(cookie) }?;
    let _ = ORIGINAL_DST_BY_COOKIE.remove(cookie);

    // Read every field up front, each with its own 4-byte load straight from the
    // context pointer: the verifier refuses loads through a derived context pointer,
    // which the compiler would otherwise build when branches share a load.
    let ops = ctx.ops;
    // SAFETY: `ops` is the context the kernel passed; these fields are readable in
    // `sockops` with 4-byte loads.
    let (family, local_ip4, local_ip6, local_port) = unsafe {
        (
            read_volatile(addr_of!((*ops).family)),
            read_volatile(addr_of!((*ops).local_ip4)),
            [
                read_volatile(addr_of!((*ops).local_ip6[0])),
                read_volatile(addr_of!((*ops).local_ip6[1])),
                read_volatile(addr_of!((*ops).local_ip6[2])),
                read_volatile(addr_of!((*ops).local_ip6[3])),
            ],
            read_volatile(addr_of!((*ops).local_port)),
        )
    };
    let addr = if family == u32::from(AF_INET) {
        SockAddr::v4_mapped(local_ip4)
    } else if family == u32::from(AF_INET6) {
        SockAddr::v6(local_ip6)
    } else {
        return Some(Decision::OriginalDstMissing);
    };
    let key = SocketKey {
        // SAFETY: the netns cookie helper takes the program's context.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.as_ptr()) },
        src: SockAddr {
            addr,
            // `local_port` is in host byte order in `bpf_sock_ops`.
            port: local_port as u16,
            // The agent sees the peer in whatever family its listener has; the key
            // carries none.
            family: 0,
            _pad: 0,
        },
    };
    if ORIGINAL_DST_BY_SOCKET.insert(key, original, 0).is_err() {
        return Some(Decision::SocketRecordFailed);
    }
    Some(Decision::OriginalDstRecorded)
}
