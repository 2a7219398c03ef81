//! From validated documents to the resources that are distributed: a pure function, so
//! the same translation serves every source (local folder, Kubernetes) and is tested on
//! its own. Workloads learn whether they are in the mesh (namespace label, pod opt-out)
//! and which waypoint serves them; Services get their endpoints from their selector.

use std::collections::BTreeMap;

use api::proto::config::{self as wire, PolicyRule, PolicySource, ServicePort, resource::Body};

use crate::{
    model::{Action, Document, IntOrString, Metadata, MtlsMode, Object},
    validate::{MESH_LABEL, USE_WAYPOINT_LABEL},
};

/// `(kind, namespace, name)`.
pub type Key = (String, String, String);

fn key(kind: &str, m: &Metadata) -> Key {
    (
        kind.to_owned(),
        m.namespace.clone().unwrap_or_default(),
        m.name.clone(),
    )
}

/// A label selector as the wire carries it (none: an empty map, which selects all).
fn selector_map(
    selector: Option<&crate::model::LabelSelector>,
) -> std::collections::HashMap<String, String> {
    selector
        .map(|s| s.match_labels.clone().into_iter().collect())
        .unwrap_or_default()
}

/// The distributed form of a set of documents.
pub fn translate(docs: &[Document], trust_domain: &str) -> BTreeMap<Key, Body> {
    let namespaces: BTreeMap<&str, &Metadata> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Namespace(n) => Some((n.metadata.name.as_str(), &n.metadata)),
            _ => None,
        })
        .collect();
    let ns_label = |ns: &str, label: &str| -> Option<String> {
        namespaces
            .get(ns)
            .and_then(|m| m.labels.get(label).cloned())
    };
    // The waypoint an object uses: its own label, else its namespace's.
    let waypoint_of = |m: &Metadata, ns: &str| -> String {
        m.labels
            .get(USE_WAYPOINT_LABEL)
            .cloned()
            .or_else(|| ns_label(ns, USE_WAYPOINT_LABEL))
            .unwrap_or_default()
    };
    let mut out = BTreeMap::new();
    let mut workloads: Vec<(&Metadata, wire::Workload)> = Vec::new();
    for d in docs {
        if let Object::Workload(w) = &d.object {
            let ns = w.metadata.namespace.as_deref().unwrap_or_default();
            let enrolled = ns_label(ns, MESH_LABEL).as_deref() == Some("enabled")
                && w.metadata.labels.get(MESH_LABEL).map(String::as_str) != Some("disabled");
            let waypoint = waypoint_of(&w.metadata, ns);
            let body = wire::Workload {
                service_account: w.spec.service_account.clone(),
                node: w.spec.node.clone(),
                addresses: w.spec.addresses.clone(),
                labels: w.metadata.labels.clone().into_iter().collect(),
                enrolled,
                waypoint,
            };
            workloads.push((&w.metadata, body.clone()));
            out.insert(key("Workload", &w.metadata), Body::Workload(body));
        }
    }
    for d in docs {
        match &d.object {
            Object::Service(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                let endpoints = if s.spec.selector.is_empty() {
                    Vec::new()
                } else {
                    workloads
                        .iter()
                        .filter(|(m, _)| {
                            m.namespace.as_deref() == Some(ns)
                                && s.spec
                                    .selector
                                    .iter()
                                    .all(|(k, v)| m.labels.get(k) == Some(v))
                        })
                        .map(|(m, w)| wire::Endpoint {
                            workload: format!("{ns}/{}", m.name),
                            addresses: w.addresses.clone(),
                            identity: format!(
                                "spiffe://{trust_domain}/ns/{ns}/sa/{}",
                                w.service_account
                            ),
                            enrolled: w.enrolled,
                            node: w.node.clone(),
                        })
                        .collect()
                };
                let addresses = s
                    .spec
                    .cluster_ip
                    .iter()
                    .chain(&s.spec.cluster_ips)
                    .filter(|a| *a != "None")
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let ports = s
                    .spec
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone().unwrap_or_default(),
                        port: p.port as u32,
                        target_port: match &p.target_port {
                            Some(IntOrString::Int(t)) => *t as u32,
                            // Named or absent: the same as the service port.
                            _ => p.port as u32,
                        },
                    })
                    .collect();
                let waypoint = waypoint_of(&s.metadata, ns);
                out.insert(
                    key("Service", &s.metadata),
                    Body::Service(wire::Service {
                        addresses,
                        ports,
                        endpoints,
                        waypoint,
                    }),
                );
            }
            Object::AuthorizationPolicy(p) => {
                let rules = p
                    .spec
                    .rules
                    .iter()
                    .map(|r| PolicyRule {
                        from: r
                            .from
                            .iter()
                            .map(|f| PolicySource {
                                principals: f.source.principals.clone(),
                                not_principals: f.source.not_principals.clone(),
                                namespaces: f.source.namespaces.clone(),
                                not_namespaces: f.source.not_namespaces.clone(),
                                ip_blocks: f.source.ip_blocks.clone(),
                                not_ip_blocks: f.source.not_ip_blocks.clone(),
                            })
                            .collect(),
                        ports: r
                            .to
                            .iter()
                            .flat_map(|t| &t.operation.ports)
                            .filter_map(|p| match p {
                                IntOrString::Int(n) => u32::try_from(*n).ok(),
                                IntOrString::String(s) => s.parse().ok(),
                            })
                            .collect(),
                    })
                    .collect();
                out.insert(
                    key("AuthorizationPolicy", &p.metadata),
                    Body::AuthorizationPolicy(wire::AuthorizationPolicy {
                        action: match p.spec.action {
                            Action::Allow => "ALLOW",
                            Action::Deny => "DENY",
                            Action::Audit => "AUDIT",
                        }
                        .to_owned(),
                        selector: selector_map(p.spec.selector.as_ref()),
                        rules,
                    }),
                );
            }
            Object::PeerAuthentication(p) => {
                out.insert(
                    key("PeerAuthentication", &p.metadata),
                    Body::PeerAuthentication(wire::PeerAuthentication {
                        mode: match p.spec.mtls.mode {
                            MtlsMode::Strict => "STRICT",
                            MtlsMode::Permissive => "PERMISSIVE",
                        }
                        .to_owned(),
                        selector: selector_map(p.spec.selector.as_ref()),
                    }),
                );
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {serviceAccount: cart, node: node-1, addresses: [10.244.1.3]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-2, namespace: shop, labels: {app: cart, weft.dev/mesh: disabled}}
spec: {serviceAccount: cart, node: node-2, addresses: [10.244.2.3]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
";

    #[test]
    fn enrollment_waypoints_and_endpoints() {
        let (docs, problems) = crate::model::parse("t", DOCS);
        assert!(problems.is_empty(), "{problems:?}");
        let out = translate(&docs, "cluster.local");
        let Body::Workload(w1) = &out[&("Workload".into(), "shop".into(), "cart-1".into())] else {
            panic!()
        };
        assert!(w1.enrolled);
        let Body::Workload(w2) = &out[&("Workload".into(), "shop".into(), "cart-2".into())] else {
            panic!()
        };
        assert!(!w2.enrolled, "opted out");
        let Body::Service(s) = &out[&("Service".into(), "shop".into(), "cart".into())] else {
            panic!()
        };
        assert_eq!(s.addresses, vec!["10.96.0.10"]);
        assert_eq!(s.ports[0].target_port, 8080);
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(
            s.endpoints[0].identity,
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        assert_eq!(s.endpoints[0].node, "node-1");
    }
}
