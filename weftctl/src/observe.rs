//! `weftctl top` and `weftctl logs --access NS/POD` on a cluster: what `lab top` and
//! `lab logs` show, read through the API server — every agent's and waypoint's metrics
//! through its pod proxy (port 15020), and the access log lines of the pod's node agent
//! and of the waypoints from their containers' logs.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

use crate::{
    lab::{logs, top},
    output::{self, Format},
};

use crate::proxy_config::AGENT_SELECTOR;
/// Waypoint pods, of any namespace (see the control plane's waypoint controller).
const WAYPOINT_SELECTOR: &str = "gateway.networking.k8s.io/gateway-name";

/// `(namespace, name)` of the running pods that export mesh metrics.
async fn exporters(client: &Client, weft_namespace: &str) -> anyhow::Result<Vec<(String, String)>> {
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let key = |p: &Pod| {
        (
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default(),
        )
    };
    let agents = Api::<Pod>::namespaced(client.clone(), weft_namespace)
        .list(&ListParams::default().labels(AGENT_SELECTOR))
        .await
        .context("listing the agents")?;
    let waypoints = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(WAYPOINT_SELECTOR))
        .await
        .context("listing the waypoints")?;
    Ok(agents
        .items
        .iter()
        .chain(&waypoints.items)
        .filter(|p| running(p))
        .map(key)
        .collect())
}

/// Every exporter's metrics now, as samples. One that does not answer is left out
/// (its rates are missing this round) and said on standard error.
pub async fn read(client: &Client, weft_namespace: &str) -> anyhow::Result<Vec<top::Sample>> {
    let mut out = Vec::new();
    for (ns, name) in exporters(client, weft_namespace).await? {
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}:15020/proxy/metrics");
        match client
            .request_text(http::Request::get(&path).body(Vec::new())?)
            .await
        {
            Ok(text) => out.extend(top::parse(&text)),
            Err(e) => eprintln!("{ns}/{name}: its metrics: {e}"),
        }
    }
    Ok(out)
}

/// `weftctl top`.
pub fn top(
    interval: Duration,
    count: u32,
    format: Option<Format>,
    weft_namespace: &str,
    context: Option<&str>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::kubeconfig::client(context).await?;
        let mut before = read(&client, weft_namespace).await?;
        let mut n = 0;
        loop {
            tokio::time::sleep(interval).await;
            let after = read(&client, weft_namespace).await?;
            let rows = top::rates(&before, &after, interval.as_secs_f64());
            print!(
                "{}",
                output::render(format, &rows, |c| top::human(&rows, c))
            );
            before = after;
            n += 1;
            if count != 0 && n >= count {
                return Ok(());
            }
            if format.is_none() {
                println!();
            }
        }
    })
}

/// The access log lines about `namespace/name` from its node's agent and the
/// waypoints, each container's in the order it wrote them.
pub async fn access_lines(
    client: &Client,
    weft_namespace: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let (_, agent) =
        crate::proxy_config::node_agent(client, weft_namespace, namespace, name).await?;
    let waypoints = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(WAYPOINT_SELECTOR))
        .await?;
    let sources = std::iter::once((weft_namespace.to_owned(), agent, "agent")).chain(
        waypoints.items.iter().map(|p| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
                "waypoint",
            )
        }),
    );
    let workload = format!("{namespace}/{name}");
    let mut out = Vec::new();
    for (ns, pod_name, container) in sources {
        let text = Api::<Pod>::namespaced(client.clone(), &ns)
            .logs(
                &pod_name,
                &kube::api::LogParams {
                    container: Some(container.to_owned()),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("the log of {ns}/{pod_name}"))?;
        out.extend(
            text.lines()
                .filter(|l| logs::about(l, &workload))
                .map(str::to_owned),
        );
    }
    Ok(out)
}

/// `weftctl logs --access NAMESPACE/POD`.
pub fn access_log(pod: &str, weft_namespace: &str, context: Option<&str>) -> anyhow::Result<()> {
    let (ns, name) = crate::proxy_config::parse_pod(pod)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let lines = runtime.block_on(async {
        let client = crate::kubeconfig::client(context).await?;
        access_lines(&client, weft_namespace, ns, name).await
    })?;
    for l in &lines {
        println!("{l}");
    }
    if lines.is_empty() {
        eprintln!("no access log lines about {pod} yet");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
