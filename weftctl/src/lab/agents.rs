//! The lab's agents: started in their nodes as a DaemonSet's pods are, upgraded in
//! place (a new process takes the listeners of the running one and the old one
//! drains, `weftctl lab upgrade-agent`), or killed and started again, as the kubelet
//! restarts a crashed container (`weftctl lab kill-agent`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    AgentState, State, agent_node_name, build::Setting, in_pod, netns_path, node_netns, run_dir,
    topology::Topology,
};

/// How long an upgraded agent's predecessor may take to drain and exit.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// What the lab starts an agent with, besides its node.
pub(super) struct Launch<'a> {
    pub binary: &'a Path,
    pub cgroup_root: &'a Path,
    pub controlplane: std::net::Ipv4Addr,
    pub trust_bundle: &'a Path,
    pub dns_upstream: std::net::Ipv4Addr,
    pub env: &'a [Setting],
}

/// The command that runs the agent of `node`, in its node's namespace and cgroup.
pub(super) fn command(topology: &Topology, node: &str, l: &Launch<'_>) -> anyhow::Result<Command> {
    let n = topology
        .nodes
        .iter()
        .find(|n| n.name == node)
        .with_context(|| format!("the lab has no node {node}"))?;
    let state_dir = state_dir(node);
    // The agent runs under its node's cgroup, as a DaemonSet pod runs under the node's
    // root cgroup. Its programs attach at the cgroup root, as on a node: every process
    // is under it, also one that enters a pod's namespace from outside the lab
    // (`ip netns exec`); each agent captures only the namespaces it enrolled.
    let agent_cgroup = l.cgroup_root.join("nodes").join(node).join("weft-agent");
    let root = api::mounts::cgroup2().context("no cgroup v2 hierarchy is mounted")?;
    std::fs::create_dir_all(&agent_cgroup)
        .with_context(|| format!("creating cgroup {}", agent_cgroup.display()))?;
    let mut cmd = in_pod(&agent_cgroup, &netns_path(&node_netns(node)), l.binary, &[]);
    cmd.env("WEFT_NODE_NAME", agent_node_name(node))
        .env("WEFT_CGROUP", &root)
        .env("WEFT_STATE_DIR", &state_dir)
        .env("WEFT_METRICS_ADDR", format!("{}:15020", n.address))
        .env("WEFT_CONTROLPLANE", format!("{}:15012", l.controlplane))
        .env("WEFT_CONTROLPLANE_CA", l.trust_bundle)
        .env("WEFT_NODE_TOKEN_FILE", state_dir.join("token"))
        .env("WEFT_DNS_UPSTREAM", l.dns_upstream.to_string())
        .envs(l.env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

pub(super) fn state_dir(node: &str) -> PathBuf {
    run_dir().join("agents").join(node)
}

/// The control plane's CA root, as the lab's agents read it.
pub(super) fn trust_bundle() -> PathBuf {
    run_dir().join("controlplane/state/ca/trust-bundle.pem")
}

pub(super) fn log(node: &str) -> PathBuf {
    run_dir().join("logs").join(format!("agent-{node}.log"))
}

/// What `upgrade-agent` and `kill-agent` did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replaced {
    pub node: String,
    pub old_pid: u32,
    pub new_pid: u32,
    /// From the start of the new process until it answered its admin API.
    pub serving_ms: u64,
    /// Until the old process was gone (drained, for an upgrade).
    pub old_gone_ms: u64,
}

/// Starts a new agent on `node` that takes over from the running one; returns once
/// it serves and the old one has drained and exited.
pub fn upgrade(node: &str, binary: Option<&Path>) -> anyhow::Result<Replaced> {
    replace(node, binary, false)
}

/// Kills the agent of `node` (SIGKILL) and starts it again.
pub fn kill(node: &str) -> anyhow::Result<Replaced> {
    replace(node, None, true)
}

fn replace(node: &str, binary: Option<&Path>, crash: bool) -> anyhow::Result<Replaced> {
    let mut state = State::load()?.context("no lab is up; run `weftctl lab up`")?;
    let i = state
        .agents
        .iter()
        .position(|a| a.node == node)
        .with_context(|| format!("the lab has no agent on node {node}"))?;
    let old = state.agents[i].clone();
    if !running(old.pid) {
        bail!("the agent of {node} (pid {}) is not running", old.pid);
    }
    let start = Instant::now();
    if crash {
        // SAFETY: a plain kill(2) of the lab's own agent process.
        unsafe { libc::kill(old.pid as libc::pid_t, libc::SIGKILL) };
        super::wait_for(
            &format!("the killed agent of {node} to be gone"),
            Duration::from_secs(10),
            || !running(old.pid),
        )?;
    }
    let binary = match binary {
        Some(b) => b.to_owned(),
        None => super::sibling("weft-agent")?,
    };
    let cmd = command(
        &state.topology,
        node,
        &Launch {
            binary: &binary,
            cgroup_root: &state.cgroup_root,
            controlplane: super::build::controlplane_address(&state.topology)?,
            trust_bundle: &trust_bundle(),
            dns_upstream: super::dns::address(&state.topology)?,
            env: &state.agent_env,
        },
    )?;
    let new_pid = launch_appending(cmd, &old.log)?;
    let client = api::admin::Client::new(&old.admin_socket);
    // Until the new one serves its admin API (the old one stops answering it while it
    // hands over, and a killed one cannot).
    super::wait_for(
        &format!("the new agent of {node} (log: {})", old.log.display()),
        Duration::from_secs(60),
        || {
            running(new_pid)
                && client
                    .get("/v1/stats")
                    .is_ok_and(|r| r.status == 200 && r.body["pid"] == new_pid)
        },
    )?;
    let serving_ms = start.elapsed().as_millis() as u64;
    super::wait_for(
        &format!(
            "the previous agent of {node} (pid {}) to drain and exit",
            old.pid
        ),
        DRAIN_LIMIT,
        || !running(old.pid),
    )?;
    let old_gone_ms = start.elapsed().as_millis() as u64;
    state.agents[i] = AgentState {
        pid: new_pid,
        ..old.clone()
    };
    state.save()?;
    Ok(Replaced {
        node: node.to_owned(),
        old_pid: old.pid,
        new_pid,
        serving_ms,
        old_gone_ms,
    })
}

/// Whether `pid` runs (a zombie nobody reaped yet does not).
pub(super) fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Starts `cmd` in a session of its own, its output appended to `log`.
pub(super) fn launch_appending(cmd: Command, log: &Path) -> anyhow::Result<u32> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = Command::new("setsid")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(child.id())
}
