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

pub mod bench;
pub mod cni;
pub mod topology;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use topology::{Pod, Topology};

pub const PREFIX: &str = "weft-lab";
pub const RUN_DIR: &str = "/run/weft-lab";
/// Sample app ports in every pod.
pub const ECHO_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 8080;

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
    /// Mesh components that do not exist yet and were not started.
    pub missing: Vec<String>,
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
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut setsid = Command::new("setsid");
    setsid
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    let child = setsid
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    // The child is not a process group leader, so setsid execs in place: same pid.
    Ok(child.id())
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

/// Builds the lab. `agent_env` holds `WEFT_…=value` settings passed to every agent
/// (limits and timeouts, for tests and experiments).
pub fn up(topology_file: Option<&Path>, agent_env: &[String]) -> anyhow::Result<()> {
    up_with(
        topology_file,
        agent_env,
        &Progress {
            start: Instant::now(),
        },
    )
}

/// [`up`], reporting progress on a clock the caller already runs.
fn up_with(
    topology_file: Option<&Path>,
    agent_env: &[String],
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut env = Vec::new();
    for pair in agent_env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--agent-env {pair:?}: expected KEY=VALUE"))?;
        anyhow::ensure!(
            key.starts_with("WEFT_"),
            "--agent-env {pair:?}: only WEFT_ settings are passed to agents"
        );
        env.push((key.to_owned(), value.to_owned()));
    }
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
    let bins = Binaries {
        agent: sibling("weft-agent")?,
        sample: sibling("weft-sample")?,
        controlplane: sibling("weft-controlplane")?,
    };
    progress.say(format_args!(
        "topology: {} nodes, {} namespaces, {} pods, {} services ({source})",
        topology.nodes.len(),
        topology.namespaces.len(),
        topology.pods.len(),
        topology.services.len()
    ));
    if leftovers()? {
        progress.say("an earlier lab is still here; removing it first");
        down_with(progress)?;
    }
    match build(&topology, &bins, &env, progress) {
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

/// The binaries the lab runs.
struct Binaries {
    agent: PathBuf,
    sample: PathBuf,
    controlplane: PathBuf,
}

/// The name of the control plane's namespace, and its address on the underlay (`.2`).
pub fn controlplane_netns() -> String {
    format!("{PREFIX}-controlplane")
}

/// A new random token (32 bytes from the kernel, hex).
fn new_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn build(
    topology: &Topology,
    bins: &Binaries,
    agent_env: &[(String, String)],
    progress: &Progress,
) -> anyhow::Result<State> {
    for dir in ["logs", "cni", "agents", "controlplane/config"] {
        std::fs::create_dir_all(run_dir().join(dir))?;
    }
    let cg_root = cgroup_root()?;
    std::fs::create_dir_all(cg_root.join("system"))
        .with_context(|| format!("creating cgroup {}", cg_root.display()))?;

    // Underlay: a bridge in the lab's own namespace.
    let underlay = underlay_netns();
    ip(&["netns", "add", &underlay])?;
    ip(&["-n", &underlay, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &underlay, "link", "set", "br0", "up"])?;
    ip(&["-n", &underlay, "link", "set", "lo", "up"])?;
    let underlay_net: topology::Ipv4Net = topology.underlay.parse().map_err(anyhow::Error::msg)?;
    progress.say(format_args!(
        "underlay {underlay_net} (namespace {underlay})"
    ));

    // Nodes.
    for (i, node) in topology.nodes.iter().enumerate() {
        let ns = node_netns(&node.name);
        ip(&["netns", "add", &ns])?;
        let port = format!("n{i}");
        ip(&[
            "-n", &underlay, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        ip(&["-n", &underlay, "link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("{}/{}", node.address, underlay_net.prefix);
        ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        std::fs::create_dir_all(cg_root.join("nodes").join(&node.name))?;
        progress.say(format_args!(
            "node {}: {} on the underlay, pods {}",
            node.name, node.address, node.pod_subnet
        ));
    }
    for node in &topology.nodes {
        for other in topology.nodes.iter().filter(|o| o.name != node.name) {
            ip(&[
                "-n",
                &node_netns(&node.name),
                "route",
                "add",
                &other.pod_subnet,
                "via",
                &other.address.to_string(),
            ])?;
        }
    }

    // Pods.
    let mut pods = Vec::new();
    for pod in &topology.pods {
        let node = topology
            .nodes
            .iter()
            .find(|n| n.name == pod.node)
            .expect("checked by the topology");
        let subnet: topology::Ipv4Net = node.pod_subnet.parse().map_err(anyhow::Error::msg)?;
        let ns = pod_netns(pod);
        ip(&["netns", "add", &ns])?;
        let cgroup = cg_root
            .join("nodes")
            .join(&pod.node)
            .join(format!("{}.{}", pod.namespace, pod.name));
        std::fs::create_dir_all(&cgroup)?;
        let node_ns = netns_path(&node_netns(&node.name));
        let pod_ns = netns_path(&ns);
        let attachment = |ifname| cni::Attachment {
            container_id: &ns,
            netns: &pod_ns,
            ifname,
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
            runtime_netns: &node_ns,
        };
        cni::add(&cni::loopback(), &attachment("lo"))?;
        let network = cni::pod_network(
            &node.pod_subnet,
            subnet.host(1),
            &run_dir().join("cni").join(&node.name),
        );
        let result = cni::add(&network, &attachment("eth0"))?;
        let ip = cni::first_ipv4(&result).context("the CNI result has no IPv4 address")?;
        progress.say(format_args!(
            "pod {} on {}: {ip}{}",
            pod.key(),
            pod.node,
            if pod.enrolled { " (in the mesh)" } else { "" }
        ));
        pods.push(PodState {
            pod: pod.clone(),
            netns: ns,
            cgroup,
            ip,
            app_pid: 0,
            log: run_dir()
                .join("logs")
                .join(format!("{}.{}.log", pod.namespace, pod.name)),
            cni_result: result,
        });
    }

    write_documents(topology, &pods)?;
    // The control plane, on the underlay at .2, with a bootstrap token per node.
    let cp_ns = controlplane_netns();
    let cp_addr = underlay_net.host(2);
    ip(&["netns", "add", &cp_ns])?;
    ip(&[
        "-n", &underlay, "link", "add", "cp", "type", "veth", "peer", "name", "eth0", "netns",
        &cp_ns,
    ])?;
    ip(&["-n", &underlay, "link", "set", "cp", "master", "br0", "up"])?;
    ip(&[
        "-n",
        &cp_ns,
        "addr",
        "add",
        &format!("{cp_addr}/{}", underlay_net.prefix),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &cp_ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &cp_ns, "link", "set", "lo", "up"])?;
    let cp_dir = run_dir().join("controlplane");
    let mut tokens = String::new();
    for node in &topology.nodes {
        let token = new_token()?;
        tokens.push_str(&format!("{}: {token}\n", node.name));
        write_private(
            &run_dir().join("agents").join(&node.name).join("token"),
            &token,
        )?;
    }
    write_private(&cp_dir.join("node-tokens.yaml"), &tokens)?;
    let cp_log = run_dir().join("logs/controlplane.log");
    let mut cmd = in_pod(
        &cg_root.join("system"),
        &netns_path(&cp_ns),
        &bins.controlplane,
        &[],
    );
    cmd.env("WEFT_CP_STATE_DIR", cp_dir.join("state"))
        .env("WEFT_CP_CONFIG_DIR", cp_dir.join("config"))
        .env("WEFT_CP_NODE_TOKENS", cp_dir.join("node-tokens.yaml"))
        .env("WEFT_CP_LISTEN", format!("{cp_addr}:15012"))
        .env("WEFT_CP_SERVING_IPS", cp_addr.to_string());
    let cp_pid = launch(cmd, &cp_log)?;
    let trust_bundle = cp_dir.join("state/ca/trust-bundle.pem");
    wait_for(
        &format!("the control plane (log: {})", cp_log.display()),
        Duration::from_secs(20),
        || {
            alive(cp_pid)
                && std::fs::read_to_string(&cp_log).is_ok_and(|l| l.contains("control plane ready"))
        },
    )?;
    progress.say(format_args!(
        "control plane at {cp_addr}:15012 (pid {cp_pid}); CA root in {}",
        trust_bundle.display()
    ));
    let missing = vec!["weft-waypoint".to_owned()];

    // Agents, one per node, in the node's namespace.
    let mut agents = Vec::new();
    for node in &topology.nodes {
        let state_dir = run_dir().join("agents").join(&node.name);
        let log = run_dir()
            .join("logs")
            .join(format!("agent-{}.log", node.name));
        // The agent runs under its node's cgroup, as a DaemonSet pod runs under the
        // node's root cgroup: the node's `sockops` program sees its sockets too (the
        // agent's ends of the app ↔ agent legs).
        let agent_cgroup = cg_root.join("nodes").join(&node.name).join("weft-agent");
        std::fs::create_dir_all(&agent_cgroup)
            .with_context(|| format!("creating cgroup {}", agent_cgroup.display()))?;
        let mut cmd = in_pod(
            &agent_cgroup,
            &netns_path(&node_netns(&node.name)),
            &bins.agent,
            &[],
        );
        cmd.env("WEFT_NODE_NAME", agent_node_name(&node.name))
            .env("WEFT_CGROUP", cg_root.join("nodes").join(&node.name))
            .env("WEFT_STATE_DIR", &state_dir)
            .env("WEFT_METRICS_ADDR", format!("{}:15020", node.address))
            .env("WEFT_CONTROLPLANE", format!("{cp_addr}:15012"))
            .env("WEFT_CONTROLPLANE_CA", &trust_bundle)
            .env("WEFT_NODE_TOKEN_FILE", state_dir.join("token"))
            .envs(agent_env.iter().map(|(k, v)| (k, v)));
        let pid = launch(cmd, &log)?;
        agents.push(AgentState {
            node: node.name.clone(),
            admin_socket: state_dir.join("admin.sock"),
            pid,
            log,
        });
    }
    for agent in &agents {
        let client = api::admin::Client::new(&agent.admin_socket);
        wait_for(
            &format!("the agent of {} (log: {})", agent.node, agent.log.display()),
            Duration::from_secs(30),
            || alive(agent.pid) && client.get("/v1/stats").is_ok_and(|r| r.status == 200),
        )?;
        progress.say(format_args!(
            "agent of {} ready (pid {})",
            agent.node, agent.pid
        ));
    }

    // The sample app in every pod.
    for p in &mut pods {
        let args = vec![
            "serve".to_owned(),
            "--echo".to_owned(),
            format!("[::]:{ECHO_PORT}"),
            "--http".to_owned(),
            format!("[::]:{HTTP_PORT}"),
            "--name".to_owned(),
            p.pod.name.clone(),
        ];
        p.app_pid = launch(
            in_pod(&p.cgroup, &netns_path(&p.netns), &bins.sample, &args),
            &p.log,
        )?;
    }
    for p in &pods {
        wait_for(
            &format!(
                "the sample app of {} (log: {})",
                p.pod.key(),
                p.log.display()
            ),
            Duration::from_secs(15),
            || {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                alive(p.app_pid) && log.contains("echo listening") && log.contains("http listening")
            },
        )?;
    }
    progress.say(format_args!(
        "sample app running in {} pods (echo :{ECHO_PORT}, http :{HTTP_PORT})",
        pods.len()
    ));

    // Enrollment through each node's agent.
    for p in pods.iter().filter(|p| p.pod.enrolled) {
        let agent = agents
            .iter()
            .find(|a| a.node == p.pod.node)
            .expect("one agent per node");
        let workload = api::admin::WorkloadRef {
            namespace: p.pod.namespace.clone(),
            name: p.pod.name.clone(),
            service_account: p.pod.service_account.clone(),
        };
        let r = api::admin::Client::new(&agent.admin_socket)
            .enroll(&netns_path(&p.netns), Some(workload))?;
        if r.status != 200 {
            bail!("enrolling {} failed: {}", p.pod.key(), r.error_message());
        }
        progress.say(format_args!(
            "enrolled {} with the agent of {}",
            p.pod.key(),
            p.pod.node
        ));
    }

    // Every enrolled workload has its certificate before the lab is called up.
    for agent in &agents {
        let client = api::admin::Client::new(&agent.admin_socket);
        wait_for(
            &format!(
                "certificates on {} (log: {})",
                agent.node,
                agent.log.display()
            ),
            Duration::from_secs(30),
            || {
                client.get("/v1/enrollments").is_ok_and(|r| {
                    r.body
                        .as_array()
                        .is_some_and(|l| l.iter().all(|e| e["certificate"] == "ready"))
                })
            },
        )?;
    }
    progress.say("every enrolled workload has its certificate");

    let state = State {
        controlplane_pid: cp_pid,
        topology: topology.clone(),
        cgroup_root: cg_root,
        pods,
        agents,
        missing,
    };
    std::fs::write(state_file(), serde_json::to_vec_pretty(&state)?)?;
    progress.say("lab is up");
    Ok(state)
}

/// Writes the documents that describe the lab's workloads into the control plane's
/// local configuration folder, in the kinds it reads: Kubernetes `Namespace` and
/// `Service`, and Weft's `Workload` for workloads that are not Kubernetes pods.
fn write_documents(topology: &Topology, pods: &[PodState]) -> anyhow::Result<()> {
    let dir = run_dir().join("controlplane/config");
    let mut docs = Vec::new();
    for ns in &topology.namespaces {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns.name, "labels": ns.labels },
        }));
    }
    for svc in &topology.services {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": svc.name, "namespace": svc.namespace },
            "spec": {
                "clusterIP": svc.vip.to_string(),
                "selector": svc.selector,
                "ports": svc.ports.iter().map(|p| json!({
                    "name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": "TCP",
                })).collect::<Vec<_>>(),
            },
        }));
    }
    for p in pods {
        docs.push(json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "Workload",
            "metadata": { "name": p.pod.name, "namespace": p.pod.namespace, "labels": p.pod.labels },
            "spec": {
                "serviceAccount": p.pod.service_account,
                "node": p.pod.node,
                "addresses": [p.ip.to_string()],
            },
        }));
    }
    let mut text = String::from(
        "# Written by `weftctl lab up`: the lab's namespaces, services and workloads.\n",
    );
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(&doc)?);
    }
    std::fs::write(dir.join("lab.yaml"), text)?;
    Ok(())
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
            if p.pod.enrolled { "enrolled" } else { "-" }
        );
    }
    if let (Some(a), Some(b)) = (state.pods.first(), state.pods.last()) {
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
            let node_ns = netns_path(&node_netns(&p.pod.node));
            let pod_ns = netns_path(&p.netns);
            if !node_ns.exists() || !pod_ns.exists() {
                continue;
            }
            let at = |ifname| cni::Attachment {
                container_id: &p.netns,
                netns: &pod_ns,
                ifname,
                args: format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                    p.pod.namespace, p.pod.name
                ),
                runtime_netns: &node_ns,
            };
            let node = state.topology.nodes.iter().find(|n| n.name == p.pod.node);
            if let Some(node) = node {
                let subnet: topology::Ipv4Net =
                    node.pod_subnet.parse().map_err(anyhow::Error::msg)?;
                let net = cni::pod_network(
                    &node.pod_subnet,
                    subnet.host(1),
                    &run_dir().join("cni").join(&node.name),
                );
                if let Err(e) = cni::del(&net, &at("eth0"), Some(&p.cni_result)) {
                    progress.say(format_args!("CNI DEL of {}: {e}", p.pod.key()));
                }
            }
            let _ = cni::del(&cni::loopback(), &at("lo"), None);
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

pub fn status() -> anyhow::Result<()> {
    let Some(state) = State::load()? else {
        println!("no lab is up (start one with `weftctl lab up`)");
        return Ok(());
    };
    let mut out = String::new();
    writeln!(
        out,
        "control plane: {} (pid {}, log {}/logs/controlplane.log)\n",
        if alive(state.controlplane_pid) {
            "running"
        } else {
            "DOWN"
        },
        state.controlplane_pid,
        RUN_DIR
    )?;
    // Configuration files the control plane refused (the last good version is in force).
    let cp_status = run_dir().join("controlplane/state/status.json");
    if let Ok(text) = std::fs::read_to_string(&cp_status)
        && let Ok(status) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let problems = status["problems"].as_array().cloned().unwrap_or_default();
        writeln!(
            out,
            "configuration version {}: {}",
            status["version"],
            if problems.is_empty() {
                "every file is in force".to_owned()
            } else {
                format!(
                    "{} problems (the last good versions stay in force):",
                    problems.len()
                )
            }
        )?;
        for p in problems {
            writeln!(out, "  {}", p["text"].as_str().unwrap_or_default())?;
        }
        writeln!(out)?;
    }
    // Certificates by pod namespace path, from the agents.
    let mut certs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for a in &state.agents {
        if let Ok(r) = api::admin::Client::new(&a.admin_socket).get("/v1/enrollments")
            && let Ok(list) = serde_json::from_value::<Vec<api::admin::Enrollment>>(r.body)
        {
            for e in list {
                certs.insert(e.netns, e.certificate.unwrap_or_else(|| "-".to_owned()));
            }
        }
    }
    writeln!(
        out,
        "{:<10} {:<14} {:<8} {:>9} {:>10} {:>12}",
        "NODE", "UNDERLAY", "AGENT", "ENROLLED", "ACCEPTED", "REDIRECTED"
    )?;
    for a in &state.agents {
        let node = state.topology.nodes.iter().find(|n| n.name == a.node);
        let stats = api::admin::Client::new(&a.admin_socket)
            .get("/v1/stats")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body);
        let field = |f: &dyn Fn(&serde_json::Value) -> Option<u64>| {
            stats
                .as_ref()
                .and_then(f)
                .map_or("-".to_owned(), |v| v.to_string())
        };
        writeln!(
            out,
            "{:<10} {:<14} {:<8} {:>9} {:>10} {:>12}",
            a.node,
            node.map(|n| n.address.to_string()).unwrap_or_default(),
            if alive(a.pid) { "running" } else { "DOWN" },
            field(&|s| s["enrolled_namespaces"].as_u64()),
            field(&|s| s["outbound"]["accepted"].as_u64()),
            field(&|s| s["decisions"]["redirected"].as_u64()),
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<22} {:<8} {:<14} {:<10} {:<12} APP",
        "POD", "NODE", "IP", "MESH", "CERTIFICATE"
    )?;
    for p in &state.pods {
        writeln!(
            out,
            "{:<22} {:<8} {:<14} {:<10} {:<12} {}",
            p.pod.key(),
            p.pod.node,
            p.ip,
            if p.pod.enrolled { "enrolled" } else { "-" },
            certs.get(&netns_path(&p.netns)).map_or("-", String::as_str),
            if alive(p.app_pid) { "running" } else { "DOWN" }
        )?;
    }
    if !state.topology.services.is_empty() {
        writeln!(out)?;
        writeln!(out, "{:<22} {:<14} PORTS", "SERVICE", "VIP")?;
        for s in &state.topology.services {
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| format!("{}→{}", p.port, p.target_port))
                .collect();
            writeln!(
                out,
                "{:<22} {:<14} {}",
                format!("{}/{}", s.namespace, s.name),
                s.vip,
                ports.join(", ")
            )?;
        }
    }
    if !state.missing.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "not started (not implemented yet): {}",
            state.missing.join(", ")
        )?;
    }
    print!("{out}");
    Ok(())
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
