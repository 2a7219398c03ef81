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

    /// What it is to the mesh, for tables: `enrolled`, `waypoint` or `-`.
    pub fn mesh_role(&self) -> &'static str {
        if self.enrolled {
            "enrolled"
        } else if self.waypoint {
            "waypoint"
        } else {
            "-"
        }
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
        let vip = check_vip(&field, &svc.vip, (&mut vips, service_subnet), &mut p);
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

mod waypoint;

pub use waypoint::Waypoint;
use waypoint::{RawWaypoint, check_waypoints};

/// The `vip` of a Service or a waypoint at `field`: an IPv4 address, inside the
/// service subnet (when that parsed), that no other uses (`vips`, which it joins).
/// `0.0.0.0` when it is not an address.
fn check_vip(
    field: &str,
    value: &str,
    (vips, subnet): (&mut BTreeSet<Ipv4Addr>, Option<Ipv4Net>),
    p: &mut impl FnMut(String, String),
) -> Ipv4Addr {
    let Ok(vip) = value.parse::<Ipv4Addr>() else {
        p(
            format!("{field}.vip"),
            format!("{value:?} is not an IPv4 address"),
        );
        return Ipv4Addr::UNSPECIFIED;
    };
    if let Some(s) = subnet
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

#[cfg(test)]
mod tests;
