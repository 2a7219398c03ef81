//! Same-node acceleration: `sockops` + `sk_msg` over a sockhash.
//!
//! When a TCP connection is established in an enrolled namespace and its two ends are
//! both in that namespace (the peer is a loopback address, or the socket's own
//! address — the app ↔ agent legs), `sockops` adds each end to `LOCAL_SOCKETS` as it
//! becomes established. From then on `weft_sk_msg` runs on every `sendmsg` of those
//! sockets and, when the peer is in the map too, puts the bytes straight on the peer's
//! receive queue, skipping the TCP/IP stack and the loopback device.
//!
//! A caveat of the kernel (6.x) that makes this opt-in (`WEFT_SOCKMAP=on`): a socket
//! in a sockhash that blocks in `recv` returns EAGAIN when it is woken without bytes
//! for it — as a thread of the same socket writing in bulk on the ordinary path does.
//! Applications that read with non-blocking sockets (event loops: Go, Java NIO,
//! Node.js, Envoy, Rust async) do not notice; blocking full-duplex ones can.
//!
//! Flow control: bytes put on a peer's message queue are not bounded by its receive
//! buffer, so each socket has a budget (`LOCAL_BUDGET`): at most
//! `LOCAL_OUTSTANDING_LIMIT` bytes passed since the peer last sent anything (request /
//! response traffic renews it with every answer), and `LOCAL_TOTAL_LIMIT` in all. A
//! direction that spends it takes the ordinary path, with TCP's flow control, for the
//! rest of the connection.
//!
//! Ordering: a receiving socket reads its message queue before its ordinary receive
//! queue, so switching from the short cut to the ordinary path keeps bytes in order;
//! the other way round would not. A socket that sends before its peer joined the map (a
//! race at connection set-up) therefore has its bytes go the ordinary way and is
//! recorded in `LOCAL_FALLBACK`, so that it keeps going the ordinary way. Only data
//! takes the short cut: FIN and RST still travel through TCP, after every byte sent
//! before them, so half-close and teardown behave as without acceleration. A socket
//! leaves the map when it closes (the kernel removes it).

use agent_common::{
    AF_INET, AF_INET6, CLIENT_ADDRESS_MARK, Decision, LOCAL_FALLBACK_CAPACITY,
    LOCAL_OUTSTANDING_LIMIT, LOCAL_SOCKETS_CAPACITY, LOCAL_TOTAL_LIMIT, LocalKey, Setting,
    SockAddr,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_F_INGRESS, bpf_sock, bpf_sock_ops, sk_action::SK_PASS},
    helpers::generated::bpf_get_netns_cookie,
    macros::{map, sk_msg},
    maps::{Array, LruHashMap, SockHash},
    programs::{SkMsgContext, SockOpsContext},
};
use core::ptr::{addr_of, read_volatile};

use crate::capture::{ENROLLED_NETNS, count, is_loopback_v6};

#[map]
static LOCAL_SOCKETS: SockHash<LocalKey> = SockHash::with_max_entries(LOCAL_SOCKETS_CAPACITY, 0);

#[map]
static LOCAL_FALLBACK: LruHashMap<LocalKey, u8> =
    LruHashMap::with_max_entries(LOCAL_FALLBACK_CAPACITY, 0);

/// What one socket of a local leg has passed to its peer.
#[repr(C)]
#[derive(Clone, Copy)]
struct Budget {
    /// Since the peer last sent anything.
    outstanding: u64,
    /// Since the socket joined the map.
    total: u64,
}

#[map]
static LOCAL_BUDGET: LruHashMap<LocalKey, Budget> =
    LruHashMap::with_max_entries(LOCAL_SOCKETS_CAPACITY, 0);

#[map]
static SETTINGS: Array<u32> = Array::with_max_entries(Setting::COUNT, 0);

/// The addresses of one socket, read from a `sockops` or `sk_msg` context, which
/// share the field layout for these.
struct Ends {
    family: u32,
    remote_ip4: u32,
    local_ip4: u32,
    remote_ip6: [u32; 4],
    local_ip6: [u32; 4],
    /// Network byte order; the kernel puts it in the upper 16 bits of the word on
    /// little-endian machines (older kernels used the lower ones).
    remote_port: u32,
    /// Host byte order.
    local_port: u32,
}

/// Reads the addresses of a socket from a context struct with the fields of
/// `bpf_sock_ops` / `sk_msg_md`; each field with its own 4-byte load straight from the
/// context pointer, the only form the verifier accepts.
macro_rules! read_ends {
    ($ptr:expr) => {{
        let p = $ptr;
        // SAFETY: `p` is the context pointer the kernel passed; every field read is one
        // the verifier allows for this program type, with a 4-byte load.
        unsafe {
            Ends {
                family: read_volatile(addr_of!((*p).family)),
                remote_ip4: read_volatile(addr_of!((*p).remote_ip4)),
                local_ip4: read_volatile(addr_of!((*p).local_ip4)),
                remote_ip6: [
                    read_volatile(addr_of!((*p).remote_ip6[0])),
                    read_volatile(addr_of!((*p).remote_ip6[1])),
                    read_volatile(addr_of!((*p).remote_ip6[2])),
                    read_volatile(addr_of!((*p).remote_ip6[3])),
                ],
                local_ip6: [
                    read_volatile(addr_of!((*p).local_ip6[0])),
                    read_volatile(addr_of!((*p).local_ip6[1])),
                    read_volatile(addr_of!((*p).local_ip6[2])),
                    read_volatile(addr_of!((*p).local_ip6[3])),
                ],
                remote_port: read_volatile(addr_of!((*p).remote_port)),
                local_port: read_volatile(addr_of!((*p).local_port)),
            }
        }
    }};
}

/// The key of this end, or `None` for a family other than IPv4/IPv6.
#[inline(always)]
fn key_of(ends: &Ends, netns_cookie: u64) -> Option<LocalKey> {
    let (local, remote) = if ends.family == u32::from(AF_INET) {
        (
            SockAddr::v4_mapped(ends.local_ip4),
            SockAddr::v4_mapped(ends.remote_ip4),
        )
    } else if ends.family == u32::from(AF_INET6) {
        (SockAddr::v6(ends.local_ip6), SockAddr::v6(ends.remote_ip6))
    } else {
        return None;
    };
    Some(LocalKey {
        netns_cookie,
        local,
        remote,
        local_port: ends.local_port as u16,
        remote_port: u16::from_be(if ends.remote_port > 0xffff {
            (ends.remote_port >> 16) as u16
        } else {
            ends.remote_port as u16
        }),
        _pad: 0,
    })
}

/// Whether both ends of the connection are in this namespace: the peer is a loopback
/// address or this socket's own address.
#[inline(always)]
fn is_local(key: &LocalKey) -> bool {
    key.remote == key.local || is_loopback_v6(&key.remote)
}

/// Whether the socket is one end of the agent's leg to the application made from the
/// original client's address: the agent's side carries [`CLIENT_ADDRESS_MARK`], and
/// the application's accepted side inherits it from the SYN (`tcp_fwmark_accept`).
/// Both ends are in this namespace although the peer address is not its own.
#[inline(always)]
fn from_client_address(ops: *mut bpf_sock_ops) -> bool {
    // SAFETY: an 8-byte load of the context's `sk` pointer, as the verifier requires;
    // it may be null and is checked before use.
    let sk: *mut bpf_sock = unsafe { read_volatile(addr_of!((*ops).__bindgen_anon_2.sk)) };
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` is a non-null socket pointer from the context; `mark` is readable.
    unsafe { read_volatile(addr_of!((*sk).mark)) == CLIENT_ADDRESS_MARK }
}

/// `sockops`, on `ACTIVE_ESTABLISHED` and `PASSIVE_ESTABLISHED`: adds a local leg's
/// socket to `LOCAL_SOCKETS`. Returns `None` for sockets it leaves alone.
#[inline(always)]
pub(crate) fn on_established(ctx: &SockOpsContext) -> Option<Decision> {
    let accelerate = SETTINGS.get(Setting::Accelerate as u32).copied()?;
    if accelerate == 0 {
        return None;
    }
    // SAFETY: the netns cookie helper takes the program's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: the value is only compared to `None`.
    unsafe { ENROLLED_NETNS.get(netns_cookie) }?;
    let ops: *mut bpf_sock_ops = ctx.ops;
    let mut key = key_of(&read_ends!(ops), netns_cookie)?;
    if !is_local(&key) && !from_client_address(ops) {
        return None;
    }
    // A socket reusing the 4-tuple of an earlier one starts afresh.
    let _ = LOCAL_FALLBACK.remove(key);
    let fresh = Budget {
        outstanding: 0,
        total: 0,
    };
    if LOCAL_BUDGET.insert(key, fresh, 0).is_err() {
        return Some(Decision::LocalMapFailed);
    }
    // SAFETY: `ops` is the context of this `sockops` call; the helper reads the socket
    // from it.
    match LOCAL_SOCKETS.update(&mut key, unsafe { &mut *ops }, u64::from(BPF_ANY)) {
        Ok(()) => Some(Decision::LocalAccelerated),
        Err(_) => Some(Decision::LocalMapFailed),
    }
}

/// `sk_msg` on the sockets of `LOCAL_SOCKETS`: passes each message to the peer's
/// receive queue when the peer is in the map; otherwise lets it take the ordinary path
/// and keeps the socket on that path.
#[sk_msg]
pub fn weft_sk_msg(ctx: SkMsgContext) -> u32 {
    let (decision, verdict) = try_msg(&ctx);
    if let Some(decision) = decision {
        count(decision);
    }
    verdict
}

#[inline(always)]
fn try_msg(ctx: &SkMsgContext) -> (Option<Decision>, u32) {
    // SAFETY: the netns cookie helper takes the program's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let Some(key) = key_of(&read_ends!(ctx.msg), netns_cookie) else {
        return (None, SK_PASS);
    };
    // SAFETY: the value is only compared to `None`.
    if unsafe { LOCAL_FALLBACK.get(key) }.is_some() {
        return (None, SK_PASS);
    }
    let Some(budget) = LOCAL_BUDGET.get_ptr_mut(key) else {
        // Evicted (the map is full): no bookkeeping, no short cut.
        let _ = LOCAL_FALLBACK.insert(key, 1, 0);
        return (Some(Decision::LocalBudgetSpent), SK_PASS);
    };
    let mut peer = key.peer();
    let Some(peer_budget) = LOCAL_BUDGET.get_ptr_mut(peer) else {
        // The peer has not joined the map (yet), or has left it (it closed).
        let _ = LOCAL_FALLBACK.insert(key, 1, 0);
        return (Some(Decision::LocalFallback), SK_PASS);
    };
    // SAFETY: `peer_budget` points into a map value, valid during this program run; the
    // peer's own program may update it concurrently, which only makes the count
    // briefly stale. This socket sending is taken as its having read what its peer
    // passed it.
    unsafe { (*peer_budget).outstanding = 0 };
    // SAFETY: the context field `size` is readable in `sk_msg` with a 4-byte load.
    let size = u64::from(unsafe { read_volatile(addr_of!((*ctx.msg).size)) });
    // SAFETY: as for `peer_budget`.
    let (outstanding, total) = unsafe { ((*budget).outstanding, (*budget).total) };
    if outstanding + size > LOCAL_OUTSTANDING_LIMIT || total + size > LOCAL_TOTAL_LIMIT {
        // Everything passed so far sits in the peer's message queue, which the peer
        // reads before its ordinary receive queue: switching to the ordinary path
        // keeps the bytes in order.
        let _ = LOCAL_FALLBACK.insert(key, 1, 0);
        return (Some(Decision::LocalBudgetSpent), SK_PASS);
    }
    // The helper returns SK_PASS when the peer is in the map and the kernel will move
    // the message there; anything else means the peer has just left the map (it
    // closed).
    if LOCAL_SOCKETS.redirect_msg(ctx, &mut peer, u64::from(BPF_F_INGRESS)) as u32 != SK_PASS {
        let _ = LOCAL_FALLBACK.insert(key, 1, 0);
        return (Some(Decision::LocalFallback), SK_PASS);
    }
    // SAFETY: as above.
    unsafe {
        (*budget).outstanding = outstanding + size;
        (*budget).total = total + size;
    }
    (Some(Decision::LocalRedirected), SK_PASS)
}
