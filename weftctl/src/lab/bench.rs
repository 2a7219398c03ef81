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
//! A module per concept: `plan` (modes, topologies, what a run does), `store` (the
//! figures and their statistics), `report` (ratios, targets, `results.md`), `chart`,
//! `scenarios` (the L4 scenarios in one lab), `run` (the labs of a run, start to end),
//! `procs` (processes and `/proc`), and `l7` (the waypoint against nginx and HAProxy).
//! The statistics, the report and the chart are pure functions, tested in `tests`; the
//! rest drives processes in the lab, each bounded in time and killed when it is not
//! needed any more.

mod chart;
pub mod l7;
mod plan;
mod procs;
mod profile;
mod report;
mod run;
mod scenarios;
mod sockperf;
mod store;
#[cfg(test)]
mod tests;

pub use chart::{Bar, axis, chart_svg, headline_bars};
pub use plan::{
    CLIENT_POD, CROSS_NODE_POD, MESH_ENV, Mode, NOACCEL_ENV, Options, Plan, SAME_NODE_POD,
    Scenario, Suite, TUNNEL_ENV, Topology,
};
pub use procs::{cpu_ticks, table_listens_on, vm_rss_kib};
pub use report::{
    Host, Ratio, Results, ScenarioResult, markdown, ratios, scenario_results, targets,
};
pub use run::run;
pub use store::{
    Series, Store, Target, format_cell, format_number, format_ratio, higher_is_better, median,
    ratio, summarize, utc_timestamp,
};
