//! From validated documents to the resources that are distributed: a pure function, so
//! the same translation serves every source (local folder, Kubernetes) and is tested on
//! its own. Workloads learn whether they are in the mesh (namespace label, pod opt-out)
//! and which waypoint serves them; Services get their endpoints from their
//! EndpointSlices when they have any (on Kubernetes: the ready ones), else from their
//! selector.

use std::collections::BTreeMap;

use api::proto::config::{self as wire, PolicyRule, PolicySource, ServicePort, resource::Body};

use crate::{
    model::{
        Action, Document, EndpointSlice, IntOrString, Metadata, MtlsMode, Object,
        SERVICE_NAME_LABEL,
    },
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

/// The EndpointSlices of each Service, by `(namespace, service name)`.
fn slices_by_service(docs: &[Document]) -> BTreeMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut out: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for d in docs {
        if let Object::EndpointSlice(e) = &d.object
            && let Some(service) = e.metadata.labels.get(SERVICE_NAME_LABEL)
        {
            let ns = e.metadata.namespace.as_deref().unwrap_or_default();
            out.entry((ns, service.as_str())).or_default().push(e);
        }
    }
    out
}

/// Workloads by name and by address, to find the workload behind an endpoint.
struct WorkloadIndex<'a> {
    by_name: BTreeMap<(&'a str, &'a str), usize>,
    by_address: BTreeMap<&'a str, usize>,
}

impl<'a> WorkloadIndex<'a> {
    fn new(workloads: &'a [(&'a Metadata, wire::Workload)]) -> Self {
        let mut index = WorkloadIndex {
            by_name: BTreeMap::new(),
            by_address: BTreeMap::new(),
        };
        for (i, (m, w)) in workloads.iter().enumerate() {
            let ns = m.namespace.as_deref().unwrap_or_default();
            index.by_name.insert((ns, m.name.as_str()), i);
            for a in &w.addresses {
                index.by_address.entry(a.as_str()).or_insert(i);
            }
        }
        index
    }

    /// The workloads (indexes) behind the ready endpoints of a Service's EndpointSlices,
    /// each once. An endpoint is its workload when it refers to it (a Pod or Workload
    /// target of that name) or else shares an address with it; an endpoint that is no
    /// workload (a host-network pod, an address outside the cluster) has no identity and
    /// is not distributed.
    fn behind(&self, slices: &[&EndpointSlice], namespace: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for slice in slices {
            if slice.address_type == "FQDN" {
                continue;
            }
            for e in &slice.endpoints {
                if e.conditions.ready == Some(false) {
                    continue;
                }
                let by_target = e.target_ref.as_ref().and_then(|t| {
                    let kind = t.kind.as_deref()?;
                    if kind != "Pod" && kind != "Workload" {
                        return None;
                    }
                    let ns = t.namespace.as_deref().unwrap_or(namespace);
                    self.by_name.get(&(ns, t.name.as_deref()?)).copied()
                });
                let found = by_target.or_else(|| {
                    e.addresses
                        .iter()
                        .find_map(|a| self.by_address.get(a.as_str()).copied())
                });
                if let Some(i) = found
                    && seen.insert(i)
                {
                    out.push(i);
                }
            }
        }
        out
    }
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
    let endpoint = |(m, w): &(&Metadata, wire::Workload)| {
        let ns = m.namespace.as_deref().unwrap_or_default();
        wire::Endpoint {
            workload: format!("{ns}/{}", m.name),
            addresses: w.addresses.clone(),
            identity: format!("spiffe://{trust_domain}/ns/{ns}/sa/{}", w.service_account),
            enrolled: w.enrolled,
            node: w.node.clone(),
        }
    };
    let slices = slices_by_service(docs);
    let index = WorkloadIndex::new(&workloads);
    for d in docs {
        match &d.object {
            Object::Service(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                let endpoints = match slices.get(&(ns, s.metadata.name.as_str())) {
                    Some(slices) => index
                        .behind(slices, ns)
                        .into_iter()
                        .map(|i| endpoint(&workloads[i]))
                        .collect(),
                    None if s.spec.selector.is_empty() => Vec::new(),
                    None => workloads
                        .iter()
                        .filter(|(m, _)| {
                            m.namespace.as_deref() == Some(ns)
                                && s.spec
                                    .selector
                                    .iter()
                                    .all(|(k, v)| m.labels.get(k) == Some(v))
                        })
                        .map(endpoint)
                        .collect(),
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

    #[test]
    fn endpoint_slices_give_the_ready_endpoints() {
        let slices = "
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: db-vm, namespace: shop}
spec: {serviceAccount: db, node: vm-1, addresses: [192.0.2.7]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-abc, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv4
endpoints:
  - addresses: [10.244.1.3]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: cart-1}
  - addresses: [10.244.2.3]
    conditions: {ready: false}
    targetRef: {kind: Pod, name: cart-2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-manual, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
  - addresses: [192.0.2.7]
  - addresses: [198.51.100.1]
";
        let (docs, problems) = crate::model::parse("t", &format!("{DOCS}{slices}"));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(crate::validate::validate(&docs).is_empty());
        let out = translate(&docs, "cluster.local");
        let service = |name: &str| match &out[&("Service".into(), "shop".into(), name.into())] {
            Body::Service(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        // The selector would pick both cart workloads; the slice says only one is ready.
        let cart = service("cart");
        let names: Vec<&str> = cart.endpoints.iter().map(|e| e.workload.as_str()).collect();
        assert_eq!(names, vec!["shop/cart-1"]);
        // A Service without a selector: its endpoint that is a workload (by address) is
        // distributed with that workload's identity; the one outside the mesh is not.
        let db = service("db");
        assert_eq!(db.endpoints.len(), 1, "{db:?}");
        assert_eq!(db.endpoints[0].workload, "shop/db-vm");
        assert_eq!(
            db.endpoints[0].identity,
            "spiffe://cluster.local/ns/shop/sa/db"
        );
        assert_eq!(db.endpoints[0].node, "vm-1");
    }
}
