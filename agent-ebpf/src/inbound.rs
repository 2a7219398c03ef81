//! Inbound capture: `sk_lookup`, attached to each enrolled pod's network namespace.
//!
//! A TCP connection arriving from outside the namespace for an enrolled pod address is
//! handed to the agent's inbound plaintext listener (15006) in that namespace, found in
//! a sockhash keyed by the address. The packet itself is not changed, so the accepted
//! socket's local address is the original destination. Left alone: the HBONE port
//! (its own listener), connections made inside the namespace (the agent's leg to the
//! application arrives over loopback), excluded ports, and addresses the agent does
//! not serve.

use agent_common::{
    AF_INET, AF_INET6, AGENT_PORTS, CLIENT_LEGS_CAPACITY, Decision, HBONE_PORT, INBOUND_CAPACITY,
    InboundAddr, InboundKey, LocalKey, SockAddr,
};
use aya_ebpf::{
    macros::{map, sk_lookup},
    maps::{HashMap, SockHash},
    programs::SkLookupContext,
};
use core::ptr::{addr_of, read_volatile};

use crate::capture::{EXCLUDED_PORTS, count};

/// `sk_lookup` verdicts.
const SK_DROP: u32 = 0;
const SK_PASS: u32 = 1;
const IPPROTO_TCP: u32 = 6;
/// The loopback device is interface 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

#[map]
static INBOUND_ADDRS: HashMap<InboundKey, InboundAddr> =
    HashMap::with_max_entries(INBOUND_CAPACITY, 0);

#[map]
static CLIENT_LEGS: HashMap<LocalKey, u8> = HashMap::with_max_entries(CLIENT_LEGS_CAPACITY, 0);

#[map]
static INBOUND_LISTENERS: SockHash<InboundKey> = SockHash::with_max_entries(INBOUND_CAPACITY, 0);

#[sk_lookup]
pub fn weft_sk_lookup(ctx: SkLookupContext) -> u32 {
    let (decision, verdict) = try_lookup(&ctx);
    count(decision);
    verdict
}

#[inline(always)]
fn try_lookup(ctx: &SkLookupContext) -> (Decision, u32) {
    let l = ctx.lookup;
    // SAFETY: `l` is the context the kernel passed; each field is read with one 4-byte
    // load, as the verifier allows for `sk_lookup`.
    let (family, protocol, local_ip4, local_ip6, local_port, ifindex) = unsafe {
        (
            read_volatile(addr_of!((*l).family)),
            read_volatile(addr_of!((*l).protocol)),
            read_volatile(addr_of!((*l).local_ip4)),
            [
                read_volatile(addr_of!((*l).local_ip6[0])),
                read_volatile(addr_of!((*l).local_ip6[1])),
                read_volatile(addr_of!((*l).local_ip6[2])),
                read_volatile(addr_of!((*l).local_ip6[3])),
            ],
            read_volatile(addr_of!((*l).local_port)),
            read_volatile(addr_of!((*l).ingress_ifindex)),
        )
    };
    // SAFETY: as above.
    let (remote_ip4, remote_ip6, remote_port) = unsafe {
        (
            read_volatile(addr_of!((*l).remote_ip4)),
            [
                read_volatile(addr_of!((*l).remote_ip6[0])),
                read_volatile(addr_of!((*l).remote_ip6[1])),
                read_volatile(addr_of!((*l).remote_ip6[2])),
                read_volatile(addr_of!((*l).remote_ip6[3])),
            ],
            // A 2-byte load, in network byte order.
            read_volatile(addr_of!((*l).remote_port)),
        )
    };
    if protocol != IPPROTO_TCP {
        return (Decision::InboundNotTcp, SK_PASS);
    }
    // `local_port` is in host byte order.
    let port = local_port as u16;
    if port == HBONE_PORT {
        return (Decision::InboundHbone, SK_PASS);
    }
    // From inside the namespace: over loopback, or from the pod's own address to
    // itself (what the agent's connection to the application looks like).
    let own = if family == u32::from(AF_INET) {
        remote_ip4 == local_ip4
    } else {
        remote_ip6[0] == local_ip6[0]
            && remote_ip6[1] == local_ip6[1]
            && remote_ip6[2] == local_ip6[2]
            && remote_ip6[3] == local_ip6[3]
    };
    if ifindex == LOOPBACK_IFINDEX || own {
        return (Decision::InboundLocal, SK_PASS);
    }
    // The agent's own leg to the application, made from the client's address.
    let (local, remote) = if family == u32::from(AF_INET) {
        (
            SockAddr::v4_mapped(local_ip4),
            SockAddr::v4_mapped(remote_ip4),
        )
    } else {
        (SockAddr::v6(local_ip6), SockAddr::v6(remote_ip6))
    };
    let leg = LocalKey {
        netns_cookie: 0,
        local,
        remote,
        local_port: port,
        remote_port: u16::from_be(remote_port),
        _pad: 0,
    };
    // SAFETY: the value is only compared to `None`.
    if unsafe { CLIENT_LEGS.get(leg) }.is_some() {
        return (Decision::InboundLocal, SK_PASS);
    }
    let key = InboundKey {
        addr: if family == u32::from(AF_INET) {
            SockAddr::v4_mapped(local_ip4)
        } else if family == u32::from(AF_INET6) {
            SockAddr::v6(local_ip6)
        } else {
            return (Decision::InboundNotTcp, SK_PASS);
        },
    };
    // SAFETY: the value is only compared to `None`.
    if unsafe { INBOUND_ADDRS.get(key) }.is_none() {
        return (Decision::InboundNotEnrolled, SK_PASS);
    }
    let mut i = 0;
    while i < AGENT_PORTS.len() {
        if AGENT_PORTS[i] == port {
            return (Decision::InboundAgentPort, SK_DROP);
        }
        i += 1;
    }
    // SAFETY: the value is only compared to `None`.
    if unsafe { EXCLUDED_PORTS.get(port) }.is_some() {
        return (Decision::InboundExcludedPort, SK_PASS);
    }
    match INBOUND_LISTENERS.redirect_sk_lookup(ctx, key, 0) {
        Ok(()) => (Decision::InboundSteered, SK_PASS),
        Err(_) => (Decision::InboundNoListener, SK_DROP),
    }
}
