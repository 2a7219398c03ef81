//! The watches of the Kubernetes source: one kube-rs `watcher` per kind, each feeding a
//! reflector store (what the cluster holds of that kind, in memory).
//!
//! A watcher lists, then watches from the list's resource version; when a watch ends
//! (the API server closes it, or the connection drops) it watches again from the last
//! version it saw, and when that version has expired (410 Gone) it lists again. A list
//! replaces the store whole when it is complete, so objects deleted while the watch was
//! away leave too. Every failure waits before the next try (doubling, with jitter, up to
//! a limit); a watch whose start is refused as expired (410) or unknown (404) starts
//! over with a new list.
//!
//! A kind the API server does not serve (404: the Gateway API or Weft's CRDs are not
//! installed) counts as empty, and is asked for again after each wait, so installing the
//! CRDs later is noticed.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    hash::Hash,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, CustomResourceExt as _, Resource,
    core::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        reflector::{Store, store::Writer},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch as signal, task::JoinHandle};
use tokio_stream::StreamExt as _;

use super::Cluster;
use crate::model::{
    AuthorizationPolicyResource, BackendPolicyResource, ExternalServiceResource,
    PeerAuthenticationResource, TrafficFilterResource, WorkloadResource,
};

/// A kind the control plane watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    Gateway,
    HttpRoute,
    GrpcRoute,
    AuthorizationPolicy,
    PeerAuthentication,
    Workload,
    TrafficFilter,
    BackendPolicy,
    ExternalService,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::Workload,
        Kind::TrafficFilter,
        Kind::BackendPolicy,
        Kind::ExternalService,
    ];

    /// Group, version, kind and plural, as the API server names them.
    pub fn api_resource(self) -> ApiResource {
        let gvk = |group: &str, version: &str, kind: &str, plural: &str| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
        };
        match self {
            Kind::Namespace => ApiResource::erase::<core::Namespace>(&()),
            Kind::Pod => ApiResource::erase::<core::Pod>(&()),
            Kind::Service => ApiResource::erase::<core::Service>(&()),
            Kind::EndpointSlice => ApiResource::erase::<discovery::EndpointSlice>(&()),
            Kind::Gateway => gvk("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
            Kind::HttpRoute => gvk("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
            Kind::GrpcRoute => gvk("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
            Kind::AuthorizationPolicy => AuthorizationPolicyResource::api_resource(),
            Kind::PeerAuthentication => PeerAuthenticationResource::api_resource(),
            Kind::Workload => WorkloadResource::api_resource(),
            Kind::TrafficFilter => TrafficFilterResource::api_resource(),
            Kind::BackendPolicy => BackendPolicyResource::api_resource(),
            Kind::ExternalService => ExternalServiceResource::api_resource(),
        }
    }
}

/// How the watches retry.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The first wait after a failure; it doubles with each failure in a row.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// How the watch of one kind is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStatus {
    /// A first list has completed (or the kind is not served).
    pub synced: bool,
    /// The API server serves the kind (false: 404, its CRD is not installed).
    pub served: bool,
    /// The last failure, until the next success.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    status: Mutex<BTreeMap<Kind, KindStatus>>,
    /// Counts changes to the stores (and to what is synced).
    changes: signal::Sender<u64>,
}

impl Shared {
    fn update<T>(&self, kind: Kind, f: impl FnOnce(&mut KindStatus) -> T) -> T {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(status.entry(kind).or_default())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The stores of every watched kind, and the tasks that fill them. Dropping it stops
/// the watches.
#[derive(Debug)]
pub struct Watches {
    namespaces: Store<core::Namespace>,
    pods: Store<core::Pod>,
    services: Store<core::Service>,
    endpoint_slices: Store<discovery::EndpointSlice>,
    custom: BTreeMap<Kind, Store<DynamicObject>>,
    shared: Arc<Shared>,
    changes: signal::Receiver<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Watches {
    /// Starts watching every kind (cluster-wide) with `client`.
    pub fn start(client: &Client, settings: &Settings) -> Self {
        let (changes_tx, changes) = signal::channel(0);
        let shared = Arc::new(Shared {
            status: Mutex::new(Kind::ALL.map(|k| (k, KindStatus::default())).into()),
            changes: changes_tx,
        });
        let mut tasks = Vec::new();
        let namespaces = typed(client, Kind::Namespace, &shared, settings, &mut tasks);
        let pods = typed(client, Kind::Pod, &shared, settings, &mut tasks);
        let services = typed(client, Kind::Service, &shared, settings, &mut tasks);
        let endpoint_slices = typed(client, Kind::EndpointSlice, &shared, settings, &mut tasks);
        let mut custom = BTreeMap::new();
        for kind in CUSTOM {
            let resource = kind.api_resource();
            let (store, task) = spawn(
                Api::all_with(client.clone(), &resource),
                resource,
                kind,
                Arc::clone(&shared),
                settings.clone(),
            );
            tasks.push(task);
            custom.insert(kind, store);
        }
        Watches {
            namespaces,
            pods,
            services,
            endpoint_slices,
            custom,
            shared,
            changes,
            tasks,
        }
    }

    pub fn status(&self) -> BTreeMap<Kind, KindStatus> {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The kinds whose first list has not completed.
    pub fn unsynced(&self) -> Vec<Kind> {
        self.status()
            .into_iter()
            .filter(|(_, s)| !s.synced)
            .map(|(k, _)| k)
            .collect()
    }

    /// Waits until every kind has been listed once (what the control plane serves
    /// before is a part of the cluster, which would take from agents what they have).
    /// Says every 10 s which kinds it waits for, and why.
    pub async fn synced(&mut self) {
        loop {
            let waiting = self.unsynced();
            if waiting.is_empty() {
                return;
            }
            let tick = tokio::time::timeout(Duration::from_secs(10), self.changes.changed());
            match tick.await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    let status = self.status();
                    let why: Vec<String> = waiting
                        .iter()
                        .map(|k| match &status[k].error {
                            Some(e) => format!("{k:?} ({e})"),
                            None => format!("{k:?}"),
                        })
                        .collect();
                    tracing::warn!(kinds = %why.join(", "), "waiting for the first list of these kinds");
                }
            }
        }
    }

    /// Waits for the next change; false if no more can come.
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }

    /// Marks every change so far as seen (a burst that has settled).
    pub fn settled(&mut self) {
        self.changes.borrow_and_update();
    }

    /// What the stores hold now, each kind in namespace and name order.
    pub fn snapshot(&self) -> Cluster {
        fn sorted<K: Resource + Clone>(store: &Store<K>) -> Vec<Arc<K>>
        where
            K::DynamicType: Eq + Hash + Clone,
        {
            let mut objects = store.state();
            objects.sort_by(|a, b| {
                let key = |o: &Arc<K>| (o.meta().namespace.clone(), o.meta().name.clone());
                key(a).cmp(&key(b))
            });
            objects
        }
        let custom = |kind: Kind| self.custom.get(&kind).map(sorted).unwrap_or_default();
        Cluster {
            namespaces: sorted(&self.namespaces),
            pods: sorted(&self.pods),
            services: sorted(&self.services),
            endpoint_slices: sorted(&self.endpoint_slices),
            gateways: custom(Kind::Gateway),
            http_routes: custom(Kind::HttpRoute),
            grpc_routes: custom(Kind::GrpcRoute),
            authorization_policies: custom(Kind::AuthorizationPolicy),
            peer_authentications: custom(Kind::PeerAuthentication),
            workloads: custom(Kind::Workload),
            traffic_filters: custom(Kind::TrafficFilter),
            backend_policies: custom(Kind::BackendPolicy),
            external_services: custom(Kind::ExternalService),
        }
    }
}

/// What is kept of objects: the fields Weft reads. Managed fields and annotations (the
/// last applied configuration is a copy of the whole object) are dropped, and a pod
/// keeps only its node, network, service account, phase and addresses.
trait Prune {
    fn prune(&mut self);
}

fn prune_metadata(m: &mut ObjectMeta) {
    m.managed_fields = None;
    m.annotations = None;
}

impl Prune for core::Namespace {
    fn prune(&mut self) {
        prune_metadata(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

impl Prune for core::Pod {
    fn prune(&mut self) {
        prune_metadata(&mut self.metadata);
        self.metadata.owner_references = None;
        if let Some(spec) = &mut self.spec {
            *spec = core::PodSpec {
                node_name: spec.node_name.take(),
                host_network: spec.host_network,
                service_account_name: spec.service_account_name.take(),
                ..core::PodSpec::default()
            };
        }
        if let Some(status) = &mut self.status {
            *status = core::PodStatus {
                phase: status.phase.take(),
                pod_ips: status.pod_ips.take(),
                ..core::PodStatus::default()
            };
        }
    }
}

impl Prune for core::Service {
    fn prune(&mut self) {
        prune_metadata(&mut self.metadata);
        self.status = None;
    }
}

impl Prune for discovery::EndpointSlice {
    fn prune(&mut self) {
        prune_metadata(&mut self.metadata);
    }
}

impl Prune for DynamicObject {
    fn prune(&mut self) {
        prune_metadata(&mut self.metadata);
        if let Some(fields) = self.data.as_object_mut() {
            fields.remove("status");
        }
    }
}

/// The wait before the next try: doubling from `min` to `max`, less up to a quarter at
/// random so that watches that fail together do not retry together.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(settings: &Settings) -> Self {
        Backoff {
            min: settings.backoff_min,
            max: settings.backoff_max.max(settings.backoff_min),
            next: settings.backoff_min,
        }
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.max);
        base.mul_f64(1.0 - rand::random::<f64>() / 4.0)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The HTTP status an API failure carries, if any.
fn status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// The kinds watched as the API server sends them, to be parsed like documents.
const CUSTOM: [Kind; 9] = [
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::AuthorizationPolicy,
    Kind::PeerAuthentication,
    Kind::Workload,
    Kind::TrafficFilter,
    Kind::BackendPolicy,
    Kind::ExternalService,
];

/// Starts the watch of a kind that k8s-openapi knows.
fn typed<K>(
    client: &Client,
    kind: Kind,
    shared: &Arc<Shared>,
    settings: &Settings,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Prune + Clone + DeserializeOwned + Debug + Send + Sync,
    K: 'static,
{
    let (store, task) = spawn(
        Api::all(client.clone()),
        (),
        kind,
        Arc::clone(shared),
        settings.clone(),
    );
    tasks.push(task);
    store
}

fn spawn<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    kind: Kind,
    shared: Arc<Shared>,
    settings: Settings,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Prune + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dyntype);
    let store = writer.as_reader();
    let task = tokio::spawn(keep_up(api, writer, kind, shared, settings));
    (store, task)
}

/// Keeps the store of one kind up to date, for ever.
async fn keep_up<K>(
    api: Api<K>,
    mut writer: Writer<K>,
    kind: Kind,
    shared: Arc<Shared>,
    settings: Settings,
) where
    K: Resource + Prune + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut backoff = Backoff::new(&settings);
    loop {
        let mut stream = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let error = match event {
                Ok(event) => {
                    backoff.reset();
                    let event = event.modify(K::prune);
                    writer.apply_watcher_event(&event);
                    match event {
                        // Nothing shows until the list is complete.
                        Event::Init | Event::InitApply(_) => {}
                        Event::InitDone => {
                            let first = shared.update(kind, |s| {
                                let first = !s.synced || !s.served;
                                *s = KindStatus {
                                    synced: true,
                                    served: true,
                                    error: None,
                                };
                                first
                            });
                            if first {
                                tracing::info!(?kind, "listed");
                            }
                            shared.changed();
                        }
                        Event::Apply(_) | Event::Delete(_) => {
                            shared.update(kind, |s| s.error = None);
                            shared.changed();
                        }
                    }
                    continue;
                }
                Err(error) => error,
            };
            let code = status_code(&error);
            let text = error.to_string();
            let repeated = shared.update(kind, |s| {
                let repeated = s.error.as_ref() == Some(&text);
                s.error = Some(text.clone());
                repeated
            });
            let restart = match (&error, code) {
                (watcher::Error::InitialListFailed(_), Some(404)) => {
                    let news = shared.update(kind, |s| {
                        let news = !s.synced || s.served;
                        s.synced = true;
                        s.served = false;
                        news
                    });
                    if news {
                        tracing::warn!(
                            ?kind,
                            "the API server does not serve this kind (are its CRDs installed?); \
                             it counts as empty until it does"
                        );
                        // Whatever was known of the kind is gone with it.
                        writer.apply_watcher_event(&Event::Init);
                        writer.apply_watcher_event(&Event::InitDone);
                        shared.changed();
                    }
                    false
                }
                // Watches expire in the normal course of things; the watcher lists again.
                (watcher::Error::WatchError(_), Some(410)) => {
                    tracing::debug!(?kind, "the watch expired; listing again");
                    false
                }
                // The watcher would try the same version again: start over from a list
                // (which also notices a kind that is no longer served).
                (watcher::Error::WatchStartFailed(_), Some(410)) => {
                    tracing::info!(?kind, "the watch's resource version expired; listing again");
                    true
                }
                (watcher::Error::WatchStartFailed(_), Some(404)) => {
                    tracing::warn!(
                        ?kind,
                        "the API server no longer serves this kind; listing again"
                    );
                    true
                }
                _ => {
                    if repeated {
                        tracing::debug!(?kind, error = %text, "watch failed again");
                    } else {
                        tracing::warn!(?kind, error = %text, "watch failed; trying again");
                    }
                    false
                }
            };
            tokio::time::sleep(backoff.next()).await;
            if restart {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
