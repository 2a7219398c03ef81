//! `weftctl lab enroll NS [--off]`: the lab's `weftctl enroll`. It sets (or removes)
//! the namespace's `weft.dev/mesh: enabled` label in the documents the lab's control
//! plane reads; the node agents then enroll (or unenroll) the namespace's running pods
//! by themselves, as they do on a cluster when the label changes.

use std::time::Duration;

use anyhow::{Context as _, bail};

use super::{documents, topology::MESH_LABEL, wait_for};

pub fn enroll(namespace: &str, on: bool) -> anyhow::Result<()> {
    let mut state = super::running_lab()?;
    let ns = state
        .topology
        .namespaces
        .iter_mut()
        .find(|n| n.name == namespace)
        .with_context(|| format!("the lab has no namespace {namespace:?}"))?;
    if on {
        ns.labels
            .insert(MESH_LABEL.to_owned(), "enabled".to_owned());
    } else {
        ns.labels.remove(MESH_LABEL);
    }
    let in_mesh = |labels: &std::collections::BTreeMap<String, String>| {
        on && labels.get(MESH_LABEL).map(String::as_str) != Some("disabled")
    };
    for pod in state
        .topology
        .pods
        .iter_mut()
        .filter(|p| p.namespace == namespace && !p.waypoint)
    {
        pod.enrolled = in_mesh(&pod.labels);
    }
    for p in state
        .pods
        .iter_mut()
        .filter(|p| p.pod.namespace == namespace && !p.pod.waypoint)
    {
        p.pod.enrolled = in_mesh(&p.pod.labels);
    }
    documents::write(&state.topology, &state.pods)?;
    state.save()?;

    // The agents follow: each has enrolled the lab's pods of its node that the mesh
    // has now, and none of the others (what else they enrolled is not the lab's).
    for agent in &state.agents {
        let of_node: Vec<(std::path::PathBuf, bool)> = state
            .pods
            .iter()
            .filter(|p| p.pod.node == agent.node)
            .map(|p| (super::netns_path(&p.netns), p.pod.enrolled))
            .collect();
        let client = api::admin::Client::new(&agent.admin_socket);
        let follows = || {
            client.get("/v1/enrollments").is_ok_and(|r| {
                let listed: Vec<std::path::PathBuf> = r
                    .body
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["netns"].as_str().map(Into::into))
                    .collect();
                of_node
                    .iter()
                    .all(|(path, enrolled)| listed.contains(path) == *enrolled)
            })
        };
        if wait_for(
            &format!("the agent of {} to follow the label", agent.node),
            Duration::from_secs(15),
            follows,
        )
        .is_err()
        {
            bail!(
                "the agent of {} did not follow the label of {namespace} within 15 s (log: {})",
                agent.node,
                agent.log.display()
            );
        }
    }
    let count = state
        .pods
        .iter()
        .filter(|p| p.pod.namespace == namespace && p.pod.enrolled)
        .count();
    if on {
        println!(
            "namespace {namespace} is in the mesh: {count} pods enrolled by their nodes' agents"
        );
    } else {
        println!("namespace {namespace} left the mesh: its pods were unenrolled");
    }
    Ok(())
}
