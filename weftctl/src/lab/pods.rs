//! One pod of the lab: a network namespace attached to its node by the CNI plugins
//! (as a container runtime attaches it: `bridge` with `host-local`, then `weft-cni`,
//! which has the node's agent enroll a pod of a mesh namespace before ADD returns), a
//! cgroup under its node's, and back again.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{
    PodState, cni, ip, netns_path, node_netns, pod_netns, run_dir,
    topology::{Ipv4Net, Node, Pod},
};

fn attachment<'a>(
    pod: &Pod,
    container_id: &'a str,
    (pod_ns, node_ns): (&'a Path, &'a Path),
    ifname: &'a str,
    plugin_dirs: &'a [PathBuf],
) -> cni::Attachment<'a> {
    cni::Attachment {
        container_id,
        netns: pod_ns,
        ifname,
        args: format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
            pod.namespace, pod.name
        ),
        runtime_netns: node_ns,
        plugin_dirs,
    }
}

/// The admin socket of `node`'s agent, which its `weft-cni` asks.
pub fn agent_socket(node: &str) -> PathBuf {
    run_dir().join("agents").join(node).join("admin.sock")
}

fn network(node: &Node) -> anyhow::Result<serde_json::Value> {
    let subnet: Ipv4Net = node.pod_subnet.parse().map_err(anyhow::Error::msg)?;
    Ok(cni::pod_network(
        &node.pod_subnet,
        subnet.host(1),
        &run_dir().join("cni").join(&node.name),
        Some(&agent_socket(&node.name)),
    ))
}

/// Creates `pod` on `node`: namespace, cgroup, CNI ADD of loopback and the pod network.
pub fn create(pod: &Pod, node: &Node, cgroup_root: &Path) -> anyhow::Result<PodState> {
    let ns = pod_netns(pod);
    ip(&["netns", "add", &ns])?;
    let cgroup = cgroup_root
        .join("nodes")
        .join(&pod.node)
        .join(format!("{}.{}", pod.namespace, pod.name));
    std::fs::create_dir_all(&cgroup)
        .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
    let node_ns = netns_path(&node_netns(&node.name));
    let pod_ns = netns_path(&ns);
    let dirs = cni::plugin_dirs();
    cni::add(
        &cni::loopback(),
        &attachment(pod, &ns, (&pod_ns, &node_ns), "lo", &dirs),
    )?;
    let result = cni::add(
        &network(node)?,
        &attachment(pod, &ns, (&pod_ns, &node_ns), "eth0", &dirs),
    )?;
    let ip: Ipv4Addr = cni::first_ipv4(&result).context("the CNI result has no IPv4 address")?;
    Ok(PodState {
        pod: pod.clone(),
        netns: ns,
        cgroup,
        ip,
        app_pid: 0,
        log: run_dir()
            .join("logs")
            .join(format!("{}.{}.log", pod.namespace, pod.name)),
        cni_result: result,
    })
}

/// Gives the pod's address back (CNI DEL, as a runtime would); problems are returned
/// as text for the caller to report, never stopping the removal.
pub fn release(p: &PodState, node: Option<&Node>) -> Vec<String> {
    let mut problems = Vec::new();
    let node_ns = netns_path(&node_netns(&p.pod.node));
    let pod_ns = netns_path(&p.netns);
    if !node_ns.exists() || !pod_ns.exists() {
        return problems;
    }
    let dirs = cni::plugin_dirs();
    if let Some(node) = node {
        match network(node) {
            Ok(net) => {
                let at = attachment(&p.pod, &p.netns, (&pod_ns, &node_ns), "eth0", &dirs);
                if let Err(e) = cni::del(&net, &at, Some(&p.cni_result)) {
                    problems.push(format!("CNI DEL of {}: {e}", p.pod.key()));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let at = attachment(&p.pod, &p.netns, (&pod_ns, &node_ns), "lo", &dirs);
    let _ = cni::del(&cni::loopback(), &at, None);
    problems
}

/// Stops the pod's processes (its cgroup's), releases its address and removes its
/// namespace and cgroup.
pub fn remove(p: &PodState, node: Option<&Node>) -> anyhow::Result<Vec<String>> {
    if p.cgroup.exists() {
        let _ = std::fs::write(p.cgroup.join("cgroup.kill"), "1");
        let events = p.cgroup.join("cgroup.events");
        super::wait_for(
            &format!("the processes of {} to exit", p.pod.key()),
            std::time::Duration::from_secs(10),
            || std::fs::read_to_string(&events).is_ok_and(|e| e.contains("populated 0")),
        )?;
    }
    let problems = release(p, node);
    ip(&["netns", "del", &p.netns])?;
    if p.cgroup.exists() {
        std::fs::remove_dir(&p.cgroup)
            .with_context(|| format!("removing cgroup {}", p.cgroup.display()))?;
    }
    Ok(problems)
}
