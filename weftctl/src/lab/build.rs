//! `lab up`'s work: the underlay, the nodes, the pods, the control plane and its
//! tokens, an agent per node, the sample apps and the waypoints, in that order, each
//! checked before the next.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    AgentState, ECHO_PORT, GRPC_PORT, HTTP_PORT, PREFIX, Progress, State, alive, cgroup_root,
    documents, in_pod, ip, launch, netns_path, node_netns, pods, run, run_dir,
    topology::{self, Topology},
    underlay_netns, wait_for, waypoints,
};

/// A `WEFT_…` setting passed to a lab process: name and value.
pub(super) type Setting = (String, String);

/// `WEFT_…` settings for each kind of the lab's processes.
pub(super) struct Settings {
    pub agent: Vec<Setting>,
    pub waypoint: Vec<Setting>,
    pub controlplane: Vec<Setting>,
}

/// The binaries the lab runs.
pub(super) struct Binaries {
    pub agent: PathBuf,
    pub sample: PathBuf,
    pub controlplane: PathBuf,
    pub waypoint: PathBuf,
}

/// The control plane's address on the underlay: its `.2`.
pub fn controlplane_address(topology: &Topology) -> anyhow::Result<std::net::Ipv4Addr> {
    let underlay: topology::Ipv4Net = topology.underlay.parse().map_err(anyhow::Error::msg)?;
    Ok(underlay.host(2))
}

/// The name of the control plane's namespace.
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

pub(super) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
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

/// A namespace of its own on the underlay (`name`, its port `link` on the bridge) at
/// `addr`, with a route to each node's pods through that node.
pub(super) fn on_underlay(
    topology: &Topology,
    name: &str,
    link: &str,
    addr: std::net::Ipv4Addr,
) -> anyhow::Result<()> {
    let underlay = underlay_netns();
    let net: topology::Ipv4Net = topology.underlay.parse().map_err(anyhow::Error::msg)?;
    ip(&["netns", "add", name])?;
    ip(&[
        "-n", &underlay, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name,
    ])?;
    ip(&["-n", &underlay, "link", "set", link, "master", "br0", "up"])?;
    ip(&[
        "-n",
        name,
        "addr",
        "add",
        &format!("{addr}/{}", net.prefix),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", name, "link", "set", "eth0", "up"])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    for node in &topology.nodes {
        ip(&[
            "-n",
            name,
            "route",
            "add",
            &node.pod_subnet,
            "via",
            &node.address.to_string(),
        ])?;
    }
    Ok(())
}

/// The endpoint addresses (sorted) of every Service of the lab, waypoints' too, by
/// `namespace/name`.
fn endpoints(
    topology: &Topology,
    pods: &[super::PodState],
) -> std::collections::BTreeMap<String, Vec<String>> {
    let behind = |ns: &str, selector: &std::collections::BTreeMap<String, String>| {
        let mut addrs: Vec<String> = pods
            .iter()
            .filter(|p| {
                p.pod.namespace == ns
                    && selector.iter().all(|(k, v)| p.pod.labels.get(k) == Some(v))
            })
            .map(|p| p.ip.to_string())
            .collect();
        addrs.sort();
        addrs
    };
    let services = topology.services.iter().map(|s| {
        (
            format!("{}/{}", s.namespace, s.name),
            behind(&s.namespace, &s.selector),
        )
    });
    let waypoints = topology.waypoints.iter().map(|w| {
        let selector = [(topology::GATEWAY_NAME_LABEL.to_owned(), w.name.clone())].into();
        (
            format!("{}/{}", w.namespace, w.name),
            behind(&w.namespace, &selector),
        )
    });
    services.chain(waypoints).collect()
}

/// Builds the lab: underlay, nodes, pods, control plane, agents, sample apps, waypoints.
pub(super) fn build(
    topology: &Topology,
    bins: &Binaries,
    settings: &Settings,
    progress: &Progress,
) -> anyhow::Result<State> {
    let (agent_env, waypoint_env) = (&settings.agent[..], &settings.waypoint[..]);
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

    // Every pod is scheduled before any is made: the control plane knows them (without
    // addresses) by the time the CNI plugin asks the node's agent about them.
    documents::write(topology, &[])?;
    // The control plane, on the underlay at .2, with a bootstrap token per node.
    let cp_ns = controlplane_netns();
    let cp_addr = controlplane_address(topology)?;
    // Pods reach it too (waypoints subscribe from their own pods), through their nodes.
    on_underlay(topology, &cp_ns, "cp", cp_addr)?;
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
    let cp_log = super::controlplane::log();
    let cmd = super::controlplane::command(
        topology,
        &cg_root,
        &bins.controlplane,
        &settings.controlplane,
    )?;
    let cp_pid = launch(cmd, &cp_log)?;
    // The pods' upstream DNS server, outside the mesh.
    let dns_pid = super::dns::start(topology)?;
    let dns_upstream = super::dns::address(topology)?;
    // A server outside the cluster, for egress.
    let external_pid = super::external::start(topology)?;
    let trust_bundle = super::agents::trust_bundle();
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

    // Agents, one per node, in the node's namespace.
    let mut agents = Vec::new();
    for node in &topology.nodes {
        let log = super::agents::log(&node.name);
        let launch_with = super::agents::Launch {
            binary: &bins.agent,
            cgroup_root: &cg_root,
            controlplane: cp_addr,
            trust_bundle: &trust_bundle,
            dns_upstream,
            env: agent_env,
        };
        let cmd = super::agents::command(topology, &node.name, &launch_with)?;
        let pid = launch(cmd, &log)?;
        agents.push(AgentState {
            node: node.name.clone(),
            admin_socket: super::agents::state_dir(&node.name).join("admin.sock"),
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

    // Pods (a waypoint's too), through CNI: `bridge`, then `weft-cni`, whose ADD
    // returns once the node's agent has enrolled a pod of a mesh namespace.
    let mut pods: Vec<super::PodState> = Vec::new();
    for pod in &topology.pods {
        let node = topology
            .nodes
            .iter()
            .find(|n| n.name == pod.node)
            .expect("checked by the topology");
        let p = pods::create(pod, node, &cg_root)?;
        progress.say(format_args!(
            "pod {} on {}: {}{}",
            pod.key(),
            pod.node,
            p.ip,
            if pod.enrolled {
                " (in the mesh)"
            } else if pod.waypoint {
                " (waypoint)"
            } else {
                ""
            }
        ));
        pods.push(p);
    }

    // Their addresses, as the kubelet reports them; every agent has them (its Services'
    // endpoints) before anything else starts.
    let before = super::apply::version();
    documents::write(topology, &pods)?;
    wait_for(
        "the control plane to take the pods' addresses",
        Duration::from_secs(10),
        || super::apply::version() > before,
    )?;
    let expected = endpoints(topology, &pods);
    for agent in &agents {
        let client = api::admin::Client::new(&agent.admin_socket);
        wait_for(
            &format!("the pods' addresses on the agent of {}", agent.node),
            Duration::from_secs(10),
            || {
                client.get("/v1/config").is_ok_and(|r| {
                    expected
                        .iter()
                        .all(|(svc, addrs)| r.body["endpoints"][svc] == serde_json::json!(addrs))
                })
            },
        )?;
    }
    for agent in &agents {
        let expected = pods
            .iter()
            .filter(|p| p.pod.enrolled && agent.node == p.pod.node)
            .count();
        let listed = api::admin::Client::new(&agent.admin_socket)
            .get("/v1/enrollments")?
            .body
            .as_array()
            .map_or(0, Vec::len);
        if listed != expected {
            bail!(
                "the agent of {} enrolled {listed} pods through weft-cni, not {expected} (log: {})",
                agent.node,
                agent.log.display()
            );
        }
        progress.say(format_args!(
            "{listed} pods of {} enrolled by its agent through weft-cni",
            agent.node
        ));
    }

    // The sample app in every pod but the waypoints'.
    for p in pods.iter_mut().filter(|p| !p.pod.waypoint) {
        let args = vec![
            "serve".to_owned(),
            "--echo".to_owned(),
            format!("[::]:{ECHO_PORT}"),
            "--http".to_owned(),
            format!("[::]:{HTTP_PORT}"),
            "--grpc".to_owned(),
            format!("[::]:{GRPC_PORT}"),
            "--name".to_owned(),
            p.pod.name.clone(),
        ];
        p.app_pid = launch(
            in_pod(&p.cgroup, &netns_path(&p.netns), &bins.sample, &args),
            &p.log,
        )?;
    }
    for p in pods.iter().filter(|p| !p.pod.waypoint) {
        wait_for(
            &format!(
                "the sample app of {} (log: {})",
                p.pod.key(),
                p.log.display()
            ),
            Duration::from_secs(15),
            || {
                let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                alive(p.app_pid)
                    && log.contains("echo listening")
                    && log.contains("http listening")
                    && log.contains("grpc listening")
            },
        )?;
    }
    progress.say(format_args!(
        "sample app running in {} pods (echo :{ECHO_PORT}, http :{HTTP_PORT}, grpc :{GRPC_PORT})",
        pods.iter().filter(|p| !p.pod.waypoint).count()
    ));

    // Waypoints, in their own pods.
    let lab = waypoints::Launch {
        binary: &bins.waypoint,
        controlplane: cp_addr,
        env: waypoint_env,
        gateways: topology
            .waypoints
            .iter()
            .filter(|w| w.ingress)
            .map(|w| w.key())
            .collect(),
    };
    for p in pods.iter_mut().filter(|p| p.pod.waypoint) {
        lab.start(p)?;
    }
    for p in pods.iter().filter(|p| p.pod.waypoint) {
        waypoints::wait_ready(p)?;
        progress.say(format_args!(
            "waypoint {} ready at {}:15008 (pid {})",
            p.pod.key(),
            p.ip,
            p.app_pid
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
        waypoint_env: waypoint_env.to_vec(),
        agent_env: agent_env.to_vec(),
        controlplane_env: settings.controlplane.clone(),
        observability: None,
        dns_pid: Some(dns_pid),
        external_pid: Some(external_pid),
    };
    state.save()?;
    progress.say("lab is up");
    Ok(state)
}
