//! From the figures to the report: `results.json`'s records, the ratios between
//! modes, the targets and `results.md`.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    l7,
    plan::{
        BANDWIDTH, CONNRATE, MEM_CLIENT, MEM_NODE, MEM_SERVER, MESH_ENV, Mode, NOACCEL_ENV,
        PROBE_P99, Plan, RATE, RR, RR_SOCKPERF, THROUGHPUT, TUNNEL_ENV, Topology,
        concurrency_scenario,
    },
    store::{Store, Target, format_cell, format_number, format_ratio, ratio, summarize},
};

/// One figure of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub topology: Topology,
    pub mode: Mode,
    pub metric: String,
    pub unit: String,
    pub samples: Vec<f64>,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// The ratio of two modes' medians of one figure.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub topology: Topology,
    pub metric: String,
    pub of: Mode,
    pub to: Mode,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub kernel: String,
    pub cpus: usize,
}

/// What `results.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub date: String,
    /// `quick` or `full`.
    pub mode: &'static str,
    pub repeats: u32,
    /// `release` or `debug`: how weftctl (and so the lab's binaries) was built.
    pub profile: &'static str,
    pub host: Host,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// The open-files limit of the lab's processes (agents included).
    pub open_files_limit: u64,
    pub modes: Vec<Mode>,
    /// Why the run stopped early, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    pub scenarios: Vec<ScenarioResult>,
    pub ratios: Vec<Ratio>,
    pub targets: Vec<Target>,
    /// The waypoint against nginx and HAProxy, when that suite ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<l7::Results>,
}

/// The mode pairs compared, numerator first.
pub(super) const COMPARISONS: [(Mode, Mode); 5] = [
    (Mode::Mesh, Mode::Direct),
    (Mode::MeshNoaccel, Mode::Direct),
    (Mode::Mesh, Mode::MeshNoaccel),
    (Mode::MeshTunnel, Mode::Direct),
    (Mode::Mesh, Mode::MeshTunnel),
];

pub fn scenario_results(store: &Store) -> Vec<ScenarioResult> {
    store
        .series
        .iter()
        .filter_map(|s| {
            let (min, median, max) = summarize(&s.samples)?;
            Some(ScenarioResult {
                name: s.scenario.clone(),
                topology: s.topology,
                mode: s.mode,
                metric: s.metric.clone(),
                unit: s.unit.clone(),
                samples: s.samples.clone(),
                min,
                median,
                max,
            })
        })
        .collect()
}

/// Every ratio of medians between the modes of [`COMPARISONS`] that were both measured.
pub fn ratios(store: &Store) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut seen: Vec<(&str, Topology, &str)> = Vec::new();
    for s in &store.series {
        let key = (s.scenario.as_str(), s.topology, s.metric.as_str());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        for (of, to) in COMPARISONS {
            let value = ratio(
                store.median(key.0, key.1, of, key.2),
                store.median(key.0, key.1, to, key.2),
            );
            if let Some(value) = value {
                out.push(Ratio {
                    name: format!("{} {} {}: {of}/{to}", key.1, key.0, key.2),
                    topology: key.1,
                    metric: format!("{} {}", key.0, key.2),
                    of,
                    to,
                    value,
                });
            }
        }
    }
    out
}

/// A metric of two modes, as the ratio of their medians.
pub(super) fn mode_ratio(
    store: &Store,
    (scenario, topology, metric): (&str, Topology, &str),
    top: Mode,
    bottom: Mode,
) -> Option<f64> {
    ratio(
        store.median(scenario, topology, top, metric),
        store.median(scenario, topology, bottom, metric),
    )
}

/// What the mesh adds to a figure: its median less direct's.
fn added(store: &Store, (scenario, topology, metric): (&str, Topology, &str)) -> Option<f64> {
    let mesh = store.median(scenario, topology, Mode::Mesh, metric)?;
    let direct = store.median(scenario, topology, Mode::Direct, metric)?;
    Some(mesh - direct)
}

/// The targets, from the medians.
pub fn targets(store: &Store) -> Vec<Target> {
    let mesh = |scenario: &str, topology, mode, metric: &str| {
        store.median(scenario, topology, mode, metric)
    };
    let of = |scenario, topology, metric, top, bottom| {
        mode_ratio(store, (scenario, topology, metric), top, bottom)
    };
    let (same, cross) = (Topology::SameNode, Topology::CrossNode);
    let mut out = vec![
        Target::at_most(
            "same-node rr p50, mesh / mesh-noaccel".to_owned(),
            of(RR, same, "p50", Mode::Mesh, Mode::MeshNoaccel),
            0.7,
        ),
        Target::at_most(
            "same-node rr p50, mesh / mesh-tunnel (fast path and sockmap together)".to_owned(),
            of(RR, same, "p50", Mode::Mesh, Mode::MeshTunnel),
            0.7,
        ),
        Target::at_least(
            "cross-node throughput, mesh / direct".to_owned(),
            of(THROUGHPUT, cross, BANDWIDTH, Mode::Mesh, Mode::Direct),
            0.55,
        ),
        Target::at_least(
            "cross-node new connections/s, mesh / direct".to_owned(),
            of(CONNRATE, cross, RATE, Mode::Mesh, Mode::Direct),
            0.35,
        ),
        Target::at_most(
            "cross-node connection p50, mesh − direct (µs)".to_owned(),
            added(store, (CONNRATE, cross, "p50")),
            150.0,
        ),
        Target::at_most(
            "cross-node rr p50 (sockperf), mesh − direct (µs)".to_owned(),
            added(store, (RR_SOCKPERF, cross, "p50")),
            25.0,
        ),
        Target::at_most(
            "cross-node rr p99 (sockperf), mesh − direct (µs)".to_owned(),
            added(store, (RR_SOCKPERF, cross, "p99")),
            50.0,
        ),
    ];
    // Not measured: named for the counts asked for.
    let planned = Plan::new(false).hold_counts;
    let planned = (
        planned.first().copied().unwrap_or_default(),
        planned.last().copied().unwrap_or_default(),
    );
    for topology in Topology::ALL {
        let range = hold_range(store, topology);
        let (low, high) = range.unwrap_or(planned);
        out.push(Target::at_most(
            format!("{topology} probe p99 with {high} / with {low} connections open (mesh)"),
            range.and_then(|_| {
                ratio(
                    mesh(&concurrency_scenario(high), topology, Mode::Mesh, PROBE_P99),
                    mesh(&concurrency_scenario(low), topology, Mode::Mesh, PROBE_P99),
                )
            }),
            1.5,
        ));
    }
    // Memory is measured once, on the first repeat (see `Bench::concurrency`).
    for (topology, metric, who) in [
        (
            Topology::CrossNode,
            MEM_CLIENT,
            "cross-node, client node's agent",
        ),
        (
            Topology::CrossNode,
            MEM_SERVER,
            "cross-node, server node's agent",
        ),
        (Topology::SameNode, MEM_NODE, "same-node, the node's agent"),
    ] {
        let high = hold_range(store, topology).map_or(planned.1, |(_, high)| high);
        let value = store.median(&concurrency_scenario(high), topology, Mode::Mesh, metric);
        out.push(Target::at_most(
            format!("agent KiB per idle connection at {high} (mesh, {who})"),
            value,
            16.0,
        ));
    }
    out
}

/// The smallest and largest counts of connections held in `topology` (mesh).
pub(super) fn hold_range(store: &Store, topology: Topology) -> Option<(u32, u32)> {
    let counts: Vec<u32> = store
        .series
        .iter()
        .filter(|s| s.topology == topology && s.mode == Mode::Mesh)
        .filter_map(|s| s.scenario.strip_prefix("concurrency ")?.parse().ok())
        .collect();
    Some((*counts.iter().min()?, *counts.iter().max()?))
}

/// `results.md`: the run's facts, a table per scenario and topology (a row per metric,
/// a column per mode, then the ratios), and the targets.
pub fn markdown(results: &Results, store: &Store) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Weft benchmark ({} run)\n", results.mode);
    let _ = writeln!(
        s,
        "{} · kernel {} · {} CPUs · commit {} · {} build · {} repeat{} per figure\n",
        results.date,
        results.host.kernel,
        results.host.cpus,
        results.git_commit.as_deref().unwrap_or("unknown"),
        results.profile,
        results.repeats,
        if results.repeats == 1 { "" } else { "s" }
    );
    if results.profile != "release" {
        let _ = writeln!(
            s,
            "**Built without optimizations: the figures say nothing about Weft's speed.**\n"
        );
    }
    if let Some(why) = &results.incomplete {
        let _ = writeln!(s, "**Incomplete run:** {why}\n");
    }
    let _ = writeln!(
        s,
        "Cells: median (min–max) over the repeats. Ratios are of medians. `direct`: the \
         pods unenrolled; `mesh`: agents with `{MESH_ENV}` (same-node acceleration); \
         `mesh-noaccel`: agents with `{NOACCEL_ENV}` (their default); `mesh-tunnel` \
         (same-node only): agents with `{NOACCEL_ENV} {TUNNEL_ENV}`, pods of one node \
         talk through an HBONE tunnel. Each topology runs in a fresh lab.\n"
    );
    let _ = writeln!(
        s,
        "`concurrency N`: N idle connections held open (the lab's processes may open {} \
         files; same-node, the node's agent holds both ends of each connection, two \
         sockets). Agent memory is the growth of its resident set per held connection, \
         measured on the first repeat only: memory freed when connections close stays \
         with the agent's allocator and later runs reuse it.\n",
        results.open_files_limit
    );
    let mut groups: Vec<(&str, Topology)> = Vec::new();
    for series in &store.series {
        if !groups.contains(&(series.scenario.as_str(), series.topology)) {
            groups.push((series.scenario.as_str(), series.topology));
        }
    }
    for (scenario, topology) in groups {
        let _ = writeln!(s, "## {scenario}, {topology}\n");
        let _ = writeln!(
            s,
            "| metric | direct | mesh | mesh-noaccel | mesh-tunnel | mesh/direct | \
             mesh/noaccel | mesh/tunnel |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let mut metrics: Vec<(&str, &str)> = Vec::new();
        for series in store
            .series
            .iter()
            .filter(|x| x.scenario == scenario && x.topology == topology)
        {
            if !metrics.iter().any(|(m, _)| *m == series.metric) {
                metrics.push((&series.metric, &series.unit));
            }
        }
        for (metric, unit) in metrics {
            let cell = |mode| {
                store
                    .get(scenario, topology, mode, metric)
                    .map_or("–".to_owned(), |x| format_cell(&x.samples))
            };
            let r = |of, to| {
                ratio(
                    store.median(scenario, topology, of, metric),
                    store.median(scenario, topology, to, metric),
                )
                .map_or("–".to_owned(), format_ratio)
            };
            let _ = writeln!(
                s,
                "| {metric} ({unit}) | {} | {} | {} | {} | {} | {} | {} |",
                cell(Mode::Direct),
                cell(Mode::Mesh),
                cell(Mode::MeshNoaccel),
                cell(Mode::MeshTunnel),
                r(Mode::Mesh, Mode::Direct),
                r(Mode::Mesh, Mode::MeshNoaccel),
                r(Mode::Mesh, Mode::MeshTunnel),
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(s, "| target | value | limit | met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for t in &results.targets {
        let sign = if t.comparison == "<=" { "≤" } else { "≥" };
        let _ = writeln!(
            s,
            "| {} | {} | {sign} {} | {} |",
            t.name,
            t.value.map_or("–".to_owned(), format_number),
            format_number(t.limit),
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            }
        );
    }
    if let Some(l7) = &results.l7 {
        let _ = writeln!(s);
        s.push_str(&l7::markdown(l7));
    }
    s
}
