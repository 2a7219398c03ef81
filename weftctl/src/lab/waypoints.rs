//! Waypoints in the lab: each runs `weft-waypoint` in a pod of its own (outside the
//! mesh: it speaks HBONE itself) with its node's bootstrap token, and is described to
//! the control plane by its Gateway, its Service and the label on the Services bound
//! to it. `weftctl waypoint apply|list|delete` edits them in a running lab.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context as _, bail};

use super::{
    PodState, State, alive, documents, in_pod, launch, netns_path, pods, run_dir, sibling,
    topology::{Ipv4Net, Waypoint},
    wait_for,
};

/// What a waypoint process needs from the lab.
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub controlplane: Ipv4Addr,
    /// `WEFT_…` settings for every waypoint.
    pub env: &'a [(String, String)],
    /// `namespace/name` of the ingress gateways among them.
    pub gateways: Vec<String>,
}

impl Launch<'_> {
    /// Starts the waypoint of pod `p`.
    pub fn start(&self, p: &mut PodState) -> anyhow::Result<()> {
        let mut cmd = in_pod(&p.cgroup, &netns_path(&p.netns), self.binary, &[]);
        cmd.env("WEFT_WAYPOINT_NAME", &p.pod.name)
            .env("WEFT_WAYPOINT_NAMESPACE", &p.pod.namespace)
            .env("WEFT_SERVICE_ACCOUNT", &p.pod.service_account)
            .env("WEFT_CONTROLPLANE", format!("{}:15012", self.controlplane))
            .env(
                "WEFT_CONTROLPLANE_CA",
                run_dir().join("controlplane/state/ca/trust-bundle.pem"),
            )
            .env(
                "WEFT_TOKEN_FILE",
                run_dir().join("agents").join(&p.pod.node).join("token"),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.gateways.contains(&p.pod.key()) {
            super::ingress::certificates()?;
            cmd.envs(super::ingress::env());
        }
        p.app_pid = launch(cmd, &p.log)?;
        Ok(())
    }
}

/// Waits until the waypoint of `p` has its certificate and configuration.
pub fn wait_ready(p: &PodState) -> anyhow::Result<()> {
    wait_for(
        &format!("the waypoint {} (log: {})", p.pod.key(), p.log.display()),
        Duration::from_secs(30),
        || alive(p.app_pid) && is_ready(p),
    )
}

fn is_ready(p: &PodState) -> bool {
    std::fs::read_to_string(&p.log)
        .is_ok_and(|l| l.contains("certificate and configuration: ready"))
}

/// The waypoints of the lab as a table.
pub fn table(state: &State) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "{:<22} {:<8} {:<14} {:<14} {:<9} SERVICES",
        "WAYPOINT", "NODE", "IP", "VIP", "STATUS"
    )?;
    for w in &state.topology.waypoints {
        let pod = state
            .pods
            .iter()
            .find(|p| p.pod.waypoint && p.pod.key() == w.key());
        let status = match pod {
            Some(p) if alive(p.app_pid) && is_ready(p) => "ready",
            Some(p) if alive(p.app_pid) => "starting",
            _ => "DOWN",
        };
        writeln!(
            out,
            "{:<22} {:<8} {:<14} {:<14} {:<9} {}",
            w.key(),
            w.node,
            pod.map_or("-".to_owned(), |p| p.ip.to_string()),
            w.vip,
            status,
            if w.services.is_empty() {
                "-".to_owned()
            } else {
                w.services.join(", ")
            }
        )?;
    }
    Ok(out)
}

/// The first address of the service subnet, from `.100` on, that no Service uses.
fn free_vip(state: &State) -> anyhow::Result<Ipv4Addr> {
    let subnet: Ipv4Net = state
        .topology
        .service_subnet
        .parse()
        .map_err(anyhow::Error::msg)?;
    let used = |ip: Ipv4Addr| {
        state.topology.services.iter().any(|s| s.vip == ip)
            || state.topology.waypoints.iter().any(|w| w.vip == ip)
    };
    (100..subnet.capacity())
        .map(|n| subnet.host(n))
        .find(|ip| !used(*ip))
        .context("the service subnet has no free address")
}

/// `weftctl waypoint apply`: creates the waypoint (pod, process, documents) or, when
/// it exists, binds it to `services` instead of what it had.
pub fn apply(
    namespace: &str,
    name: &str,
    services: &[String],
    node: Option<&str>,
) -> anyhow::Result<()> {
    let mut state = super::running_lab()?;
    let t = &state.topology;
    if !t.namespaces.iter().any(|n| n.name == namespace) {
        bail!("the lab has no namespace {namespace:?}");
    }
    for s in services {
        if !t
            .services
            .iter()
            .any(|x| x.namespace == namespace && &x.name == s)
        {
            bail!("the lab has no service {namespace}/{s}");
        }
        if let Some(other) = t
            .waypoints
            .iter()
            .find(|w| w.namespace == namespace && w.name != name && w.services.contains(s))
        {
            bail!(
                "{namespace}/{s} is bound to waypoint {} already",
                other.key()
            );
        }
    }
    if let Some(w) = state
        .topology
        .waypoints
        .iter_mut()
        .find(|w| w.namespace == namespace && w.name == name)
    {
        w.services = services.to_vec();
        documents::write(&state.topology, &state.pods)?;
        state.save()?;
        println!(
            "waypoint {namespace}/{name} now serves: {}",
            describe(services)
        );
        return Ok(());
    }
    let t = &state.topology;
    if t.pods
        .iter()
        .any(|p| p.namespace == namespace && p.name == name)
        || t.services
            .iter()
            .any(|s| s.namespace == namespace && s.name == name)
    {
        bail!("{namespace}/{name} is the name of a pod or service of the lab already");
    }
    let node = match node {
        Some(n) => t
            .nodes
            .iter()
            .find(|x| x.name == n)
            .with_context(|| format!("the lab has no node {n:?}"))?,
        None => t.nodes.first().context("the lab has no node")?,
    }
    .clone();
    let waypoint = Waypoint {
        ingress: false,
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        node: node.name.clone(),
        vip: free_vip(&state)?,
        services: services.to_vec(),
    };
    state.topology.pods.push(waypoint.pod());
    state.topology.waypoints.push(waypoint.clone());
    // Scheduled first, so that the node's agent knows the pod when weft-cni asks.
    documents::write(&state.topology, &state.pods)?;
    state
        .pods
        .push(pods::create(&waypoint.pod(), &node, &state.cgroup_root)?);
    let (binary, controlplane) = (
        sibling("weft-waypoint")?,
        super::controlplane_address(&state.topology)?,
    );
    // The control plane learns the Gateway and its workload before the waypoint asks.
    documents::write(&state.topology, &state.pods)?;
    let env = state.waypoint_env.clone();
    let pod = state
        .pods
        .last_mut()
        .context("the waypoint's pod is gone")?;
    Launch {
        binary: &binary,
        controlplane,
        env: &env,
        gateways: Vec::new(),
    }
    .start(pod)?;
    let pod = pod.clone();
    state.save()?;
    if state.observability.is_some() {
        super::observability::write_targets(&state)?;
    }
    wait_ready(&pod)?;
    println!(
        "waypoint {} ready on {} at {} (Service {}); serves: {}",
        waypoint.key(),
        waypoint.node,
        pod.ip,
        waypoint.vip,
        describe(services)
    );
    Ok(())
}

fn describe(services: &[String]) -> String {
    if services.is_empty() {
        "no service yet (`--for SERVICE`)".to_owned()
    } else {
        services.join(", ")
    }
}

/// `weftctl waypoint list`.
pub fn list() -> anyhow::Result<()> {
    let state = super::running_lab()?;
    if state.topology.waypoints.is_empty() {
        println!(
            "the lab has no waypoint (`weftctl waypoint apply -n NAMESPACE --name NAME --for SERVICE`)"
        );
        return Ok(());
    }
    print!("{}", table(&state)?);
    Ok(())
}

/// The configuration version of each agent.
fn agent_versions(state: &State) -> Vec<u64> {
    state
        .agents
        .iter()
        .map(|a| {
            api::admin::Client::new(&a.admin_socket)
                .get("/v1/config")
                .ok()
                .and_then(|r| r.body["version"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// `weftctl waypoint delete`: unbinds its Services and waits until the agents route
/// them straight to their endpoints, then removes its documents, process and pod (so
/// no client is sent to a waypoint that is gone).
pub fn delete(namespace: &str, name: &str) -> anyhow::Result<()> {
    let mut state = super::running_lab()?;
    let Some(i) = state
        .topology
        .waypoints
        .iter()
        .position(|w| w.namespace == namespace && w.name == name)
    else {
        bail!("the lab has no waypoint {namespace}/{name}");
    };
    let before = agent_versions(&state);
    state.topology.waypoints[i].services.clear();
    documents::write(&state.topology, &state.pods)?;
    state.save()?;
    wait_for(
        "the agents to take the unbinding",
        Duration::from_secs(10),
        || {
            agent_versions(&state)
                .iter()
                .zip(&before)
                .all(|(now, was)| now > was)
        },
    )?;
    let waypoint = state.topology.waypoints.remove(i);
    let key = waypoint.key();
    state
        .topology
        .pods
        .retain(|p| !(p.waypoint && p.key() == key));
    let pod = state
        .pods
        .iter()
        .position(|p| p.pod.waypoint && p.pod.key() == key)
        .map(|i| state.pods.remove(i));
    documents::write(&state.topology, &state.pods)?;
    state.save()?;
    if state.observability.is_some() {
        super::observability::write_targets(&state)?;
    }
    if let Some(p) = pod {
        let node = state.topology.nodes.iter().find(|n| n.name == p.pod.node);
        for problem in pods::remove(&p, node)? {
            eprintln!("{problem}");
        }
    }
    println!("waypoint {key} deleted; its services go straight to their endpoints again");
    Ok(())
}
