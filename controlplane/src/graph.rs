//! The service graph: who talks to whom in the mesh, now. Served on the metrics
//! listener (15014): `GET /graph` is a page that redraws itself every few seconds,
//! `GET /graph.svg` the picture (rendered here, no script library), `GET /graph.json`
//! the data. `?namespace=NS` keeps the nodes of a namespace and their neighbours;
//! `?window=30s` sets the rate window (default `1m`).
//!
//! Nodes are the workloads and services of the configuration in force (enrolled or
//! not), and `unknown` for peers the mesh cannot name (a client outside it). Edges come
//! from the metrics the agents and the waypoints export, read from Prometheus
//! (`WEFT_CP_PROMETHEUS`): connections per second from the `weft_tcp_*` counters (the
//! server's agent when it reports a connection, else the client's), requests per second,
//! 5xx share and p99 from the waypoints' `weft_requests_total` and
//! `weft_request_duration_milliseconds`; bytes per second, and connections denied by
//! authorization. Traffic to a Service is drawn client → Service → workload, as the
//! metrics name the Service; each edge says whether it was carried in mutual TLS.

mod build;
mod page;
mod prometheus;
mod svg;

use std::sync::Arc;

use serde::Serialize;

pub use build::{Rates, Series, build};
pub use prometheus::{Prometheus, PrometheusError};

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// `ns/name` for a workload, `svc:ns/name` for a Service, `unknown`.
    pub id: String,
    pub kind: NodeKind,
    pub namespace: String,
    pub name: String,
    /// A workload in the mesh; a Service with an endpoint in the mesh.
    pub enrolled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeKind {
    Workload,
    Service,
    Unknown,
}

/// Traffic from one node to another, of one protocol, in mutual TLS or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub source: String,
    pub destination: String,
    /// `tcp` (connections, from the agents), `http` or `grpc` (requests, from the
    /// waypoints).
    pub protocol: String,
    pub mtls: bool,
    /// Connections (tcp) or requests (http, grpc) per second.
    pub rate: f64,
    /// Share of them that failed: 5xx answers, or connections that ended with a flag.
    pub error_share: f64,
    /// Connections per second refused by authorization.
    pub denied_rate: f64,
    /// Bytes per second, both directions.
    pub bytes_rate: f64,
    /// The 99th percentile of request durations, for requests.
    pub p99_ms: Option<f64>,
}

impl Edge {
    /// Denied flows are drawn in red.
    pub fn denied(&self) -> bool {
        self.denied_rate > 0.0
    }
}

/// The graph at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// The rate window, as PromQL writes it (`1m`).
    pub window: String,
    /// Why there are no edges, when the metrics could not be read.
    pub error: Option<String>,
}

/// Where the graph's parts come from: the configuration in force (as published), and
/// Prometheus.
pub struct Source {
    pub hub: Arc<crate::distribution::Hub>,
    pub prometheus: Option<Prometheus>,
}

impl Source {
    /// The graph now, over `window`, kept to `namespace` and its neighbours when given.
    pub async fn graph(&self, window: &str, namespace: Option<&str>) -> Graph {
        let mut resources = Vec::new();
        self.hub
            .for_each_resource(|k, b| resources.push((k.clone(), b.clone())));
        let inventory = build::inventory(resources.iter().map(|(k, b)| (k, b)));
        let (rates, error) = match &self.prometheus {
            None => (
                Rates::default(),
                Some("no Prometheus configured (WEFT_CP_PROMETHEUS)".to_owned()),
            ),
            Some(p) => match p.rates(window).await {
                Ok(r) => (r, None),
                Err(e) => (Rates::default(), Some(e.to_string())),
            },
        };
        let mut graph = build(inventory, &rates, window);
        graph.error = error;
        if let Some(ns) = namespace {
            graph.keep_namespace(ns);
        }
        graph
    }
}

impl Graph {
    /// Keeps the nodes of `namespace`, the nodes they exchange traffic with, and the
    /// edges between those.
    pub fn keep_namespace(&mut self, namespace: &str) {
        let ours: std::collections::BTreeSet<String> = self
            .nodes
            .iter()
            .filter(|n| n.namespace == namespace)
            .map(|n| n.id.clone())
            .collect();
        self.edges
            .retain(|e| ours.contains(&e.source) || ours.contains(&e.destination));
        let kept: std::collections::BTreeSet<&str> = self
            .edges
            .iter()
            .flat_map(|e| [e.source.as_str(), e.destination.as_str()])
            .collect();
        self.nodes
            .retain(|n| ours.contains(&n.id) || kept.contains(n.id.as_str()));
    }
}

/// What a request for `/graph…` gets: status, content type, body.
pub async fn respond(source: &Source, path: &str, query: Option<&str>) -> (u16, String, String) {
    let param = |name: &str| {
        query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
    };
    let window = param("window").unwrap_or_else(|| "1m".to_owned());
    if !valid_window(&window) {
        return (
            400,
            "text/plain".to_owned(),
            format!("window={window:?}: a duration such as 30s, 1m or 5m\n"),
        );
    }
    let namespace = param("namespace").filter(|n| !n.is_empty());
    if let Some(ns) = &namespace
        && !ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return (
            400,
            "text/plain".to_owned(),
            format!("namespace={ns:?}: not a namespace name\n"),
        );
    }
    match path {
        "/graph" => (
            200,
            "text/html; charset=utf-8".to_owned(),
            page::html(query.unwrap_or_default()),
        ),
        "/graph.svg" => {
            let g = source.graph(&window, namespace.as_deref()).await;
            (200, "image/svg+xml".to_owned(), svg::render(&g))
        }
        "/graph.json" => {
            let g = source.graph(&window, namespace.as_deref()).await;
            let body = serde_json::to_string(&g).unwrap_or_default();
            (200, "application/json".to_owned(), body)
        }
        _ => (
            404,
            "text/plain".to_owned(),
            "served here: GET /graph, /graph.svg, /graph.json\n".to_owned(),
        ),
    }
}

/// `30s`, `1m`, `5m`, `1h`: what PromQL takes as a range, kept to a sane size.
fn valid_window(w: &str) -> bool {
    let Some(unit) = w.chars().last() else {
        return false;
    };
    let digits = &w[..w.len() - unit.len_utf8()];
    matches!(unit, 's' | 'm' | 'h')
        && (1..=4).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_promql_durations() {
        for ok in ["30s", "1m", "15m", "1h"] {
            assert!(valid_window(ok), "{ok}");
        }
        for bad in ["", "m", "1", "1d", "1m)", "10000s", "1.5m", "ä"] {
            assert!(!valid_window(bad), "{bad}");
        }
    }
}
