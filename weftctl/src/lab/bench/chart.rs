//! `chart.svg`: the headline ratios as bars against their targets.

use std::fmt::Write as _;

use super::{
    plan::{
        BANDWIDTH, CONNRATE, Mode, PROBE_P99, RATE, RR, THROUGHPUT, Topology, concurrency_scenario,
    },
    report::{hold_range, mode_ratio},
    store::{Store, format_number, format_ratio, ratio},
};

/// One bar of the chart: a ratio, and the target it has, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// Is a bigger ratio a better one?
    pub higher_is_better: bool,
    /// `(comparison, limit)`.
    pub target: Option<(&'static str, f64)>,
}

impl Bar {
    pub(super) fn met(&self) -> Option<bool> {
        self.target.map(|(cmp, limit)| match cmp {
            "<=" => self.value <= limit,
            _ => self.value >= limit,
        })
    }
}

/// The ratios worth a glance: mesh against direct for the headline figures, mesh
/// against mesh-noaccel where the acceleration should show, and the probe's p99 under
/// load; the issue's targets marked.
pub fn headline_bars(store: &Store) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut add = |label: String, value: Option<f64>, target, better: &str| {
        if let Some(value) = value {
            bars.push(Bar {
                label,
                value,
                higher_is_better: better == "higher",
                target,
            });
        }
    };
    let m = |scenario: &str, topology, mode, metric: &str| {
        store.median(scenario, topology, mode, metric)
    };
    for topology in Topology::ALL {
        let cross = topology == Topology::CrossNode;
        add(
            format!("{topology} throughput, mesh/direct"),
            mode_ratio(
                store,
                (THROUGHPUT, topology, BANDWIDTH),
                Mode::Mesh,
                Mode::Direct,
            ),
            cross.then_some((">=", 0.5)),
            "higher",
        );
        add(
            format!("{topology} new conns/s, mesh/direct"),
            mode_ratio(store, (CONNRATE, topology, RATE), Mode::Mesh, Mode::Direct),
            cross.then_some((">=", 0.4)),
            "higher",
        );
        for p in ["p50", "p99"] {
            add(
                format!("{topology} rr {p}, mesh/direct"),
                mode_ratio(store, (RR, topology, p), Mode::Mesh, Mode::Direct),
                None,
                "lower",
            );
        }
        if !cross {
            add(
                format!("{topology} rr p50, mesh/mesh-noaccel"),
                mode_ratio(store, (RR, topology, "p50"), Mode::Mesh, Mode::MeshNoaccel),
                Some(("<=", 0.7)),
                "lower",
            );
            add(
                format!("{topology} rr p50, mesh/mesh-tunnel"),
                mode_ratio(store, (RR, topology, "p50"), Mode::Mesh, Mode::MeshTunnel),
                None,
                "lower",
            );
            add(
                format!("{topology} throughput, mesh/mesh-noaccel"),
                mode_ratio(
                    store,
                    (THROUGHPUT, topology, BANDWIDTH),
                    Mode::Mesh,
                    Mode::MeshNoaccel,
                ),
                None,
                "higher",
            );
        }
        if let Some((low, high)) = hold_range(store, topology)
            && low != high
        {
            add(
                format!("{topology} probe p99, {high} / {low} open (mesh)"),
                ratio(
                    m(&concurrency_scenario(high), topology, Mode::Mesh, PROBE_P99),
                    m(&concurrency_scenario(low), topology, Mode::Mesh, PROBE_P99),
                ),
                Some(("<=", 1.5)),
                "lower",
            );
        }
    }
    bars
}

/// Escapes text for XML.
pub(super) fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round top for the chart's axis, and the step between its ticks.
pub fn axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = [
        0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    ]
    .into_iter()
    .find(|step| max / step <= 8.0)
    .unwrap_or(1000.0);
    ((max / step).ceil() * step, step)
}

/// Horizontal bars of ratios, with a dashed line at 1.0 (the baseline) and a black tick
/// at each bar's target; a bar is green when its target is met, red when it is missed,
/// blue when it has none.
pub fn chart_svg(title: &str, subtitle: &str, bars: &[Bar]) -> String {
    pub(super) const WIDTH: f64 = 1040.0;
    pub(super) const LABEL_RIGHT: f64 = 330.0;
    pub(super) const PLOT_LEFT: f64 = 340.0;
    pub(super) const PLOT_WIDTH: f64 = 360.0;
    pub(super) const ROW: f64 = 26.0;
    pub(super) const TOP: f64 = 84.0;
    let plot_height = ROW * bars.len().max(1) as f64;
    let height = TOP + plot_height + 80.0;
    let top_value = bars
        .iter()
        .flat_map(|b| std::iter::once(b.value).chain(b.target.map(|(_, l)| l)))
        .fold(1.0_f64, f64::max)
        * 1.05;
    let (axis_max, step) = axis(top_value);
    let x = |v: f64| PLOT_LEFT + v.clamp(0.0, axis_max) / axis_max * PLOT_WIDTH;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="16" y="24" font-size="16" font-weight="bold">{}</text>"#,
        xml(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="16" y="44" fill="#555">{}</text>"##,
        xml(subtitle)
    );
    // Grid and axis labels.
    let bottom = TOP + plot_height;
    let mut tick = 0.0;
    while tick <= axis_max + step / 2.0 {
        let tx = x(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{bottom}" stroke="#e0e0e0"/>"##
        );
        let _ = writeln!(
            s,
            r##"<text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            bottom + 16.0,
            format_number(tick)
        );
        tick += step;
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let color = match bar.met() {
            Some(true) => "#2e7d32",
            Some(false) => "#c62828",
            None => "#4a6fd8",
        };
        let _ = writeln!(
            s,
            r#"<text x="{LABEL_RIGHT}" y="{:.1}" text-anchor="end">{}</text>"#,
            y + 17.0,
            xml(&bar.label)
        );
        let _ = writeln!(
            s,
            r#"<rect class="bar" x="{PLOT_LEFT}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
            y + 5.0,
            x(bar.value) - PLOT_LEFT,
            ROW - 10.0
        );
        let mut value = format!(
            "{} · {} is better",
            format_ratio(bar.value),
            if bar.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        );
        if let Some((cmp, limit)) = bar.target {
            let tx = x(limit);
            let _ = writeln!(
                s,
                r##"<line class="target" x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#000" stroke-width="3"/>"##,
                y + 2.0,
                y + ROW - 2.0
            );
            let sign = if cmp == "<=" { "≤" } else { "≥" };
            let verdict = if bar.met() == Some(true) {
                "met"
            } else {
                "missed"
            };
            let _ = write!(
                value,
                " · target {sign} {}: {verdict}",
                format_number(limit)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            PLOT_LEFT + PLOT_WIDTH + 10.0,
            y + 17.0,
            xml(&value)
        );
    }
    // The baseline, over the bars.
    let one = x(1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{one:.1}" y1="{:.1}" x2="{one:.1}" y2="{bottom}" stroke="#333" stroke-dasharray="5 4"/>"##,
        TOP - 6.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{one:.1}" y="{:.1}" text-anchor="middle" fill="#333">1.0 = same as the baseline</text>"##,
        TOP - 10.0
    );
    // Legend.
    let ly = bottom + 44.0;
    let mut lx = 16.0;
    for (color, text) in [
        ("#2e7d32", "target met"),
        ("#c62828", "target missed"),
        ("#4a6fd8", "no target"),
    ] {
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{color}"/>"#,
            ly - 10.0
        );
        let _ = writeln!(s, r#"<text x="{:.1}" y="{ly:.1}">{text}</text>"#, lx + 16.0);
        lx += 130.0;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{:.1}" x2="{lx}" y2="{:.1}" stroke="#000" stroke-width="3"/>"##,
        ly - 11.0,
        ly + 2.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{ly:.1}">target (ratio of medians)</text>"#,
        lx + 8.0
    );
    s.push_str("</svg>\n");
    s
}
