//! Who needs each resource. A resource's audience is worked out once per published
//! configuration, from the whole of it: the agents (by node) and the waypoints that must
//! have it. A subscriber's update then only asks, of each resource that changed, whether
//! it was and is for that subscriber.
//!
//! - An agent gets the workloads of its node, every Service, every Namespace (whether
//!   it is in the mesh), and the policies of the namespaces it has workloads in plus
//!   the root namespace's.
//! - A waypoint gets the Services bound to it (`weft.dev/use-waypoint` on the Service
//!   or its namespace) and the Services its routes send to; the workloads bound to it and
//!   those behind its Services (their labels select policies); the HTTPRoutes and
//!   GRPCRoutes attached to it or to its Services; and the policies of its namespace plus
//!   the root namespace's.
//!
//! Some audiences depend on other resources (a policy's on where the namespace's
//! workloads run, a route's on its Services' waypoints). When such a resource is not
//! touched but its audience changes, that is a change of the resource too, so that
//! subscribers gain or lose it.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use api::proto::config::{self as wire, resource::Body};

pub use crate::subscriber::{SubscriberKind, WaypointId};
use crate::{resources::Key, validate::ROOT_NAMESPACE};

/// Who subscribes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscriber {
    /// The agent of a node.
    Agent {
        node: String,
    },
    Waypoint(WaypointId),
}

impl Subscriber {
    pub fn kind(&self) -> SubscriberKind {
        match self {
            Subscriber::Agent { .. } => SubscriberKind::Agent,
            Subscriber::Waypoint(_) => SubscriberKind::Waypoint,
        }
    }

    /// How status and logs name it: the node, or the waypoint's `namespace/name` (node
    /// names hold no `/`).
    pub fn name(&self) -> String {
        match self {
            Subscriber::Agent { node } => node.clone(),
            Subscriber::Waypoint(w) => w.to_string(),
        }
    }
}

/// Which agents need a resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Nodes {
    #[default]
    None,
    All,
    One(String),
    /// Shared by every resource with the same set (the policies of a namespace).
    Set(Arc<BTreeSet<String>>),
}

/// Which waypoints need a resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Waypoints {
    #[default]
    None,
    All,
    /// Every waypoint of this namespace.
    Namespace(String),
    Set(BTreeSet<WaypointId>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Audience {
    pub nodes: Nodes,
    pub waypoints: Waypoints,
}

impl Audience {
    pub fn includes(&self, subscriber: &Subscriber) -> bool {
        match subscriber {
            Subscriber::Agent { node } => match &self.nodes {
                Nodes::None => false,
                Nodes::All => true,
                Nodes::One(n) => n == node,
                Nodes::Set(set) => set.contains(node),
            },
            Subscriber::Waypoint(w) => match &self.waypoints {
                Waypoints::None => false,
                Waypoints::All => true,
                Waypoints::Namespace(ns) => *ns == w.namespace,
                Waypoints::Set(set) => set.contains(w),
            },
        }
    }
}

fn waypoints(set: Option<&BTreeSet<WaypointId>>) -> Waypoints {
    match set {
        Some(set) if !set.is_empty() => Waypoints::Set(set.clone()),
        _ => Waypoints::None,
    }
}

/// What the audiences of one configuration depend on.
#[derive(Debug, Default)]
pub struct Context {
    /// The nodes with workloads, by namespace.
    namespace_nodes: BTreeMap<String, Arc<BTreeSet<String>>>,
    /// The waypoints that need each Service: the one it is bound to, and those whose
    /// routes send to it.
    services: BTreeMap<(String, String), BTreeSet<WaypointId>>,
    /// The waypoints whose Services each workload is behind, by `(namespace, name)`.
    workloads: BTreeMap<(String, String), BTreeSet<WaypointId>>,
    /// The waypoints each route is attached to.
    routes: BTreeMap<Key, BTreeSet<WaypointId>>,
}

impl Context {
    /// Works out what the audiences of `resources` depend on. Sets of nodes equal to
    /// those of `previous` are taken from it, so that unchanged audiences compare equal
    /// at the cost of a pointer comparison.
    pub fn new(resources: &BTreeMap<Key, Body>, previous: &Context) -> Context {
        let mut namespace_nodes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut bindings: BTreeMap<(String, String), WaypointId> = BTreeMap::new();
        for ((kind, ns, name), body) in resources {
            match body {
                Body::Workload(w) if kind == "Workload" => {
                    namespace_nodes
                        .entry(ns.clone())
                        .or_default()
                        .insert(w.node.clone());
                }
                Body::Service(s) if !s.waypoint.is_empty() => {
                    bindings.insert(
                        (ns.clone(), name.clone()),
                        WaypointId {
                            namespace: ns.clone(),
                            name: s.waypoint.clone(),
                        },
                    );
                }
                _ => {}
            }
        }
        let mut context = Context {
            namespace_nodes: namespace_nodes
                .into_iter()
                .map(|(ns, nodes)| {
                    let shared = match previous.namespace_nodes.get(&ns) {
                        Some(old) if **old == nodes => Arc::clone(old),
                        _ => Arc::new(nodes),
                    };
                    (ns, shared)
                })
                .collect(),
            ..Context::default()
        };
        for (service, waypoint) in &bindings {
            context
                .services
                .entry(service.clone())
                .or_default()
                .insert(waypoint.clone());
        }
        for (key, body) in resources {
            let (parents, backends) = match body {
                Body::HttpRoute(r) => (
                    &r.parents,
                    route_backends(r.rules.iter().map(|r| (&r.backends, &r.filters))),
                ),
                Body::GrpcRoute(r) => (
                    &r.parents,
                    route_backends(r.rules.iter().map(|r| (&r.backends, &r.filters))),
                ),
                _ => continue,
            };
            let attached: BTreeSet<WaypointId> = parents
                .iter()
                .filter_map(|p| match p.kind.as_str() {
                    "Gateway" => Some(WaypointId {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                    }),
                    "Service" => bindings
                        .get(&(p.namespace.clone(), p.name.clone()))
                        .cloned(),
                    _ => None,
                })
                .collect();
            if attached.is_empty() {
                continue;
            }
            for backend in backends {
                context
                    .services
                    .entry((backend.namespace.clone(), backend.name.clone()))
                    .or_default()
                    .extend(attached.iter().cloned());
            }
            context.routes.insert(key.clone(), attached);
        }
        for ((kind, ns, name), body) in resources {
            if let Body::Service(s) = body
                && kind == "Service"
                && let Some(waypoint) = bindings.get(&(ns.clone(), name.clone()))
            {
                for e in &s.endpoints {
                    if let Some((wns, wname)) = e.workload.split_once('/') {
                        context
                            .workloads
                            .entry((wns.to_owned(), wname.to_owned()))
                            .or_default()
                            .insert(waypoint.clone());
                    }
                }
            }
        }
        context
    }

    /// Who needs the resource `key` with `body`.
    pub fn audience(&self, key: &Key, body: &Body) -> Audience {
        let (_, ns, name) = key;
        match body {
            Body::Workload(w) => {
                let mut set = self
                    .workloads
                    .get(&(ns.clone(), name.clone()))
                    .cloned()
                    .unwrap_or_default();
                if !w.waypoint.is_empty() {
                    set.insert(WaypointId {
                        namespace: ns.clone(),
                        name: w.waypoint.clone(),
                    });
                }
                Audience {
                    nodes: Nodes::One(w.node.clone()),
                    waypoints: waypoints(Some(&set)),
                }
            }
            Body::Service(_) => Audience {
                nodes: Nodes::All,
                waypoints: waypoints(self.services.get(&(ns.clone(), name.clone()))),
            },
            Body::AuthorizationPolicy(_) | Body::PeerAuthentication(_) => {
                if ns == ROOT_NAMESPACE {
                    Audience {
                        nodes: Nodes::All,
                        waypoints: Waypoints::All,
                    }
                } else {
                    Audience {
                        nodes: self
                            .namespace_nodes
                            .get(ns)
                            .map_or(Nodes::None, |set| Nodes::Set(Arc::clone(set))),
                        waypoints: Waypoints::Namespace(ns.clone()),
                    }
                }
            }
            Body::Namespace(_) => Audience {
                nodes: Nodes::All,
                waypoints: Waypoints::None,
            },
            Body::HttpRoute(_) | Body::GrpcRoute(_) => Audience {
                nodes: Nodes::None,
                waypoints: waypoints(self.routes.get(key)),
            },
        }
    }
}

/// The Services a route's rules send to: their backends and mirrors.
fn route_backends<'a>(
    rules: impl Iterator<Item = (&'a Vec<wire::BackendRef>, &'a Vec<wire::RouteFilter>)>,
) -> Vec<&'a wire::BackendRef> {
    let mut out = Vec::new();
    for (backends, filters) in rules {
        out.extend(backends);
        for f in filters {
            if let Some(wire::route_filter::Filter::RequestMirror(m)) = &f.filter
                && let Some(b) = &m.backend
            {
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(kind: &str, ns: &str, name: &str) -> Key {
        (kind.into(), ns.into(), name.into())
    }

    fn waypoint(ns: &str, name: &str) -> Subscriber {
        Subscriber::Waypoint(WaypointId {
            namespace: ns.into(),
            name: name.into(),
        })
    }

    fn agent(node: &str) -> Subscriber {
        Subscriber::Agent { node: node.into() }
    }

    fn resources() -> BTreeMap<Key, Body> {
        let workload = |node: &str, waypoint: &str| {
            Body::Workload(wire::Workload {
                node: node.into(),
                waypoint: waypoint.into(),
                ..wire::Workload::default()
            })
        };
        let service = |waypoint: &str, endpoints: &[&str]| {
            Body::Service(wire::Service {
                waypoint: waypoint.into(),
                endpoints: endpoints
                    .iter()
                    .map(|w| wire::Endpoint {
                        workload: (*w).into(),
                        ..wire::Endpoint::default()
                    })
                    .collect(),
                ..wire::Service::default()
            })
        };
        let parent = |kind: &str, name: &str| wire::ParentRef {
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            ..wire::ParentRef::default()
        };
        let backend = |name: &str| wire::BackendRef {
            namespace: "shop".into(),
            name: name.into(),
            port: 80,
            weight: 1,
        };
        BTreeMap::from([
            (k("Workload", "shop", "cart-1"), workload("n1", "wp")),
            (k("Workload", "shop", "db-1"), workload("n2", "")),
            (k("Workload", "web", "front-1"), workload("n3", "")),
            (
                k("Service", "shop", "cart"),
                service("wp", &["shop/cart-1"]),
            ),
            (k("Service", "shop", "db"), service("", &["shop/db-1"])),
            (k("Service", "shop", "cart-v2"), service("", &[])),
            (k("Service", "shop", "mirror"), service("", &[])),
            (
                k("HTTPRoute", "shop", "cart"),
                Body::HttpRoute(wire::HttpRoute {
                    parents: vec![parent("Service", "cart")],
                    rules: vec![wire::HttpRouteRule {
                        backends: vec![backend("cart"), backend("cart-v2")],
                        filters: vec![wire::RouteFilter {
                            filter: Some(wire::route_filter::Filter::RequestMirror(
                                wire::RequestMirror {
                                    backend: Some(backend("mirror")),
                                },
                            )),
                        }],
                        ..wire::HttpRouteRule::default()
                    }],
                    ..wire::HttpRoute::default()
                }),
            ),
            (
                k("GRPCRoute", "shop", "on-gateway"),
                Body::GrpcRoute(wire::GrpcRoute {
                    parents: vec![parent("Gateway", "wp")],
                    ..wire::GrpcRoute::default()
                }),
            ),
            (
                k("HTTPRoute", "shop", "on-db"),
                Body::HttpRoute(wire::HttpRoute {
                    parents: vec![parent("Service", "db")],
                    ..wire::HttpRoute::default()
                }),
            ),
            (
                k("AuthorizationPolicy", "shop", "p"),
                Body::AuthorizationPolicy(wire::AuthorizationPolicy::default()),
            ),
            (
                k("AuthorizationPolicy", ROOT_NAMESPACE, "mesh"),
                Body::AuthorizationPolicy(wire::AuthorizationPolicy::default()),
            ),
            (
                k("PeerAuthentication", "empty", "strict"),
                Body::PeerAuthentication(wire::PeerAuthentication::default()),
            ),
        ])
    }

    fn audience_of(resources: &BTreeMap<Key, Body>, context: &Context, key: &Key) -> Audience {
        context.audience(key, &resources[key])
    }

    #[test]
    fn who_gets_what() {
        let res = resources();
        let context = Context::new(&res, &Context::default());
        let wp = waypoint("shop", "wp");
        let gets = |s: &Subscriber| -> Vec<String> {
            res.keys()
                .filter(|key| audience_of(&res, &context, key).includes(s))
                .map(|(kind, ns, name)| format!("{kind} {ns}/{name}"))
                .collect()
        };
        assert_eq!(
            gets(&agent("n1")),
            vec![
                "AuthorizationPolicy shop/p",
                "AuthorizationPolicy weft-system/mesh",
                "Service shop/cart",
                "Service shop/cart-v2",
                "Service shop/db",
                "Service shop/mirror",
                "Workload shop/cart-1",
            ]
        );
        // Node 3 has workloads in `web` only: no policies of `shop`.
        assert_eq!(
            gets(&agent("n3")),
            vec![
                "AuthorizationPolicy weft-system/mesh",
                "Service shop/cart",
                "Service shop/cart-v2",
                "Service shop/db",
                "Service shop/mirror",
                "Workload web/front-1",
            ]
        );
        assert_eq!(
            gets(&wp),
            vec![
                "AuthorizationPolicy shop/p",
                "AuthorizationPolicy weft-system/mesh",
                "GRPCRoute shop/on-gateway",
                "HTTPRoute shop/cart",
                "Service shop/cart",
                "Service shop/cart-v2",
                "Service shop/mirror",
                "Workload shop/cart-1",
            ],
            "its Service, the Services its route sends to, its routes, its workload, \
             its namespace's policies; not the route of a Service it does not serve"
        );
        assert_eq!(
            gets(&waypoint("web", "wp")),
            vec!["AuthorizationPolicy weft-system/mesh"]
        );
    }

    #[test]
    fn audiences_follow_what_they_depend_on() {
        let mut res = resources();
        let first = Context::new(&res, &Context::default());
        let policy = k("AuthorizationPolicy", "shop", "p");
        let route = k("HTTPRoute", "shop", "on-db");
        let before = audience_of(&res, &first, &policy);

        // Unchanged: the same node set, shared.
        let again = Context::new(&res, &first);
        let same = audience_of(&res, &again, &policy);
        assert_eq!(same, before);
        let (Nodes::Set(a), Nodes::Set(b)) = (&before.nodes, &same.nodes) else {
            panic!("{before:?}")
        };
        assert!(Arc::ptr_eq(a, b));

        // db gets the waypoint: the route attached to it goes to the waypoint, and so
        // does db's workload; a workload on a new node brings the policy to that node.
        let Body::Service(db) = res.get_mut(&k("Service", "shop", "db")).unwrap() else {
            panic!()
        };
        db.waypoint = "wp".into();
        res.insert(
            k("Workload", "shop", "db-2"),
            Body::Workload(wire::Workload {
                node: "n9".into(),
                ..wire::Workload::default()
            }),
        );
        let next = Context::new(&res, &again);
        let wp = waypoint("shop", "wp");
        assert!(!audience_of(&res, &first, &route).includes(&wp));
        assert!(audience_of(&res, &next, &route).includes(&wp));
        assert!(audience_of(&res, &next, &k("Workload", "shop", "db-1")).includes(&wp));
        assert!(!before.includes(&agent("n9")));
        assert!(audience_of(&res, &next, &policy).includes(&agent("n9")));
        // A namespace without workloads: its policies go to no agent, and to its
        // waypoints only.
        let empty = audience_of(&res, &next, &k("PeerAuthentication", "empty", "strict"));
        assert_eq!(empty.nodes, Nodes::None);
        assert!(empty.includes(&waypoint("empty", "any")));
    }
}
