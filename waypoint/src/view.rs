//! The configuration indexed for the waypoint's data path: what a tunnel's authority
//! names (a Service or a workload bound to this waypoint), the workloads behind
//! endpoints (for policies and telemetry), and the compiled routes. A view is built
//! once per configuration; one that does not build is refused (NACKed) and the last
//! good one keeps serving.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use api::identity::Identity;
use dataplane::discovery::{Config, Endpoint, Key, Service, ServicePort, Workload};

use crate::route;

/// What a tunnel was opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Service address and one of its ports.
    Service { key: Key, port: ServicePort },
    /// A workload's own address, and a port.
    Workload { key: Key, port: u16 },
    /// A listener of the gateway itself (gateway mode): the Gateway's routes decide.
    Gateway { key: Key, port: u16 },
}

impl Target {
    /// `namespace/name`.
    pub fn name(&self) -> String {
        let key = match self {
            Target::Service { key, .. }
            | Target::Workload { key, .. }
            | Target::Gateway { key, .. } => key,
        };
        format!("{}/{}", key.1, key.2)
    }

    pub fn service(&self) -> Option<&Key> {
        match self {
            Target::Service { key, .. } => Some(key),
            Target::Workload { .. } | Target::Gateway { .. } => None,
        }
    }
}

/// Where a request or a stream goes: one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The endpoint's address and target port.
    pub addr: SocketAddr,
    pub identity: Identity,
    /// In the mesh: reached over HBONE; else plain TCP.
    pub mesh: bool,
    /// `namespace/name` of the workload.
    pub workload: String,
    /// Outside the mesh, spoken to in TLS (an ExternalService's origination).
    pub origination: Option<Arc<crate::originate::Origination>>,
}

impl Destination {
    /// Fills the destination half of `labels` but the Service: the endpoint's
    /// principal, workload and namespace.
    pub fn label(&self, labels: &mut dataplane::telemetry::ConnectionLabels) {
        labels.destination_principal = self.identity.to_string();
        if let Some((ns, name)) = self.workload.split_once('/') {
            labels.destination_workload = name.to_owned();
            labels.destination_workload_namespace = ns.to_owned();
        }
    }

    pub fn of(endpoint: &Endpoint, ip: IpAddr, port: u16) -> Self {
        Destination {
            addr: SocketAddr::new(ip, port),
            identity: endpoint.identity.clone(),
            mesh: endpoint.enrolled,
            workload: endpoint.workload.clone(),
            origination: None,
        }
    }
}

#[derive(Debug)]
pub struct View {
    pub config: Arc<Config>,
    pub routes: route::Table,
    /// This waypoint's Gateway: (namespace, name).
    waypoint: (String, String),
    services: HashMap<IpAddr, Key>,
    workloads: HashMap<IpAddr, Key>,
    /// How to speak TLS to the ExternalServices that ask for it.
    originations: HashMap<Key, Arc<crate::originate::Origination>>,
}

impl View {
    /// Indexes `config` for waypoint `waypoint` (namespace, name); fails when a route
    /// does not compile.
    pub fn new(config: Arc<Config>, waypoint: (&str, &str)) -> Result<Self, String> {
        let routes = route::Table::new(&config, waypoint)?;
        let mut services = HashMap::new();
        for (key, s) in &config.services {
            for a in &s.addresses {
                services.insert(*a, key.clone());
            }
        }
        let mut originations = HashMap::new();
        for (key, s) in &config.services {
            if let Some(t) = s.external.as_ref().and_then(|x| x.tls.as_ref()) {
                let o = crate::originate::Origination::new(t)
                    .map_err(|e| format!("ExternalService {}/{}: {e}", key.1, key.2))?;
                originations.insert(key.clone(), Arc::new(o));
            }
        }
        let mut workloads = HashMap::new();
        for (key, w) in &config.workloads {
            for a in &w.addresses {
                workloads.insert(*a, key.clone());
            }
        }
        Ok(View {
            routes,
            waypoint: (waypoint.0.to_owned(), waypoint.1.to_owned()),
            services,
            workloads,
            originations,
            config,
        })
    }

    /// How to speak TLS to Service `key`, when it is an ExternalService that asks for it.
    pub fn origination(&self, key: &Key) -> Option<Arc<crate::originate::Origination>> {
        self.originations.get(key).cloned()
    }

    fn serves(&self, namespace: &str, waypoint: Option<&str>) -> bool {
        namespace == self.waypoint.0 && waypoint == Some(self.waypoint.1.as_str())
    }

    /// What a tunnel to `authority` is for, when this waypoint serves it.
    pub fn target(&self, authority: SocketAddr) -> Option<Target> {
        let ip = authority.ip().to_canonical();
        if let Some(key) = self.services.get(&ip)
            && let Some(s) = self.config.services.get(key)
        {
            if !self.serves(&key.1, s.waypoint.as_deref()) {
                return None;
            }
            let port = *s.port(authority.port())?;
            return Some(Target::Service {
                key: key.clone(),
                port,
            });
        }
        let key = self.workloads.get(&ip)?;
        let w = self.config.workloads.get(key)?;
        self.serves(&key.1, w.waypoint.as_deref())
            .then(|| Target::Workload {
                key: key.clone(),
                port: authority.port(),
            })
    }

    pub fn service(&self, key: &Key) -> Option<&Service> {
        self.config.services.get(key)
    }

    /// The workload `namespace/name`, if the waypoint was sent it.
    pub fn workload(&self, name: &str) -> Option<(&str, &Workload)> {
        let (ns, n) = name.split_once('/')?;
        let key = ("Workload".to_owned(), ns.to_owned(), n.to_owned());
        let (k, w) = self.config.workloads.get_key_value(&key)?;
        Some((k.1.as_str(), w))
    }

    /// The workload that has `ip` (a client's address): `(namespace, name)`.
    pub fn workload_at(&self, ip: IpAddr) -> Option<(&str, &str)> {
        let key = self.workloads.get(&ip.to_canonical())?;
        Some((&key.1, &key.2))
    }

    /// The destination of a workload target on `port`.
    pub fn workload_destination(&self, key: &Key, port: u16) -> Option<Destination> {
        let w = self.config.workloads.get(key)?;
        let ip = *w.addresses.first()?;
        Some(Destination {
            addr: SocketAddr::new(ip, port),
            identity: w.identity.clone(),
            mesh: w.enrolled,
            workload: format!("{}/{}", key.1, key.2),
            origination: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dataplane::discovery::{LoadBalancer, Protocol};

    use super::*;

    fn id(sa: &str) -> Identity {
        Identity::new("cluster.local", "shop", sa).unwrap()
    }

    fn config() -> Config {
        let mut c = Config::default();
        let svc = |waypoint: Option<&str>, addr: &str| Service {
            addresses: vec![addr.parse().unwrap()],
            ports: vec![ServicePort {
                port: 80,
                target_port: 8080,
                protocol: Protocol::Http,
            }],
            endpoints: vec![],
            waypoint: waypoint.map(str::to_owned),
            load_balancer: LoadBalancer::default(),
            backend: Default::default(),
            external: None,
        };
        c.services.insert(
            ("Service".into(), "shop".into(), "cart".into()),
            svc(Some("waypoint"), "10.96.0.10"),
        );
        c.services.insert(
            ("Service".into(), "shop".into(), "other".into()),
            svc(Some("another"), "10.96.0.11"),
        );
        c.services.insert(
            ("Service".into(), "shop".into(), "plain".into()),
            svc(None, "10.96.0.12"),
        );
        c.workloads.insert(
            ("Workload".into(), "shop".into(), "db-1".into()),
            Workload {
                identity: id("db"),
                node: "n".into(),
                addresses: vec!["10.244.1.9".parse().unwrap()],
                enrolled: true,
                waypoint: Some("waypoint".into()),
                labels: BTreeMap::new(),
            },
        );
        c
    }

    #[test]
    fn only_what_the_waypoint_serves_is_a_target() {
        let v = View::new(Arc::new(config()), ("shop", "waypoint")).unwrap();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(matches!(
            v.target(sa("10.96.0.10:80")),
            Some(Target::Service { port, .. }) if port.target_port == 8080
        ));
        // A port the Service does not have, or a Service of another waypoint or none.
        assert_eq!(v.target(sa("10.96.0.10:81")), None);
        assert_eq!(v.target(sa("10.96.0.11:80")), None);
        assert_eq!(v.target(sa("10.96.0.12:80")), None);
        assert!(matches!(
            v.target(sa("[::ffff:10.244.1.9]:5432")),
            Some(Target::Workload { port: 5432, .. })
        ));
        let other = View::new(Arc::new(config()), ("legacy", "waypoint")).unwrap();
        assert_eq!(other.target(sa("10.96.0.10:80")), None);
    }
}
