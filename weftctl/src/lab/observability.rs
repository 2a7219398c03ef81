//! `weftctl lab up --observability`: a real Prometheus (Debian's `prometheus`) in a
//! namespace of its own on the lab's underlay (its `.3`), scraping the control plane,
//! every agent and every waypoint every 2 s. Its targets are files it reads again by
//! itself (`file_sd_configs`), written again whenever waypoints come and go. Its data
//! lives under the lab's run folder and goes with the lab.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use serde_json::json;

use super::{
    State, alive, build, cgroup_root, in_pod, launch, netns_path, run_dir, topology, wait_for,
};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PORT: u16 = 9090;

/// What runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Observability {
    pub address: Ipv4Addr,
    pub pid: u32,
    pub log: PathBuf,
}

impl Observability {
    pub fn url(&self) -> String {
        format!("http://{}:{PORT}", self.address)
    }
}

pub fn netns() -> String {
    format!("{}-observability", super::PREFIX)
}

fn dir() -> PathBuf {
    run_dir().join("prometheus")
}

/// Prometheus's address: the underlay's `.3`.
pub fn address(t: &topology::Topology) -> anyhow::Result<Ipv4Addr> {
    let net: topology::Ipv4Net = t.underlay.parse().map_err(anyhow::Error::msg)?;
    Ok(net.host(3))
}

/// Writes the scrape targets: the control plane, the agents, the waypoints.
pub fn write_targets(state: &State) -> anyhow::Result<()> {
    let cp = build::controlplane_address(&state.topology)?;
    let agents: Vec<String> = state
        .topology
        .nodes
        .iter()
        .map(|n| format!("{}:15020", n.address))
        .collect();
    let waypoints: Vec<serde_json::Value> = state
        .pods
        .iter()
        .filter(|p| p.pod.waypoint)
        .map(|p| {
            json!({"targets": [format!("{}:15020", p.ip)],
                   "labels": {"waypoint": p.pod.key(), "node": p.pod.node}})
        })
        .collect();
    let nodes: Vec<serde_json::Value> = state
        .topology
        .nodes
        .iter()
        .zip(&agents)
        .map(|(n, a)| json!({"targets": [a], "labels": {"node": n.name}}))
        .collect();
    for (name, groups) in [
        (
            "controlplane",
            json!([{"targets": [format!("{cp}:15014")]}]),
        ),
        ("agents", json!(nodes)),
        ("waypoints", json!(waypoints)),
    ] {
        // Whole or not at all: Prometheus reads these whenever they change.
        let path = dir().join(format!("{name}.json"));
        let tmp = dir().join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&groups)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn config() -> String {
    let job = |name: &str| {
        format!(
            "  - job_name: {name}\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 2s\n",
            dir().join(format!("{name}.json")).display()
        )
    };
    format!(
        "# Written by `weftctl lab up --observability`.\nglobal:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nscrape_configs:\n{}{}{}",
        job("controlplane"),
        job("agents"),
        job("waypoints")
    )
}

/// Starts Prometheus for the lab that `state` describes, once the rest is up.
pub(super) fn start(state: &State, progress: &super::Progress) -> anyhow::Result<Observability> {
    anyhow::ensure!(
        std::path::Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: `cargo xtask setup` installs Debian's prometheus"
    );
    let t = &state.topology;
    let address = address(t)?;
    // Waypoints are scraped on their pod addresses, through their nodes.
    build::on_underlay(t, &netns(), "obs", address)?;
    std::fs::create_dir_all(dir().join("data"))?;
    write_targets(state)?;
    let config_file = dir().join("prometheus.yml");
    std::fs::write(&config_file, config())?;
    let log = run_dir().join("logs/prometheus.log");
    let args = vec![
        format!("--config.file={}", config_file.display()),
        format!("--storage.tsdb.path={}", dir().join("data").display()),
        "--storage.tsdb.retention.time=1h".to_owned(),
        format!("--web.listen-address={address}:{PORT}"),
    ];
    let cmd = in_pod(
        &cgroup_root()?.join("system"),
        &netns_path(&netns()),
        std::path::Path::new(PROMETHEUS),
        &args,
    );
    let pid = launch(cmd, &log)?;
    wait_for(
        &format!("Prometheus (log: {})", log.display()),
        Duration::from_secs(30),
        || {
            alive(pid)
                && std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Server is ready to receive web requests"))
        },
    )?;
    let o = Observability { address, pid, log };
    progress.say(format_args!(
        "Prometheus at {} (pid {pid}), scraping the control plane, {} agents and {} waypoints every 2 s",
        o.url(),
        t.nodes.len(),
        state.pods.iter().filter(|p| p.pod.waypoint).count()
    ));
    Ok(o)
}
