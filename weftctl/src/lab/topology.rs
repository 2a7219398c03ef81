//! The lab's topology: nodes, namespaces, pods and services, read from YAML and
//! checked completely before anything is created. Every problem is reported with the
//! line (syntax, unknown fields) or the field path (`pods[2].node`) and the reason.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

/// The topology `lab up` uses without `--topology`.
pub const DEFAULT: &str = include_str!("default-topology.yaml");

/// The label that puts a namespace in the mesh, or takes a pod out of it.
pub const MESH_LABEL: &str = "weft.dev/mesh";
/// The label of a waypoint's pods: its Gateway's name.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + n)
    }

    /// Usable host addresses.
    pub fn capacity(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix))).saturating_sub(2)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR form (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-32)"))?;
        let net = Ipv4Net { addr, prefix };
        if net.network() != addr {
            return Err(format!(
                "{s} has host bits set (the network is {}/{prefix})",
                net.network()
            ));
        }
        Ok(net)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

// The YAML shape, as written by people.

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTopology {
    #[serde(default = "default_underlay")]
    underlay: String,
    #[serde(default = "default_service_subnet")]
    service_subnet: String,
    nodes: Vec<RawNode>,
    namespaces: Vec<RawNamespace>,
    pods: Vec<RawPod>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    waypoints: Vec<RawWaypoint>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWaypoint {
    name: String,
    namespace: String,
    node: String,
    vip: String,
    #[serde(default)]
    services: Vec<String>,
}

fn default_underlay() -> String {
    "10.250.0.0/24".to_owned()
}

fn default_service_subnet() -> String {
    "10.96.0.0/16".to_owned()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNode {
    name: String,
    pod_subnet: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPod {
    name: String,
    namespace: String,
    node: String,
    #[serde(default = "default_service_account")]
    service_account: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawService {
    name: String,
    namespace: String,
    vip: String,
    selector: BTreeMap<String, String>,
    ports: Vec<RawPort>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPort {
    name: String,
    port: u32,
    target_port: u32,
}

// The checked topology.

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    pub underlay: String,
    pub service_subnet: String,
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    #[serde(default)]
    pub waypoints: Vec<Waypoint>,
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub pod_subnet: String,
    /// The node's address on the underlay.
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// Whether the pod is in the mesh: its namespace is enrolled and it does not opt out.
    pub enrolled: bool,
    /// A waypoint's pod (it runs `weft-waypoint`, not the sample app).
    #[serde(default)]
    pub waypoint: bool,
}

impl Pod {
    /// `namespace/name`, as people refer to a pod.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
}

/// Everything wrong with a topology file.
#[derive(Debug, PartialEq, Eq)]
pub struct Errors {
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} is not a valid lab topology:", self.source)?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Parses and checks a topology; `source` names it in messages.
pub fn parse(source: &str, text: &str) -> Result<Topology, Errors> {
    let raw: RawTopology = serde_yaml_ng::from_str(text).map_err(|e| Errors {
        source: source.to_owned(),
        problems: vec![match e.location() {
            Some(l) => format!("line {}, column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        }],
    })?;
    let mut problems = Vec::new();
    let topology = check(raw, &mut problems);
    if problems.is_empty() {
        Ok(topology)
    } else {
        Err(Errors {
            source: source.to_owned(),
            problems,
        })
    }
}

/// DNS-1123 label: what Kubernetes allows for namespace and most object names.
fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

fn check(raw: RawTopology, problems: &mut Vec<String>) -> Topology {
    let mut p = |field: String, reason: String| problems.push(format!("{field}: {reason}"));

    let underlay = raw.underlay.parse::<Ipv4Net>();
    if let Err(e) = &underlay {
        p("underlay".into(), e.clone());
    }
    if let Ok(u) = &underlay
        && u.capacity() < 10 + raw.nodes.len() as u32
    {
        p(
            "underlay".into(),
            format!("{u} is too small for {} nodes", raw.nodes.len()),
        );
    }
    let service_subnet = raw.service_subnet.parse::<Ipv4Net>();
    if let Err(e) = &service_subnet {
        p("serviceSubnet".into(), e.clone());
    }
    let (underlay, service_subnet) = (underlay.ok(), service_subnet.ok());

    // Nodes.
    if raw.nodes.is_empty() {
        p("nodes".into(), "at least one node is needed".into());
    }
    let mut nodes = Vec::new();
    let mut node_names = BTreeSet::new();
    let mut subnets: Vec<(String, Ipv4Net)> = Vec::new();
    if let Some(u) = underlay {
        subnets.push(("underlay".into(), u));
    }
    if let Some(s) = service_subnet {
        subnets.push(("serviceSubnet".into(), s));
    }
    let mut node_capacity = BTreeMap::new();
    for (i, n) in raw.nodes.iter().enumerate() {
        let field = format!("nodes[{i}]");
        if let Err(e) = dns_label(&n.name) {
            p(format!("{field}.name"), format!("{:?} {e}", n.name));
        }
        if !node_names.insert(n.name.clone()) {
            p(
                format!("{field}.name"),
                format!("duplicate node {:?}", n.name),
            );
        }
        match n.pod_subnet.parse::<Ipv4Net>() {
            Err(e) => p(format!("{field}.podSubnet"), e),
            Ok(net) if net.prefix > 28 || net.prefix < 16 => p(
                format!("{field}.podSubnet"),
                format!("{net}: the prefix must be between /16 and /28"),
            ),
            Ok(net) => {
                for (other, o) in &subnets {
                    if net.overlaps(o) {
                        p(
                            format!("{field}.podSubnet"),
                            format!("{net} overlaps {other} ({o})"),
                        );
                    }
                }
                subnets.push((format!("{field}.podSubnet"), net));
                node_capacity.insert(n.name.clone(), net.capacity().saturating_sub(1));
            }
        }
        nodes.push(Node {
            name: n.name.clone(),
            pod_subnet: n.pod_subnet.clone(),
            address: underlay
                .map(|u| u.host(10 + i as u32))
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
        });
    }

    // Namespaces.
    let mut namespaces = BTreeMap::new();
    for (i, ns) in raw.namespaces.iter().enumerate() {
        let field = format!("namespaces[{i}]");
        if let Err(e) = dns_label(&ns.name) {
            p(format!("{field}.name"), format!("{:?} {e}", ns.name));
        }
        if let Some(v) = ns.labels.get(MESH_LABEL)
            && v != "enabled"
            && v != "disabled"
        {
            p(
                format!("{field}.labels.{MESH_LABEL}"),
                format!("{v:?}: expected \"enabled\" or \"disabled\""),
            );
        }
        if namespaces
            .insert(ns.name.clone(), ns.labels.clone())
            .is_some()
        {
            p(
                format!("{field}.name"),
                format!("duplicate namespace {:?}", ns.name),
            );
        }
    }

    // Pods.
    let mut pods = Vec::new();
    let mut pod_keys = BTreeSet::new();
    let mut per_node: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, pod) in raw.pods.iter().enumerate() {
        let field = format!("pods[{i}]");
        if let Err(e) = dns_label(&pod.name) {
            p(format!("{field}.name"), format!("{:?} {e}", pod.name));
        }
        if let Err(e) = dns_label(&pod.service_account) {
            p(
                format!("{field}.serviceAccount"),
                format!("{:?} {e}", pod.service_account),
            );
        }
        let ns_labels = namespaces.get(&pod.namespace);
        if ns_labels.is_none() {
            p(
                format!("{field}.namespace"),
                format!("unknown namespace {:?}", pod.namespace),
            );
        }
        if !node_names.contains(&pod.node) {
            p(
                format!("{field}.node"),
                format!("unknown node {:?}", pod.node),
            );
        }
        if !pod_keys.insert((pod.namespace.clone(), pod.name.clone())) {
            p(
                format!("{field}.name"),
                format!("duplicate pod {}/{}", pod.namespace, pod.name),
            );
        }
        *per_node.entry(pod.node.as_str()).or_default() += 1;
        let ns_enabled = ns_labels
            .and_then(|l| l.get(MESH_LABEL))
            .is_some_and(|v| v == "enabled");
        let opted_out = pod.labels.get(MESH_LABEL).is_some_and(|v| v == "disabled");
        pods.push(Pod {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            node: pod.node.clone(),
            service_account: pod.service_account.clone(),
            labels: pod.labels.clone(),
            enrolled: ns_enabled && !opted_out,
            waypoint: false,
        });
    }
    for (node, count) in per_node {
        if let Some(cap) = node_capacity.get(node)
            && count > *cap
        {
            p(
                "pods".into(),
                format!("node {node:?} has {count} pods but its podSubnet holds {cap}"),
            );
        }
    }

    // Services.
    let mut services = Vec::new();
    let mut service_keys = BTreeSet::new();
    let mut vips = BTreeSet::new();
    for (i, svc) in raw.services.iter().enumerate() {
        let field = format!("services[{i}]");
        if let Err(e) = dns_label(&svc.name) {
            p(format!("{field}.name"), format!("{:?} {e}", svc.name));
        }
        if !namespaces.contains_key(&svc.namespace) {
            p(
                format!("{field}.namespace"),
                format!("unknown namespace {:?}", svc.namespace),
            );
        }
        if !service_keys.insert((svc.namespace.clone(), svc.name.clone())) {
            p(
                format!("{field}.name"),
                format!("duplicate service {}/{}", svc.namespace, svc.name),
            );
        }
        let vip = match svc.vip.parse::<Ipv4Addr>() {
            Err(_) => {
                p(
                    format!("{field}.vip"),
                    format!("{:?} is not an IPv4 address", svc.vip),
                );
                Ipv4Addr::UNSPECIFIED
            }
            Ok(vip) => {
                if let Some(s) = service_subnet
                    && !s.contains(vip)
                {
                    p(
                        format!("{field}.vip"),
                        format!("{vip} is outside serviceSubnet {s}"),
                    );
                }
                if !vips.insert(vip) {
                    p(
                        format!("{field}.vip"),
                        format!("{vip} is used by another service"),
                    );
                }
                vip
            }
        };
        if svc.selector.is_empty() {
            p(
                format!("{field}.selector"),
                "an empty selector would select every pod; name the labels".into(),
            );
        } else if !pods.iter().any(|pod| {
            pod.namespace == svc.namespace
                && svc
                    .selector
                    .iter()
                    .all(|(k, v)| pod.labels.get(k) == Some(v))
        }) {
            p(
                format!("{field}.selector"),
                format!("selects no pod in namespace {:?}", svc.namespace),
            );
        }
        if svc.ports.is_empty() {
            p(
                format!("{field}.ports"),
                "at least one port is needed".into(),
            );
        }
        let mut ports = Vec::new();
        let mut seen = BTreeSet::new();
        for (j, port) in svc.ports.iter().enumerate() {
            let pf = format!("{field}.ports[{j}]");
            for (name, value) in [("port", port.port), ("targetPort", port.target_port)] {
                if !(1..=65535).contains(&value) {
                    p(format!("{pf}.{name}"), format!("{value} is not a port"));
                }
            }
            if !seen.insert(port.port) {
                p(
                    format!("{pf}.port"),
                    format!("port {} appears twice", port.port),
                );
            }
            ports.push(ServicePort {
                name: port.name.clone(),
                port: port.port as u16,
                target_port: port.target_port as u16,
            });
        }
        services.push(Service {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
            vip,
            selector: svc.selector.clone(),
            ports,
        });
    }

    let waypoints = check_waypoints(
        &raw.waypoints,
        (&namespaces, &node_names),
        (&mut pods, &mut pod_keys),
        (&services, &mut vips, service_subnet),
        &mut p,
    );

    Topology {
        underlay: raw.underlay,
        service_subnet: raw.service_subnet,
        nodes,
        namespaces: raw
            .namespaces
            .into_iter()
            .map(|n| Namespace {
                name: n.name,
                labels: n.labels,
            })
            .collect(),
        pods,
        services,
        waypoints,
    }
}

type Pods<'a> = (&'a mut Vec<Pod>, &'a mut BTreeSet<(String, String)>);
type Services<'a> = (&'a [Service], &'a mut BTreeSet<Ipv4Addr>, Option<Ipv4Net>);

/// Checks the waypoints and adds their pods.
fn check_waypoints(
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
        let vip = match w.vip.parse::<Ipv4Addr>() {
            Err(_) => {
                p(
                    format!("{field}.vip"),
                    format!("{:?} is not an IPv4 address", w.vip),
                );
                Ipv4Addr::UNSPECIFIED
            }
            Ok(vip) => {
                if service_subnet.is_some_and(|s| !s.contains(vip)) {
                    p(
                        format!("{field}.vip"),
                        format!("{vip} is outside serviceSubnet"),
                    );
                }
                if !vips.insert(vip) {
                    p(
                        format!("{field}.vip"),
                        format!("{vip} is used by another service"),
                    );
                }
                vip
            }
        };
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
        };
        pods.push(waypoint.pod());
        out.push(waypoint);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        parse("t.yaml", text).unwrap_err().problems
    }

    #[test]
    fn default_topology_is_valid_and_has_the_promised_shape() {
        let t = parse("default", DEFAULT).unwrap();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.namespaces.len(), 2);
        assert_eq!(t.services.len(), 2);
        for node in &t.nodes {
            assert!(t.pods.iter().filter(|p| p.node == node.name).count() >= 3);
        }
        assert_eq!(t.waypoints.len(), 1);
        assert_eq!(t.waypoints[0].services, ["cart"]);
        let pod = t.pods.iter().find(|p| p.waypoint).unwrap();
        assert_eq!(pod.key(), "shop/cart-waypoint");
        assert!(!pod.enrolled);
        assert!(t.pods.iter().any(|p| p.enrolled));
        assert!(t.pods.iter().any(|p| !p.enrolled));
        assert_eq!(t.nodes[1].address, Ipv4Addr::new(10, 250, 0, 11));
    }

    const BASE: &str = "
nodes:
  - {name: a, podSubnet: 10.244.1.0/24}
  - {name: b, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: ns, labels: {weft.dev/mesh: enabled}}
pods:
  - {name: p1, namespace: ns, node: a, labels: {app: x, weft.dev/mesh: disabled}}
  - {name: p2, namespace: ns, node: b, labels: {app: x}}
services:
  - {name: s, namespace: ns, vip: 10.96.0.1, selector: {app: x}, ports: [{name: e, port: 7, targetPort: 7}]}
";

    #[test]
    fn pods_can_opt_out() {
        let t = parse("t", BASE).unwrap();
        assert!(!t.pods[0].enrolled);
        assert!(t.pods[1].enrolled);
        assert_eq!(t.pods[0].service_account, "default");
    }

    #[test]
    fn unknown_node_is_named_with_its_field() {
        let p = problems(&BASE.replace("node: b", "node: z"));
        assert_eq!(p, vec!["pods[1].node: unknown node \"z\""]);
    }

    #[test]
    fn duplicate_pod_is_refused() {
        let p = problems(&BASE.replace("name: p2", "name: p1"));
        assert_eq!(p, vec!["pods[1].name: duplicate pod ns/p1"]);
    }

    #[test]
    fn overlapping_subnets_are_refused() {
        let p = problems(&BASE.replace("10.244.2.0/24", "10.244.1.128/25"));
        assert_eq!(
            p,
            vec!["nodes[1].podSubnet: 10.244.1.128/25 overlaps nodes[0].podSubnet (10.244.1.0/24)"]
        );
        let p = problems(&BASE.replace("10.244.2.0/24", "10.96.4.0/24"));
        assert_eq!(
            p,
            vec!["nodes[1].podSubnet: 10.96.4.0/24 overlaps serviceSubnet (10.96.0.0/16)"]
        );
    }

    #[test]
    fn yaml_errors_name_the_line() {
        let p = problems("nodes:\n  - {name: a, podSubnet: 10.244.1.0/24\nnamespaces: []\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("line 3, column "), "{p:?}");
        let p = problems(&BASE.replace(
            "podSubnet: 10.244.2.0/24",
            "podSubnet: 10.244.2.0/24, zone: x",
        ));
        assert!(p[0].contains("unknown field `zone`"), "{p:?}");
        assert!(p[0].starts_with("line 4, column"), "{p:?}");
    }

    #[test]
    fn many_problems_are_reported_at_once() {
        let bad = BASE
            .replace("vip: 10.96.0.1", "vip: 10.1.0.1")
            .replace("{app: x}, ports", "{app: y}, ports")
            .replace("port: 7,", "port: 70000,")
            .replace("name: ns, labels", "name: Ns, labels");
        let p = problems(&bad);
        assert!(
            p.contains(
                &"services[0].vip: 10.1.0.1 is outside serviceSubnet 10.96.0.0/16".to_owned()
            ),
            "{p:?}"
        );
        assert!(
            p.contains(&"services[0].ports[0].port: 70000 is not a port".to_owned()),
            "{p:?}"
        );
        assert!(
            p.contains(
                &"namespaces[0].name: \"Ns\" may hold only lowercase letters, digits and '-'"
                    .to_owned()
            ),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("pods[0].namespace: unknown namespace")),
            "{p:?}"
        );
    }

    #[test]
    fn waypoints_are_checked() {
        let with = |w: &str| format!("{BASE}waypoints:\n  - {w}\n");
        let t = parse(
            "t",
            &with("{name: wp, namespace: ns, node: a, vip: 10.96.0.9, services: [s]}"),
        )
        .unwrap();
        assert_eq!(t.pods.last().unwrap().labels[GATEWAY_NAME_LABEL], "wp");
        let p = problems(&with(
            "{name: p1, namespace: ns, node: z, vip: 10.96.0.1, services: [nope]}",
        ));
        assert_eq!(
            p,
            vec![
                "waypoints[0].node: unknown node \"z\"",
                "waypoints[0].name: ns/p1 is also a pod's name",
                "waypoints[0].vip: 10.96.0.1 is used by another service",
                "waypoints[0].services[0]: no service ns/nope in the topology",
            ]
        );
    }

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(
            "10.0.0.0/8".parse::<Ipv4Net>().unwrap().capacity(),
            (1 << 24) - 2
        );
        assert!(
            "10.0.0.1/8"
                .parse::<Ipv4Net>()
                .unwrap_err()
                .contains("host bits")
        );
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        let a: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        assert!(a.overlaps(&"10.244.3.0/24".parse().unwrap()));
        assert!(!a.overlaps(&"10.245.0.0/24".parse().unwrap()));
    }
}
