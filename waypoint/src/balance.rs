//! Choosing an endpoint of a Service for a request: round robin, or least request
//! (two endpoints drawn at random, the one with fewer requests in flight; the default,
//! as it steers around a slow endpoint without coordination). Backends of a rule are
//! chosen by weight first.
//!
//! The endpoints are those the configuration has: the control plane distributes only
//! ready ones, so an endpoint that fails its readiness leaves the set.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use dataplane::discovery::{Endpoint, Key, LoadBalancer, Protocol as Declared, Service};

use crate::view::{Destination, View};

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

#[derive(Debug, Default)]
pub struct Balancer {
    next: Mutex<HashMap<Key, usize>>,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
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

    /// An endpoint of `service` (named `key`) and its address of the wanted family,
    /// reached on `port`; `None` when it has none.
    pub fn pick<'s>(
        &self,
        key: &Key,
        service: &'s Service,
        port: u16,
        v4: bool,
    ) -> Option<(&'s Endpoint, IpAddr)> {
        let usable: Vec<(&Endpoint, IpAddr)> = service
            .endpoints
            .iter()
            .filter_map(|e| {
                let same = e.addresses.iter().find(|a| a.is_ipv4() == v4);
                same.or(e.addresses.first()).map(|a| (e, *a))
            })
            .collect();
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
                LoadBalancer::LeastRequest => {
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
        port: u16,
        v4: bool,
    ) -> Result<(Destination, Declared), Unreachable> {
        let service = view.service(key).ok_or(Unreachable::UnknownService)?;
        let service_port = service.port(port).ok_or(Unreachable::UnknownPort)?;
        let target = service_port.target_port;
        let (endpoint, ip) = self
            .pick(key, service, target, v4)
            .ok_or(Unreachable::NoEndpoints)?;
        Ok((Destination::of(endpoint, ip, target), service_port.protocol))
    }

    /// Forgets the counters of endpoints with nothing in flight (kept small as
    /// endpoints come and go).
    pub fn sweep(&self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Acquire) > 0);
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
            .map(|_| b.pick(&key(), &s, 80, true).unwrap().1.to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.3"
            ]
        );
        assert!(
            b.pick(&key(), &service(0, LoadBalancer::RoundRobin), 80, true)
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
                b.pick(&key(), &s, 80, true).unwrap().1.to_string(),
                "10.0.0.2"
            );
        }
        drop(busy);
        b.sweep();
        assert!(b.in_flight.lock().unwrap().is_empty());
    }
}
