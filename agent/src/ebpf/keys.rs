//! The agent's side of the map keys: addresses in the kernel's 16-byte form (IPv4
//! mapped), and back.

use std::net::SocketAddr;

use agent_common::{InboundKey, OriginalDst, SockAddr, SocketKey};

pub(super) fn inbound_key(addr: std::net::IpAddr) -> InboundKey {
    InboundKey {
        addr: addr_bytes(addr),
    }
}

/// An address in the maps' 16-byte form (IPv4 mapped).
pub(super) fn addr_bytes(addr: std::net::IpAddr) -> [u8; 16] {
    match addr {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// The map key for a client socket at `peer` in namespace `netns_cookie`.
pub fn socket_key(netns_cookie: u64, peer: SocketAddr) -> SocketKey {
    let addr = match peer {
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
        SocketAddr::V6(a) => a.ip().octets(),
    };
    SocketKey {
        netns_cookie,
        src: SockAddr {
            addr,
            port: peer.port(),
            family: 0,
            _pad: 0,
        },
    }
}

/// The destination an application asked for. An IPv4 address reached through an IPv6
/// socket (`::ffff:a.b.c.d`) comes back as IPv4: that is what the agent connects to.
pub fn original_dst_addr(value: &OriginalDst) -> SocketAddr {
    let ip = std::net::Ipv6Addr::from(value.dst.addr);
    SocketAddr::new(ip.to_canonical(), value.dst.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_keys_use_mapped_ipv4() {
        let k4 = socket_key(7, "127.0.0.1:40000".parse().unwrap());
        let k6 = socket_key(7, "[::ffff:127.0.0.1]:40000".parse().unwrap());
        assert_eq!(k4, k6);
        assert_eq!(k4.src.port, 40000);
        assert_eq!(k4.netns_cookie, 7);
    }

    #[test]
    fn original_dst_comes_back_in_its_family() {
        let v4 = OriginalDst {
            dst: SockAddr {
                addr: std::net::Ipv4Addr::new(10, 0, 0, 2)
                    .to_ipv6_mapped()
                    .octets(),
                port: 80,
                family: agent_common::AF_INET,
                _pad: 0,
            },
        };
        assert_eq!(original_dst_addr(&v4), "10.0.0.2:80".parse().unwrap());
        let v6 = OriginalDst {
            dst: SockAddr {
                addr: "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                port: 443,
                family: agent_common::AF_INET6,
                _pad: 0,
            },
        };
        assert_eq!(original_dst_addr(&v6), "[fd00::2]:443".parse().unwrap());
    }
}
