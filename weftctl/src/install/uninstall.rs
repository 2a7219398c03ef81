//! `weftctl uninstall`: takes Weft off the cluster so that nothing of it stays in the
//! way of pods. First the agents go, then the node cleanup runs on every node (capture
//! out of the kernel, `weft-cni` out of the CNI configuration) and is waited for, then
//! everything `weftctl install` applied goes, last first. Weft's CRDs (and with them
//! every policy and Workload document) stay unless asked for (`--crds`). Running it
//! again finds what is gone and says so.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{Api, Client, api::DeleteParams};
use serde_json::Value;

use super::{Values, agent, apply, cleanup, manifest, render};

#[derive(Debug, Clone)]
pub struct Options {
    /// Remove Weft's CRDs too (and every document of their kinds).
    pub crds: bool,
    /// How often the node cleanup's progress is read, and how long it may take.
    pub poll: Duration,
    pub timeout: Duration,
}

async fn delete(
    client: &Client,
    object: &Value,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<()> {
    let (api, name) = apply::api_for(client, object);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => progress(&format!("deleted {}", apply::describe(object))),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            progress(&format!("{} was not there", apply::describe(object)))
        }
        Err(e) => anyhow::bail!("deleting {}: {e}", apply::describe(object)),
    }
    Ok(())
}

/// Waits until the node cleanup has run on every node it is scheduled to.
async fn wait_for_cleanup(
    client: &Client,
    v: &Values,
    o: &Options,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &v.namespace);
    let deadline = Instant::now() + o.timeout;
    let mut last = None;
    loop {
        let ds = api.get(cleanup::NAME).await?;
        let generation = ds.metadata.generation.unwrap_or(0);
        let (observed, desired, ready, updated) = ds
            .status
            .map(|s| {
                (
                    s.observed_generation.unwrap_or(0),
                    s.desired_number_scheduled,
                    s.number_ready,
                    s.updated_number_scheduled.unwrap_or(0),
                )
            })
            .unwrap_or((0, 0, 0, 0));
        if observed >= generation && generation > 0 && ready == desired && updated == desired {
            progress(&format!("the node cleanup ran on {desired} nodes"));
            return Ok(());
        }
        if last != Some(ready) {
            progress(&format!("node cleanup: {ready}/{desired} nodes done"));
            last = Some(ready);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the node cleanup ran on {ready} of {desired} nodes within {:?}; see `kubectl -n {} get pods -l app.kubernetes.io/name={}` and run `weftctl uninstall` again",
                o.timeout,
                v.namespace,
                cleanup::NAME
            );
        }
        tokio::time::sleep(o.poll).await;
    }
}

pub async fn uninstall_all(
    client: &Client,
    v: &Values,
    o: &Options,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    let objects = render(v);
    let agents = manifest(&agent::daemon_set(v));
    delete(client, &agents, &mut progress).await?;
    let node_cleanup = manifest(&cleanup::daemon_set(v));
    apply::apply_all(client, std::slice::from_ref(&node_cleanup), &mut progress).await?;
    wait_for_cleanup(client, v, o, &mut progress).await?;
    delete(client, &node_cleanup, &mut progress).await?;
    let crds = super::crds().len();
    for (i, object) in objects.iter().enumerate().rev() {
        if object["kind"] == "DaemonSet" || (i < crds && !o.crds) {
            continue;
        }
        delete(client, object, &mut progress).await?;
    }
    if !o.crds {
        progress("kept Weft's CRDs and their documents (`--crds` removes them)");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
