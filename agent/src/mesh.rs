//! What the data path shares: settings, metrics, certificates, the indexed
//! configuration, the HBONE pool, the registry of live inbound connections, the drain
//! signal and the mesh pods of this node; and what it knows about each enrolled pod.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use api::{admin::WorkloadRef, identity::Identity};
use tokio::sync::{oneshot, watch};

use crate::{
    discovery::Config,
    hbone,
    identity::CertManager,
    metrics::{ConnectionLabels, Metrics},
    netns::Netns,
    policy,
    view::View,
};

#[derive(Debug)]
pub struct Mesh {
    pub settings: hbone::Settings,
    pub metrics: Arc<Metrics>,
    pub certs: Option<CertManager>,
    pub view: watch::Receiver<Arc<View>>,
    pub pool: hbone::Pool,
    pub tracker: Tracker,
    /// Turns `true` when the agent starts draining.
    pub drain: watch::Receiver<bool>,
    /// The pods on this node that take HBONE (enrolled, with an identity), by address.
    pub local: LocalPods,
    /// Connections between two pods of this node skip the tunnel (see
    /// `inbound::local_connection`).
    pub same_node_fast_path: bool,
    /// Legs to applications leave from the client's address (see
    /// [`crate::netns::client_address`]).
    pub client_address: bool,
    /// Where those legs are announced while they connect.
    pub client_legs: Arc<crate::ebpf::ClientLegs>,
    /// Connections accepted and not yet ended (a drain waits for none).
    pub open: OpenConnections,
}

/// Counts accepted connections from the moment of `accept` (before their task runs)
/// until their task ends, so a drain never exits under one it has not started on.
#[derive(Debug, Default)]
pub struct OpenConnections(Arc<std::sync::atomic::AtomicUsize>);

/// One open connection; counted until dropped.
#[derive(Debug)]
pub struct OpenGuard(Arc<std::sync::atomic::AtomicUsize>);

impl OpenConnections {
    pub fn open(&self) -> OpenGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenGuard(Arc::clone(&self.0))
    }

    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Mesh {
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// Waits until the data path may take connections: with a control plane, once its
    /// first configuration is here. Before it every destination looks unknown and
    /// would leave in plaintext, so a restarted agent lets the kernel queue them.
    pub async fn configured(&self) {
        if self.certs.is_none() {
            return;
        }
        let mut rx = self.view.clone();
        let _ = rx.wait_for(|v| v.config.version > 0).await;
    }

    /// [`Mesh::configured`], and then until `pod`'s certificate is issued: a TLS
    /// handshake without it would fail.
    pub async fn ready_for(&self, pod: &Pod) {
        self.configured().await;
        let (Some(certs), Some(id)) = (&self.certs, &pod.identity) else {
            return;
        };
        loop {
            match certs.ready(id, std::time::Duration::from_secs(30)).await {
                Ok(_) => return,
                // Released: the pod left; its listener goes with it.
                Err(crate::identity::Error::Unknown { .. }) => return,
                Err(e) => {
                    tracing::warn!(pod = %pod.name(), error = %e, "not accepting yet: no certificate")
                }
            }
        }
    }
}

/// The mesh pods of this node, by address.
#[derive(Debug, Default)]
pub struct LocalPods(std::sync::RwLock<HashMap<IpAddr, Arc<Pod>>>);

impl LocalPods {
    pub fn insert(&self, pod: &Arc<Pod>, addresses: &[IpAddr]) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for addr in addresses {
            map.insert(*addr, Arc::clone(pod));
        }
    }

    pub fn remove(&self, addresses: &[IpAddr]) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        for addr in addresses {
            map.remove(addr);
        }
    }

    pub fn get(&self, addr: IpAddr) -> Option<Arc<Pod>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(&addr.to_canonical()).cloned()
    }
}

/// An enrolled pod as the data path sees it.
#[derive(Debug)]
pub struct Pod {
    pub netns: Arc<Netns>,
    pub workload: Option<WorkloadRef>,
    pub identity: Option<Identity>,
    /// The addresses of the pod's interfaces.
    pub addresses: Vec<IpAddr>,
    /// The namespace is set up for legs from the client's address.
    pub client_address: bool,
}

impl Pod {
    /// `namespace/name`, or `unknown`.
    pub fn name(&self) -> String {
        self.workload.as_ref().map_or_else(
            || "unknown".to_owned(),
            |w| format!("{}/{}", w.namespace, w.name),
        )
    }

    /// Fills the destination side of `labels` with this pod.
    pub fn as_destination(&self, labels: &mut ConnectionLabels) {
        if let Some(w) = &self.workload {
            labels.destination_workload = w.name.clone();
            labels.destination_workload_namespace = w.namespace.clone();
        }
        if let Some(id) = &self.identity {
            labels.destination_principal = id.to_string();
        }
    }

    /// Fills the source side of `labels` with this pod.
    pub fn as_source(&self, labels: &mut ConnectionLabels) {
        if let Some(w) = &self.workload {
            labels.source_workload = w.name.clone();
            labels.source_workload_namespace = w.namespace.clone();
        }
        if let Some(id) = &self.identity {
            labels.source_principal = id.to_string();
        }
    }
}

/// The part of the configuration that decides a connection to a pod, as the pod's
/// workload has it; `None` when the workload is not in the configuration (then
/// nothing is allowed).
///
/// A connection from the waypoint that serves the pod (its workload's or namespace's
/// waypoint, or that of a Service it is an endpoint of) is allowed: the waypoint has
/// decided each request with the same policies, HTTP conditions included, for the
/// original caller, which this side cannot see.
pub fn authorize(
    config: &Config,
    pod: &Pod,
    port: u16,
    source: &policy::Source<'_>,
) -> policy::Decision {
    match pod_workload(config, pod) {
        Ok((namespace, workload)) => {
            let decision = policy::authorize(
                config,
                &policy::Target {
                    namespace,
                    labels: &workload.labels,
                    port,
                },
                source,
            );
            if decision.allowed {
                return decision;
            }
            let waypoint = source.identity.and_then(|client| {
                let name = &pod.workload.as_ref()?.name;
                serving_waypoint(config, namespace, name, workload, client)
            });
            match waypoint {
                Some(waypoint) => policy::Decision {
                    allowed: true,
                    reason: format!("waypoint {namespace}/{waypoint}"),
                    audited: decision.audited,
                    version: config.version,
                },
                None => decision,
            }
        }
        Err(reason) => policy::Decision {
            allowed: false,
            reason: reason.to_owned(),
            audited: Vec::new(),
            version: config.version,
        },
    }
}

/// The waypoint (Gateway name) serving workload `namespace/name` whose identity is
/// `client`, if there is one: a waypoint's workloads are the endpoints of the Service
/// named like its Gateway.
fn serving_waypoint<'c>(
    config: &'c Config,
    namespace: &str,
    name: &str,
    workload: &'c crate::discovery::Workload,
    client: &Identity,
) -> Option<&'c str> {
    let me = format!("{namespace}/{name}");
    let through_services = config
        .services
        .iter()
        .filter(|((_, ns, _), s)| ns == namespace && s.endpoints.iter().any(|e| e.workload == me))
        .filter_map(|(_, s)| s.waypoint.as_deref());
    workload
        .waypoint
        .as_deref()
        .into_iter()
        .chain(through_services)
        .find(|waypoint| {
            let key = (
                "Service".to_owned(),
                namespace.to_owned(),
                (*waypoint).to_owned(),
            );
            config
                .services
                .get(&key)
                .is_some_and(|w| w.endpoints.iter().any(|e| e.identity == *client))
        })
}

/// The peer authentication mode of a pod; STRICT while its workload is unknown.
pub fn peer_mode(config: &Config, pod: &Pod) -> policy::PeerMode {
    match pod_workload(config, pod) {
        Ok((namespace, workload)) => policy::peer_mode(config, namespace, &workload.labels),
        Err(_) => policy::PeerMode::Strict,
    }
}

/// The pod's namespace and its workload in `config`, or why there is none.
fn pod_workload<'a>(
    config: &'a Config,
    pod: &'a Pod,
) -> Result<(&'a str, &'a crate::discovery::Workload), &'static str> {
    let w = pod.workload.as_ref().ok_or("pod without workload")?;
    let key = ("Workload".to_owned(), w.namespace.clone(), w.name.clone());
    let workload = config
        .workloads
        .get(&key)
        .ok_or("workload not in the configuration yet")?;
    Ok((&w.namespace, workload))
}

/// A live inbound connection, re-checked when the policies change.
#[derive(Debug)]
struct Tracked {
    pod: Arc<Pod>,
    source_identity: Option<Identity>,
    source_ip: IpAddr,
    port: u16,
    close: oneshot::Sender<()>,
}

/// The live inbound connections.
#[derive(Debug, Default)]
pub struct Tracker {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Tracked>>,
}

/// Removes its connection from the tracker when dropped.
#[derive(Debug)]
pub struct TrackGuard<'a> {
    tracker: &'a Tracker,
    id: u64,
}

impl Drop for TrackGuard<'_> {
    fn drop(&mut self) {
        self.tracker.lock().remove(&self.id);
    }
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection; the receiver fires when a policy change denies it.
    pub fn track(
        &self,
        pod: Arc<Pod>,
        source_identity: Option<Identity>,
        source_ip: IpAddr,
        port: u16,
    ) -> (TrackGuard<'_>, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = oneshot::channel();
        self.lock().insert(
            id,
            Tracked {
                pod,
                source_identity,
                source_ip,
                port,
                close,
            },
        );
        (TrackGuard { tracker: self, id }, closed)
    }

    /// Closes every tracked connection that `config` no longer allows; returns how
    /// many.
    pub fn revoke(&self, config: &Config) -> usize {
        let mut live = self.lock();
        let denied: Vec<u64> = live
            .iter()
            .filter(|(_, t)| {
                let source = policy::Source {
                    identity: t.source_identity.as_ref(),
                    ip: t.source_ip,
                };
                let plaintext_refused = t.source_identity.is_none()
                    && peer_mode(config, &t.pod) == policy::PeerMode::Strict;
                plaintext_refused || !authorize(config, &t.pod, t.port, &source).allowed
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &denied {
            if let Some(t) = live.remove(id) {
                let _ = t.close.send(());
            }
        }
        denied.len()
    }
}
