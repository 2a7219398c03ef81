//! `weftctl lab top` (and, through the API server, `weftctl top`: `observe.rs`): live
//! rates per workload, like `kubectl top`, from two readings of
//! every agent's and waypoint's metrics an interval apart. From the agents (the side
//! that received each connection): inbound connections per second, the share of them
//! in mutual TLS, bytes in per second and connections denied per second; from the
//! waypoints: HTTP requests per second and the share of 5xx answers.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::Serialize;

use crate::output::{self, Format};

/// One sample of Prometheus text: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of a Prometheus (or OpenMetrics) text, comments left out.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => (name, labels(rest.strip_suffix('}').unwrap_or(rest))),
            None => (head, BTreeMap::new()),
        };
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// `a="x",b="y\"z"` → the map.
fn labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_owned();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key, value);
    }
    out
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// `namespace/name`.
    pub workload: String,
    pub connections_per_second: f64,
    /// Of the connections in the interval (none without any).
    pub mtls_share: Option<f64>,
    pub bytes_in_per_second: f64,
    pub denied_per_second: f64,
    pub requests_per_second: f64,
    pub error_share: Option<f64>,
}

#[derive(Default)]
struct Totals {
    connections: f64,
    mtls: f64,
    bytes_in: f64,
    denied: f64,
    requests: f64,
    errors: f64,
}

fn totals(samples: &[Sample]) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for (name, l, v) in samples {
        let workload = match (
            l.get("destination_workload_namespace"),
            l.get("destination_workload"),
        ) {
            (Some(ns), Some(w)) if !w.is_empty() && w != "unknown" => format!("{ns}/{w}"),
            _ => continue,
        };
        let t = out.entry(workload).or_default();
        let inbound = l.get("reporter").map(String::as_str) == Some("destination");
        match name.as_str() {
            "weft_tcp_connections_opened_total" if inbound => {
                t.connections += v;
                if l.get("connection_security_policy").map(String::as_str) == Some("mutual_tls") {
                    t.mtls += v;
                }
            }
            "weft_tcp_received_bytes_total" if inbound => t.bytes_in += v,
            "weft_tcp_authorization_decisions_total"
                if l.get("decision").map(String::as_str) == Some("deny") =>
            {
                t.denied += v
            }
            "weft_requests_total" => {
                t.requests += v;
                if l.get("response_code").is_some_and(|c| c.starts_with('5')) {
                    t.errors += v;
                }
            }
            _ => {}
        }
    }
    out
}

/// The rates between two readings `seconds` apart.
pub fn rates(before: &[Sample], after: &[Sample], seconds: f64) -> Vec<Row> {
    let (b, a) = (totals(before), totals(after));
    let zero = Totals::default();
    a.iter()
        .map(|(workload, now)| {
            let was = b.get(workload).unwrap_or(&zero);
            let d = |f: fn(&Totals) -> f64| (f(now) - f(was)).max(0.0);
            let connections = d(|t| t.connections);
            let requests = d(|t| t.requests);
            Row {
                workload: workload.clone(),
                connections_per_second: connections / seconds,
                mtls_share: (connections > 0.0).then(|| d(|t| t.mtls) / connections),
                bytes_in_per_second: d(|t| t.bytes_in) / seconds,
                denied_per_second: d(|t| t.denied) / seconds,
                requests_per_second: requests / seconds,
                error_share: (requests > 0.0).then(|| d(|t| t.errors) / requests),
            }
        })
        .filter(|r| {
            r.connections_per_second > 0.0
                || r.requests_per_second > 0.0
                || r.denied_per_second > 0.0
        })
        .collect()
}

/// The rows as a table.
pub fn human(rows: &[Row], colour: bool) -> String {
    let pct = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.0}%", s * 100.0));
    let mut out = format!(
        "{:<26} {:>8} {:>6} {:>11} {:>8} {:>8} {:>6}\n",
        "WORKLOAD", "CONN/S", "MTLS", "BYTES/S IN", "DENIED/S", "REQ/S", "5XX"
    );
    for r in rows {
        let denied = format!("{:.1}", r.denied_per_second);
        let denied = if r.denied_per_second > 0.0 {
            output::paint(colour, "31", &format!("{denied:>8}"))
        } else {
            format!("{denied:>8}")
        };
        out.push_str(&format!(
            "{:<26} {:>8.1} {:>6} {:>11.0} {denied} {:>8.1} {:>6}\n",
            r.workload,
            r.connections_per_second,
            pct(r.mtls_share),
            r.bytes_in_per_second,
            r.requests_per_second,
            pct(r.error_share),
        ));
    }
    if rows.is_empty() {
        out.push_str("(no traffic in the interval)\n");
    }
    out
}

/// Every agent's and waypoint's metrics now, as samples.
fn read(state: &super::State) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for a in &state.agents {
        let r = api::admin::Client::new(&a.admin_socket).get("/metrics")?;
        if let Some(text) = r.body.as_str() {
            out.extend(parse(text));
        }
    }
    for p in state.pods.iter().filter(|p| p.pod.waypoint) {
        let text = super::get_in_netns(
            super::netns_path(&p.netns),
            SocketAddr::from((p.ip, 15020)),
            "/metrics",
        )?;
        out.extend(parse(&text));
    }
    Ok(out)
}

/// Prints the rates over `interval`, `count` times (0: until interrupted).
pub fn run(interval: Duration, count: u32, format: Option<Format>) -> anyhow::Result<()> {
    let state = super::running_lab()?;
    let mut before = read(&state)?;
    let mut n = 0;
    loop {
        std::thread::sleep(interval);
        let after = read(&state)?;
        let rows = rates(&before, &after, interval.as_secs_f64());
        print!("{}", output::render(format, &rows, |c| human(&rows, c)));
        before = after;
        n += 1;
        if count != 0 && n >= count {
            return Ok(());
        }
        if format.is_none() {
            println!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_text_with_escaped_labels() {
        let s = parse(
            "# TYPE weft_tcp_connections_opened counter\nweft_tcp_connections_opened_total{reporter=\"destination\",destination_workload=\"a\\\"b\"} 7\nplain 1.5\nbroken{ x\n",
        );
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].1["destination_workload"], "a\"b");
        assert_eq!(s[0].2, 7.0);
        assert_eq!((s[1].0.as_str(), s[1].2), ("plain", 1.5));
    }

    #[test]
    fn rates_per_workload_between_two_readings() {
        let line = |m: &str, extra: &str, v: f64| {
            format!(
                "{m}{{reporter=\"destination\",destination_workload_namespace=\"shop\",destination_workload=\"cart-1\"{extra}}} {v}\n"
            )
        };
        let before = parse(&format!(
            "{}{}",
            line(
                "weft_tcp_connections_opened_total",
                ",connection_security_policy=\"mutual_tls\"",
                10.0
            ),
            line("weft_requests_total", ",response_code=\"200\"", 100.0),
        ));
        let after = parse(&format!(
            "{}{}{}{}{}",
            line(
                "weft_tcp_connections_opened_total",
                ",connection_security_policy=\"mutual_tls\"",
                16.0
            ),
            line(
                "weft_tcp_connections_opened_total",
                ",connection_security_policy=\"none\"",
                2.0
            ),
            line(
                "weft_tcp_authorization_decisions_total",
                ",decision=\"deny\"",
                2.0
            ),
            line("weft_requests_total", ",response_code=\"200\"", 118.0),
            line("weft_requests_total", ",response_code=\"503\"", 2.0),
        ));
        let rows = rates(&before, &after, 2.0);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.workload, "shop/cart-1");
        assert_eq!(r.connections_per_second, 4.0);
        assert_eq!(r.mtls_share, Some(0.75));
        assert_eq!(r.denied_per_second, 1.0);
        assert_eq!(r.requests_per_second, 10.0);
        assert_eq!(r.error_share, Some(0.1));
        let text = human(&rows, false);
        assert!(text.contains("shop/cart-1"), "{text}");
        assert!(text.contains("75%"), "{text}");
        // Nothing new: no row.
        assert!(rates(&after, &after, 2.0).is_empty());
    }
}
