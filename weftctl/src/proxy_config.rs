//! `weftctl proxy-config NAMESPACE/POD`: what the agent of the pod's node holds for it —
//! its place in the mesh, identity and certificate, the policies that apply to it and
//! the Services it is behind. On a cluster the agent is reached through the API server's
//! pod proxy (its metrics port, 15020); in the lab (`weftctl lab proxy-config`) through
//! its admin socket.

use anyhow::Context as _;
use api::admin::PodConfig;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use crate::output::{self, Format};

/// The agent DaemonSet's pods carry this label (see `install::agent`).
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=weft-agent";

/// `namespace/name`.
pub fn parse_pod(pod: &str) -> anyhow::Result<(&str, &str)> {
    let (ns, name) = pod
        .split_once('/')
        .with_context(|| format!("{pod:?}: expected NAMESPACE/POD"))?;
    api::names::dns_label(ns).map_err(|e| anyhow::anyhow!("namespace {ns:?}: {e}"))?;
    api::names::dns_subdomain(name).map_err(|e| anyhow::anyhow!("pod {name:?}: {e}"))?;
    Ok((ns, name))
}

/// The node of pod `namespace/name` and the agent pod that serves it.
pub async fn node_agent(
    client: &Client,
    weft_namespace: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .with_context(|| format!("the cluster has no pod {namespace}/{name}"))?;
    let node = pod
        .spec
        .and_then(|s| s.node_name)
        .with_context(|| format!("pod {namespace}/{name} is not scheduled to a node yet"))?;
    let agents = Api::<Pod>::namespaced(client.clone(), weft_namespace)
        .list(
            &ListParams::default()
                .labels(AGENT_SELECTOR)
                .fields(&format!("spec.nodeName={node}")),
        )
        .await?;
    let agent = agents
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .next()
        .with_context(|| {
            format!(
                "no Weft agent runs on node {node} (the DaemonSet weft-agent in {weft_namespace})"
            )
        })?;
    Ok((node, agent))
}

/// Asks the agent of the pod's node, on the cluster, through the API server.
pub async fn fetch(
    client: &Client,
    weft_namespace: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<PodConfig> {
    let (node, agent) = node_agent(client, weft_namespace, namespace, name).await?;
    let path = format!(
        "/api/v1/namespaces/{weft_namespace}/pods/{agent}:15020/proxy/v1/pods/{namespace}/{name}"
    );
    let request = http::Request::get(&path).body(Vec::new())?;
    let text = client
        .request_text(request)
        .await
        .with_context(|| format!("asking the agent {weft_namespace}/{agent} of node {node}"))?;
    serde_json::from_str(&text).with_context(|| {
        format!("the agent {agent} answered something else than a pod's configuration: {text}")
    })
}

/// For a person: one line per fact.
pub fn human(c: &PodConfig, colour: bool) -> String {
    let mesh = if c.in_mesh {
        output::paint(colour, "32", "in the mesh")
    } else {
        output::paint(colour, "33", "outside the mesh")
    };
    let captured = match &c.enrollment {
        Some(e) => format!(
            "enrolled (netns {}, cookie {})",
            e.netns.display(),
            e.cookie
        ),
        None => "not enrolled".to_owned(),
    };
    let certificate = match &c.certificate {
        Some(cert) => match (cert.state.as_str(), cert.not_after) {
            ("ready", Some(at)) => format!("ready, expires in {}", output::until(at)),
            (state, _) => output::paint(colour, "31", state),
        },
        None => "-".to_owned(),
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let lines = [
        ("pod", c.pod.clone()),
        ("node", c.node.clone()),
        ("mesh", mesh),
        ("capture", captured),
        ("identity", c.identity.clone()),
        ("certificate", certificate),
        ("addresses", list(&c.addresses)),
        ("waypoint", c.waypoint.clone().unwrap_or_else(|| "-".into())),
        ("inbound plaintext", c.peer_authentication.clone()),
        ("policies", list(&c.policies)),
        ("services", list(&c.services)),
        ("config version", c.config_version.to_string()),
    ];
    lines
        .iter()
        .map(|(k, v)| format!("{k:<18} {v}\n"))
        .collect()
}

/// The command on a cluster.
pub fn run(
    pod: &str,
    format: Option<Format>,
    weft_namespace: &str,
    context: Option<&str>,
) -> anyhow::Result<()> {
    let (ns, name) = parse_pod(pod)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let config = runtime.block_on(async {
        let client = crate::kubeconfig::client(context).await?;
        fetch(&client, weft_namespace, ns, name).await
    })?;
    print!(
        "{}",
        output::render(format, &config, |colour| human(&config, colour))
    );
    Ok(())
}

#[cfg(test)]
mod tests;
