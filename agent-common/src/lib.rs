//! Data shared by the kernel programs (`agent-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of `bool`s and enums inside map
//! values, so that both sides agree on the layout byte for byte. Each type's size is
//! checked at compile time.
#![no_std]

use core::mem::size_of;

/// The agent's outbound capture port (loopback, inside each enrolled namespace).
pub const OUTBOUND_PORT: u16 = 15001;
/// The agent's inbound plaintext capture port.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// HBONE (HTTP/2 CONNECT over mutual TLS).
pub const HBONE_PORT: u16 = 15008;
/// Prometheus metrics.
pub const METRICS_PORT: u16 = 15020;
/// Readiness.
pub const READINESS_PORT: u16 = 15021;
/// DNS proxy.
pub const DNS_PORT: u16 = 15053;

/// Ports the agent itself serves. Connections to them are never redirected, so nothing
/// can loop back into the agent.
pub const AGENT_PORTS: [u16; 6] = [
    OUTBOUND_PORT,
    INBOUND_PLAINTEXT_PORT,
    HBONE_PORT,
    METRICS_PORT,
    READINESS_PORT,
    DNS_PORT,
];

/// `SO_MARK` the agent sets on every socket it opens inside a pod's namespace. The
/// capture programs leave such sockets alone, so the agent's own upstream connections
/// are not captured again.
pub const AGENT_SOCKET_MARK: u32 = 0x5746_0001;

/// `SO_MARK` of the agent's leg to the application when it leaves from the original
/// client's address (a transparent socket). The pod's namespace routes packets with
/// this mark to the local stack, so the application's answers, which carry it too
/// (`tcp_fwmark_accept`), come back to the agent instead of leaving for the client.
/// The capture programs leave such sockets alone like [`AGENT_SOCKET_MARK`].
pub const CLIENT_ADDRESS_MARK: u32 = 0x5746_0002;

/// Whether `mark` is one the agent puts on its own sockets.
pub const fn is_agent_mark(mark: u32) -> bool {
    mark == AGENT_SOCKET_MARK || mark == CLIENT_ADDRESS_MARK
}

/// Map names, shared so that the agent opens exactly what the programs define.
pub mod maps {
    /// Netns cookie → [`super::EnrolledNetns`].
    pub const ENROLLED_NETNS: &str = "ENROLLED_NETNS";
    /// Port (host order) → `u8` (1 = excluded).
    pub const EXCLUDED_PORTS: &str = "EXCLUDED_PORTS";
    /// Socket cookie → [`super::OriginalDst`]; written by `connect4`/`connect6`,
    /// consumed by `sockops` once the local port is known.
    pub const ORIGINAL_DST_BY_COOKIE: &str = "ORIGINAL_DST_BY_COOKIE";
    /// [`super::SocketKey`] → [`super::OriginalDst`]; read (and removed) by the agent
    /// for each accepted connection.
    pub const ORIGINAL_DST_BY_SOCKET: &str = "ORIGINAL_DST_BY_SOCKET";
    /// Per-CPU array of `u64` counters indexed by [`super::Decision`].
    pub const DECISIONS: &str = "DECISIONS";
    /// [`super::InboundKey`] → [`super::InboundAddr`]: the addresses of enrolled pods
    /// whose inbound plaintext connections are steered to the agent.
    pub const INBOUND_ADDRS: &str = "INBOUND_ADDRS";
    /// Sockhash [`super::InboundKey`] → the agent's inbound plaintext listener (15006)
    /// in the namespace that owns the address.
    pub const INBOUND_LISTENERS: &str = "INBOUND_LISTENERS";
    /// [`super::LocalKey`] (with `netns_cookie` 0) → `u8`: the agent's legs to
    /// applications from a client's address ([`super::CLIENT_ADDRESS_MARK`]) while
    /// they connect, as the application's side sees them. `sk_lookup` leaves these
    /// to the application: it cannot see the mark, and the peer is not the pod.
    pub const CLIENT_LEGS: &str = "CLIENT_LEGS";
    /// Sockhash of the local TCP sockets in enrolled namespaces whose peer is in the
    /// same namespace (app ↔ agent legs), keyed by [`super::LocalKey`]; its `sk_msg`
    /// program passes their bytes socket to socket.
    pub const LOCAL_SOCKETS: &str = "LOCAL_SOCKETS";
    /// Sockets of `LOCAL_SOCKETS` that sent bytes the ordinary way (their peer was not
    /// in the map yet); they keep doing so, so that bytes are never reordered.
    pub const LOCAL_FALLBACK: &str = "LOCAL_FALLBACK";
    /// Bytes each socket of `LOCAL_SOCKETS` passed to its peer (`sk_msg` bookkeeping).
    pub const LOCAL_BUDGET: &str = "LOCAL_BUDGET";
    /// Array of switches the agent sets at start ([`super::Setting`]).
    pub const SETTINGS: &str = "SETTINGS";
    /// Socket cookie → [`super::OriginalDst`]: the DNS server a pod's UDP socket
    /// addressed before its datagrams were sent to the agent's resolver; `recvmsg`
    /// shows the answers as coming from it.
    pub const DNS_ORIGINAL: &str = "DNS_ORIGINAL";
    /// Netns cookie → [`super::OriginalDst`]: the DNS server a namespace addressed last,
    /// where the agent forwards the names it does not answer itself.
    pub const DNS_UPSTREAM: &str = "DNS_UPSTREAM";
}

/// Program names, as the agent finds them in the object and pins them.
pub mod programs {
    pub const CONNECT4: &str = "weft_connect4";
    pub const CONNECT6: &str = "weft_connect6";
    pub const SOCKOPS: &str = "weft_sockops";
    pub const SK_LOOKUP: &str = "weft_sk_lookup";
    pub const SK_MSG: &str = "weft_sk_msg";
    pub const SENDMSG4: &str = "weft_sendmsg4";
    pub const SENDMSG6: &str = "weft_sendmsg6";
    pub const RECVMSG4: &str = "weft_recvmsg4";
    pub const RECVMSG6: &str = "weft_recvmsg6";
}

/// [`EnrolledNetns::flags`]: the namespace's DNS (UDP port 53) goes to the agent's
/// resolver on `DNS_PORT`.
pub const ENROLLED_DNS: u32 = 1;
/// Capacity of `DNS_ORIGINAL` (an LRU map: one entry per UDP socket that sent DNS).
pub const DNS_ORIGINAL_CAPACITY: u32 = 65_536;

/// Capacity of the original-destination maps (LRU: stale entries age out).
pub const ORIGINAL_DST_CAPACITY: u32 = 65_536;
/// Capacity of the enrolled namespace map (one entry per pod on a node).
pub const ENROLLED_NETNS_CAPACITY: u32 = 4_096;
/// Capacity of the excluded port map.
pub const EXCLUDED_PORTS_CAPACITY: u32 = 256;
/// Capacity of the inbound address and listener maps (a pod may have an IPv4 and an
/// IPv6 address).
pub const INBOUND_CAPACITY: u32 = 2 * ENROLLED_NETNS_CAPACITY;
/// Capacity of `LOCAL_SOCKETS`: two sockets per accelerated leg. When it is full, new
/// legs take the ordinary path.
pub const LOCAL_SOCKETS_CAPACITY: u32 = 131_072;
/// Capacity of `CLIENT_LEGS`: legs being connected at once on a node.
pub const CLIENT_LEGS_CAPACITY: u32 = 16_384;
/// Capacity of `LOCAL_FALLBACK` (an LRU map).
pub const LOCAL_FALLBACK_CAPACITY: u32 = 16_384;
/// Bytes one socket of a local leg may pass straight to its peer without the peer
/// sending anything back. Passing bytes to a peer's receive queue has no flow control
/// of its own, so a direction that reaches this (a bulk transfer, a reader that does
/// not keep up) takes the ordinary path, with TCP's flow control, from then on.
pub const LOCAL_OUTSTANDING_LIMIT: u64 = 256 * 1024;
/// Bytes one socket of a local leg may pass to its peer in all; a bound on what a
/// peer that answers but never reads could have queued.
pub const LOCAL_TOTAL_LIMIT: u64 = 16 * 1024 * 1024;

/// Slots of the `SETTINGS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Non-zero: local legs are accelerated (`sockops` adds them to `LOCAL_SOCKETS`).
    Accelerate = 0,
}

impl Setting {
    pub const COUNT: u32 = 1;
}

/// Why a capture program did what it did. Indexes the `DECISIONS` counters.
///
/// The values are part of the agent's metrics and of the pinned map layout: they are
/// stable and never renumbered; new reasons get new numbers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The connection was redirected to the agent's outbound listener.
    Redirected = 0,
    /// The socket's network namespace is not enrolled.
    NotEnrolled = 1,
    /// The destination is a loopback address.
    Loopback = 2,
    /// The destination is one of the agent's own ports.
    AgentPort = 3,
    /// The destination port is excluded by configuration.
    ExcludedPort = 4,
    /// The socket belongs to the agent (it carries one of the agent's marks).
    AgentSocket = 5,
    /// Not a TCP socket (UDP `connect()` also runs the hook).
    NotTcp = 6,
    /// The original destination could not be recorded (map full); the connection was
    /// left alone rather than redirected without a destination.
    RecordFailed = 7,
    /// `sockops` moved an original destination from the cookie map to the socket map.
    OriginalDstRecorded = 8,
    /// `sockops` found no original destination for a connection it was told about.
    OriginalDstMissing = 9,
    /// `sockops` could not write the socket map.
    SocketRecordFailed = 10,
    /// `sk_lookup`: an inbound plaintext connection to an enrolled pod was steered to
    /// the agent's 15006 listener.
    InboundSteered = 11,
    /// `sk_lookup`: an inbound connection to the HBONE port, left to its listener.
    InboundHbone = 12,
    /// `sk_lookup`: a connection from inside the namespace itself (loopback), left alone
    /// (the agent's own leg to the application is one).
    InboundLocal = 13,
    /// `sk_lookup`: the destination address is not an enrolled pod's.
    InboundNotEnrolled = 14,
    /// `sk_lookup`: a connection from outside to one of the agent's own ports, dropped.
    InboundAgentPort = 15,
    /// `sk_lookup`: the destination port is excluded by configuration.
    InboundExcludedPort = 16,
    /// `sk_lookup`: the pod is enrolled but no agent listener is there (the agent is
    /// restarting); dropped, so the client retries rather than bypassing the mesh.
    InboundNoListener = 17,
    /// `sk_lookup`: not TCP.
    InboundNotTcp = 18,
    /// `sockops`: a socket of a local leg (both ends in one enrolled namespace) joined
    /// `LOCAL_SOCKETS`.
    LocalAccelerated = 19,
    /// `sockops`: a local leg's socket could not join `LOCAL_SOCKETS` (map full); it
    /// takes the ordinary path.
    LocalMapFailed = 20,
    /// `sk_msg`: a message was passed straight to its peer socket.
    LocalRedirected = 21,
    /// `sk_msg`: a socket sent before its peer joined the map; that direction of the
    /// connection takes the ordinary path from then on.
    LocalFallback = 22,
    /// `sk_msg`: a socket had passed as many bytes to its peer as one leg may have
    /// queued without an answer (or in all); that direction takes the ordinary path,
    /// with TCP's flow control, from then on.
    LocalBudgetSpent = 23,
    /// A UDP datagram (or a UDP `connect()`) to port 53 from an enrolled namespace was
    /// sent to the agent's resolver.
    DnsRedirected = 24,
    /// `recvmsg`: an answer of the agent's resolver was shown as coming from the server
    /// the application asked.
    DnsReplyRestored = 25,
}

impl Decision {
    /// Number of slots in the counter array; one past the highest value.
    pub const COUNT: u32 = 26;

    pub const ALL: [Decision; Self::COUNT as usize] = [
        Decision::Redirected,
        Decision::NotEnrolled,
        Decision::Loopback,
        Decision::AgentPort,
        Decision::ExcludedPort,
        Decision::AgentSocket,
        Decision::NotTcp,
        Decision::RecordFailed,
        Decision::OriginalDstRecorded,
        Decision::OriginalDstMissing,
        Decision::SocketRecordFailed,
        Decision::InboundSteered,
        Decision::InboundHbone,
        Decision::InboundLocal,
        Decision::InboundNotEnrolled,
        Decision::InboundAgentPort,
        Decision::InboundExcludedPort,
        Decision::InboundNoListener,
        Decision::InboundNotTcp,
        Decision::LocalAccelerated,
        Decision::LocalMapFailed,
        Decision::LocalRedirected,
        Decision::LocalFallback,
        Decision::LocalBudgetSpent,
        Decision::DnsRedirected,
        Decision::DnsReplyRestored,
    ];

    /// A stable label value for metrics.
    pub const fn reason(self) -> &'static str {
        match self {
            Decision::Redirected => "redirected",
            Decision::NotEnrolled => "not_enrolled",
            Decision::Loopback => "loopback",
            Decision::AgentPort => "agent_port",
            Decision::ExcludedPort => "excluded_port",
            Decision::AgentSocket => "agent_socket",
            Decision::NotTcp => "not_tcp",
            Decision::RecordFailed => "record_failed",
            Decision::OriginalDstRecorded => "original_dst_recorded",
            Decision::OriginalDstMissing => "original_dst_missing",
            Decision::SocketRecordFailed => "socket_record_failed",
            Decision::InboundSteered => "inbound_steered",
            Decision::InboundHbone => "inbound_hbone",
            Decision::InboundLocal => "inbound_local",
            Decision::InboundNotEnrolled => "inbound_not_enrolled",
            Decision::InboundAgentPort => "inbound_agent_port",
            Decision::InboundExcludedPort => "inbound_excluded_port",
            Decision::InboundNoListener => "inbound_no_listener",
            Decision::InboundNotTcp => "inbound_not_tcp",
            Decision::LocalAccelerated => "local_accelerated",
            Decision::LocalMapFailed => "local_map_failed",
            Decision::LocalRedirected => "local_redirected",
            Decision::LocalFallback => "local_fallback",
            Decision::LocalBudgetSpent => "local_budget_spent",
            Decision::DnsRedirected => "dns_redirected",
            Decision::DnsReplyRestored => "dns_reply_restored",
        }
    }
}

/// Address family values as the kernel spells them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Value of `ENROLLED_NETNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnrolledNetns {
    /// Per-namespace switches: [`ENROLLED_DNS`].
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<EnrolledNetns>() == 8);

/// An IP address and port as the kernel gave them.
///
/// `addr` holds the 16 bytes of an IPv6 address in network byte order; IPv4 addresses
/// are stored IPv4-mapped (`::ffff:a.b.c.d`), so one key type serves both families
/// and an IPv4 connection made from an IPv6 socket finds the same entry.
/// `port` is in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockAddr {
    pub addr: [u8; 16],
    pub port: u16,
    /// [`AF_INET`] or [`AF_INET6`]: the family the application used.
    pub family: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SockAddr>() == 24);

impl SockAddr {
    /// Maps an IPv4 address, given as the kernel's network-order `u32`, into the
    /// 16-byte form.
    #[inline(always)]
    pub const fn v4_mapped(ip_be: u32) -> [u8; 16] {
        let b = ip_be.to_ne_bytes();
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, b[0], b[1], b[2], b[3],
        ]
    }

    /// Converts the kernel's four network-order words of an IPv6 address.
    #[inline(always)]
    pub const fn v6(words: [u32; 4]) -> [u8; 16] {
        let a = words[0].to_ne_bytes();
        let b = words[1].to_ne_bytes();
        let c = words[2].to_ne_bytes();
        let d = words[3].to_ne_bytes();
        [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
            d[2], d[3],
        ]
    }
}

/// Value of the original-destination maps: where the application wanted to go.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst {
    pub dst: SockAddr,
}
const _: () = assert!(size_of::<OriginalDst>() == 24);

/// Key of `ORIGINAL_DST_BY_SOCKET`: the redirected client socket as the agent sees
/// it when it accepts — its namespace and its local address, which is the peer address
/// of the accepted socket. The namespace matters: every pod has its own `127.0.0.1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketKey {
    pub netns_cookie: u64,
    pub src: SockAddr,
}
const _: () = assert!(size_of::<SocketKey>() == 32);

/// Key of the inbound maps: a pod address in the 16-byte form of [`SockAddr::addr`]
/// (IPv4 mapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InboundKey {
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<InboundKey>() == 16);

/// Value of `INBOUND_ADDRS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InboundAddr {
    /// Reserved for per-address switches; zero today.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<InboundAddr>() == 8);

/// Key of `LOCAL_SOCKETS` and `LOCAL_FALLBACK`: one end of a TCP connection whose two
/// ends are in the same namespace, as that end sees it. The peer's key is the same with
/// `local` and `remote` swapped. Addresses in the 16-byte form of [`SockAddr::addr`],
/// ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalKey {
    pub netns_cookie: u64,
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<LocalKey>() == 48);

impl LocalKey {
    /// The key of the other end.
    #[inline(always)]
    pub const fn peer(&self) -> LocalKey {
        LocalKey {
            netns_cookie: self.netns_cookie,
            local: self.remote,
            remote: self.local,
            local_port: self.remote_port,
            remote_port: self.local_port,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: these types are `#[repr(C)]`, `Copy`, contain only integers and arrays of
    // integers, and have explicit padding fields, so every bit pattern is valid and no
    // byte is uninitialised.
    unsafe impl aya::Pod for super::EnrolledNetns {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockAddr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OriginalDst {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InboundKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LocalKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InboundAddr {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_dense_and_stable() {
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(*d as u32, i as u32, "{d:?} out of place");
        }
        assert_eq!(Decision::Redirected as u32, 0);
        assert_eq!(Decision::SocketRecordFailed as u32, 10);
        assert_eq!(Decision::InboundNotTcp as u32, 18);
    }

    #[test]
    fn v4_mapping_matches_std() {
        let ip = core::net::Ipv4Addr::new(10, 1, 2, 3);
        let be = u32::from_ne_bytes(ip.octets());
        assert_eq!(SockAddr::v4_mapped(be), ip.to_ipv6_mapped().octets());
    }

    #[test]
    fn v6_words_match_std() {
        let ip: core::net::Ipv6Addr = "fd00:1:2:3:4:5:6:7".parse().unwrap();
        let o = ip.octets();
        let words = [
            u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
            u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
            u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
            u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
        ];
        assert_eq!(SockAddr::v6(words), o);
    }
}
