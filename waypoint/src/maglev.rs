//! Consistent hashing for session affinity: Maglev (Eisenbud et al., NSDI 2016). Each
//! endpoint fills the slots of a prime-sized table in an order of its own; a request's
//! hash picks a slot. Every waypoint replica builds the same table from the same
//! endpoints, and when one endpoint leaves only the requests that went to it move.
//!
//! What a request is hashed on (a header, a cookie, the caller's address) is the
//! BackendPolicy's; a request without it falls back to the Service's other balancing.

use std::net::IpAddr;

use dataplane::discovery::{HashOn, Service};
use http::{HeaderMap, header};

/// The table's size: a prime well above 100 × the endpoints of any Service.
pub const TABLE_SIZE: usize = 65_537;

/// FNV-1a, 64 bits: the same on every machine and every build.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A lookup table: slot → index into the endpoints it was built of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    slots: Vec<u16>,
}

impl Table {
    /// The table of `names` (each endpoint's stable name, e.g. its address), in order.
    /// At most `u16::MAX` endpoints take part.
    pub fn build<S: AsRef<[u8]>>(names: &[S]) -> Option<Self> {
        let n = names.len().min(usize::from(u16::MAX));
        if n == 0 {
            return None;
        }
        let m = TABLE_SIZE as u64;
        let order: Vec<(u64, u64)> = names[..n]
            .iter()
            .map(|name| {
                let offset = fnv1a(0, name.as_ref()) % m;
                let skip = fnv1a(0x9e37_79b9_7f4a_7c15, name.as_ref()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0_u64; n];
        let mut slots = vec![u16::MAX; TABLE_SIZE];
        let mut filled = 0;
        'fill: loop {
            for (i, (offset, skip)) in order.iter().enumerate() {
                let mut slot = ((offset + next[i] * skip) % m) as usize;
                while slots[slot] != u16::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m) as usize;
                }
                slots[slot] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Some(Table { slots })
    }

    /// The endpoint (its index in the names built from) for a request's hash.
    pub fn lookup(&self, hash: u64) -> usize {
        usize::from(self.slots[(hash % TABLE_SIZE as u64) as usize])
    }
}

/// The hash of a request to `service` when the Service is balanced by hashing and the
/// request has what it hashes on.
pub fn service_hash(service: Option<&Service>, headers: &HeaderMap, source: IpAddr) -> Option<u64> {
    request_hash(service?.backend.hash_on.as_ref()?, headers, source)
}

/// The hash of what `on` names in a request, or `None` when the request lacks it.
pub fn request_hash(on: &HashOn, headers: &HeaderMap, source: IpAddr) -> Option<u64> {
    match on {
        HashOn::Header(name) => {
            let v = headers.get(name.as_str())?;
            Some(fnv1a(0, v.as_bytes()))
        }
        HashOn::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| fnv1a(0, v.as_bytes())),
        HashOn::SourceIp => Some(match source {
            IpAddr::V4(a) => fnv1a(0, &a.octets()),
            IpAddr::V6(a) => fnv1a(0, &a.octets()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}")).collect()
    }

    #[test]
    fn spreads_evenly_and_moves_little_when_an_endpoint_leaves() {
        let five = Table::build(&names(5)).unwrap();
        let mut counts = [0_usize; 5];
        for s in &five.slots {
            counts[usize::from(*s)] += 1;
        }
        let even = TABLE_SIZE / 5;
        for c in counts {
            assert!(c.abs_diff(even) < even / 50, "{counts:?}");
        }
        // Endpoint 4 leaves: the keys of the other four mostly stay where they were.
        let four = Table::build(&names(4)).unwrap();
        let (mut kept, mut theirs) = (0, 0);
        for key in 0..10_000_u64 {
            let h = fnv1a(0, &key.to_be_bytes());
            let before = five.lookup(h);
            if before != 4 {
                theirs += 1;
                kept += usize::from(four.lookup(h) == before);
            }
        }
        assert!(kept * 100 >= theirs * 95, "{kept} of {theirs}");
        assert!(Table::build::<String>(&[]).is_none());
        assert_eq!(Table::build(&names(5)), Some(five));
    }

    #[test]
    fn what_requests_are_hashed_on() {
        let src: IpAddr = "10.1.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user", "ada".parse().unwrap());
        h.append(header::COOKIE, "a=1; session=s-42".parse().unwrap());
        let on_header = HashOn::Header("x-user".into());
        assert_eq!(request_hash(&on_header, &h, src), Some(fnv1a(0, b"ada")));
        let on_cookie = HashOn::Cookie("session".into());
        assert_eq!(request_hash(&on_cookie, &h, src), Some(fnv1a(0, b"s-42")));
        assert_eq!(request_hash(&HashOn::Cookie("none".into()), &h, src), None);
        assert_eq!(
            request_hash(&HashOn::Header("x-other".into()), &h, src),
            None
        );
        assert!(request_hash(&HashOn::SourceIp, &h, src).is_some());
    }
}
