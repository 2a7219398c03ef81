//! `weftctl lab bench`: what the mesh costs, measured in the lab.
//!
//! The benchmark brings up the lab, runs every scenario between `shop/frontend-1` (the
//! client, on node-1) and `shop/cart-2` (cross-node) or `shop/cart-1` (same-node), and
//! takes the lab down again — also when something fails. Each scenario runs in three
//! modes:
//!
//! * `mesh`: the lab with the agents' same-node acceleration on (`WEFT_SOCKMAP=on`);
//! * `direct`: the same lab after the three pods are unenrolled, so that their traffic
//!   goes straight from pod to pod;
//! * `mesh-noaccel`: a second lab whose agents run with `WEFT_SOCKMAP=off` (their
//!   default);
//! * `mesh-tunnel` (same-node only): a third lab whose agents also turn the same-node
//!   fast path off, so that pods of one node talk through an HBONE tunnel as pods of
//!   two nodes do.
//!
//! Scenarios: throughput (iperf3), request/response latency on one connection
//! (`weft-sample rr`), new connections per second (`weft-sample connrate`), and many
//! idle connections held open (`weft-sample hold`) with the agents' memory and the
//! latency of a probe meanwhile. Each runs `repeats` times; every figure is reported as
//! min/median/max, modes are compared by the ratio of their medians, and the issue's
//! targets are checked. The results go to `results.json`, `results.md` and `chart.svg`.
//!
//! The statistics, the report and the chart are pure functions, tested below; the rest
//! drives processes in the lab, each bounded in time and killed when it is not needed
//! any more.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use super::{AgentState, ECHO_PORT, PodState, Progress, State, in_pod, netns_path};

pub mod l7;

/// The client pod, and the servers on its node and on the other node.
pub const CLIENT_POD: &str = "shop/frontend-1";
pub const SAME_NODE_POD: &str = "shop/cart-1";
pub const CROSS_NODE_POD: &str = "shop/cart-2";
/// What the agents of the `mesh` lab are given.
pub const MESH_ENV: &str = "WEFT_SOCKMAP=on";
/// What the agents of the `mesh-noaccel` lab are given.
pub const NOACCEL_ENV: &str = "WEFT_SOCKMAP=off";
/// What the agents of the `mesh-tunnel` lab are given (with [`NOACCEL_ENV`]).
pub const TUNNEL_ENV: &str = "WEFT_SAME_NODE_FAST_PATH=off";
/// iperf3's port in the server pod.
const IPERF_PORT: u16 = 5201;
/// Message size of the latency and connection-rate scenarios.
const MESSAGE_SIZE: u32 = 64;
/// Concurrent connecting threads of the connection-rate scenario.
const CONNRATE_CONCURRENCY: u32 = 4;
/// The longest a held-connections client may keep them, whatever happens to us.
const HOLD_TIMEOUT: Duration = Duration::from_secs(180);
/// The open-files limit the benchmark gives the lab's processes (they inherit it): the
/// agent of the same-node case holds both ends of every held connection.
const OPEN_FILES: u64 = 1 << 18;

/// How the mesh is set up for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The pods are not enrolled: pod to pod, no agent on the path.
    Direct,
    /// The lab brought up with `WEFT_SOCKMAP=on`.
    Mesh,
    /// The lab brought up with `WEFT_SOCKMAP=off`.
    MeshNoaccel,
    /// The lab brought up with `WEFT_SOCKMAP=off` and `WEFT_SAME_NODE_FAST_PATH=off`;
    /// same-node only.
    MeshTunnel,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Direct,
        Mode::Mesh,
        Mode::MeshNoaccel,
        Mode::MeshTunnel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Mesh => "mesh",
            Mode::MeshNoaccel => "mesh-noaccel",
            Mode::MeshTunnel => "mesh-tunnel",
        }
    }

    fn in_mesh(self) -> bool {
        self != Mode::Direct
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the server is, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    CrossNode,
    SameNode,
}

impl Topology {
    pub const ALL: [Topology; 2] = [Topology::CrossNode, Topology::SameNode];

    pub fn name(self) -> &'static str {
        match self {
            Topology::CrossNode => "cross-node",
            Topology::SameNode => "same-node",
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What `lab bench` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// One repeat of shorter runs (under two minutes).
    pub quick: bool,
    /// The folder the results are written to.
    pub out: PathBuf,
    /// The modes to run.
    pub modes: Vec<Mode>,
    /// The suites to run.
    pub suites: Vec<Suite>,
}

/// What is measured: the L4 mesh against direct connections, or the waypoint against
/// nginx and HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Suite {
    L4,
    L7,
}

/// How long and how often each scenario runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub repeats: u32,
    pub iperf_secs: u32,
    pub rr_count: u32,
    pub connrate_secs: u32,
    pub connrate_max: u32,
    /// Idle connections held open, smallest first.
    pub hold_counts: Vec<u32>,
    pub probe_count: u32,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                repeats: 1,
                iperf_secs: 3,
                rr_count: 5_000,
                connrate_secs: 2,
                connrate_max: 50_000,
                hold_counts: vec![1_000, 10_000],
                probe_count: 5_000,
            }
        } else {
            Plan {
                repeats: 3,
                iperf_secs: 10,
                rr_count: 20_000,
                connrate_secs: 5,
                connrate_max: 50_000,
                hold_counts: vec![1_000, 10_000],
                probe_count: 5_000,
            }
        }
    }
}

// Scenario and metric names, shared by the runs, the ratios and the targets.
const THROUGHPUT: &str = "throughput";
const RR: &str = "rr";
const CONNRATE: &str = "connrate";
const RATE: &str = "new connections";
const BANDWIDTH: &str = "bandwidth";
const CPU_PER_GB: &str = "agent CPU per GB";
const CPU_PER_1K: &str = "agent CPU per 1,000 connections";
const PROBE_P99: &str = "probe rr p99";
const MEM_CLIENT: &str = "agent memory per connection, client node";
const MEM_SERVER: &str = "agent memory per connection, server node";
const MEM_NODE: &str = "agent memory per connection";
/// The percentiles the sample app prints: metric name and JSON field.
const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "p50_us"),
    ("p90", "p90_us"),
    ("p99", "p99_us"),
    ("p99.9", "p999_us"),
];

/// Files an agent keeps open besides the held connections' sockets.
const FILES_MARGIN: u64 = 1_000;

impl Plan {
    /// The held-connection counts for `topology` when an agent may open `open_files`
    /// files. Same-node, the node's agent holds both ends of each connection (two
    /// sockets), so the largest count is lowered to a round thousand that fits.
    pub fn hold_counts_for(&self, topology: Topology, open_files: u64) -> Vec<u32> {
        let sockets_per_connection = match topology {
            Topology::CrossNode => 1,
            Topology::SameNode => 2,
        };
        let fits = open_files.saturating_sub(FILES_MARGIN) / sockets_per_connection;
        let cap = u32::try_from(fits / 1_000 * 1_000).unwrap_or(u32::MAX);
        let mut counts: Vec<u32> = self
            .hold_counts
            .iter()
            .map(|&n| n.min(cap))
            .filter(|&n| n > 0)
            .collect();
        counts.dedup();
        counts
    }
}

fn concurrency_scenario(count: u32) -> String {
    format!("concurrency {count}")
}

/// The smallest and largest counts of connections held in `topology` (mesh).
fn hold_range(store: &Store, topology: Topology) -> Option<(u32, u32)> {
    let counts: Vec<u32> = store
        .series
        .iter()
        .filter(|s| s.topology == topology && s.mode == Mode::Mesh)
        .filter_map(|s| s.scenario.strip_prefix("concurrency ")?.parse().ok())
        .collect();
    Some((*counts.iter().min()?, *counts.iter().max()?))
}

/// Is a bigger figure in `unit` a better one?
pub fn higher_is_better(unit: &str) -> bool {
    matches!(unit, "Gbit/s" | "conn/s")
}

/// The samples of one figure: a metric of a scenario, in one topology and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub scenario: String,
    pub topology: Topology,
    pub mode: Mode,
    pub metric: String,
    pub unit: String,
    pub samples: Vec<f64>,
}

/// Every series, in the order they were first measured.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub series: Vec<Series>,
}

impl Store {
    pub fn push(
        &mut self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
        unit: &str,
        value: f64,
    ) {
        match self.series.iter_mut().find(|s| {
            s.scenario == scenario && s.topology == topology && s.mode == mode && s.metric == metric
        }) {
            Some(s) => s.samples.push(value),
            None => self.series.push(Series {
                scenario: scenario.to_owned(),
                topology,
                mode,
                metric: metric.to_owned(),
                unit: unit.to_owned(),
                samples: vec![value],
            }),
        }
    }

    pub fn get(
        &self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
    ) -> Option<&Series> {
        self.series.iter().find(|s| {
            s.scenario == scenario && s.topology == topology && s.mode == mode && s.metric == metric
        })
    }

    pub fn median(
        &self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
    ) -> Option<f64> {
        median(&self.get(scenario, topology, mode, metric)?.samples)
    }
}

/// The median: the middle sample, or the mean of the two middle ones.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `(min, median, max)`.
pub fn summarize(samples: &[f64]) -> Option<(f64, f64, f64)> {
    let min = samples.iter().copied().min_by(f64::total_cmp)?;
    let max = samples.iter().copied().max_by(f64::total_cmp)?;
    Some((min, median(samples)?, max))
}

/// `a / b`, when both are measured and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// A figure with the digits that matter: 1234, 123, 12.3, 1.23.
pub fn format_number(x: f64) -> String {
    if !x.is_finite() {
        "–".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn format_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "–".to_owned()
    }
}

/// `median (min–max)`, or the value alone when there is one sample.
pub fn format_cell(samples: &[f64]) -> String {
    match summarize(samples) {
        None => "–".to_owned(),
        Some((min, med, max)) if samples.len() == 1 || min == max => format_number(med),
        Some((min, med, max)) => format!(
            "{} ({}–{})",
            format_number(med),
            format_number(min),
            format_number(max)
        ),
    }
}

/// A date and time in UTC, RFC 3339, from seconds since the Unix epoch.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

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

/// One of the issue's targets, and whether it is met (`None`: not measured).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    /// `<=` or `>=`.
    pub comparison: &'static str,
    pub limit: f64,
    pub met: Option<bool>,
}

impl Target {
    fn at_most(name: String, value: Option<f64>, limit: f64) -> Target {
        Target {
            name,
            value,
            comparison: "<=",
            limit,
            met: value.map(|v| v <= limit),
        }
    }

    fn at_least(name: String, value: Option<f64>, limit: f64) -> Target {
        Target {
            name,
            value,
            comparison: ">=",
            limit,
            met: value.map(|v| v >= limit),
        }
    }
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
const COMPARISONS: [(Mode, Mode); 5] = [
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
fn mode_ratio(
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

/// The issue's targets, from the medians.
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
            0.5,
        ),
        Target::at_least(
            "cross-node new connections/s, mesh / direct".to_owned(),
            of(CONNRATE, cross, RATE, Mode::Mesh, Mode::Direct),
            0.4,
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
    fn met(&self) -> Option<bool> {
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
fn xml(text: &str) -> String {
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
    const WIDTH: f64 = 1040.0;
    const LABEL_RIGHT: f64 = 330.0;
    const PLOT_LEFT: f64 = 340.0;
    const PLOT_WIDTH: f64 = 360.0;
    const ROW: f64 = 26.0;
    const TOP: f64 = 84.0;
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

// --- Running it. ---

/// Runs the benchmark and writes its results to `options.out`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    super::preflight()?;
    if super::leftovers()? {
        bail!(
            "a lab is up (or left over): the benchmark brings up its own and takes it down \
             after; run `weftctl lab down` first"
        );
    }
    let tools = Tools {
        sample: super::sibling("weft-sample")?,
        iperf3: ["/usr/bin/iperf3", "/usr/local/bin/iperf3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("iperf3 is missing (install it: `cargo xtask setup` does)")?,
    };
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let open_files = raise_open_files_limit(OPEN_FILES)?;
    let plan = Plan::new(options.quick);
    let progress = Progress {
        start: Instant::now(),
    };
    let started = SystemTime::now();
    progress.say(format_args!(
        "benchmark ({}): modes {}, {} repeat(s), up to {open_files} open files per \
         process; results in {}",
        if options.quick { "quick" } else { "full" },
        options
            .modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        plan.repeats,
        options.out.display()
    ));
    for topology in Topology::ALL {
        let counts = plan.hold_counts_for(topology, open_files);
        if counts != plan.hold_counts {
            progress.say(format_args!(
                "{topology}: holding {counts:?} connections rather than {:?}: an agent may \
                 open {open_files} files here (the hard limit) and needs {} per connection",
                plan.hold_counts,
                if topology == Topology::SameNode {
                    "two"
                } else {
                    "one"
                }
            ));
        }
    }
    let mut store = Store::default();
    let run = Run {
        plan: &plan,
        tools: &tools,
        progress: &progress,
        open_files,
    };
    let mut outcome = if options.suites.contains(&Suite::L4) {
        run.labs(&options.modes, &mut store)
    } else {
        Ok(())
    };
    let mut l7_results = None;
    if outcome.is_ok() && options.suites.contains(&Suite::L7) {
        match l7::run(&l7::Plan::new(options.quick), &tools.sample, &progress) {
            Ok(r) => l7_results = Some(r),
            Err(e) => outcome = Err(e),
        }
    }
    let results = Results {
        date: utc_timestamp(
            started
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        ),
        mode: if options.quick { "quick" } else { "full" },
        repeats: plan.repeats,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        host: Host {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        },
        git_commit: git_commit(),
        open_files_limit: open_files,
        modes: options.modes.clone(),
        incomplete: outcome.as_ref().err().map(|e| format!("{e:#}")),
        scenarios: scenario_results(&store),
        ratios: ratios(&store),
        targets: targets(&store),
        l7: l7_results,
    };
    write_results(&options.out, &results, &store)?;
    progress.say(format_args!(
        "wrote results.json, results.md and chart.svg to {}",
        options.out.display()
    ));
    for t in results
        .targets
        .iter()
        .chain(results.l7.iter().flat_map(|l| &l.goals))
    {
        println!(
            "  {:<13} {} = {} ({} {})",
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            },
            t.name,
            t.value.map_or("–".to_owned(), format_number),
            t.comparison,
            format_number(t.limit)
        );
    }
    outcome
}

fn write_results(out: &Path, results: &Results, store: &Store) -> anyhow::Result<()> {
    let write = |name: &str, contents: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    let mut json = serde_json::to_vec_pretty(results)?;
    json.push(b'\n');
    write("results.json", &json)?;
    write("results.md", markdown(results, store).as_bytes())?;
    let subtitle = format!(
        "{} run, {} · ratio of medians over {} repeat(s) · {} build · kernel {}, {} CPUs",
        results.mode,
        results.date,
        results.repeats,
        results.profile,
        results.host.kernel,
        results.host.cpus
    );
    write(
        "chart.svg",
        chart_svg(
            "Weft: the mesh against its baselines",
            &subtitle,
            &headline_bars(store),
        )
        .as_bytes(),
    )
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// The programs the scenarios run in the pods.
struct Tools {
    sample: PathBuf,
    iperf3: PathBuf,
}

/// What every lab of a run shares.
struct Run<'a> {
    plan: &'a Plan,
    tools: &'a Tools,
    progress: &'a Progress,
    /// The open-files limit the lab's processes inherit.
    open_files: u64,
}

impl Run<'_> {
    /// Mesh and direct share a lab (direct unenrolls the pods); mesh-noaccel has its
    /// own. Each topology gets a fresh lab, so that the agents' memory is measured cold
    /// in both.
    fn labs(&self, modes: &[Mode], store: &mut Store) -> anyhow::Result<()> {
        let first: Vec<Mode> = [Mode::Mesh, Mode::Direct]
            .into_iter()
            .filter(|m| modes.contains(m))
            .collect();
        for topology in Topology::ALL {
            if !first.is_empty() {
                self.lab(&[MESH_ENV.to_owned()], &first, topology, store)?;
            }
        }
        if modes.contains(&Mode::MeshNoaccel) {
            for topology in Topology::ALL {
                self.lab(
                    &[NOACCEL_ENV.to_owned()],
                    &[Mode::MeshNoaccel],
                    topology,
                    store,
                )?;
            }
        }
        if modes.contains(&Mode::MeshTunnel) {
            self.lab(
                &[NOACCEL_ENV.to_owned(), TUNNEL_ENV.to_owned()],
                &[Mode::MeshTunnel],
                Topology::SameNode,
                store,
            )?;
        }
        Ok(())
    }

    fn lab(
        &self,
        agent_env: &[String],
        modes: &[Mode],
        topology: Topology,
        store: &mut Store,
    ) -> anyhow::Result<()> {
        self.progress.say(format_args!(
            "bringing the lab up for {topology} {}{}",
            modes
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(" and "),
            if agent_env.is_empty() {
                String::new()
            } else {
                format!(" (agents with {})", agent_env.join(" "))
            }
        ));
        let lab = LabGuard::up(agent_env, self.progress)?;
        let outcome = self.modes(&lab.state, modes, topology, store);
        if outcome.is_err() && !lab.ours() {
            return outcome.context("the benchmark's lab was taken down or replaced meanwhile");
        }
        outcome?;
        lab.down()
    }

    fn modes(
        &self,
        state: &State,
        modes: &[Mode],
        topology: Topology,
        store: &mut Store,
    ) -> anyhow::Result<()> {
        tune_namespaces(state)?;
        let mut bench = Bench {
            plan: self.plan,
            tools: self.tools,
            progress: self.progress,
            state,
            pods: Pods::find(state)?,
            hold_counts: self.plan.hold_counts_for(topology, self.open_files),
            store,
        };
        for &mode in modes {
            if mode == Mode::Direct {
                bench.unenroll()?;
            }
            bench.scenarios(topology, mode)?;
        }
        Ok(())
    }
}

/// A lab that is taken down when this is dropped, unless [`LabGuard::down`] did it —
/// as long as it is still the lab this brought up: the lab is one per host, and another
/// command (a test) may have replaced it meanwhile.
struct LabGuard<'a> {
    progress: &'a Progress,
    state: State,
    up: bool,
}

impl<'a> LabGuard<'a> {
    fn up(agent_env: &[String], progress: &'a Progress) -> anyhow::Result<Self> {
        if super::leftovers()? {
            bail!("another lab is up: the benchmark does not take down what it did not bring up");
        }
        let env = super::Env {
            agent: agent_env,
            ..super::Env::default()
        };
        super::up_with(None, env, progress)?;
        let state = State::load()?.context("the lab is up but wrote no state")?;
        Ok(LabGuard {
            progress,
            state,
            up: true,
        })
    }

    /// Is the lab that is up (if any) still this one? Its control plane runs until the
    /// lab is taken down, whoever does it.
    fn ours(&self) -> bool {
        super::alive(self.state.controlplane_pid)
            && State::load()
                .ok()
                .flatten()
                .is_some_and(|s| s.controlplane_pid == self.state.controlplane_pid)
    }

    fn down(mut self) -> anyhow::Result<()> {
        self.up = false;
        if !self.ours() {
            bail!("the benchmark's lab was taken down or replaced by another command");
        }
        super::down_with(self.progress)
    }
}

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        if !self.ours() {
            self.progress
                .say("the benchmark's lab was taken down or replaced by another command");
            return;
        }
        self.progress.say("taking the lab down after the failure");
        if let Err(e) = super::down_with(self.progress) {
            self.progress.say(format_args!(
                "taking the lab down failed: {e:#}; run `weftctl lab down`"
            ));
        }
    }
}

/// Widens the ephemeral port range and lets connections reuse ports in TIME_WAIT in
/// every pod and node, so that the connection-rate runs do not run out of ports.
fn tune_namespaces(state: &State) -> anyhow::Result<()> {
    let names = state.pods.iter().map(|p| p.netns.clone()).chain(
        state
            .topology
            .nodes
            .iter()
            .map(|n| super::node_netns(&n.name)),
    );
    for netns in names {
        super::run(Command::new("ip").args([
            "netns",
            "exec",
            &netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ]))?;
    }
    Ok(())
}

/// The benchmark's pods and their nodes' agents.
struct Pods<'s> {
    client: &'s PodState,
    same_node: &'s PodState,
    cross_node: &'s PodState,
    client_agent: &'s AgentState,
    cross_agent: &'s AgentState,
}

impl<'s> Pods<'s> {
    fn find(state: &'s State) -> anyhow::Result<Self> {
        let client = state.pod(CLIENT_POD)?;
        let same_node = state.pod(SAME_NODE_POD)?;
        let cross_node = state.pod(CROSS_NODE_POD)?;
        anyhow::ensure!(
            client.pod.node == same_node.pod.node && client.pod.node != cross_node.pod.node,
            "the benchmark needs {CLIENT_POD} and {SAME_NODE_POD} on one node and \
             {CROSS_NODE_POD} on another"
        );
        let agent = |pod: &PodState| {
            state
                .agents
                .iter()
                .find(|a| a.node == pod.pod.node)
                .with_context(|| format!("no agent on {}", pod.pod.node))
        };
        Ok(Pods {
            client,
            same_node,
            cross_node,
            client_agent: agent(client)?,
            cross_agent: agent(cross_node)?,
        })
    }

    fn server(&self, topology: Topology) -> &'s PodState {
        match topology {
            Topology::CrossNode => self.cross_node,
            Topology::SameNode => self.same_node,
        }
    }

    /// The agents whose memory a held connection costs, with what they are to it.
    fn agents(&self, topology: Topology) -> Vec<(&'static str, &'s AgentState)> {
        match topology {
            Topology::CrossNode => vec![
                (MEM_CLIENT, self.client_agent),
                (MEM_SERVER, self.cross_agent),
            ],
            Topology::SameNode => vec![(MEM_NODE, self.client_agent)],
        }
    }
}

struct Bench<'a> {
    plan: &'a Plan,
    tools: &'a Tools,
    progress: &'a Progress,
    state: &'a State,
    pods: Pods<'a>,
    /// Idle connections to hold, smallest first.
    hold_counts: Vec<u32>,
    store: &'a mut Store,
}

impl Bench<'_> {
    /// Takes the benchmark's pods out of the mesh.
    fn unenroll(&self) -> anyhow::Result<()> {
        for pod in [self.pods.client, self.pods.same_node, self.pods.cross_node] {
            let agent = self
                .state
                .agents
                .iter()
                .find(|a| a.node == pod.pod.node)
                .with_context(|| format!("no agent on {}", pod.pod.node))?;
            let r =
                api::admin::Client::new(&agent.admin_socket).unenroll(&netns_path(&pod.netns))?;
            if r.status != 200 {
                bail!(
                    "unenrolling {} failed: {}",
                    pod.pod.key(),
                    r.error_message()
                );
            }
        }
        self.progress
            .say("unenrolled the benchmark's pods: their traffic goes direct");
        Ok(())
    }

    fn record(
        &mut self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
        unit: &str,
        value: f64,
    ) {
        self.store
            .push(scenario, topology, mode, metric, unit, value);
    }

    fn say(
        &self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        repeat: u32,
        what: impl std::fmt::Display,
    ) {
        self.progress.say(format_args!(
            "{scenario} {topology} {mode} {repeat}/{}: {what}",
            self.plan.repeats
        ));
    }

    fn scenarios(&mut self, topology: Topology, mode: Mode) -> anyhow::Result<()> {
        for repeat in 1..=self.plan.repeats {
            self.throughput(topology, mode, repeat)?;
        }
        for repeat in 1..=self.plan.repeats {
            self.rr(topology, mode, repeat)?;
        }
        for repeat in 1..=self.plan.repeats {
            self.connrate(topology, mode, repeat)?;
        }
        // The tunnel mode is there for the same-node fast path's own figures.
        if mode == Mode::MeshTunnel {
            return Ok(());
        }
        for repeat in 1..=self.plan.repeats {
            for count in self.hold_counts.clone() {
                self.concurrency(topology, mode, count, repeat)?;
            }
        }
        Ok(())
    }

    fn in_pod(&self, pod: &PodState, program: &Path, args: &[String]) -> Command {
        in_pod(&pod.cgroup, &netns_path(&pod.netns), program, args)
    }

    fn sample(&self, pod: &PodState, args: &[String]) -> Command {
        self.in_pod(pod, &self.tools.sample, args)
    }

    /// The agents' CPU time so far, in seconds.
    fn agents_cpu(&self) -> anyhow::Result<f64> {
        let mut ticks = 0;
        for a in &self.state.agents {
            let path = format!("/proc/{}/stat", a.pid);
            let stat = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {path} (is the agent of {} up?)", a.node))?;
            ticks += cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
        }
        Ok(ticks as f64 / clock_ticks_per_second()?)
    }

    /// Connections the agents accepted so far, when they say.
    fn accepted(&self) -> Option<u64> {
        let stats = super::agent_stats(self.state);
        (stats.len() == self.state.agents.len())
            .then(|| {
                stats
                    .values()
                    .map(|s| s["outbound"]["accepted"].as_u64())
                    .sum()
            })
            .flatten()
    }

    /// Checks that traffic went through the agents exactly when it should have.
    fn check_path(&self, mode: Mode, before: Option<u64>) -> anyhow::Result<()> {
        let (Some(before), Some(after)) = (before, self.accepted()) else {
            self.progress
                .say("warning: the agents' stats are unavailable; the path is not checked");
            return Ok(());
        };
        if mode.in_mesh() && after == before {
            bail!("{mode}: the agents accepted no connection: the traffic is not in the mesh");
        }
        if !mode.in_mesh() && after != before {
            bail!(
                "direct: the agents accepted {} connections: the pods are still in the mesh",
                after - before
            );
        }
        Ok(())
    }

    fn throughput(&mut self, topology: Topology, mode: Mode, repeat: u32) -> anyhow::Result<()> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        let (gbits, bytes, cpu) = loop {
            match self.iperf(topology) {
                Ok(v) => break v,
                Err(e) if attempt < ATTEMPTS => {
                    self.say(
                        THROUGHPUT,
                        topology,
                        mode,
                        repeat,
                        format_args!("retrying: {e:#}"),
                    );
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.context(format!("throughput {topology} {mode}"))),
            }
        };
        self.record(THROUGHPUT, topology, mode, BANDWIDTH, "Gbit/s", gbits);
        let mut what = format!("{gbits:.2} Gbit/s");
        if mode.in_mesh() && bytes > 0.0 {
            let per_gb = cpu / (bytes / 1e9);
            self.record(THROUGHPUT, topology, mode, CPU_PER_GB, "s/GB", per_gb);
            let _ = write!(what, ", agents {per_gb:.2} CPU s/GB");
        }
        self.say(THROUGHPUT, topology, mode, repeat, what);
        Ok(())
    }

    /// One iperf3 run: Gbit/s received, bytes received, and the agents' CPU seconds.
    fn iperf(&self, topology: Topology) -> anyhow::Result<(f64, f64, f64)> {
        let server = self.pods.server(topology);
        let mut cmd = self.in_pod(
            server,
            &self.tools.iperf3,
            &strings(&["-s", "-1", "-p", &IPERF_PORT.to_string()]),
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut iperf_server = Running::spawn(&mut cmd, "the iperf3 server")?;
        let pid = iperf_server.child.id();
        let netns = netns_path(&server.netns);
        super::wait_for(
            &format!("iperf3 to listen in {}", server.pod.key()),
            Duration::from_secs(10),
            || in_netns(pid, &netns) && listening(pid, IPERF_PORT),
        )?;
        let secs = self.plan.iperf_secs;
        let cpu_before = self.agents_cpu()?;
        let out = run_within(
            &mut self.in_pod(
                self.pods.client,
                &self.tools.iperf3,
                &strings(&[
                    "-c",
                    &server.ip.to_string(),
                    "-p",
                    &IPERF_PORT.to_string(),
                    "-t",
                    &secs.to_string(),
                    "-J",
                ]),
            ),
            Duration::from_secs(u64::from(secs) + 30),
            "the iperf3 client",
        )?;
        let cpu = self.agents_cpu()? - cpu_before;
        // The server serves one client (`-1`) and exits; it is killed if it does not.
        let _ = iperf_server.wait_within(Duration::from_secs(5));
        let report: Value = serde_json::from_str(&out).context("parsing iperf3's report")?;
        let received = &report["end"]["sum_received"];
        let bits = received["bits_per_second"]
            .as_f64()
            .context("iperf3's report has no end.sum_received.bits_per_second")?;
        let bytes = received["bytes"].as_f64().unwrap_or_default();
        Ok((bits / 1e9, bytes, cpu))
    }

    fn rr(&mut self, topology: Topology, mode: Mode, repeat: u32) -> anyhow::Result<()> {
        let before = self.accepted();
        let v = self.run_rr(topology, self.plan.rr_count)?;
        self.check_path(mode, before)?;
        let mut what = Vec::new();
        for (metric, field) in PERCENTILES {
            let value = field_f64(&v, field)?;
            self.record(RR, topology, mode, metric, "µs", value);
            what.push(format!("{metric} {value:.0}"));
        }
        self.say(
            RR,
            topology,
            mode,
            repeat,
            format_args!("{} µs", what.join(", ")),
        );
        Ok(())
    }

    fn run_rr(&self, topology: Topology, count: u32) -> anyhow::Result<Value> {
        let server = self.pods.server(topology);
        let out = run_within(
            &mut self.sample(
                self.pods.client,
                &strings(&[
                    "rr",
                    "--connect",
                    &format!("{}:{ECHO_PORT}", server.ip),
                    "--count",
                    &count.to_string(),
                    "--size",
                    &MESSAGE_SIZE.to_string(),
                ]),
            ),
            Duration::from_secs(120),
            "weft-sample rr",
        )?;
        serde_json::from_str(&out).with_context(|| format!("parsing rr's answer {out:?}"))
    }

    fn connrate(&mut self, topology: Topology, mode: Mode, repeat: u32) -> anyhow::Result<()> {
        let server = self.pods.server(topology);
        let secs = self.plan.connrate_secs;
        let cpu_before = self.agents_cpu()?;
        let out = run_within(
            &mut self.sample(
                self.pods.client,
                &strings(&[
                    "connrate",
                    "--connect",
                    &format!("{}:{ECHO_PORT}", server.ip),
                    "--duration-secs",
                    &secs.to_string(),
                    "--max-count",
                    &self.plan.connrate_max.to_string(),
                    "--concurrency",
                    &CONNRATE_CONCURRENCY.to_string(),
                    "--size",
                    &MESSAGE_SIZE.to_string(),
                ]),
            ),
            Duration::from_secs(u64::from(secs) + 60),
            "weft-sample connrate",
        )?;
        let cpu = self.agents_cpu()? - cpu_before;
        let v: Value =
            serde_json::from_str(&out).with_context(|| format!("parsing connrate's {out:?}"))?;
        let rate = field_f64(&v, "per_sec")?;
        let count = field_f64(&v, "count")?;
        self.record(CONNRATE, topology, mode, RATE, "conn/s", rate);
        for (metric, field) in PERCENTILES {
            self.record(
                CONNRATE,
                topology,
                mode,
                metric,
                "µs",
                field_f64(&v, field)?,
            );
        }
        let mut what = format!(
            "{rate:.0} conn/s, p99 {:.0} µs, {} errors",
            field_f64(&v, "p99_us")?,
            field_f64(&v, "errors")?
        );
        if mode.in_mesh() && count > 0.0 {
            let per_1k = cpu / (count / 1000.0);
            self.record(CONNRATE, topology, mode, CPU_PER_1K, "CPU s", per_1k);
            let _ = write!(what, ", agents {per_1k:.3} CPU s per 1,000");
        }
        self.say(CONNRATE, topology, mode, repeat, what);
        Ok(())
    }

    /// Holds `count` idle connections from the client to the server, measures what
    /// they cost the agents and the latency of a probe meanwhile, then lets them go.
    fn concurrency(
        &mut self,
        topology: Topology,
        mode: Mode,
        count: u32,
        repeat: u32,
    ) -> anyhow::Result<()> {
        let scenario = concurrency_scenario(count);
        let server = self.pods.server(topology);
        let agents = self.pods.agents(topology);
        let rss_before = agents
            .iter()
            .map(|(_, a)| agent_rss_kib(a))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        let mut cmd = self.sample(
            self.pods.client,
            &strings(&[
                "hold",
                "--connect",
                &format!("{}:{ECHO_PORT}", server.ip),
                "--count",
                &count.to_string(),
                "--timeout-secs",
                &HOLD_TIMEOUT.as_secs().to_string(),
            ]),
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut hold = Running::spawn(&mut cmd, "weft-sample hold")?;
        let stderr = hold.collect_stderr();
        let stdout = hold.child.stdout.take().context("hold's stdout")?;
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let opened = match line_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if !line.trim().is_empty() => line,
            _ => {
                hold.kill();
                let why = stderr.join().unwrap_or_default();
                bail!(
                    "holding {count} connections ({topology} {mode}) failed: {}",
                    why.trim()
                );
            }
        };
        let opened: Value =
            serde_json::from_str(&opened).with_context(|| format!("parsing hold's {opened:?}"))?;
        // Let the agents settle before reading their memory.
        std::thread::sleep(Duration::from_secs(1));
        let rss_after = agents
            .iter()
            .map(|(_, a)| agent_rss_kib(a))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        let probe = self.run_rr(topology, self.plan.probe_count)?;
        // The end of its standard input lets the holder go.
        drop(hold.child.stdin.take());
        let status = hold.wait_within(Duration::from_secs(30))?;
        if !status.success() {
            bail!(
                "weft-sample hold failed ({status}): {}",
                stderr.join().unwrap_or_default().trim()
            );
        }
        let p99 = field_f64(&probe, "p99_us")?;
        self.record(&scenario, topology, mode, PROBE_P99, "µs", p99);
        let mut what = format!(
            "{} open in {:.1} s, probe p99 {p99:.0} µs",
            count,
            opened["open_secs"].as_f64().unwrap_or_default()
        );
        // Memory freed when connections close stays with the agent's allocator and is
        // reused by the next run: only the first repeat sees a cold agent.
        if mode.in_mesh() && repeat == 1 {
            for (((metric, _), before), after) in agents.iter().zip(&rss_before).zip(&rss_after) {
                let per_conn = (*after as f64 - *before as f64) / f64::from(count);
                self.record(&scenario, topology, mode, metric, "KiB", per_conn);
                let _ = write!(what, ", {metric}: {per_conn:.1} KiB");
            }
        }
        self.say(&scenario, topology, mode, repeat, what);
        Ok(())
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn field_f64(v: &Value, field: &str) -> anyhow::Result<f64> {
    v[field]
        .as_f64()
        .with_context(|| format!("no number {field:?} in {v}"))
}

/// A child process that is killed if it is still running when dropped.
struct Running {
    child: Child,
    what: String,
}

impl Running {
    fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Running {
            child,
            what: what.to_owned(),
        })
    }

    /// Waits for the process to exit; kills it after `limit`.
    fn wait_within(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("{} did not finish within {limit:?}; killed it", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Reads the process's standard error to its end, in a thread.
    fn collect_stderr(&mut self) -> std::thread::JoinHandle<String> {
        let stderr = self.child.stderr.take();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut text);
            }
            text
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to its end (killing it after `limit`) and returns its standard
/// output; fails with its error output when it fails.
fn run_within(cmd: &mut Command, limit: Duration, what: &str) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd, what)?;
    let stderr = running.collect_stderr();
    let stdout = running.child.stdout.take();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut o) = stdout {
            let _ = o.read_to_string(&mut text);
        }
        text
    });
    let status = running.wait_within(limit)?;
    let out = stdout.join().unwrap_or_default();
    if !status.success() {
        let err = stderr.join().unwrap_or_default();
        // iperf3 -J reports its errors on standard output.
        let tail: String = out
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let said: Vec<&str> = [err.trim(), tail.trim()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        if said.is_empty() {
            bail!("{what} failed ({status}) without a word");
        }
        bail!("{what} failed ({status}): {}", said.join("; "));
    }
    Ok(out)
}

/// utime + stime, in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from `/proc/<pid>/status`.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn agent_rss_kib(agent: &AgentState) -> anyhow::Result<u64> {
    let path = format!("/proc/{}/status", agent.pid);
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (is the agent of {} up?)", agent.node))?;
    vm_rss_kib(&status).with_context(|| format!("no VmRSS in {path}"))
}

/// Does a `/proc/net/tcp{,6}` table have a listener on `port`?
pub fn table_listens_on(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or_default();
        // st is the fourth field: 0A is LISTEN.
        let state = fields.nth(1).unwrap_or_default();
        local.ends_with(&port) && state == "0A"
    })
}

/// Does the network namespace of process `pid` have a listener on `port`?
fn listening(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|table| table_listens_on(&table, port))
    })
}

/// Is process `pid` in the network namespace at `netns` already?
fn in_netns(pid: u32, netns: &Path) -> bool {
    match (
        std::fs::metadata(format!("/proc/{pid}/ns/net")),
        std::fs::metadata(netns),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(ticks > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64)
}

/// Raises this process's open-files limit (soft and hard) to `wanted`, or as far as
/// the kernel allows; the lab's processes inherit it. Returns the soft limit reached.
fn raise_open_files_limit(wanted: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the open files limit");
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(wanted);
    let target = wanted.min(ceiling).max(limit.rlim_cur);
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: target.max(limit.rlim_max),
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(target);
    }
    // Without the privilege to raise the hard limit, go as far as it.
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("raising the open files limit");
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(summarize(&[2.0, 9.0, 4.0]), Some((2.0, 4.0, 9.0)));
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn ratios_need_both_figures_and_a_nonzero_baseline() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(None, Some(4.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(format_ratio(0.6251), "0.63×");
        assert_eq!(format_ratio(f64::NAN), "–");
    }

    #[test]
    fn numbers_and_cells() {
        assert_eq!(format_number(1234.4), "1234");
        assert_eq!(format_number(123.4), "123");
        assert_eq!(format_number(12.34), "12.3");
        assert_eq!(format_number(1.234), "1.23");
        assert_eq!(format_number(-3.456), "-3.46");
        assert_eq!(format_cell(&[]), "–");
        assert_eq!(format_cell(&[3.1]), "3.10");
        assert_eq!(format_cell(&[3.0, 2.0, 4.0]), "3.00 (2.00–4.00)");
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn plans_fit_their_budgets() {
        let quick = Plan::new(true);
        let full = Plan::new(false);
        assert_eq!((quick.repeats, full.repeats), (1, 3));
        assert!(quick.iperf_secs < full.iperf_secs);
        for plan in [quick, full] {
            assert!(plan.hold_counts.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn held_connections_fit_the_open_files_limit() {
        let plan = Plan::new(false);
        let roomy = 1 << 20;
        assert_eq!(
            plan.hold_counts_for(Topology::SameNode, roomy),
            vec![1_000, 10_000]
        );
        assert_eq!(
            plan.hold_counts_for(Topology::CrossNode, 20_000),
            vec![1_000, 10_000]
        );
        // Same-node, the agent needs two sockets a connection.
        assert_eq!(
            plan.hold_counts_for(Topology::SameNode, 20_000),
            vec![1_000, 9_000]
        );
        assert_eq!(
            plan.hold_counts_for(Topology::SameNode, 2_500),
            vec![0_u32; 0]
        );
        assert_eq!(
            plan.hold_counts_for(Topology::CrossNode, 2_500),
            vec![1_000]
        );
    }

    #[test]
    fn proc_parsing() {
        let stat = "4242 (weft agent) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    150 25 0 0 20 0 8 0 12345 1000000 500 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("garbage"), None);
        let status = "Name:\tweft-agent\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                     0: 00000000:1451 00000000:0000 0A 00000000:00000000\n   \
                     1: 0100007F:1B58 0100007F:C000 01 00000000:00000000\n";
        assert!(table_listens_on(table, 5201));
        assert!(
            !table_listens_on(table, 7000),
            "7000 is established, not listening"
        );
        assert!(!table_listens_on(table, 80));
    }

    fn sample_store() -> Store {
        let mut store = Store::default();
        for (mode, gbits, p50) in [
            (Mode::Direct, [10.0, 12.0, 11.0], [20.0, 22.0, 21.0]),
            (Mode::Mesh, [6.0, 5.0, 7.0], [40.0, 44.0, 42.0]),
            (Mode::MeshNoaccel, [4.0, 4.0, 4.0], [60.0, 60.0, 60.0]),
        ] {
            for topology in Topology::ALL {
                for (g, p) in gbits.iter().zip(p50) {
                    store.push(THROUGHPUT, topology, mode, BANDWIDTH, "Gbit/s", *g);
                    store.push(RR, topology, mode, "p50", "µs", p);
                }
            }
        }
        store.push(
            CONNRATE,
            Topology::CrossNode,
            Mode::Direct,
            RATE,
            "conn/s",
            1000.0,
        );
        store.push(
            CONNRATE,
            Topology::CrossNode,
            Mode::Mesh,
            RATE,
            "conn/s",
            300.0,
        );
        for (count, p99) in [(1_000, 100.0), (10_000, 120.0)] {
            let scenario = concurrency_scenario(count);
            store.push(
                &scenario,
                Topology::CrossNode,
                Mode::Mesh,
                PROBE_P99,
                "µs",
                p99,
            );
            store.push(
                &scenario,
                Topology::CrossNode,
                Mode::Mesh,
                MEM_CLIENT,
                "KiB",
                9.0,
            );
        }
        store
    }

    #[test]
    fn store_keeps_series_in_order_with_their_samples() {
        let store = sample_store();
        let first = &store.series[0];
        assert_eq!(
            (first.scenario.as_str(), first.mode, first.samples.len()),
            (THROUGHPUT, Mode::Direct, 3)
        );
        assert_eq!(
            store.median(THROUGHPUT, Topology::CrossNode, Mode::Mesh, BANDWIDTH),
            Some(6.0)
        );
        let results = scenario_results(&store);
        assert_eq!(results.len(), store.series.len());
        assert_eq!(
            (results[0].min, results[0].median, results[0].max),
            (10.0, 11.0, 12.0)
        );
    }

    #[test]
    fn ratios_and_targets_from_medians() {
        let store = sample_store();
        let rs = ratios(&store);
        let find = |topology, metric: &str, of, to| {
            rs.iter()
                .find(|r| r.topology == topology && r.metric == metric && r.of == of && r.to == to)
                .map(|r| r.value)
        };
        let mesh_direct = find(
            Topology::CrossNode,
            "throughput bandwidth",
            Mode::Mesh,
            Mode::Direct,
        );
        assert_eq!(mesh_direct, Some(6.0 / 11.0));
        assert_eq!(
            find(Topology::SameNode, "rr p50", Mode::Mesh, Mode::MeshNoaccel),
            Some(42.0 / 60.0)
        );
        // No direct connection rate same-node: no ratio.
        assert_eq!(
            find(
                Topology::SameNode,
                "connrate new connections",
                Mode::Mesh,
                Mode::Direct
            ),
            None
        );

        let ts = targets(&store);
        let target = |prefix: &str| {
            ts.iter()
                .find(|t| t.name.starts_with(prefix))
                .unwrap_or_else(|| panic!("no target {prefix}"))
        };
        let rr = target("same-node rr p50");
        assert_eq!((rr.value, rr.met), (Some(0.7), Some(true)));
        let tp = target("cross-node throughput");
        assert_eq!(tp.met, Some(true));
        let conns = target("cross-node new connections");
        assert_eq!((conns.value, conns.met), (Some(0.3), Some(false)));
        let probe = target("cross-node probe p99");
        assert_eq!((probe.value, probe.met), (Some(1.2), Some(true)));
        assert_eq!(target("same-node probe p99").met, None, "not measured");
        let memory = target("agent KiB per idle connection at 10000 (mesh, cross-node, client");
        assert_eq!((memory.value, memory.met), (Some(9.0), Some(true)));
    }

    /// Checks that every element is closed, in order.
    fn balanced(svg: &str) -> bool {
        let mut open = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let Some(len) = rest[start..].find('>') else {
                return false;
            };
            let tag = &rest[start + 1..start + len];
            rest = &rest[start + len + 1..];
            let name = tag
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if tag.starts_with('/') {
                if open.pop() != Some(name) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                open.push(name);
            }
        }
        open.is_empty()
    }

    #[test]
    fn chart_has_a_bar_per_ratio_and_is_well_formed() {
        let store = sample_store();
        let bars = headline_bars(&store);
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert!(
            labels
                .iter()
                .any(|l| l.starts_with("cross-node throughput, mesh/direct"))
        );
        assert!(
            labels
                .iter()
                .any(|l| l.starts_with("same-node rr p50, mesh/mesh-noaccel"))
        );
        assert!(labels.iter().any(|l| l.starts_with("cross-node probe p99")));
        let svg = chart_svg("Weft <bench>", "a & b", &bars);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"class="bar""#).count(), bars.len());
        assert_eq!(
            svg.matches(r#"class="target""#).count(),
            bars.iter().filter(|b| b.target.is_some()).count()
        );
        assert!(svg.contains("Weft &lt;bench&gt;") && svg.contains("a &amp; b"));
        assert!(balanced(&svg), "{svg}");
        assert!(!balanced("<svg><g></svg>"));
        // An empty chart is still a chart.
        let empty = chart_svg("t", "s", &[]);
        assert!(empty.starts_with("<svg") && balanced(&empty));
    }

    #[test]
    fn axis_is_round_and_covers_the_values() {
        assert_eq!(axis(1.05), (1.25, 0.25));
        assert_eq!(axis(3.2), (3.5, 0.5));
        assert_eq!(axis(12.0), (12.0, 2.0));
        assert_eq!(axis(0.0), (1.0, 0.25));
        assert_eq!(axis(f64::NAN), (1.0, 0.25));
    }

    #[test]
    fn markdown_has_a_table_per_group_and_the_targets() {
        let store = sample_store();
        let results = Results {
            date: utc_timestamp(0),
            mode: "full",
            repeats: 3,
            profile: "release",
            host: Host {
                kernel: "6.1".to_owned(),
                cpus: 2,
            },
            git_commit: None,
            open_files_limit: 20_000,
            modes: Mode::ALL.to_vec(),
            incomplete: None,
            scenarios: scenario_results(&store),
            ratios: ratios(&store),
            targets: targets(&store),
            l7: None,
        };
        let md = markdown(&results, &store);
        assert!(md.contains("## throughput, cross-node"));
        assert!(md.contains("## rr, same-node"));
        assert!(md.contains("## concurrency 10000, cross-node"));
        assert!(md.contains(
            "| bandwidth (Gbit/s) | 11.0 (10.0–12.0) | 6.00 (5.00–7.00) | 4.00 | – | 0.55× | \
             1.50× | – |"
        ));
        assert!(md.contains("## Targets"));
        assert!(
            md.contains("| cross-node new connections/s, mesh / direct | 0.30 | ≥ 0.40 | **no** |")
        );
        assert!(!md.contains("Built without optimizations"));
        // The JSON has the fields the docs read.
        let json = serde_json::to_value(&results).expect("serializable");
        for field in [
            "date",
            "mode",
            "repeats",
            "host",
            "scenarios",
            "ratios",
            "targets",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["scenarios"][0]["topology"], "cross-node");
        assert_eq!(json["scenarios"][0]["mode"], "direct");
    }
}
