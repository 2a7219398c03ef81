//! Leader election among the control plane's replicas, through the Lease
//! `weft-controlplane-leader` of its namespace (coordination.k8s.io/v1). Every replica
//! serves certificates and configuration; only the leader writes to the cluster: the
//! waypoints' objects and status, the published roots and the webhook's CA bundle. (The
//! CA Secret's first creation is settled by the API server itself: a second create is
//! refused, and that replica reads the winner's.)
//!
//! A replica takes the Lease when it is missing or its holder has not renewed it within
//! its duration, renews it while it holds it, and every write of the Lease carries the
//! version it read, so two replicas never both win: the API server refuses the second
//! (409) and that one stays a follower.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

pub const LEASE: &str = "weft-controlplane-leader";

#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub identity: String,
    /// How long a Lease not renewed stays its holder's.
    pub duration: Duration,
    /// How often the holder renews it (and others look at it).
    pub renew_every: Duration,
}

impl Settings {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Settings {
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

fn lease(s: &Settings, now: Timestamp, previous: Option<&Lease>) -> Lease {
    let spec = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(&s.identity);
    let transitions = spec.lease_transitions.unwrap_or(0);
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.to_owned()),
            namespace: Some(s.namespace.clone()),
            resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(s.duration.as_secs() as i32),
            acquire_time: if ours && previous.is_some() {
                spec.acquire_time
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }),
    }
}

/// Whether `l` is held by someone other than `me` and still fresh at `now`.
fn held_by_another(l: &Lease, me: &str, now: Timestamp) -> bool {
    let Some(spec) = &l.spec else { return false };
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return false;
    };
    if holder == me {
        return false;
    }
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.is_some_and(|r| now < r + duration)
}

/// One round: takes or renews the Lease when it may. `Ok(true)`: this replica leads.
pub async fn round(api: &Api<Lease>, s: &Settings, now: Timestamp) -> kube::Result<bool> {
    let current = api.get_opt(LEASE).await?;
    let written = match &current {
        None => {
            api.create(&PostParams::default(), &lease(s, now, None))
                .await
        }
        Some(l) if held_by_another(l, &s.identity, now) => return Ok(false),
        Some(l) => {
            api.replace(LEASE, &PostParams::default(), &lease(s, now, Some(l)))
                .await
        }
    };
    match written {
        Ok(_) => Ok(true),
        // Another replica wrote first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs the election for ever, saying on `leading` whether this replica leads. A
/// replica that cannot reach the API server for a Lease's duration stops leading.
pub async fn run(client: Client, s: Settings, leading: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &s.namespace);
    let mut last_success = tokio::time::Instant::now();
    loop {
        match round(&api, &s, Timestamp::now()).await {
            Ok(lead) => {
                last_success = tokio::time::Instant::now();
                if *leading.borrow() != lead {
                    tracing::info!(identity = %s.identity, leading = lead, "leadership changed");
                }
                leading.send_replace(lead);
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader election: the Lease could not be read or written");
                if last_success.elapsed() >= s.duration && *leading.borrow() {
                    tracing::warn!("stopped leading: the Lease could not be renewed in time");
                    leading.send_replace(false);
                }
            }
        }
        tokio::time::sleep(s.renew_every).await;
    }
}

#[cfg(test)]
mod tests;
