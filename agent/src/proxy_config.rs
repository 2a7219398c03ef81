//! What this agent holds for one pod of its node (`weftctl proxy-config`): the pod's
//! place in the mesh as the configuration says, its enrollment, its certificate, and
//! the policies and Services that concern it.

use std::time::UNIX_EPOCH;

use api::admin::{Certificate, PodConfig};

use crate::{
    discovery::Config,
    enroll::{Enrollments, certificate_state},
    policy::{PeerMode, applying, peer_mode},
};

/// The pod `namespace/name`, when the configuration has it (a pod of this node).
pub fn pod_config(
    config: &Config,
    enrollments: &Enrollments,
    namespace: &str,
    name: &str,
) -> Option<PodConfig> {
    let key = ("Workload".to_owned(), namespace.to_owned(), name.to_owned());
    let w = config.workloads.get(&key)?;
    let me = format!("{namespace}/{name}");
    let enrollment = enrollments.of_workload(namespace, name);
    let certificate = match (enrollments.certs(), &enrollment) {
        (Some(certs), Some(_)) => Some(Certificate {
            state: certificate_state(certs, &w.identity).to_owned(),
            not_after: certs.current(&w.identity).ok().and_then(|issued| {
                issued
                    .not_after
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
        }),
        _ => None,
    };
    let mut services: Vec<String> = config
        .services
        .iter()
        .filter(|(_, s)| s.endpoints.iter().any(|e| e.workload == me))
        .map(|((_, ns, n), s)| match &s.waypoint {
            Some(w) => format!("{ns}/{n} (waypoint {w})"),
            None => format!("{ns}/{n}"),
        })
        .collect();
    services.sort();
    let peer = match peer_mode(config, namespace, &w.labels) {
        PeerMode::Strict => "STRICT",
        PeerMode::Permissive => "PERMISSIVE",
    };
    Some(PodConfig {
        pod: me,
        node: w.node.clone(),
        in_mesh: w.enrolled,
        identity: w.identity.to_string(),
        addresses: w.addresses.iter().map(ToString::to_string).collect(),
        enrollment,
        certificate,
        waypoint: w.waypoint.clone(),
        peer_authentication: peer.to_owned(),
        policies: applying(config, namespace, &w.labels),
        services,
        config_version: config.version,
    })
}

/// `/v1/pods/<namespace>/<name>` → the namespace and name.
pub fn pod_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v1/pods/")?;
    let (ns, name) = rest.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some((ns, name))
}
