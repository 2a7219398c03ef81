//! `weftctl lab`: a small Weft cluster on one Linux host.
//!
//! Nodes and pods are network namespaces. The nodes hang off a bridge that lives in a
//! namespace of the lab's own (the underlay), each with a pod subnet and routes to the
//! others; pods are attached to their node by the CNI reference plugins (`bridge` with
//! `host-local`, `loopback`), invoked the way a container runtime invokes them. Every
//! pod also has a cgroup under the lab's, and its processes run in both. Each node runs
//! a `weft-agent` in its namespace, attached to the node's cgroup; every pod runs the
//! sample app. Nothing is linked to the host's own network.
//!
//! Everything the lab creates is named `weft-lab…` and listed in
//! `/run/weft-lab/state.json`; `lab down` removes all of it, with or without the state
//! file, and can run any number of times.

pub mod agents;
mod apply;
pub mod bench;
mod build;
pub mod cni;
pub mod controlplane;
pub mod dns;
mod documents;
pub mod ejections;
mod enroll;
pub mod external;
pub mod graph;
mod http;
pub mod ingress;
pub mod logs;
pub(crate) use http::get_in_netns;
pub mod observability;
mod pods;
pub mod proxy_config;
mod status;
pub mod top;
pub mod topology;
pub mod waypoints;

pub use apply::apply;
pub use build::{controlplane_address, controlplane_netns};
pub use enroll::enroll;
pub use status::status;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use topology::{Pod, Topology};

pub const PREFIX: &str = "weft-lab";
pub const RUN_DIR: &str = "/run/weft-lab";
/// Sample app ports in every pod.
pub const ECHO_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 9090;

pub fn underlay_netns() -> String {
    format!("{PREFIX}-underlay")
}

pub fn node_netns(node: &str) -> String {
    format!("{PREFIX}-node-{node}")
}

/// Pod namespaces are `weft-lab-pod-<namespace>.<pod>`: namespace names cannot hold a
/// dot, so the name is unambiguous.
pub fn pod_netns(pod: &Pod) -> String {
    format!("{PREFIX}-pod-{}.{}", pod.namespace, pod.name)
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The node name the lab's agent of `node` runs with (it names its bpffs folder).
pub fn agent_node_name(node: &str) -> String {
    format!("{PREFIX}-{node}")
}

fn run_dir() -> PathBuf {
    PathBuf::from(RUN_DIR)
}

fn state_file() -> PathBuf {
    run_dir().join("state.json")
}

/// The lab's root cgroup: `<cgroup v2 mount>/weft-lab`.
pub fn cgroup_root() -> anyhow::Result<PathBuf> {
    Ok(api::mounts::cgroup2()
        .context("no cgroup v2 hierarchy is mounted; the lab needs one")?
        .join(PREFIX))
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub controlplane_pid: u32,
    pub topology: Topology,
    pub cgroup_root: PathBuf,
    pub pods: Vec<PodState>,
    pub agents: Vec<AgentState>,
    /// `WEFT_…` settings the control plane runs with (`lab up --controlplane-env`).
    #[serde(default)]
    pub controlplane_env: Vec<(String, String)>,
    /// `WEFT_…` settings every agent runs with (`lab up --agent-env`).
    #[serde(default)]
    pub agent_env: Vec<(String, String)>,
    /// `WEFT_…` settings every waypoint runs with (`lab up --waypoint-env`).
    #[serde(default)]
    pub waypoint_env: Vec<(String, String)>,
    /// Prometheus, with `lab up --observability`.
    #[serde(default)]
    pub observability: Option<observability::Observability>,
    /// The lab's upstream DNS server (`lab/dns.rs`).
    #[serde(default)]
    pub dns_pid: Option<u32>,
    /// The server outside the cluster (`lab/external.rs`).
    #[serde(default)]
    pub external_pid: Option<u32>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PodState {
    pub pod: Pod,
    pub netns: String,
    pub cgroup: PathBuf,
    pub ip: std::net::Ipv4Addr,
    pub app_pid: u32,
    pub log: PathBuf,
    /// The result of CNI ADD, handed back to DEL.
    pub cni_result: serde_json::Value,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AgentState {
    pub node: String,
    pub admin_socket: PathBuf,
    pub pid: u32,
    pub log: PathBuf,
}

impl State {
    pub fn load() -> anyhow::Result<Option<State>> {
        match std::fs::read(state_file()) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).context("reading the lab state")?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading the lab state"),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = run_dir().join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, state_file()).context("writing the lab state")
    }

    pub fn pod(&self, name: &str) -> anyhow::Result<&PodState> {
        let matches: Vec<&PodState> = self
            .pods
            .iter()
            .filter(|p| p.pod.key() == name || p.pod.name == name)
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => bail!(
                "no pod {name:?} in the lab; pods: {}",
                self.pods
                    .iter()
                    .map(|p| p.pod.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => bail!("{name:?} is ambiguous; say namespace/name"),
        }
    }
}

/// Prints progress with the time since `start`.
struct Progress {
    start: Instant,
}

impl Progress {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:5.1}s] {what}", self.start.elapsed().as_secs_f64());
    }
}

/// Runs a command, failing with its output when it fails.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args)).map(drop)
}

/// A command that joins `cgroup`, then the network namespace at `netns`, then runs
/// `program args…`. The order matters: `ip netns exec` would mount a /sys without the
/// cgroup v2 hierarchy.
pub fn in_pod(cgroup: &Path, netns: &Path, program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec nsenter --net=\"$@\"")
        .arg("weft-lab")
        .arg(cgroup)
        .arg(netns)
        .arg(program)
        .args(args);
    cmd
}

/// Starts a long-running process in its own session, logging to `log`; returns its pid.
fn launch(cmd: Command, log: &Path) -> anyhow::Result<u32> {
    // Emptied, then written in append mode: a process started later into the same log
    // (an upgraded agent) adds to it instead of being overwritten.
    std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    agents::launch_appending(cmd, log)
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; no signal is sent.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Waits for `check`, up to `limit`; fails with `what` when it never holds.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// Paths of the binaries the lab runs: beside `weftctl` itself.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding weftctl's own path")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} is missing; build the workspace (`cargo build --workspace --bins`, which \
             `cargo xtask lab up` does)",
            path.display()
        );
    }
    Ok(path)
}

/// The state of the lab that is up, after the preflight checks; an error when none is.
fn running_lab() -> anyhow::Result<State> {
    preflight()?;
    State::load()?.context("no lab is up (start one with `weftctl lab up`)")
}

fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab creates network namespaces, cgroups and eBPF programs: run it as root");
    }
    for tool in ["/usr/sbin/ip", "/usr/bin/nsenter", "/usr/bin/setsid"] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing (run `cargo xtask setup`)");
        }
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let path = Path::new(cni::PLUGIN_DIR).join(plugin);
        if !path.is_file() {
            bail!(
                "the CNI plugin {} is missing: install Debian's containernetworking-plugins \
                 (`cargo xtask setup` does)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Is anything of an earlier lab still here?
fn leftovers() -> anyhow::Result<bool> {
    Ok(state_file().exists() || !lab_netns()?.is_empty() || cgroup_root()?.exists())
}

fn lab_netns() -> anyhow::Result<Vec<String>> {
    let list = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect())
}

/// `WEFT_…=value` settings for the lab's processes (limits and timeouts, for tests
/// and experiments), as `lab up --agent-env …` gives them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Env<'a> {
    pub agent: &'a [String],
    pub waypoint: &'a [String],
    pub controlplane: &'a [String],
}

/// Builds the lab, its processes started with `env`.
pub fn up(topology_file: Option<&Path>, env: Env<'_>, observability: bool) -> anyhow::Result<()> {
    let progress = Progress {
        start: Instant::now(),
    };
    up_with(topology_file, env, &progress)?;
    if observability {
        let mut state = State::load()?.context("the lab's state is missing")?;
        match observability::start(&state, &progress) {
            Ok(o) => {
                println!("Prometheus: {} (from the lab's namespaces)", o.url());
                state.observability = Some(o);
                state.save()?;
            }
            Err(e) => {
                progress.say(format_args!(
                    "starting Prometheus failed: {e:#}; removing the lab"
                ));
                down_with(&progress)?;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// `KEY=VALUE` pairs of `WEFT_` settings, as `--<flag> KEY=VALUE` gives them.
fn settings(flag: &str, pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--{flag} {pair:?}: expected KEY=VALUE"))?;
        anyhow::ensure!(
            key.starts_with("WEFT_"),
            "--{flag} {pair:?}: only WEFT_ settings are passed on"
        );
        env.push((key.to_owned(), value.to_owned()));
    }
    Ok(env)
}

/// [`up`], reporting progress on a clock the caller already runs.
fn up_with(topology_file: Option<&Path>, env: Env<'_>, progress: &Progress) -> anyhow::Result<()> {
    let settings = build::Settings {
        agent: settings("agent-env", env.agent)?,
        waypoint: settings("waypoint-env", env.waypoint)?,
        controlplane: settings("controlplane-env", env.controlplane)?,
    };
    let (source, text) = match topology_file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => (
            "the default topology".to_owned(),
            topology::DEFAULT.to_owned(),
        ),
    };
    let topology = topology::parse(&source, &text)?;
    preflight()?;
    let bins = build::Binaries {
        agent: sibling("weft-agent")?,
        sample: sibling("weft-sample")?,
        controlplane: sibling("weft-controlplane")?,
        waypoint: sibling("weft-waypoint")?,
    };
    progress.say(format_args!(
        "topology: {} nodes, {} namespaces, {} pods, {} services, {} waypoints ({source})",
        topology.nodes.len(),
        topology.namespaces.len(),
        topology.pods.len(),
        topology.services.len(),
        topology.waypoints.len()
    ));
    if leftovers()? {
        progress.say("an earlier lab is still here; removing it first");
        down_with(progress)?;
    }
    match build::build(&topology, &bins, &settings, progress) {
        Ok(state) => {
            summary(&state);
            Ok(())
        }
        Err(e) => {
            progress.say(format_args!(
                "lab up failed: {e:#}; removing what was created"
            ));
            down_with(progress)?;
            Err(e)
        }
    }
}

fn summary(state: &State) {
    println!();
    println!("{:<22} {:<8} {:<14} MESH", "POD", "NODE", "IP");
    for p in &state.pods {
        println!(
            "{:<22} {:<8} {:<14} {}",
            p.pod.key(),
            p.pod.node,
            p.ip,
            p.pod.mesh_role()
        );
    }
    let apps: Vec<&PodState> = state.pods.iter().filter(|p| !p.pod.waypoint).collect();
    // From the first pod to a mesh pod of another node if there is one: a tunnel.
    let first = apps.first();
    let other = first.and_then(|a| {
        apps.iter()
            .find(|b| b.pod.node != a.pod.node && b.pod.enrolled)
            .or(apps.last())
    });
    if let (Some(a), Some(b)) = (first, other) {
        println!();
        println!(
            "Try: weftctl lab exec {} -- weft-sample echo --connect {}:{ECHO_PORT} --bytes 1000",
            a.pod.key(),
            b.ip
        );
        println!("     weftctl lab status;  weftctl lab down");
    }
}

pub fn down() -> anyhow::Result<()> {
    preflight()?;
    down_with(&Progress {
        start: Instant::now(),
    })
}

fn down_with(progress: &Progress) -> anyhow::Result<()> {
    let state = State::load().unwrap_or_else(|e| {
        progress.say(format_args!("ignoring the state file: {e:#}"));
        None
    });
    let cg_root = cgroup_root()?;

    // Every lab process (agents, sample apps, exec'd commands) is in the lab cgroup.
    if cg_root.exists() {
        let _ = std::fs::write(cg_root.join("cgroup.kill"), "1");
        let events = cg_root.join("cgroup.events");
        wait_for(
            "the lab's processes to exit",
            Duration::from_secs(10),
            || std::fs::read_to_string(&events).is_ok_and(|e| e.contains("populated 0")),
        )?;
        progress.say("stopped every lab process");
    }

    // Give the pods' addresses back through CNI, as a runtime would.
    if let Some(state) = &state {
        for p in &state.pods {
            let node = state.topology.nodes.iter().find(|n| n.name == p.pod.node);
            for problem in pods::release(p, node) {
                progress.say(problem);
            }
        }
    }

    let mut names = lab_netns()?;
    // Pods first, then nodes, then the underlay: each link goes with its namespace.
    names.sort_by_key(|n| (!n.contains("-pod-"), !n.contains("-node-")));
    for name in &names {
        ip(&["netns", "del", name])?;
    }
    if !names.is_empty() {
        progress.say(format_args!("removed {} network namespaces", names.len()));
    }

    // Pinned programs and maps of the lab's agents; unpinning detaches them.
    let bpf_dir = Path::new("/sys/fs/bpf/weft");
    if let Ok(entries) = std::fs::read_dir(bpf_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
                progress.say(format_args!(
                    "removed pinned eBPF objects {}",
                    entry.path().display()
                ));
            }
        }
    }

    // The shared folder goes too once no agent pins anything in it.
    let _ = std::fs::remove_dir(bpf_dir);
    if cg_root.exists() {
        remove_cgroup_tree(&cg_root)?;
        progress.say(format_args!("removed cgroup {}", cg_root.display()));
    }
    match std::fs::remove_dir_all(run_dir()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing /run/weft-lab"),
    }
    progress.say("lab is down");
    Ok(())
}

/// Removes a cgroup and its descendants, deepest first (cgroup directories can only be
/// removed empty).
fn remove_cgroup_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing cgroup {}", dir.display()))
}

/// Runs a command inside a pod (its cgroup and network namespace) and returns its exit
/// code. The lab's binaries (`weft-sample`, …) are on its PATH.
pub fn exec(pod: &str, command: &[String]) -> anyhow::Result<i32> {
    let Some(state) = State::load()? else {
        bail!("no lab is up (start one with `weftctl lab up`)");
    };
    let p = state.pod(pod)?;
    let (program, args) = command.split_first().context("give a command to run")?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs)?;
    let program = which(program, &joined).unwrap_or_else(|| PathBuf::from(program));
    let status = in_pod(&p.cgroup, &netns_path(&p.netns), &program, args)
        .env("PATH", &joined)
        .env("WEFT_POD", p.pod.key())
        .status()
        .context("running the command")?;
    Ok(status.code().unwrap_or(1))
}

fn which(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.contains('/') {
        return None;
    }
    std::env::split_paths(path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Per-node sums of a decision counter, for tests and status.
pub fn agent_stats(state: &State) -> BTreeMap<String, serde_json::Value> {
    state
        .agents
        .iter()
        .filter_map(|a| {
            let r = api::admin::Client::new(&a.admin_socket)
                .get("/v1/stats")
                .ok()?;
            Some((a.node.clone(), r.body))
        })
        .collect()
}
