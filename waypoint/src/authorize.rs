//! Which policies decide what the waypoint carries: those of the workload that
//! receives it (its namespace's, the mesh-wide ones of `weft-system`, selected by its
//! labels), with the client's identity and address, on the workload's port. A request
//! is decided with the request itself (HTTP conditions included), against the endpoint
//! it is sent to; a TCP stream as a connection; a new tunnel is refused only when no
//! request to any of the target's workloads could be allowed.
//!
//! The waypoint decides for the workloads whose labels it was sent (those it serves).
//! For any other backend of a route there is nothing to decide here: that workload's
//! agent (or its own waypoint) does, with the waypoint as the client.

use dataplane::policy::{self, Decision, Scope, Source};

use crate::view::{Destination, Target, View};

/// The decision for `destination`, or `None` when its workload is not one the waypoint
/// knows.
pub fn destination(
    view: &View,
    destination: &Destination,
    source: &Source<'_>,
    scope: Scope<'_>,
) -> Option<Decision> {
    let (namespace, workload) = view.workload(&destination.workload)?;
    Some(policy::authorize_in(
        &view.config,
        &policy::Target {
            namespace,
            labels: &workload.labels,
            port: destination.addr.port(),
        },
        source,
        scope,
    ))
}

/// The decision for what a tunnel names: allowed when one of its workloads allows,
/// else the first refusal; `None` when none of its workloads is known.
pub fn target(
    view: &View,
    target: &Target,
    source: &Source<'_>,
    scope: Scope<'_>,
) -> Option<Decision> {
    let destinations: Vec<Destination> = match target {
        Target::Service { key, port } => {
            let service = view.service(key)?;
            service
                .endpoints
                .iter()
                .filter_map(|e| {
                    e.addresses
                        .first()
                        .map(|ip| Destination::of(e, *ip, port.target_port))
                })
                .collect()
        }
        Target::Workload { key, port } => {
            view.workload_destination(key, *port).into_iter().collect()
        }
        // The gateway's own listener: each request is authorized at its destination.
        Target::Gateway { .. } => Vec::new(),
    };
    let mut first_refusal = None;
    for d in &destinations {
        match destination(view, d, source, scope) {
            Some(decision) if decision.allowed => return Some(decision),
            Some(decision) => {
                first_refusal.get_or_insert(decision);
            }
            None => {}
        }
    }
    first_refusal
}
