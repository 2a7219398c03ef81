//! Choosing an endpoint of a Service for a request: round robin, least request (two
//! endpoints drawn at random, the one with fewer requests in flight; the default, as it
//! steers around a slow endpoint without coordination), or consistent hashing
//! (`maglev.rs`) for a request that carries what its Service hashes on. Backends of a
//! rule are chosen by weight first.
//!
//! The endpoints are those the configuration has: the control plane distributes only
//! ready ones, so an endpoint that fails its readiness leaves the set. Endpoints that
//! outlier detection ejected (`outlier.rs`) are left out while others remain.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use dataplane::discovery::{Endpoint, Key, LoadBalancer, Protocol as Declared, Service};

use crate::{
    maglev::Table,
    outlier::Outliers,
    view::{Destination, View},
};

/// Why a Service has no endpoint to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// The configuration has no such Service.
    UnknownService,
    /// The Service has no such port.
    UnknownPort,
    NoEndpoints,
}

/// Requests in flight to an endpoint, counted while the guard lives.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A Service's Maglev table and the endpoint addresses it was built of.
type Hashed = (Vec<IpAddr>, Arc<Table>);

#[derive(Debug, Default)]
pub struct Balancer {
    next: Mutex<HashMap<Key, usize>>,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    tables: Mutex<HashMap<Key, Hashed>>,
    pub outliers: Outliers,
}

impl Balancer {
    fn counter(&self, addr: SocketAddr) -> Arc<AtomicUsize> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(addr).or_default())
    }

    /// Counts one more request in flight to `addr` for as long as the guard lives.
    pub fn start(&self, addr: SocketAddr) -> InFlight {
        let c = self.counter(addr);
        c.fetch_add(1, Ordering::AcqRel);
        InFlight(c)
    }

    fn load(&self, addr: SocketAddr) -> usize {
        let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&addr).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// The Maglev table of `key` over `addresses`, built again when they change.
    fn table(&self, key: &Key, addresses: Vec<IpAddr>) -> Option<Arc<Table>> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_of, table)) = tables.get(key)
            && *built_of == addresses
        {
            return Some(Arc::clone(table));
        }
        let names: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
        let table = Arc::new(Table::build(&names)?);
        tables.insert(key.clone(), (addresses, Arc::clone(&table)));
        Some(table)
    }

    /// An endpoint of `service` (named `key`) and its address of the wanted family,
    /// reached on `port`; `None` when it has none. `hash`: the request's, for a
    /// Service balanced by consistent hashing.
    pub fn pick<'s>(
        &self,
        key: &Key,
        service: &'s Service,
        (port, v4): (u16, bool),
        hash: Option<u64>,
    ) -> Option<(&'s Endpoint, IpAddr)> {
        let mut usable: Vec<(&Endpoint, IpAddr)> = service
            .endpoints
            .iter()
            .filter_map(|e| {
                let same = e.addresses.iter().find(|a| a.is_ipv4() == v4);
                same.or(e.addresses.first()).map(|a| (e, *a))
            })
            .collect();
        if service.backend.outlier.is_some() {
            let out = self.outliers.ejected_of(key, Instant::now());
            if !out.is_empty() {
                let healthy: Vec<_> = usable
                    .iter()
                    .copied()
                    .filter(|(_, ip)| !out.contains(ip))
                    .collect();
                if !healthy.is_empty() {
                    usable = healthy;
                }
            }
        }
        if let (LoadBalancer::ConsistentHash, Some(h), true) =
            (service.load_balancer, hash, usable.len() > 1)
        {
            let table = self.table(key, usable.iter().map(|(_, ip)| *ip).collect())?;
            return Some(usable[table.lookup(h)]);
        }
        match usable.len() {
            0 => None,
            1 => Some(usable[0]),
            n => Some(match service.load_balancer {
                LoadBalancer::RoundRobin => {
                    let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                    let i = next.entry(key.clone()).or_default();
                    let chosen = usable[*i % n];
                    *i = i.wrapping_add(1);
                    chosen
                }
                LoadBalancer::LeastRequest | LoadBalancer::ConsistentHash => {
                    let a = rand::random_range(0..n);
                    let b = (a + rand::random_range(1..n)) % n;
                    let load = |i: usize| self.load(SocketAddr::new(usable[i].1, port));
                    if load(b) < load(a) {
                        usable[b]
                    } else {
                        usable[a]
                    }
                }
            }),
        }
    }

    /// An endpoint of Service `key` reached on its `port`, as a destination (with the
    /// address family of `v4` where it has one), and what that port declares.
    pub fn destination(
        &self,
        view: &View,
        key: &Key,
        (port, v4): (u16, bool),
        hash: Option<u64>,
    ) -> Result<(Destination, Declared), Unreachable> {
        let service = view.service(key).ok_or(Unreachable::UnknownService)?;
        let service_port = service.port(port).ok_or(Unreachable::UnknownPort)?;
        let target = service_port.target_port;
        let (endpoint, ip) = self
            .pick(key, service, (target, v4), hash)
            .ok_or(Unreachable::NoEndpoints)?;
        let mut destination = Destination::of(endpoint, ip, target);
        destination.origination = view.origination(key);
        Ok((destination, service_port.protocol))
    }

    /// Forgets the counters of endpoints with nothing in flight (kept small as
    /// endpoints come and go).
    pub fn sweep(&self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Acquire) > 0);
        drop(map);
        self.outliers.sweep(Instant::now());
    }

    /// Forgets the tables of Services no longer balanced by hashing.
    pub fn forget_tables(&self, view: &View) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.retain(|k, _| {
            view.service(k)
                .is_some_and(|s| s.load_balancer == LoadBalancer::ConsistentHash)
        });
    }
}

#[cfg(test)]
mod tests {
    use api::identity::Identity;

    use super::*;

    fn service(n: usize, lb: LoadBalancer) -> Service {
        Service {
            addresses: vec![],
            ports: vec![],
            endpoints: (0..n)
                .map(|i| Endpoint {
                    workload: format!("shop/cart-{i}"),
                    addresses: vec![format!("10.0.0.{}", i + 1).parse().unwrap()],
                    identity: Identity::new("cluster.local", "shop", "cart").unwrap(),
                    enrolled: true,
                    node: "n".into(),
                })
                .collect(),
            waypoint: None,
            load_balancer: lb,
            backend: Default::default(),
            external: None,
        }
    }

    fn key() -> Key {
        ("Service".into(), "shop".into(), "cart".into())
    }

    #[test]
    fn round_robin_takes_turns() {
        let b = Balancer::default();
        let s = service(3, LoadBalancer::RoundRobin);
        let picks: Vec<String> = (0..6)
            .map(|_| b.pick(&key(), &s, (80, true), None).unwrap().1.to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.3"
            ]
        );
        assert!(
            b.pick(
                &key(),
                &service(0, LoadBalancer::RoundRobin),
                (80, true),
                None
            )
            .is_none()
        );
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::default();
        let s = service(2, LoadBalancer::LeastRequest);
        let busy: Vec<InFlight> = (0..5)
            .map(|_| b.start("10.0.0.1:80".parse().unwrap()))
            .collect();
        for _ in 0..50 {
            assert_eq!(
                b.pick(&key(), &s, (80, true), None).unwrap().1.to_string(),
                "10.0.0.2"
            );
        }
        drop(busy);
        b.sweep();
        assert!(b.in_flight.lock().unwrap().is_empty());
    }
}
