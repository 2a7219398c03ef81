//! The graph as SVG: nodes in columns by how far down the traffic they are (clients on
//! the left), edges as curves with their figures. Every element carries its data as
//! attributes (`data-source`, `data-mtls` …) so scripts and tests read the picture.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{Edge, Graph, Node, NodeKind};

const NODE_W: f64 = 210.0;
const NODE_H: f64 = 48.0;
const COLUMN: f64 = 400.0;
const ROW: f64 = 92.0;
const MARGIN: f64 = 40.0;

/// Where each node goes: `(column, row)`; nodes without traffic go in a row of their own
/// under the rest.
fn layout(g: &Graph, index: &BTreeMap<&str, usize>) -> Vec<(f64, f64)> {
    let n = g.nodes.len();
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut in_degree = vec![0usize; n];
    let mut linked = vec![false; n];
    for e in &g.edges {
        let (Some(&a), Some(&b)) = (
            index.get(e.source.as_str()),
            index.get(e.destination.as_str()),
        ) else {
            continue;
        };
        linked[a] = true;
        linked[b] = true;
        if a != b && !out_edges[a].contains(&b) {
            out_edges[a].push(b);
            in_degree[b] += 1;
        }
    }
    // Longest path from a client, cycles broken where they are met: when no node is
    // free, the one with the fewest edges still coming in starts anew.
    let mut rank = vec![0usize; n];
    let mut done = vec![false; n];
    let mut remaining = in_degree.clone();
    for _ in 0..n {
        let next = (0..n)
            .filter(|&i| !done[i] && linked[i])
            .min_by_key(|&i| (remaining[i], i));
        let Some(v) = next else { break };
        done[v] = true;
        for &w in &out_edges[v] {
            if !done[w] {
                rank[w] = rank[w].max(rank[v] + 1);
                remaining[w] = remaining[w].saturating_sub(1);
            }
        }
    }
    let mut rows_used: BTreeMap<usize, usize> = BTreeMap::new();
    let mut place = vec![(0.0, 0.0); n];
    for i in (0..n).filter(|&i| linked[i]) {
        let row = rows_used.entry(rank[i]).or_default();
        place[i] = (rank[i] as f64, *row as f64);
        *row += 1;
    }
    let idle_row = rows_used.values().copied().max().unwrap_or(0) as f64
        + if rows_used.is_empty() { 0.0 } else { 0.5 };
    let per_row = rows_used.len().max(3);
    for (k, i) in (0..n).filter(|&i| !linked[i]).enumerate() {
        place[i] = ((k % per_row) as f64, idle_row + (k / per_row) as f64);
    }
    place
}

/// Each node's place in `g.nodes`, by id.
fn node_index(g: &Graph) -> BTreeMap<&str, usize> {
    g.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect()
}

fn position((column, row): (f64, f64)) -> (f64, f64) {
    (MARGIN + column * COLUMN, MARGIN + 30.0 + row * ROW)
}

/// The SVG document.
pub fn render(g: &Graph) -> String {
    let index = node_index(g);
    let place = layout(g, &index);
    let (max_x, max_y) = place.iter().fold((0.0f64, 0.0f64), |(x, y), p| {
        let (px, py) = position(*p);
        (x.max(px), y.max(py))
    });
    let width = max_x + NODE_W + MARGIN;
    let height = max_y + NODE_H + MARGIN + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="weft-graph" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" data-window="{}" data-nodes="{}" data-edges="{}">"#,
        escape(&g.window),
        g.nodes.len(),
        g.edges.len()
    );
    s.push_str(STYLE);
    if let Some(error) = &g.error {
        let _ = write!(
            s,
            r#"<text class="error" x="{MARGIN}" y="24">no traffic figures: {}</text>"#,
            escape(error)
        );
    }
    // How many edges join each pair so far: parallel ones are drawn apart.
    let mut between: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    // The edges' figures go on top of everything, so no node hides them.
    let mut labels = String::new();
    s.push_str(r#"<g class="edges">"#);
    for e in &g.edges {
        let (Some(&a), Some(&b)) = (
            index.get(e.source.as_str()),
            index.get(e.destination.as_str()),
        ) else {
            continue;
        };
        let nth = between.entry((a.min(b), a.max(b))).or_default();
        edge(
            &mut s,
            &mut labels,
            e,
            position(place[a]),
            position(place[b]),
            *nth,
        );
        *nth += 1;
    }
    s.push_str("</g><g class=\"nodes\">");
    for (i, n) in g.nodes.iter().enumerate() {
        node(&mut s, n, position(place[i]));
    }
    s.push_str("</g><g class=\"figures\">");
    s.push_str(&labels);
    s.push_str("</g></svg>");
    s
}

const STYLE: &str = "<defs>\
<marker id=\"arrow-mtls\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#2e7d32\"/></marker>\
<marker id=\"arrow-plaintext\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#e65100\"/></marker>\
<marker id=\"arrow-denied\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#c62828\"/></marker>\
</defs><style>\
.weft-graph{font-family:sans-serif;font-size:12px}\
.edge path{fill:none;stroke-width:2}\
.edge path.mtls{stroke:#2e7d32}\
.edge path.plaintext{stroke:#e65100;stroke-dasharray:6 4}\
.edge path.denied{stroke:#c62828;stroke-width:3}\
.figures text{fill:#333;font-size:11px;text-anchor:middle;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}\
.figures text.denied{fill:#c62828;font-weight:bold}\
.node .lock rect{fill:#1565c0;stroke:none}.node .lock path{fill:none;stroke:#1565c0;stroke-width:1.6}\
.node rect{fill:#fff;stroke-width:2}\
.node rect.enrolled{stroke:#1565c0}\
.node rect.outside{stroke:#9e9e9e;stroke-dasharray:4 3;fill:#f5f5f5}\
.node.service rect{rx:24}\
.node text.name{font-weight:bold}\
.node text.sub{fill:#555;font-size:11px}\
.error{fill:#c62828}\
</style>";

fn edge(
    s: &mut String,
    labels: &mut String,
    e: &Edge,
    from: (f64, f64),
    to: (f64, f64),
    nth: usize,
) {
    let class = if e.denied() {
        "denied"
    } else if e.mtls {
        "mtls"
    } else {
        "plaintext"
    };
    let offset = nth as f64 * 16.0;
    let (x1, y1) = (from.0 + NODE_W, from.1 + NODE_H / 2.0 + offset);
    let (x2, y2) = (to.0, to.1 + NODE_H / 2.0 + offset);
    let (d, (lx, ly)) = if x2 > x1 + COLUMN {
        // Over a column or more: an arc above the nodes in between.
        let top = from.1.min(to.1) - 24.0 - offset;
        (
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{top:.1} {:.1},{top:.1} {x2:.1},{y2:.1}",
                x1 + 60.0,
                x2 - 60.0
            ),
            ((x1 + x2) / 2.0, top + 4.0),
        )
    } else if x2 > x1 {
        let bend = (x2 - x1) / 2.0;
        (
            format!(
                "M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}",
                x1 + bend,
                x2 - bend
            ),
            ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 20.0),
        )
    } else {
        // Back to an earlier column (a reply path, a cycle): a loop under the nodes.
        let low = from.1.max(to.1) + NODE_H + 30.0 + offset;
        (
            format!(
                "M{:.1},{:.1} C{:.1},{low:.1} {:.1},{low:.1} {:.1},{:.1}",
                from.0 + NODE_W / 2.0,
                from.1 + NODE_H,
                from.0 + NODE_W / 2.0,
                to.0 + NODE_W / 2.0,
                to.0 + NODE_W / 2.0,
                to.1 + NODE_H
            ),
            ((from.0 + to.0) / 2.0 + NODE_W / 2.0, low - 8.0),
        )
    };
    let security = if e.mtls { "mTLS" } else { "plaintext" };
    let only_denied = e.denied() && e.rate == 0.0;
    let first = if only_denied {
        format!("{security} · denied {}/s", number(e.denied_rate))
    } else if e.protocol == "tcp" {
        format!("{security} {} conn/s", number(e.rate))
    } else {
        format!("{security} {} {} req/s", e.protocol, number(e.rate))
    };
    let mut second = Vec::new();
    if e.bytes_rate > 0.0 {
        second.push(bytes(e.bytes_rate));
    }
    if e.error_share > 0.0 {
        second.push(format!("{:.1}% errors", e.error_share * 100.0));
    }
    if let Some(p99) = e.p99_ms {
        second.push(format!("p99 {} ms", number(p99)));
    }
    if e.denied() && !only_denied {
        second.push(format!("denied {}/s", number(e.denied_rate)));
    }
    let _ = write!(
        s,
        r#"<g class="edge {class}" data-source="{}" data-destination="{}" data-protocol="{}" data-mtls="{}" data-denied="{}" data-rate="{:.3}" data-error-share="{:.4}"><title>{} → {}: {} {}{}</title><path class="{class}" d="{d}" marker-end="url(#arrow-{class})"/></g>"#,
        escape(&e.source),
        escape(&e.destination),
        escape(&e.protocol),
        e.mtls,
        e.denied(),
        e.rate,
        e.error_share,
        escape(&e.source),
        escape(&e.destination),
        e.protocol,
        security,
        if e.denied() { ", denied" } else { "" },
    );
    let _ = write!(
        labels,
        r#"<text x="{lx:.1}" y="{ly:.1}">{}</text>"#,
        escape(&first)
    );
    if !second.is_empty() {
        let _ = write!(
            labels,
            r#"<text class="{}" x="{lx:.1}" y="{:.1}">{}</text>"#,
            if e.denied() { "denied" } else { "" },
            ly + 13.0,
            escape(&second.join(" · "))
        );
    }
}

/// A padlock, for nodes in the mesh.
const LOCK: &str = r#"<g class="lock" transform="translate(10,9)"><path d="M2,6V3.5a3,3 0 0 1 6,0V6"/><rect x="0" y="6" width="10" height="8" rx="1.5"/></g>"#;

fn node(s: &mut String, n: &Node, (x, y): (f64, f64)) {
    let kind = match n.kind {
        NodeKind::Workload => "workload",
        NodeKind::Service => "service",
        NodeKind::Unknown => "unknown",
    };
    let mesh = if n.enrolled { "enrolled" } else { "outside" };
    let title = match n.kind {
        NodeKind::Unknown => "a peer the mesh cannot name".to_owned(),
        _ => format!("{kind} {}", n.id.trim_start_matches("svc:")),
    };
    let sub = match n.kind {
        NodeKind::Unknown => "outside the mesh".to_owned(),
        _ => format!(
            "{} · {kind} · {}",
            n.namespace,
            if n.enrolled {
                "in the mesh"
            } else {
                "not in the mesh"
            }
        ),
    };
    let _ = write!(
        s,
        r#"<g class="node {kind}" data-id="{}" data-kind="{kind}" data-enrolled="{}" transform="translate({x:.1},{y:.1})"><title>{}</title><rect class="{mesh}" width="{NODE_W}" height="{NODE_H}" rx="8"/>{}<text class="name" x="{}" y="20">{}</text><text class="sub" x="12" y="37">{}</text></g>"#,
        escape(&n.id),
        n.enrolled,
        escape(&title),
        if n.enrolled { LOCK } else { "" },
        if n.enrolled { 26 } else { 12 },
        escape(&n.name),
        escape(&sub),
    );
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn bytes(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1} GB/s", v / 1e9),
        v if v >= 1e6 => format!("{:.1} MB/s", v / 1e6),
        v if v >= 1e3 => format!("{:.1} kB/s", v / 1e3),
        v => format!("{v:.0} B/s"),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: NodeKind, enrolled: bool) -> Node {
        let rest = id.trim_start_matches("svc:");
        let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
        Node {
            id: id.to_owned(),
            kind,
            namespace: ns.to_owned(),
            name: name.to_owned(),
            enrolled,
        }
    }

    fn edge(from: &str, to: &str, mtls: bool, denied: f64) -> Edge {
        Edge {
            source: from.to_owned(),
            destination: to.to_owned(),
            protocol: "tcp".to_owned(),
            mtls,
            rate: if denied > 0.0 { 0.0 } else { 2.0 },
            error_share: 0.0,
            denied_rate: denied,
            bytes_rate: 2048.0,
            p99_ms: None,
        }
    }

    fn graph() -> Graph {
        Graph {
            nodes: vec![
                node("shop/frontend-1", NodeKind::Workload, true),
                node("svc:shop/cart", NodeKind::Service, true),
                node("shop/cart-1", NodeKind::Workload, true),
                node("unknown", NodeKind::Unknown, false),
                node("legacy/idle", NodeKind::Workload, false),
            ],
            edges: vec![
                edge("shop/frontend-1", "svc:shop/cart", true, 0.0),
                edge("svc:shop/cart", "shop/cart-1", true, 0.0),
                edge("unknown", "shop/cart-1", false, 1.5),
                edge("shop/cart-1", "shop/frontend-1", false, 0.0),
            ],
            window: "1m".to_owned(),
            error: None,
        }
    }

    #[test]
    fn clients_come_first_and_idle_nodes_go_below() {
        let g = graph();
        let place = layout(&g, &node_index(&g));
        assert_eq!(place[0], (0.0, 0.0), "frontend starts");
        assert_eq!(place[1].0, 1.0, "the service next");
        assert_eq!(place[2].0, 2.0, "its workload after it");
        assert_eq!(place[3].0, 0.0, "the unknown client on the left too");
        assert!(place[4].1 > place[3].1, "the idle node under the rest");
    }

    #[test]
    fn elements_carry_their_data_and_their_marks() {
        let svg = render(&graph());
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(r#"data-source="shop/frontend-1" data-destination="svc:shop/cart" data-protocol="tcp" data-mtls="true" data-denied="false""#));
        assert!(svg.contains(r#"data-source="unknown" data-destination="shop/cart-1" data-protocol="tcp" data-mtls="false" data-denied="true""#));
        assert!(svg.contains(">plaintext · denied 1.50/s<"), "{svg}");
        assert!(svg.contains(">mTLS 2.00 conn/s<"), "{svg}");
        assert!(svg.contains(">plaintext 2.00 conn/s<"), "{svg}");
        assert_eq!(svg.matches(r#"class="lock""#).count(), 3);
        assert!(svg.contains("2.0 kB/s"));
        assert!(
            svg.contains(r#"data-id="legacy/idle" data-kind="workload" data-enrolled="false""#)
        );
        assert!(svg.contains(r#"class="node service" data-id="svc:shop/cart""#));
        assert_eq!(svg.matches("<g class=\"edge ").count(), 4);
    }

    #[test]
    fn text_is_escaped_and_errors_are_said() {
        let mut g = graph();
        g.nodes[0].name = "<b>&\"".to_owned();
        g.error = Some("Prometheus at x:1: connection refused".to_owned());
        let svg = render(&g);
        assert!(svg.contains("&lt;b&gt;&amp;&quot;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("no traffic figures: Prometheus at x:1: connection refused"));
    }

    #[test]
    fn an_empty_graph_is_a_small_picture() {
        let g = Graph {
            nodes: Vec::new(),
            edges: Vec::new(),
            window: "1m".to_owned(),
            error: None,
        };
        let svg = render(&g);
        assert!(svg.contains(r#"data-nodes="0" data-edges="0""#));
    }
}
