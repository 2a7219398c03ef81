//! The configuration indexed for the data path: which workload or service an address
//! belongs to, and where a captured connection goes.
//!
//! A service address is load-balanced over the service's endpoints (uniformly at
//! random, so a fresh set of endpoints is used at once and a removed one gets nothing
//! new). A destination in the mesh is reached over HBONE on its port 15008, with the
//! original `ip:port` as the tunnel's authority; one outside the mesh (or unknown) is
//! reached directly. A service or workload bound to a waypoint is reached through the
//! waypoint: the waypoint is the Service named like the waypoint's Gateway in the same
//! namespace, and the tunnel's authority is the address the client asked for.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use api::identity::Identity;

use crate::discovery::{Config, Endpoint, Key, Service, Workload};

#[derive(Debug, Default)]
pub struct View {
    pub config: Arc<Config>,
    workloads: HashMap<IpAddr, Key>,
    services: HashMap<IpAddr, Key>,
    /// Service endpoints by address: how the agent knows pods of other nodes (it is
    /// sent the workloads of its own node only).
    endpoints: HashMap<IpAddr, Endpoint>,
}

/// Where a captured connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Over HBONE to `peer` (`ip:15008`), whose identity must be `identity`, with a
    /// `CONNECT authority`.
    Hbone {
        peer: SocketAddr,
        identity: Identity,
        authority: SocketAddr,
        /// `namespace/name` of the destination workload (or waypoint).
        workload: String,
        /// `namespace/name` of the service the client addressed, if any.
        service: Option<String>,
        via_waypoint: bool,
    },
    /// Plain TCP to `addr`.
    Passthrough {
        addr: SocketAddr,
        service: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("service {service} has no port {port}")]
    NoServicePort { service: String, port: u16 },
    #[error("service {service} has no endpoint")]
    NoEndpoints { service: String },
    #[error("the waypoint {waypoint} of {of} is not available")]
    NoWaypoint { waypoint: String, of: String },
}

impl RouteError {
    pub fn reason(&self) -> &'static str {
        match self {
            RouteError::NoServicePort { .. } => "no_service_port",
            RouteError::NoEndpoints { .. } => "no_endpoints",
            RouteError::NoWaypoint { .. } => "no_waypoint",
        }
    }
}

fn name(key: &Key) -> String {
    format!("{}/{}", key.1, key.2)
}

impl View {
    pub fn new(config: Arc<Config>) -> Self {
        let mut workloads = HashMap::new();
        for (key, w) in &config.workloads {
            for a in &w.addresses {
                workloads.insert(*a, key.clone());
            }
        }
        let mut services = HashMap::new();
        let mut endpoints = HashMap::new();
        for (key, s) in &config.services {
            for a in &s.addresses {
                services.insert(*a, key.clone());
            }
            for e in &s.endpoints {
                for a in &e.addresses {
                    endpoints.insert(*a, e.clone());
                }
            }
        }
        View {
            config,
            workloads,
            services,
            endpoints,
        }
    }

    /// The workload or service endpoint that has `ip`: `(namespace, name)`.
    pub fn workload_name(&self, ip: IpAddr) -> Option<(String, String)> {
        if let Some((key, _)) = self.workload(ip) {
            return Some((key.1.clone(), key.2.clone()));
        }
        let e = self.endpoints.get(&ip)?;
        let (ns, name) = e.workload.split_once('/')?;
        Some((ns.to_owned(), name.to_owned()))
    }

    /// The workload that has `ip`.
    pub fn workload(&self, ip: IpAddr) -> Option<(&Key, &Workload)> {
        let key = self.workloads.get(&ip)?;
        Some((key, self.config.workloads.get(key)?))
    }

    fn service_named(&self, namespace: &str, name: &str) -> Option<(Key, &Service)> {
        let key = ("Service".to_owned(), namespace.to_owned(), name.to_owned());
        let s = self.config.services.get(&key)?;
        Some((key, s))
    }

    /// Where a connection to `dst` goes. `pick(n)` chooses one of `n` endpoints.
    /// Whether the mesh knows `ip`: a Service's (an ExternalService's among them), a
    /// workload's or an endpoint's address. `REGISTRY_ONLY` lets pods reach these only.
    pub fn knows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.services.contains_key(&ip)
            || self.workloads.contains_key(&ip)
            || self.endpoints.contains_key(&ip)
    }

    /// Whether pods of `namespace` may reach only what the mesh knows.
    pub fn registry_only(&self, namespace: &str) -> bool {
        self.config.registry_only.contains(namespace)
    }

    pub fn route(
        &self,
        dst: SocketAddr,
        pick: &mut impl FnMut(usize) -> usize,
    ) -> Result<Route, RouteError> {
        if let Some(key) = self.services.get(&dst.ip())
            && let Some(service) = self.config.services.get(key)
        {
            return self.service_route(key, service, dst, pick);
        }
        if let Some((key, w)) = self.workload(dst.ip()) {
            if let Some(waypoint) = &w.waypoint {
                return self.waypoint_route(&key.1, waypoint, &name(key), dst, None, pick);
            }
            if w.enrolled {
                return Ok(Route::Hbone {
                    peer: SocketAddr::new(dst.ip(), agent_common::HBONE_PORT),
                    identity: w.identity.clone(),
                    authority: dst,
                    workload: name(key),
                    service: None,
                    via_waypoint: false,
                });
            }
        } else if let Some(e) = self.endpoints.get(&dst.ip())
            && e.enrolled
        {
            return Ok(Route::Hbone {
                peer: SocketAddr::new(dst.ip(), agent_common::HBONE_PORT),
                identity: e.identity.clone(),
                authority: dst,
                workload: e.workload.clone(),
                service: None,
                via_waypoint: false,
            });
        }
        Ok(Route::Passthrough {
            addr: dst,
            service: None,
        })
    }

    fn service_route(
        &self,
        key: &Key,
        service: &Service,
        dst: SocketAddr,
        pick: &mut impl FnMut(usize) -> usize,
    ) -> Result<Route, RouteError> {
        let svc = name(key);
        let Some(target_port) = service.port(dst.port()).map(|p| p.target_port) else {
            return Err(RouteError::NoServicePort {
                service: svc,
                port: dst.port(),
            });
        };
        if let Some(waypoint) = &service.waypoint {
            return self.waypoint_route(&key.1, waypoint, &svc, dst, Some(svc.clone()), pick);
        }
        let (endpoint, ip) =
            choose(&service.endpoints, dst.is_ipv4(), pick).ok_or(RouteError::NoEndpoints {
                service: svc.clone(),
            })?;
        let addr = SocketAddr::new(ip, target_port);
        Ok(if endpoint.enrolled {
            Route::Hbone {
                peer: SocketAddr::new(ip, agent_common::HBONE_PORT),
                identity: endpoint.identity.clone(),
                authority: addr,
                workload: endpoint.workload.clone(),
                service: Some(svc),
                via_waypoint: false,
            }
        } else {
            Route::Passthrough {
                addr,
                service: Some(svc),
            }
        })
    }

    fn waypoint_route(
        &self,
        namespace: &str,
        waypoint: &str,
        of: &str,
        dst: SocketAddr,
        service: Option<String>,
        pick: &mut impl FnMut(usize) -> usize,
    ) -> Result<Route, RouteError> {
        let unavailable = || RouteError::NoWaypoint {
            waypoint: format!("{namespace}/{waypoint}"),
            of: of.to_owned(),
        };
        let (_, w) = self
            .service_named(namespace, waypoint)
            .ok_or_else(unavailable)?;
        let (endpoint, ip) = choose(&w.endpoints, dst.is_ipv4(), pick).ok_or_else(unavailable)?;
        Ok(Route::Hbone {
            peer: SocketAddr::new(ip, agent_common::HBONE_PORT),
            identity: endpoint.identity.clone(),
            authority: dst,
            workload: endpoint.workload.clone(),
            service,
            via_waypoint: true,
        })
    }
}

/// An endpoint with an address of the wanted family (falling back to any address).
fn choose<'a>(
    endpoints: &'a [Endpoint],
    v4: bool,
    pick: &mut impl FnMut(usize) -> usize,
) -> Option<(&'a Endpoint, IpAddr)> {
    let usable: Vec<(&Endpoint, IpAddr)> = endpoints
        .iter()
        .filter_map(|e| {
            let same = e.addresses.iter().find(|a| a.is_ipv4() == v4);
            same.or(e.addresses.first()).map(|a| (e, *a))
        })
        .collect();
    if usable.is_empty() {
        return None;
    }
    Some(usable[pick(usable.len()) % usable.len()])
}

/// The random endpoint choice used on the data path.
/// The authorization policies of `config` as `namespace/name=ACTION`, comma-separated
/// (the `weft::config` debug line: which configuration denied what).
pub fn authorization_summary(config: &Config) -> String {
    config
        .policies
        .iter()
        .filter_map(|((_, ns, name), p)| match p {
            crate::discovery::Policy::Authorization(a) => Some(format!("{ns}/{name}={}", a.action)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn random_pick(n: usize) -> usize {
    rand::random_range(0..n.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::new("cluster.local", ns, sa).unwrap()
    }

    fn key(kind: &str, ns: &str, name: &str) -> Key {
        (kind.to_owned(), ns.to_owned(), name.to_owned())
    }

    fn workload(ns: &str, sa: &str, ip: &str, enrolled: bool) -> Workload {
        Workload {
            identity: id(ns, sa),
            node: "node-1".into(),
            addresses: vec![ip.parse().unwrap()],
            enrolled,
            waypoint: None,
            labels: Default::default(),
        }
    }

    fn endpoint(workload: &str, sa: &str, ip: &str, enrolled: bool) -> Endpoint {
        Endpoint {
            workload: workload.into(),
            addresses: vec![ip.parse().unwrap()],
            identity: id(workload.split('/').next().unwrap(), sa),
            enrolled,
            node: "node-1".into(),
        }
    }

    fn ports(list: &[(u16, u16)]) -> Vec<crate::discovery::ServicePort> {
        list.iter()
            .map(|&(port, target_port)| crate::discovery::ServicePort {
                port,
                target_port,
                protocol: Default::default(),
            })
            .collect()
    }

    fn config() -> Config {
        let mut c = Config::default();
        c.workloads.insert(
            key("Workload", "shop", "cart-1"),
            workload("shop", "cart", "10.244.1.3", true),
        );
        c.workloads.insert(
            key("Workload", "legacy", "billing-1"),
            workload("legacy", "billing", "10.244.1.4", false),
        );
        c.services.insert(
            key("Service", "shop", "cart"),
            Service {
                addresses: vec!["10.96.0.10".parse().unwrap()],
                ports: ports(&[(80, 8080), (7000, 7000)]),
                endpoints: vec![
                    endpoint("shop/cart-1", "cart", "10.244.1.3", true),
                    endpoint("shop/cart-2", "cart", "10.244.2.3", true),
                ],
                waypoint: None,
                load_balancer: Default::default(),
                backend: Default::default(),
                external: None,
            },
        );
        c.services.insert(
            key("Service", "legacy", "billing"),
            Service {
                addresses: vec!["10.96.0.20".parse().unwrap()],
                ports: ports(&[(80, 8080)]),
                endpoints: vec![endpoint("legacy/billing-1", "billing", "10.244.1.4", false)],
                waypoint: None,
                load_balancer: Default::default(),
                backend: Default::default(),
                external: None,
            },
        );
        c
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn service_to_mesh_endpoint_over_hbone() {
        let v = View::new(Arc::new(config()));
        let r = v.route(sa("10.96.0.10:80"), &mut |_| 1).unwrap();
        assert_eq!(
            r,
            Route::Hbone {
                peer: sa("10.244.2.3:15008"),
                identity: id("shop", "cart"),
                authority: sa("10.244.2.3:8080"),
                workload: "shop/cart-2".into(),
                service: Some("shop/cart".into()),
                via_waypoint: false,
            }
        );
    }

    #[test]
    fn service_outside_the_mesh_passes_through() {
        let v = View::new(Arc::new(config()));
        let r = v.route(sa("10.96.0.20:80"), &mut |_| 0).unwrap();
        assert_eq!(
            r,
            Route::Passthrough {
                addr: sa("10.244.1.4:8080"),
                service: Some("legacy/billing".into())
            }
        );
    }

    #[test]
    fn pod_addresses_and_unknown_addresses() {
        let v = View::new(Arc::new(config()));
        let r = v.route(sa("10.244.1.3:7000"), &mut |_| 0).unwrap();
        assert!(matches!(r, Route::Hbone { peer, authority, .. }
            if peer == sa("10.244.1.3:15008") && authority == sa("10.244.1.3:7000")));
        assert_eq!(
            v.route(sa("10.244.1.4:7000"), &mut |_| 0).unwrap(),
            Route::Passthrough {
                addr: sa("10.244.1.4:7000"),
                service: None
            }
        );
        // A pod of another node, known as a service endpoint.
        let r = v.route(sa("10.244.2.3:7000"), &mut |_| 0).unwrap();
        assert!(matches!(&r, Route::Hbone { peer, authority, workload, .. }
            if *peer == sa("10.244.2.3:15008") && *authority == sa("10.244.2.3:7000")
                && workload == "shop/cart-2"));
        assert_eq!(
            v.workload_name("10.244.2.3".parse().unwrap()),
            Some(("shop".to_owned(), "cart-2".to_owned()))
        );
        assert_eq!(
            v.route(sa("192.0.2.1:443"), &mut |_| 0).unwrap(),
            Route::Passthrough {
                addr: sa("192.0.2.1:443"),
                service: None
            }
        );
    }

    #[test]
    fn unknown_port_and_empty_service_fail() {
        let mut c = config();
        let v = View::new(Arc::new(c.clone()));
        assert_eq!(
            v.route(sa("10.96.0.10:81"), &mut |_| 0)
                .unwrap_err()
                .reason(),
            "no_service_port"
        );
        c.services
            .get_mut(&key("Service", "shop", "cart"))
            .unwrap()
            .endpoints
            .clear();
        let v = View::new(Arc::new(c));
        assert_eq!(
            v.route(sa("10.96.0.10:80"), &mut |_| 0)
                .unwrap_err()
                .reason(),
            "no_endpoints"
        );
    }

    #[test]
    fn waypoint_bound_service_goes_to_the_waypoint() {
        let mut c = config();
        c.services
            .get_mut(&key("Service", "shop", "cart"))
            .unwrap()
            .waypoint = Some("shop-waypoint".into());
        let v = View::new(Arc::new(c.clone()));
        assert_eq!(
            v.route(sa("10.96.0.10:80"), &mut |_| 0)
                .unwrap_err()
                .reason(),
            "no_waypoint"
        );
        c.services.insert(
            key("Service", "shop", "shop-waypoint"),
            Service {
                addresses: vec!["10.96.0.99".parse().unwrap()],
                ports: ports(&[(15008, 15008)]),
                endpoints: vec![endpoint("shop/waypoint-1", "waypoint", "10.244.1.9", true)],
                waypoint: None,
                load_balancer: Default::default(),
                backend: Default::default(),
                external: None,
            },
        );
        let v = View::new(Arc::new(c));
        assert_eq!(
            v.route(sa("10.96.0.10:80"), &mut |_| 0).unwrap(),
            Route::Hbone {
                peer: sa("10.244.1.9:15008"),
                identity: id("shop", "waypoint"),
                authority: sa("10.96.0.10:80"),
                workload: "shop/waypoint-1".into(),
                service: Some("shop/cart".into()),
                via_waypoint: true,
            }
        );
    }

    #[test]
    fn random_pick_covers_every_endpoint() {
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[random_pick(3)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 800), "{seen:?}");
    }
}
