//! Which workload identities run on which node, and which workloads are which waypoint's,
//! from the configuration in force (the source loop updates it with every accepted
//! change). It answers the two questions of authorization: may this node have a
//! certificate for this identity, and may this caller subscribe as this waypoint.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::RwLock,
};

use api::identity::Identity;

use crate::{
    auth::Caller,
    model::{Document, Object},
    subscriber::WaypointId,
    validate::{WAYPOINT_CLASS, WAYPOINT_NAME_LABEL},
};

/// A workload of a waypoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Host {
    workload: String,
    node: String,
    service_account: String,
}

#[derive(Debug, Default)]
struct Known {
    by_node: BTreeMap<String, BTreeSet<Identity>>,
    /// Every waypoint Gateway, with its workloads (none yet, perhaps).
    waypoints: BTreeMap<WaypointId, BTreeSet<Host>>,
}

#[derive(Debug)]
pub struct Registry {
    known: RwLock<Known>,
    /// Counts updates, for those who check a right again when it may have changed.
    updates: tokio::sync::watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            known: RwLock::default(),
            updates: tokio::sync::watch::channel(0).0,
        }
    }
}

/// Why a caller may not subscribe as a waypoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaypointRefusal {
    #[error("no Gateway {waypoint} of class {WAYPOINT_CLASS:?} is in force")]
    Unknown { waypoint: WaypointId },
    #[error("no workload of waypoint {waypoint} (label {WAYPOINT_NAME_LABEL}) runs on node {node}")]
    NotOnNode { waypoint: WaypointId, node: String },
    #[error("{caller} is not a workload of waypoint {waypoint}")]
    NotTheWaypoint {
        waypoint: WaypointId,
        caller: Box<Caller>,
    },
}

impl WaypointRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            WaypointRefusal::Unknown { .. } => "unknown_waypoint",
            WaypointRefusal::NotOnNode { .. } => "waypoint_not_on_node",
            WaypointRefusal::NotTheWaypoint { .. } => "not_the_waypoint",
        }
    }
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces what the registry knows with the workloads and waypoints of `docs`.
    pub fn update(&self, docs: &[Document], trust_domain: &str) {
        let mut known = Known::default();
        for d in docs {
            if let Object::Gateway(g) = &d.object
                && crate::validate::weft_class(&g.spec.gateway_class_name)
            {
                known
                    .waypoints
                    .entry(WaypointId {
                        namespace: g.metadata.namespace.clone().unwrap_or_default(),
                        name: g.metadata.name.clone(),
                    })
                    .or_default();
            }
        }
        for d in docs {
            if let Object::Workload(w) = &d.object {
                let ns = w.metadata.namespace.as_deref().unwrap_or_default();
                match Identity::new(trust_domain, ns, &w.spec.service_account) {
                    Ok(id) => {
                        known
                            .by_node
                            .entry(w.spec.node.clone())
                            .or_default()
                            .insert(id);
                    }
                    Err(e) => {
                        tracing::warn!(workload = %w.metadata.name, error = %e, "workload without a valid identity")
                    }
                }
                if let Some(gateway) = w.metadata.labels.get(WAYPOINT_NAME_LABEL) {
                    let id = WaypointId {
                        namespace: ns.to_owned(),
                        name: gateway.clone(),
                    };
                    if let Some(hosts) = known.waypoints.get_mut(&id) {
                        hosts.insert(Host {
                            workload: w.metadata.name.clone(),
                            node: w.spec.node.clone(),
                            service_account: w.spec.service_account.clone(),
                        });
                    }
                }
            }
        }
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = known;
        self.updates.send_modify(|n| *n += 1);
    }

    /// Changes at each update.
    pub fn updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Whether `identity` belongs to a workload on `node`.
    pub fn allows(&self, node: &str, identity: &Identity) -> bool {
        self.read()
            .by_node
            .get(node)
            .is_some_and(|ids| ids.contains(identity))
    }

    /// Whether `caller` may subscribe as `waypoint`: the waypoint is a Gateway in force,
    /// and the caller is one of its workloads — by a node's token, one of them runs on
    /// that node; by a pod's token, the pod is one of them (same namespace, service
    /// account and node).
    pub fn waypoint_access(
        &self,
        caller: &Caller,
        waypoint: &WaypointId,
    ) -> Result<(), WaypointRefusal> {
        let known = self.read();
        let Some(hosts) = known.waypoints.get(waypoint) else {
            return Err(WaypointRefusal::Unknown {
                waypoint: waypoint.clone(),
            });
        };
        match caller {
            Caller::Node { node } => {
                if hosts.iter().any(|h| h.node == *node) {
                    Ok(())
                } else {
                    Err(WaypointRefusal::NotOnNode {
                        waypoint: waypoint.clone(),
                        node: node.clone(),
                    })
                }
            }
            Caller::Pod {
                namespace,
                service_account,
                pod,
                node,
            } => {
                let is_host = *namespace == waypoint.namespace
                    && hosts.iter().any(|h| {
                        h.workload == *pod
                            && h.node == *node
                            && h.service_account == *service_account
                    });
                if is_host {
                    Ok(())
                } else {
                    Err(WaypointRefusal::NotTheWaypoint {
                        waypoint: waypoint.clone(),
                        caller: Box::new(caller.clone()),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_by_node() {
        let (docs, problems) = crate::model::parse(
            "t",
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: cart-1, namespace: shop}\n\
             spec: {serviceAccount: cart, node: node-1, addresses: [10.0.0.1]}\n",
        );
        assert!(problems.is_empty());
        let r = Registry::default();
        let cart: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert!(!r.allows("node-1", &cart));
        r.update(&docs, "cluster.local");
        assert!(r.allows("node-1", &cart));
        assert!(!r.allows("node-2", &cart));
        r.update(&[], "cluster.local");
        assert!(!r.allows("node-1", &cart));
    }

    #[test]
    fn waypoint_access_needs_a_workload_of_the_waypoint() {
        let (docs, problems) = crate::model::parse(
            "t",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
             metadata: {name: wp, namespace: shop}\n\
             spec: {gatewayClassName: weft-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n\
             ---\n\
             apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: wp-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: wp}}\n\
             spec: {serviceAccount: waypoint, node: node-1, addresses: [10.0.0.1]}\n\
             ---\n\
             apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: cart-1, namespace: shop}\n\
             spec: {serviceAccount: cart, node: node-2, addresses: [10.0.0.2]}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let r = Registry::default();
        r.update(&docs, "cluster.local");
        let wp = WaypointId {
            namespace: "shop".into(),
            name: "wp".into(),
        };
        let node = |n: &str| Caller::Node { node: n.into() };
        let pod = |ns: &str, name: &str, sa: &str, node: &str| Caller::Pod {
            namespace: ns.into(),
            service_account: sa.into(),
            pod: name.into(),
            node: node.into(),
        };
        assert_eq!(r.waypoint_access(&node("node-1"), &wp), Ok(()));
        assert_eq!(
            r.waypoint_access(&node("node-2"), &wp)
                .unwrap_err()
                .reason(),
            "waypoint_not_on_node"
        );
        let ghost = WaypointId {
            namespace: "shop".into(),
            name: "ghost".into(),
        };
        assert_eq!(
            r.waypoint_access(&node("node-1"), &ghost)
                .unwrap_err()
                .reason(),
            "unknown_waypoint"
        );
        assert_eq!(
            r.waypoint_access(&pod("shop", "wp-1", "waypoint", "node-1"), &wp),
            Ok(())
        );
        for other in [
            pod("shop", "cart-1", "cart", "node-2"),
            pod("shop", "wp-1", "cart", "node-1"),
            pod("shop", "wp-1", "waypoint", "node-2"),
            pod("bank", "wp-1", "waypoint", "node-1"),
        ] {
            assert_eq!(
                r.waypoint_access(&other, &wp).unwrap_err().reason(),
                "not_the_waypoint",
                "{other:?}"
            );
        }
    }
}
