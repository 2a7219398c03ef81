//! The subscription to the control plane's configuration, an agent's or a waypoint's:
//! a snapshot, then incremental updates, each ACKed once applied or NACKed (keeping
//! what it had) when it cannot be applied. After a disconnect the subscriber resumes
//! from the version it has, with backoff between attempts, and serves what it has
//! meanwhile. The wire types of workloads and services stop here; policies and routes
//! are kept as the control plane validated them, for the subscriber to compile.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use api::{
    identity::Identity,
    proto::config::{
        self as wire, Ack, ConfigUpdate, Hello, Nack, SubscribeRequest,
        config_service_client::ConfigServiceClient, resource::Body,
        subscribe_request::Request as Msg,
    },
};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

mod backend;

pub use backend::{Backend, HashOn, Limits, MILLION, Outlier, RetryBudget};

/// `(kind, namespace, name)`.
pub type Key = (String, String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub identity: Identity,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    pub enrolled: bool,
    pub waypoint: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub workload: String,
    pub addresses: Vec<IpAddr>,
    pub identity: Identity,
    pub enrolled: bool,
    pub node: String,
}

/// What a Service port carries, as declared (`appProtocol` or the port's name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Not declared: a waypoint detects HTTP.
    #[default]
    Undeclared,
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl Protocol {
    fn from_wire(s: &str) -> Self {
        match s {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "tcp" => Protocol::Tcp,
            _ => Protocol::Undeclared,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
}

/// How a waypoint spreads a Service's requests over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancer {
    RoundRobin,
    /// The fewer requests in flight, the likelier (two random choices, the less busy).
    #[default]
    LeastRequest,
    /// The same key to the same endpoint while the endpoints stay (what the key is:
    /// [`Backend::hash_on`]).
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub waypoint: Option<String>,
    pub load_balancer: LoadBalancer,
    pub backend: Backend,
    /// An ExternalService: a service outside the cluster.
    pub external: Option<External>,
}

/// What an ExternalService adds to a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The DNS names that resolve to its addresses.
    pub hosts: Vec<String>,
    /// Its egress waypoint speaks TLS to it.
    pub tls: Option<TlsOrigination>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOrigination {
    pub sni: String,
    pub ca_pem: String,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// Routes are for waypoints; agents are never sent any.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Http(wire::HttpRoute),
    Grpc(wire::GrpcRoute),
}

/// Policies are kept as the control plane validated them; the L4 mesh turns them into
/// decisions.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Authorization(wire::AuthorizationPolicy),
    PeerAuthentication(wire::PeerAuthentication),
}

/// The configuration the agent has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub version: u64,
    pub workloads: BTreeMap<Key, Workload>,
    pub services: BTreeMap<Key, Service>,
    pub policies: BTreeMap<Key, Policy>,
    pub routes: BTreeMap<Key, Route>,
    /// Agents: each namespace by name, and whether its pods join the mesh.
    pub namespaces: BTreeMap<String, bool>,
    /// Agents: the namespaces whose pods may connect only to what the mesh knows
    /// (`REGISTRY_ONLY`).
    pub registry_only: std::collections::BTreeSet<String>,
    /// Updates applied since the subscriber started.
    pub updates: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {reason}")]
pub struct ConvertError {
    kind: String,
    namespace: String,
    name: String,
    reason: String,
}

fn addresses(list: &[String]) -> Result<Vec<IpAddr>, String> {
    list.iter()
        .map(|a| a.parse().map_err(|_| format!("{a:?} is not an IP address")))
        .collect()
}

fn optional(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

enum Converted {
    Workload(Workload),
    Service(Service),
    Policy(Policy),
    Route(Route),
    /// Enrolled, and `REGISTRY_ONLY`.
    Namespace(bool, bool),
}

fn convert(key: &Key, body: Body, trust_domain: &str) -> Result<Converted, String> {
    Ok(match body {
        Body::Workload(w) => Converted::Workload(Workload {
            identity: Identity::new(trust_domain, &key.1, &w.service_account)
                .map_err(|e| e.to_string())?,
            node: w.node,
            addresses: addresses(&w.addresses)?,
            enrolled: w.enrolled,
            waypoint: optional(&w.waypoint),
            labels: w.labels.into_iter().collect(),
        }),
        Body::Service(s) => Converted::Service(Service {
            addresses: addresses(&s.addresses)?,
            ports: s
                .ports
                .iter()
                .map(|p| {
                    let port = |n: u32| u16::try_from(n).map_err(|_| format!("{n} is not a port"));
                    Ok(ServicePort {
                        port: port(p.port)?,
                        target_port: port(p.target_port)?,
                        protocol: Protocol::from_wire(&p.protocol),
                    })
                })
                .collect::<Result<_, String>>()?,
            endpoints: s
                .endpoints
                .into_iter()
                .map(|e| {
                    Ok(Endpoint {
                        addresses: addresses(&e.addresses)?,
                        identity: e
                            .identity
                            .parse()
                            .map_err(|x: api::identity::Error| x.to_string())?,
                        workload: e.workload,
                        enrolled: e.enrolled,
                        node: e.node,
                    })
                })
                .collect::<Result<_, String>>()?,
            waypoint: optional(&s.waypoint),
            load_balancer: match s.load_balancer.as_str() {
                "ROUND_ROBIN" => LoadBalancer::RoundRobin,
                "CONSISTENT_HASH"
                    if s.backend
                        .as_ref()
                        .is_some_and(|b| b.consistent_hash.is_some()) =>
                {
                    LoadBalancer::ConsistentHash
                }
                _ => LoadBalancer::LeastRequest,
            },
            backend: Backend::from_wire(s.backend),
            external: s.external.map(|x| External {
                hosts: x.hosts,
                tls: x.tls.map(|t| TlsOrigination {
                    sni: t.sni,
                    ca_pem: t.ca_pem,
                }),
            }),
        }),
        Body::AuthorizationPolicy(p) => Converted::Policy(Policy::Authorization(p)),
        Body::PeerAuthentication(p) => Converted::Policy(Policy::PeerAuthentication(p)),
        Body::HttpRoute(r) => Converted::Route(Route::Http(r)),
        Body::GrpcRoute(r) => Converted::Route(Route::Grpc(r)),
        Body::Namespace(n) => {
            Converted::Namespace(n.enrolled, n.outbound_policy == "REGISTRY_ONLY")
        }
    })
}

/// Applies an update to a copy of `current`; the copy is returned only if all of it
/// applies.
pub fn apply(
    current: &Config,
    update: ConfigUpdate,
    trust_domain: &str,
) -> Result<Config, ConvertError> {
    let mut next = if update.snapshot {
        Config {
            updates: current.updates,
            ..Config::default()
        }
    } else {
        current.clone()
    };
    for r in update.removals {
        let k = (r.kind, r.namespace, r.name);
        next.workloads.remove(&k);
        next.services.remove(&k);
        next.policies.remove(&k);
        next.routes.remove(&k);
        if k.0 == "Namespace" {
            next.namespaces.remove(&k.2);
            next.registry_only.remove(&k.2);
        }
    }
    for r in update.upserts {
        let wk = r.key.unwrap_or_default();
        let k = (wk.kind, wk.namespace, wk.name);
        let err = |reason: String| ConvertError {
            kind: k.0.clone(),
            namespace: k.1.clone(),
            name: k.2.clone(),
            reason,
        };
        let body = r.body.ok_or_else(|| err("no body".to_owned()))?;
        match convert(&k, body, trust_domain).map_err(err)? {
            Converted::Workload(w) => {
                next.workloads.insert(k, w);
            }
            Converted::Service(s) => {
                next.services.insert(k, s);
            }
            Converted::Policy(p) => {
                next.policies.insert(k, p);
            }
            Converted::Route(r) => {
                next.routes.insert(k, r);
            }
            Converted::Namespace(enrolled, registry_only) => {
                if registry_only {
                    next.registry_only.insert(k.2.clone());
                } else {
                    next.registry_only.remove(&k.2);
                }
                next.namespaces.insert(k.2, enrolled);
            }
        }
    }
    next.version = update.version;
    next.updates += 1;
    Ok(next)
}

/// A check a subscriber runs on a configuration before taking it (a waypoint compiles
/// its routes); a refusal NACKs the update with the reason and keeps what it had.
pub type Check = Arc<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Who subscribes, and how.
#[derive(Clone)]
pub struct Subscription {
    pub channel: Channel,
    pub token: String,
    /// May be empty (the token names the node).
    pub node: String,
    /// `(namespace, name)` of the waypoint subscribing; `None`: the node's agent.
    pub waypoint: Option<(String, String)>,
    pub trust_domain: String,
    pub backoff_max: Duration,
    pub check: Option<Check>,
}

/// Subscribes and keeps the configuration in the returned channel, for as long as the
/// task runs.
pub fn subscribe(
    subscription: Subscription,
) -> (watch::Receiver<Arc<Config>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(Config::default()));
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            match stream_once(&subscription, &tx).await {
                Ok(()) => tracing::info!("configuration stream ended; reconnecting"),
                Err(status) => {
                    tracing::warn!(%status, retry_in = ?backoff, "configuration stream failed")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(subscription.backoff_max);
        }
    });
    (rx, task)
}

async fn stream_once(
    sub: &Subscription,
    state: &watch::Sender<Arc<Config>>,
) -> Result<(), tonic::Status> {
    let (out, out_rx) = mpsc::channel(8);
    let resume_from = state.borrow().version;
    let _ = out
        .send(SubscribeRequest {
            request: Some(Msg::Hello(Hello {
                node: sub.node.clone(),
                resume_from,
                waypoint: sub
                    .waypoint
                    .as_ref()
                    .map(|(namespace, name)| wire::WaypointRef {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    }),
            })),
        })
        .await;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(out_rx));
    if let Ok(v) = format!("Bearer {}", sub.token).parse() {
        request.metadata_mut().insert("authorization", v);
    }
    let mut updates = ConfigServiceClient::new(sub.channel.clone())
        .subscribe(request)
        .await?
        .into_inner();
    while let Some(update) = updates.message().await? {
        let version = update.version;
        let snapshot = update.snapshot;
        let current = Arc::clone(&state.borrow());
        let applied = apply(&current, update, &sub.trust_domain)
            .map_err(|e| e.to_string())
            .and_then(|next| match &sub.check {
                Some(check) => check(&next).map(|()| next),
                None => Ok(next),
            });
        let reply = match applied {
            Ok(next) => {
                tracing::info!(
                    version,
                    snapshot,
                    workloads = next.workloads.len(),
                    services = next.services.len(),
                    policies = next.policies.len(),
                    routes = next.routes.len(),
                    "configuration applied"
                );
                state.send_replace(Arc::new(next));
                Msg::Ack(Ack { version })
            }
            Err(reason) => {
                tracing::warn!(version, error = %reason, "configuration refused; keeping the current one");
                Msg::Nack(Nack { version, reason })
            }
        };
        if out
            .send(SubscribeRequest {
                request: Some(reply),
            })
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use api::proto::config::{Resource, ResourceKey};

    use super::*;

    fn workload(name: &str, addr: &str) -> Resource {
        Resource {
            key: Some(ResourceKey {
                kind: "Workload".into(),
                namespace: "shop".into(),
                name: name.into(),
            }),
            version: 1,
            body: Some(Body::Workload(wire::Workload {
                service_account: "cart".into(),
                node: "n1".into(),
                addresses: vec![addr.into()],
                enrolled: true,
                ..wire::Workload::default()
            })),
        }
    }

    #[test]
    fn snapshots_replace_and_updates_patch() {
        let c = Config::default();
        let c = apply(
            &c,
            ConfigUpdate {
                version: 5,
                snapshot: true,
                upserts: vec![workload("a", "10.0.0.1"), workload("b", "10.0.0.2")],
                removals: vec![],
            },
            "cluster.local",
        )
        .unwrap();
        assert_eq!(c.version, 5);
        assert_eq!(c.workloads.len(), 2);
        let w = &c.workloads[&("Workload".into(), "shop".into(), "a".into())];
        assert_eq!(
            w.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        let c = apply(
            &c,
            ConfigUpdate {
                version: 6,
                snapshot: false,
                upserts: vec![],
                removals: vec![ResourceKey {
                    kind: "Workload".into(),
                    namespace: "shop".into(),
                    name: "b".into(),
                }],
            },
            "cluster.local",
        )
        .unwrap();
        assert_eq!(c.workloads.len(), 1);
        assert_eq!(c.updates, 2);
    }

    #[test]
    fn a_bad_update_is_refused_whole() {
        let c = Config::default();
        let e = apply(
            &c,
            ConfigUpdate {
                version: 2,
                snapshot: true,
                upserts: vec![workload("a", "10.0.0.1"), workload("b", "not-an-ip")],
                removals: vec![],
            },
            "cluster.local",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Workload shop/b: \"not-an-ip\" is not an IP address"
        );
    }
}
