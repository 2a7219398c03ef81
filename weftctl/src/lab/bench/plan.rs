//! What a benchmark run is: its modes, topologies, suites and plan, the pods it uses,
//! and the names of its scenarios and metrics.

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

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
pub(super) const IPERF_PORT: u16 = 5201;
/// sockperf's port in the server pod.
pub(super) const SOCKPERF_PORT: u16 = 11111;
/// Message size of the latency and connection-rate scenarios.
pub(super) const MESSAGE_SIZE: u32 = 64;
/// Concurrent connecting threads of the connection-rate scenario.
pub(super) const CONNRATE_CONCURRENCY: u32 = 4;
/// The longest a held-connections client may keep them, whatever happens to us.
pub(super) const HOLD_TIMEOUT: Duration = Duration::from_secs(180);
/// The open-files limit the benchmark gives the lab's processes (they inherit it): the
/// agent of the same-node case holds both ends of every held connection.
pub(super) const OPEN_FILES: u64 = 1 << 18;

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

    pub(super) fn in_mesh(self) -> bool {
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
    /// The L4 scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// Record the agents with `perf` during each scenario of each mesh mode (see
    /// `profile.rs`).
    pub profile: bool,
}

/// The L4 scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One iperf3 stream.
    Throughput,
    /// Round trips of 64 B on one connection: `weft-sample rr`, then sockperf.
    Rr,
    /// New connections per second, 64 B each way.
    Connrate,
    /// Idle connections held open, a probe's round trips meanwhile.
    Concurrency,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Throughput,
        Scenario::Rr,
        Scenario::Connrate,
        Scenario::Concurrency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Rr => "rr",
            Scenario::Connrate => "connrate",
            Scenario::Concurrency => "concurrency",
        }
    }
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
    /// How long each sockperf ping-pong runs.
    pub sockperf_secs: u32,
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
                sockperf_secs: 2,
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
                sockperf_secs: 5,
                connrate_secs: 5,
                connrate_max: 50_000,
                hold_counts: vec![1_000, 10_000],
                probe_count: 5_000,
            }
        }
    }
}

// Scenario and metric names, shared by the runs, the ratios and the targets.
pub(super) const THROUGHPUT: &str = "throughput";
pub(super) const RR: &str = "rr";
/// The same round trip measured by sockperf (TCP ping-pong), as a second opinion.
pub(super) const RR_SOCKPERF: &str = "rr (sockperf)";
pub(super) const CONNRATE: &str = "connrate";
pub(super) const RATE: &str = "new connections";
pub(super) const BANDWIDTH: &str = "bandwidth";
pub(super) const CPU_PER_GB: &str = "agent CPU per GB";
pub(super) const CPU_PER_1K: &str = "agent CPU per 1,000 connections";
pub(super) const PROBE_P99: &str = "probe rr p99";
pub(super) const MEM_CLIENT: &str = "agent memory per connection, client node";
pub(super) const MEM_SERVER: &str = "agent memory per connection, server node";
pub(super) const MEM_NODE: &str = "agent memory per connection";
/// The percentiles the sample app prints: metric name and JSON field.
pub(super) const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "p50_us"),
    ("p90", "p90_us"),
    ("p99", "p99_us"),
    ("p99.9", "p999_us"),
];

/// Files an agent keeps open besides the held connections' sockets.
pub(super) const FILES_MARGIN: u64 = 1_000;

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

pub(super) fn concurrency_scenario(count: u32) -> String {
    format!("concurrency {count}")
}
