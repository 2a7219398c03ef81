//! Grafana dashboards for the mesh (`deploy/dashboards/*.json`): the mesh overview, one
//! workload, the waypoints' requests and the control plane. Each panel's query is
//! written here once; the JSON is rendered from it (a test keeps `deploy/` so), and the
//! end-to-end tests run every query against the lab's Prometheus and expect data, so a
//! dashboard never names a metric or label the code does not export.

use serde_json::{Value, json};

/// A panel: its title, unit and PromQL (`$namespace`, `$workload` are the dashboard's
/// variables). Series that may rightly be absent (denials, errors, NACKs) end in
/// `or vector(0)`, so that the panel shows zero rather than nothing.
#[derive(Debug, Clone, Copy)]
pub struct Panel {
    pub title: &'static str,
    pub unit: &'static str,
    pub expr: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Dashboard {
    /// The file name (without `.json`) and Grafana uid.
    pub uid: &'static str,
    pub title: &'static str,
    /// Variables, each a label whose values Grafana offers (from `label_values`).
    pub variables: &'static [(&'static str, &'static str)],
    pub panels: &'static [Panel],
}

const fn panel(title: &'static str, unit: &'static str, expr: &'static str) -> Panel {
    Panel { title, unit, expr }
}

pub const DASHBOARDS: &[Dashboard] = &[
    Dashboard {
        uid: "weft-mesh",
        title: "Weft / Mesh overview",
        variables: &[],
        panels: &[
            panel(
                "Connections opened, by source and destination",
                "cps",
                "sum by (source_workload_namespace, source_workload, destination_workload_namespace, destination_workload) (rate(weft_tcp_connections_opened_total{reporter=\"destination\"}[1m]))",
            ),
            panel(
                "Share of connections in mutual TLS",
                "percentunit",
                "sum(rate(weft_tcp_connections_opened_total{reporter=\"destination\",connection_security_policy=\"mutual_tls\"}[1m])) / sum(rate(weft_tcp_connections_opened_total{reporter=\"destination\"}[1m]))",
            ),
            panel(
                "Connections denied, by destination",
                "cps",
                "sum by (destination_workload_namespace, destination_workload) (rate(weft_tcp_authorization_decisions_total{decision=\"deny\"}[1m])) or vector(0)",
            ),
            panel(
                "Bytes received, by destination",
                "Bps",
                "sum by (destination_workload_namespace, destination_workload) (rate(weft_tcp_received_bytes_total{reporter=\"destination\"}[1m]))",
            ),
            panel(
                "HTTP requests through waypoints, by service",
                "reqps",
                "sum by (destination_service) (rate(weft_requests_total[1m]))",
            ),
            panel(
                "Pods enrolled, by node",
                "short",
                "sum by (node) (weft_agent_enrolled_namespaces)",
            ),
        ],
    },
    Dashboard {
        uid: "weft-workload",
        title: "Weft / Workload",
        variables: &[
            ("namespace", "destination_workload_namespace"),
            ("workload", "destination_workload"),
        ],
        panels: &[
            panel(
                "Inbound connections, by source",
                "cps",
                "sum by (source_workload_namespace, source_workload) (rate(weft_tcp_connections_opened_total{reporter=\"destination\",destination_workload_namespace=\"$namespace\",destination_workload=\"$workload\"}[1m]))",
            ),
            panel(
                "Inbound bytes",
                "Bps",
                "sum(rate(weft_tcp_received_bytes_total{reporter=\"destination\",destination_workload_namespace=\"$namespace\",destination_workload=\"$workload\"}[1m]))",
            ),
            panel(
                "Authorization decisions",
                "cps",
                "sum by (decision) (rate(weft_tcp_authorization_decisions_total{destination_workload_namespace=\"$namespace\",destination_workload=\"$workload\"}[1m]))",
            ),
            panel(
                "HTTP requests, by response code",
                "reqps",
                "sum by (response_code) (rate(weft_requests_total{destination_workload_namespace=\"$namespace\",destination_workload=\"$workload\"}[1m]))",
            ),
        ],
    },
    Dashboard {
        uid: "weft-waypoints",
        title: "Weft / Waypoint requests",
        variables: &[],
        panels: &[
            panel(
                "Requests, by waypoint, service and code",
                "reqps",
                "sum by (waypoint, destination_service, response_code) (rate(weft_requests_total[1m]))",
            ),
            panel(
                "Share of 5xx answers",
                "percentunit",
                "(sum(rate(weft_requests_total{response_code=~\"5..\"}[1m])) or vector(0)) / sum(rate(weft_requests_total[1m]))",
            ),
            panel(
                "p99 request duration, by service",
                "ms",
                "histogram_quantile(0.99, sum by (le, destination_service) (rate(weft_request_duration_milliseconds_bucket[1m])))",
            ),
            panel(
                "Requests in flight upstream",
                "short",
                "sum by (waypoint) (weft_waypoint_upstream_requests_active)",
            ),
            panel(
                "Tunnels open",
                "short",
                "sum by (waypoint) (weft_waypoint_tunnels_active)",
            ),
        ],
    },
    Dashboard {
        uid: "weft-controlplane",
        title: "Weft / Control plane",
        variables: &[],
        panels: &[
            panel(
                "Configuration version",
                "none",
                "max by (instance) (weft_controlplane_config_version)",
            ),
            panel(
                "Subscribers, by kind",
                "short",
                "sum by (kind) (weft_controlplane_config_subscribers)",
            ),
            panel(
                "Updates pushed, by kind",
                "ops",
                "sum by (kind) (rate(weft_controlplane_config_pushes_total[5m]))",
            ),
            panel(
                "p99 from push to ACK",
                "s",
                "histogram_quantile(0.99, sum by (le, kind) (rate(weft_controlplane_config_push_ack_seconds_bucket[5m])))",
            ),
            panel(
                "Updates refused (NACK), by kind of resource",
                "ops",
                "sum by (reason) (rate(weft_controlplane_config_nacks_total[5m])) or vector(0)",
            ),
            panel(
                "Certificates issued",
                "ops",
                "sum(rate(weft_controlplane_certificates_issued_total[5m]))",
            ),
        ],
    },
];

/// A dashboard as Grafana imports it: a Prometheus data source chosen at import, its
/// variables, and its panels two by row.
pub fn render(d: &Dashboard) -> Value {
    let datasource = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut variables = vec![json!({
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
    })];
    for (name, label) in d.variables {
        variables.push(json!({
            "name": name, "label": name, "type": "query", "datasource": datasource,
            "query": format!("label_values({label})"), "refresh": 2,
        }));
    }
    let panels: Vec<Value> = d
        .panels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": p.title,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "targets": [{"refId": "A", "datasource": datasource, "expr": p.expr}],
            })
        })
        .collect();
    json!({
        "uid": d.uid,
        "title": d.title,
        "tags": ["weft"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": variables},
        "panels": panels,
    })
}

/// A panel's query with the dashboard's variables set.
pub fn with_variables(expr: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("${name}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// `deploy/dashboards/` is what this renders; `WEFT_UPDATE_DEPLOY=1 cargo test -p
    /// weftctl dashboards` writes it again.
    #[test]
    fn the_dashboards_folder_is_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dashboards");
        for d in DASHBOARDS {
            let mut text = serde_json::to_string_pretty(&render(d)).unwrap();
            text.push('\n');
            let path = dir.join(format!("{}.json", d.uid));
            if std::env::var("WEFT_UPDATE_DEPLOY").is_ok_and(|u| u == "1") {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == text,
                "deploy/dashboards/{}.json is out of date: WEFT_UPDATE_DEPLOY=1 cargo test -p weftctl dashboards",
                d.uid
            );
        }
    }

    #[test]
    fn every_variable_a_panel_uses_is_declared() {
        for d in DASHBOARDS {
            for p in d.panels {
                let set = with_variables(
                    p.expr,
                    &d.variables
                        .iter()
                        .map(|(n, _)| (*n, "x"))
                        .collect::<Vec<_>>(),
                );
                assert!(!set.contains('$'), "{}: {}", d.uid, p.title);
            }
        }
        let json = render(&DASHBOARDS[1]);
        assert_eq!(
            json["templating"]["list"][1]["query"],
            "label_values(destination_workload_namespace)"
        );
        assert_eq!(json["panels"][1]["gridPos"]["x"], 12);
    }
}
