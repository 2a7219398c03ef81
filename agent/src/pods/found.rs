//! Pods that were running before this node's CNI plugin was installed (or while the
//! agent lost its records) were never announced. When the configuration says such a
//! pod belongs in the mesh, its network namespace is found by its address: among the
//! namespaces the container runtime names in `/run/netns` (containerd and CRI-O keep
//! their pod sandboxes' there) and those of the processes the agent sees
//! (`/proc/<pid>/ns/net`, every process of the node with `hostPID`), the one that
//! holds an address of the pod's Workload.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
};

use super::Record;
use crate::{
    discovery::Config,
    enroll::Enrollments,
    netns::{self, NetnsId},
};

/// The pods of `config` that belong in the mesh, were never announced and are not
/// enrolled, with the namespace each was found in; keyed `found:<namespace>/<pod>`.
pub(super) async fn unannounced(
    config: &Config,
    records: &BTreeMap<String, Record>,
    enrollments: &Enrollments,
) -> Vec<(String, Record)> {
    let known: BTreeSet<(String, String)> = records
        .values()
        .map(|r| (r.namespace.clone(), r.pod.clone()))
        .chain(
            enrollments
                .workloads()
                .into_iter()
                .map(|(_, w)| (w.namespace, w.name)),
        )
        .collect();
    let wanted: Vec<(&String, &String, &Vec<IpAddr>)> = config
        .workloads
        .iter()
        .filter(|((kind, ns, name), w)| {
            kind == "Workload"
                && w.enrolled
                && !w.addresses.is_empty()
                && config.namespaces.get(ns) == Some(&true)
                && !known.contains(&(ns.clone(), name.clone()))
        })
        .map(|((_, ns, name), w)| (ns, name, &w.addresses))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let namespaces = process_namespaces().await;
    let mut out = Vec::new();
    for (ns, name, addresses) in wanted {
        let Some((path, _)) = namespaces
            .iter()
            .find(|(_, held)| held.iter().any(|a| addresses.contains(a)))
        else {
            tracing::debug!(pod = %format!("{ns}/{name}"), "no namespace on this node holds the pod's address yet");
            continue;
        };
        tracing::info!(pod = %format!("{ns}/{name}"), netns = %path.display(), "found a pod that was never announced");
        out.push((
            format!("found:{ns}/{name}"),
            Record {
                netns: path.clone(),
                namespace: ns.clone(),
                pod: name.clone(),
                found: true,
            },
        ));
    }
    out
}

/// The folders where runtimes name network namespaces (one is often a link to the
/// other: each namespace is looked at once).
const NAMED: &[&str] = &["/run/netns", "/var/run/netns"];

/// Every network namespace named by a runtime or entered by a process, other than the
/// agent's own, once each (by its name when it has one), with its addresses.
async fn process_namespaces() -> Vec<(PathBuf, Vec<IpAddr>)> {
    let own: Option<NetnsId> = netns::open("/proc/self/ns/net".as_ref())
        .ok()
        .map(|(_, id)| id);
    let named = NAMED
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path());
    let entered = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for path in named.chain(entered) {
        // Namespaces and processes come and go while this runs; those gone are skipped.
        let Ok((_, id)) = netns::open(&path) else {
            continue;
        };
        if Some(id) == own || !seen.insert(id) {
            continue;
        }
        if let Ok(addresses) = netns::addresses_of(&path).await {
            out.push((path, addresses));
        }
    }
    out
}
