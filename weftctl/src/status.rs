//! `weftctl status` (the mesh at a glance: version, control plane, agents by node,
//! namespaces in the mesh, waypoints) and `weftctl check --cluster` (the post-flight
//! checks: each a line, a failure with its fix), both from one [`View`] of the cluster.

use std::time::{SystemTime, UNIX_EPOCH};

use agent::preflight::Check;

use crate::{
    cluster::View,
    output::{self, Format},
};

/// Roots expiring sooner than this are warned about.
const ROOTS_WARNING: u64 = 30 * 24 * 3600;

fn check(name: &'static str, required: bool, ok: bool, found: String, fix: &str) -> Check {
    Check {
        name,
        ok,
        required,
        found,
        fix: (!ok).then(|| fix.to_owned()),
    }
}

/// The post-flight checks of an installed mesh, as of `now` (seconds since the epoch).
pub fn postflight(v: &View, now: u64) -> Vec<Check> {
    let ns = &v.namespace;
    let mut out = Vec::new();
    out.push(check(
        "control plane ready",
        true,
        v.controlplane_desired > 0 && v.controlplane_ready == v.controlplane_desired,
        format!(
            "{}/{} replicas ready",
            v.controlplane_ready, v.controlplane_desired
        ),
        &format!(
            "kubectl -n {ns} describe deployment weft-controlplane; its log says what it waits for"
        ),
    ));
    let unread: Vec<String> = v
        .replicas
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.pod, r.error.as_ref()?)))
        .collect();
    out.push(check(
        "control plane status",
        true,
        unread.is_empty() && !v.replicas.is_empty(),
        if unread.is_empty() {
            format!("read from {} replicas", v.replicas.len())
        } else {
            unread.join("; ")
        },
        "each replica answers GET /debug/status on port 15014; see its log",
    ));
    let problems: Vec<&String> = v.replicas.iter().flat_map(|r| &r.problems).collect();
    out.push(check(
        "configuration",
        false,
        problems.is_empty(),
        match problems.first() {
            None => "every document is in force".to_owned(),
            Some(first) => format!("{} refused, e.g. {first}", problems.len()),
        },
        "fix the documents named (`weftctl validate -f FILE` checks them first); the last good configuration keeps serving",
    ));

    let ready_nodes: Vec<&str> = v
        .agents
        .iter()
        .filter(|a| a.ready)
        .map(|a| a.node.as_str())
        .collect();
    let without: Vec<&str> = v
        .nodes
        .iter()
        .map(String::as_str)
        .filter(|n| !ready_nodes.contains(n))
        .collect();
    out.push(check(
        "agents ready",
        true,
        without.is_empty() && !v.nodes.is_empty(),
        if without.is_empty() {
            format!(
                "{}/{} nodes have a ready agent",
                ready_nodes.len(),
                v.nodes.len()
            )
        } else {
            format!("no ready agent on {}", without.join(", "))
        },
        &format!("kubectl -n {ns} describe daemonset weft-agent; run `weftctl check` on the node"),
    ));
    let agents: Vec<_> = v.subscribers.iter().filter(|s| s.kind == "agent").collect();
    let unconnected: Vec<&str> = v
        .agents
        .iter()
        .map(|a| a.node.as_str())
        .filter(|n| !agents.iter().any(|s| s.connected && s.name == *n))
        .collect();
    out.push(check(
        "agents connected",
        true,
        unconnected.is_empty(),
        if unconnected.is_empty() {
            format!("{} agents subscribed to the control plane", v.agents.len())
        } else {
            format!("not connected: {}", unconnected.join(", "))
        },
        &format!(
            "read the agent's log on that node (kubectl -n {ns} logs <weft-agent pod>): it says why it cannot reach weft-controlplane:15012"
        ),
    ));
    let behind: Vec<String> = agents
        .iter()
        .filter(|s| s.connected && (!s.current || s.nacked.is_some()))
        .map(|s| match &s.nacked {
            Some(reason) => format!("{} refused: {reason}", s.name),
            None => format!(
                "{} at {} on {}",
                s.name,
                s.acked.map_or("nothing".into(), |a| a.to_string()),
                s.replica
            ),
        })
        .collect();
    out.push(check(
        "agents up to date",
        true,
        behind.is_empty(),
        if behind.is_empty() {
            "every agent has its replica's configuration version".to_owned()
        } else {
            behind.join("; ")
        },
        "an agent that refuses a configuration says why in its log, and keeps the last one it took",
    ));
    let unprogrammed: Vec<String> = v
        .waypoints
        .iter()
        .filter(|w| !w.programmed)
        .map(|w| format!("{}: {}", w.name, w.reason.as_deref().unwrap_or("-")))
        .collect();
    out.push(check(
        "waypoints programmed",
        true,
        unprogrammed.is_empty(),
        if unprogrammed.is_empty() {
            format!("{} waypoints", v.waypoints.len())
        } else {
            unprogrammed.join("; ")
        },
        "kubectl describe gateway NAME: its conditions say what the waypoint controller found",
    ));
    let (ok, required, found) = match v.roots_not_after {
        None => (
            false,
            true,
            format!("no readable roots in ConfigMap {ns}/weft-roots"),
        ),
        Some(at) if at <= now => (
            false,
            true,
            "the mesh's root certificate has expired".into(),
        ),
        Some(at) if at - now < ROOTS_WARNING => (
            false,
            false,
            format!("the root certificate expires in {}", output::until(at)),
        ),
        Some(at) => (
            true,
            true,
            format!("the root certificate expires in {}", output::until(at)),
        ),
    };
    out.push(check(
        "root certificate",
        required,
        ok,
        found,
        &format!(
            "the control plane writes weft-roots at start; rotate the CA (Secret {ns}/weft-root-ca) before it expires"
        ),
    ));
    out.push(check(
        "webhook CA bundle",
        true,
        v.webhook_ca_bundle,
        if v.webhook_ca_bundle {
            "set".to_owned()
        } else {
            "the ValidatingWebhookConfiguration has no CA bundle".to_owned()
        },
        "the control plane patches it at start: check its log for the webhook configuration",
    ));
    out
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// For a person.
pub fn human(v: &View, colour: bool) -> String {
    let mut out = format!(
        "Weft in {}: {}\n",
        v.namespace,
        v.image.as_deref().unwrap_or("no control plane Deployment")
    );
    let versions: Vec<String> = v
        .replicas
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.version.map_or("?".to_owned(), |n| n.to_string()),
                r.pod
            )
        })
        .collect();
    out.push_str(&format!(
        "{:<16}{}/{} ready; configuration version {}\n",
        "control plane",
        v.controlplane_ready,
        v.controlplane_desired,
        if versions.is_empty() {
            "-".to_owned()
        } else {
            versions.join(", ")
        }
    ));
    out.push_str(&format!(
        "{:<16}{}/{} ready on {} nodes\n",
        "agents",
        v.agents_ready,
        v.agents_desired,
        v.nodes.len()
    ));
    out.push_str(&format!(
        "  {:<20} {:<24} {:<6} {:<10} CONFIGURATION\n",
        "NODE", "AGENT", "READY", "CONNECTED"
    ));
    for node in &v.nodes {
        let agent = v.agents.iter().find(|a| a.node == *node);
        let sub = v
            .subscribers
            .iter()
            .find(|s| s.kind == "agent" && s.name == *node && s.connected);
        let yes_no = |b: bool| {
            if b {
                output::paint(colour, "32", "yes")
            } else {
                output::paint(colour, "31", "no ")
            }
        };
        let config = match sub {
            Some(s) if s.nacked.is_some() => output::paint(colour, "31", "refused"),
            Some(s) if s.current => "current".to_owned(),
            Some(s) => format!("behind ({})", s.acked.map_or("-".into(), |a| a.to_string())),
            None => "-".to_owned(),
        };
        out.push_str(&format!(
            "  {:<20} {:<24} {:<6} {:<10} {config}\n",
            node,
            agent.map_or("-", |a| a.pod.as_str()),
            agent.map_or_else(|| yes_no(false), |a| yes_no(a.ready)),
            yes_no(sub.is_some()),
        ));
    }
    out.push_str(&format!(
        "{:<16}{}\n",
        "in the mesh",
        if v.enrolled_namespaces.is_empty() {
            "no namespace yet (weftctl enroll NAMESPACE)".to_owned()
        } else {
            v.enrolled_namespaces.join(", ")
        }
    ));
    let waypoints: Vec<String> = v
        .waypoints
        .iter()
        .map(|w| {
            if w.programmed {
                format!("{} (programmed)", w.name)
            } else {
                format!(
                    "{} ({})",
                    w.name,
                    output::paint(colour, "33", "not programmed")
                )
            }
        })
        .collect();
    out.push_str(&format!(
        "{:<16}{}\n",
        "waypoints",
        if waypoints.is_empty() {
            "-".to_owned()
        } else {
            waypoints.join(", ")
        }
    ));
    out
}

async fn view(weft_namespace: &str, context: Option<&str>) -> anyhow::Result<View> {
    let client = crate::kubeconfig::client(context).await?;
    crate::cluster::read(&client, weft_namespace).await
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// `weftctl status`.
pub fn status(
    format: Option<Format>,
    weft_namespace: &str,
    context: Option<&str>,
) -> anyhow::Result<()> {
    let v = block_on(view(weft_namespace, context))?;
    print!("{}", output::render(format, &v, |colour| human(&v, colour)));
    Ok(())
}

/// `weftctl check --cluster`: `Ok(false)` when a required check failed.
pub fn check_cluster(
    format: Option<Format>,
    weft_namespace: &str,
    context: Option<&str>,
) -> anyhow::Result<bool> {
    let v = block_on(view(weft_namespace, context))?;
    let checks = postflight(&v, now());
    let passed = checks.iter().all(|c| c.ok || !c.required);
    let report = serde_json::json!({"cluster": checks, "passed": passed});
    print!(
        "{}",
        output::render(format, &report, |colour| {
            let verdict = if passed {
                "the mesh is up: every check passed"
            } else {
                "the mesh is not healthy: see the fixes above"
            };
            format!("{}{verdict}\n", crate::check::table(&checks, colour))
        })
    );
    Ok(passed)
}

#[cfg(test)]
mod tests;
