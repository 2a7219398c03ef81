//! From the configuration in force and the rates Prometheus computed to the graph: a
//! pure function, tested on its own.

use std::collections::{BTreeMap, BTreeSet};

use api::proto::config::resource::Body;

use super::{Edge, Graph, Node, NodeKind};
use crate::{resources::Key, validate::WAYPOINT_NAME_LABEL};

/// One series of an instant query: its labels and its value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    fn label(&self, name: &str) -> &str {
        self.labels
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// The rates the graph is drawn from, each summed by the connection labels (see
/// `prometheus.rs` for the queries).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    /// Connections opened per second, by reporter.
    pub opened: Vec<Series>,
    /// Connections that ended with a response flag, per second, by reporter.
    pub failed: Vec<Series>,
    /// Bytes per second (both directions), by reporter.
    pub bytes: Vec<Series>,
    /// Connections denied by authorization per second (the server's agent).
    pub denied: Vec<Series>,
    /// Waypoint requests per second, and those answered 5xx.
    pub requests: Vec<Series>,
    pub request_errors: Vec<Series>,
    /// The p99 of request durations, in milliseconds.
    pub request_p99: Vec<Series>,
}

/// The nodes every graph has, idle or not: the workloads and Services in force (the
/// published resources, `resources`). A waypoint is in the mesh (it speaks only HBONE),
/// and so is a Service whose endpoints are.
pub fn inventory<'a>(
    resources: impl IntoIterator<Item = (&'a Key, &'a Body)> + Clone,
) -> Vec<Node> {
    let waypoints: BTreeSet<String> = resources
        .clone()
        .into_iter()
        .filter_map(|((_, ns, name), body)| match body {
            Body::Workload(w) if w.labels.contains_key(WAYPOINT_NAME_LABEL) => {
                Some(format!("{ns}/{name}"))
            }
            _ => None,
        })
        .collect();
    let mut nodes = Vec::new();
    for ((kind, ns, name), body) in resources {
        let id = format!("{ns}/{name}");
        match (kind.as_str(), body) {
            ("Workload", Body::Workload(w)) => nodes.push(Node {
                enrolled: w.enrolled || waypoints.contains(&id),
                id,
                kind: NodeKind::Workload,
                namespace: ns.clone(),
                name: name.clone(),
            }),
            ("Service", Body::Service(s)) => nodes.push(Node {
                id: format!("svc:{id}"),
                kind: NodeKind::Service,
                namespace: ns.clone(),
                name: name.clone(),
                enrolled: s
                    .endpoints
                    .iter()
                    .any(|e| e.enrolled || waypoints.contains(&e.workload)),
            }),
            _ => {}
        }
    }
    nodes
}

/// A flow as the metrics name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    source: String,
    destination: String,
    service: Option<String>,
    protocol: String,
    mtls: bool,
}

impl Flow {
    fn of(s: &Series, protocol: &str) -> Flow {
        let workload = |ns: &str, w: &str| {
            if w.is_empty() || w == "unknown" || ns.is_empty() || ns == "unknown" {
                "unknown".to_owned()
            } else {
                format!("{ns}/{w}")
            }
        };
        let service = s.label("destination_service");
        Flow {
            source: workload(
                s.label("source_workload_namespace"),
                s.label("source_workload"),
            ),
            destination: workload(
                s.label("destination_workload_namespace"),
                s.label("destination_workload"),
            ),
            service: (!service.is_empty() && service != "unknown").then(|| service.to_owned()),
            protocol: protocol.to_owned(),
            mtls: s.label("connection_security_policy") == "mutual_tls",
        }
    }

    /// The edges it is drawn as: through its Service when it has one.
    fn hops(&self) -> Vec<(String, String)> {
        match &self.service {
            Some(svc) => {
                let svc = format!("svc:{svc}");
                let mut hops = vec![(self.source.clone(), svc.clone())];
                if self.destination != "unknown" {
                    hops.push((svc, self.destination.clone()));
                }
                hops
            }
            None => vec![(self.source.clone(), self.destination.clone())],
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    rate: f64,
    failed: f64,
    denied: f64,
    bytes: f64,
    p99: Option<f64>,
}

/// Sums series into flows. Both agents report a connection between two workloads of
/// the mesh; the client's report is taken, since it names the Service the client asked
/// for (the server's agent sees only a pod address). The server's report stands where
/// the client has none: a client outside the mesh. Denials are the server's alone.
fn connections(rates: &Rates) -> BTreeMap<Flow, Figures> {
    let mut by_reporter: BTreeMap<(Flow, bool), Figures> = BTreeMap::new();
    let mut add = |series: &[Series], set: fn(&mut Figures, f64)| {
        for s in series {
            let from_server = s.label("reporter") == "destination";
            let f = by_reporter
                .entry((Flow::of(s, "tcp"), from_server))
                .or_default();
            set(f, s.value);
        }
    };
    add(&rates.opened, |f, v| f.rate += v);
    add(&rates.failed, |f, v| f.failed += v);
    add(&rates.bytes, |f, v| f.bytes += v);
    let pair = |f: &Flow| (f.source.clone(), f.destination.clone(), f.mtls);
    let client_reported: BTreeSet<(String, String, bool)> = by_reporter
        .keys()
        .filter(|(_, from_server)| !from_server)
        .map(|(f, _)| pair(f))
        .collect();
    let mut out: BTreeMap<Flow, Figures> = BTreeMap::new();
    for ((flow, from_server), figures) in by_reporter {
        if from_server && client_reported.contains(&pair(&flow)) {
            continue;
        }
        let f = out.entry(flow).or_default();
        f.rate += figures.rate;
        f.failed += figures.failed;
        f.bytes += figures.bytes;
    }
    for s in &rates.denied {
        out.entry(Flow::of(s, "tcp")).or_default().denied += s.value;
    }
    out
}

fn requests(rates: &Rates) -> BTreeMap<Flow, Figures> {
    let mut out: BTreeMap<Flow, Figures> = BTreeMap::new();
    let protocol = |s: &Series| match s.label("request_protocol") {
        "grpc" => "grpc",
        _ => "http",
    };
    for s in &rates.requests {
        out.entry(Flow::of(s, protocol(s))).or_default().rate += s.value;
    }
    for s in &rates.request_errors {
        out.entry(Flow::of(s, protocol(s))).or_default().failed += s.value;
    }
    for s in &rates.request_p99 {
        if s.value.is_finite() {
            let f = out.entry(Flow::of(s, protocol(s))).or_default();
            f.p99 = Some(f.p99.map_or(s.value, |p: f64| p.max(s.value)));
        }
    }
    out
}

/// The graph: the inventory's nodes, the nodes traffic names that it does not know
/// (`unknown`, a workload gone), and an edge per hop, protocol and security.
pub fn build(inventory: Vec<Node>, rates: &Rates, window: &str) -> Graph {
    let mut edges: BTreeMap<(String, String, String, bool), Figures> = BTreeMap::new();
    for (flow, figures) in connections(rates).into_iter().chain(requests(rates)) {
        for (from, to) in flow.hops() {
            let e = edges
                .entry((from, to, flow.protocol.clone(), flow.mtls))
                .or_default();
            e.rate += figures.rate;
            e.failed += figures.failed;
            e.denied += figures.denied;
            e.bytes += figures.bytes;
            e.p99 = match (e.p99, figures.p99) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    // An edge with nothing on it now (every series rounds to zero) is not drawn.
    edges.retain(|_, f| f.rate > 0.0 || f.denied > 0.0 || f.bytes > 0.0);
    let mut nodes = inventory;
    let known: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let named: BTreeSet<&String> = edges.keys().flat_map(|(a, b, _, _)| [a, b]).collect();
    for id in named {
        if !known.contains(id) {
            nodes.push(unlisted(id));
        }
    }
    nodes.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    Graph {
        nodes,
        edges: edges
            .into_iter()
            .map(|((source, destination, protocol, mtls), f)| Edge {
                source,
                destination,
                protocol,
                mtls,
                rate: f.rate,
                error_share: if f.rate > 0.0 {
                    (f.failed / f.rate).min(1.0)
                } else {
                    0.0
                },
                denied_rate: f.denied,
                bytes_rate: f.bytes,
                p99_ms: f.p99,
            })
            .collect(),
        window: window.to_owned(),
        error: None,
    }
}

/// A node that traffic names and the configuration does not hold.
fn unlisted(id: &str) -> Node {
    let (kind, rest) = match id.strip_prefix("svc:") {
        Some(rest) => (NodeKind::Service, rest),
        None if id == "unknown" => (NodeKind::Unknown, ""),
        None => (NodeKind::Workload, id),
    };
    let (namespace, name) = rest.split_once('/').unwrap_or(("", rest));
    Node {
        id: id.to_owned(),
        kind,
        namespace: namespace.to_owned(),
        name: if kind == NodeKind::Unknown {
            "unknown".to_owned()
        } else {
            name.to_owned()
        },
        enrolled: false,
    }
}

#[cfg(test)]
mod tests;
