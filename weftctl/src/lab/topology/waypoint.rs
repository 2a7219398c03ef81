//! Waypoints of a topology: each a Gateway, a pod of its own and a Service, with the
//! Services bound to it; checked with the rest of the file.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{GATEWAY_NAME_LABEL, Ipv4Net, MESH_LABEL, Pod, Service, dns_label};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawWaypoint {
    name: String,
    namespace: String,
    node: String,
    vip: String,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    ingress: bool,
}

/// A waypoint: a Gateway of class `weft-waypoint`, a pod of its own that runs
/// `weft-waypoint` (named like it, outside the mesh: it speaks HBONE itself), a Service
/// of that name for the agents to reach it, and the Services bound to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waypoint {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub vip: Ipv4Addr,
    /// Services of its namespace bound to it (`weft.dev/use-waypoint`).
    pub services: Vec<String>,
    /// An ingress gateway instead (class `weft-gateway`): HTTP on 8080 and HTTPS on
    /// 8443 of its pod for clients outside the mesh, routed by the HTTPRoutes attached
    /// to it; no Service is bound to it.
    #[serde(default)]
    pub ingress: bool,
}

impl Waypoint {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The waypoint's pod.
    pub fn pod(&self) -> Pod {
        Pod {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            node: self.node.clone(),
            service_account: self.name.clone(),
            labels: BTreeMap::from([
                (GATEWAY_NAME_LABEL.to_owned(), self.name.clone()),
                (MESH_LABEL.to_owned(), "disabled".to_owned()),
            ]),
            enrolled: false,
            waypoint: true,
        }
    }
}

type Pods<'a> = (&'a mut Vec<Pod>, &'a mut BTreeSet<(String, String)>);
type Services<'a> = (&'a [Service], &'a mut BTreeSet<Ipv4Addr>, Option<Ipv4Net>);

/// Checks the waypoints and adds their pods.
pub(super) fn check_waypoints(
    raw: &[RawWaypoint],
    (namespaces, nodes): (
        &BTreeMap<String, BTreeMap<String, String>>,
        &BTreeSet<String>,
    ),
    (pods, pod_keys): Pods<'_>,
    (services, vips, service_subnet): Services<'_>,
    p: &mut impl FnMut(String, String),
) -> Vec<Waypoint> {
    let mut out = Vec::new();
    let mut bound: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, w) in raw.iter().enumerate() {
        let field = format!("waypoints[{i}]");
        if let Err(e) = dns_label(&w.name) {
            p(format!("{field}.name"), format!("{:?} {e}", w.name));
        }
        if !namespaces.contains_key(&w.namespace) {
            p(
                format!("{field}.namespace"),
                format!("unknown namespace {:?}", w.namespace),
            );
        }
        if !nodes.contains(&w.node) {
            p(
                format!("{field}.node"),
                format!("unknown node {:?}", w.node),
            );
        }
        if !pod_keys.insert((w.namespace.clone(), w.name.clone())) {
            p(
                format!("{field}.name"),
                format!("{}/{} is also a pod's name", w.namespace, w.name),
            );
        }
        if services
            .iter()
            .any(|s| s.namespace == w.namespace && s.name == w.name)
        {
            p(
                format!("{field}.name"),
                format!("{}/{} is also a service's name", w.namespace, w.name),
            );
        }
        let vip = super::check_vip(&field, &w.vip, (vips, service_subnet), p);
        if w.ingress && !w.services.is_empty() {
            p(
                format!("{field}.services"),
                "an ingress gateway has no Services bound to it (HTTPRoutes send to them)"
                    .to_owned(),
            );
        }
        for (j, svc) in w.services.iter().enumerate() {
            if !services
                .iter()
                .any(|s| s.namespace == w.namespace && &s.name == svc)
            {
                p(
                    format!("{field}.services[{j}]"),
                    format!("no service {}/{svc} in the topology", w.namespace),
                );
            }
            if let Some(other) = bound.insert((w.namespace.clone(), svc.clone()), w.name.clone()) {
                p(
                    format!("{field}.services[{j}]"),
                    format!(
                        "{}/{svc} is already bound to waypoint {other:?}",
                        w.namespace
                    ),
                );
            }
        }
        let waypoint = Waypoint {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            node: w.node.clone(),
            vip,
            services: w.services.clone(),
            ingress: w.ingress,
        };
        pods.push(waypoint.pod());
        out.push(waypoint);
    }
    out
}
