//! Configuration distribution: the hub holds the resources in force with the version
//! at which each last changed, and remembers when keys were removed, so that any
//! subscriber can be brought from the version it has to the current one with only what
//! changed — on a live stream and after a reconnect alike. A subscriber that is too far
//! behind (or comes from before a restart) gets a snapshot.
//!
//! An agent gets the workloads of its node, every Service, and the policies of the
//! namespaces it has workloads in plus the mesh-wide ones.

use std::{
    collections::{BTreeMap, BTreeSet},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::proto::config::{
    ConfigUpdate, Resource, ResourceKey, SubscribeRequest, config_service_server::ConfigService,
    resource::Body, subscribe_request::Request as Msg,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{auth::Authenticator, resources::Key, validate::ROOT_NAMESPACE};

/// How many removed keys are remembered for resuming subscribers.
const TOMBSTONES: usize = 100_000;

/// What a subscriber last said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberStatus {
    pub connected: bool,
    pub sent: u64,
    pub acked: u64,
    pub nacked: Option<(u64, String)>,
}

#[derive(Debug, Default)]
struct State {
    version: u64,
    resources: BTreeMap<Key, (u64, Body)>,
    removed: BTreeMap<Key, u64>,
    /// Changes after this version can be replayed; before it, only a snapshot.
    oldest: u64,
    subscribers: BTreeMap<String, SubscriberStatus>,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    /// Set when the control plane stops: every stream ends, so the server can close.
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// Versions start at the wall clock in milliseconds, so that they grow across
    /// restarts and a subscriber from before a restart gets a snapshot.
    pub fn new() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Hub {
            state: Mutex::new(State {
                version: start,
                oldest: start,
                ..State::default()
            }),
            changed: watch::channel(start).0,
            closing: watch::channel(false).0,
        }
    }

    /// Ends every subscription stream (the control plane is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }

    pub fn subscribers(&self) -> BTreeMap<String, SubscriberStatus> {
        self.lock().subscribers.clone()
    }

    /// Puts `resources` in force; returns the new version if anything changed.
    pub fn publish(&self, resources: BTreeMap<Key, Body>) -> Option<u64> {
        let mut s = self.lock();
        let next = s.version + 1;
        let mut changed = false;
        let gone: Vec<Key> = s
            .resources
            .keys()
            .filter(|k| !resources.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            s.resources.remove(&k);
            s.removed.insert(k, next);
            changed = true;
        }
        for (k, body) in resources {
            if s.resources.get(&k).is_some_and(|(_, b)| *b == body) {
                continue;
            }
            s.removed.remove(&k);
            s.resources.insert(k, (next, body));
            changed = true;
        }
        if !changed {
            return None;
        }
        s.version = next;
        while s.removed.len() > TOMBSTONES {
            let (k, v) = s
                .removed
                .iter()
                .min_by_key(|(_, v)| **v)
                .map(|(k, v)| (k.clone(), *v))
                .expect("non-empty");
            s.removed.remove(&k);
            s.oldest = s.oldest.max(v);
        }
        drop(s);
        self.changed.send_replace(next);
        Some(next)
    }

    /// What `node`'s agent needs to go from version `since` (None: nothing) to now.
    fn update_for(&self, node: &str, since: Option<u64>) -> ConfigUpdate {
        let s = self.lock();
        let node_namespaces: BTreeSet<&str> = s
            .resources
            .iter()
            .filter_map(|((kind, ns, _), (_, body))| match body {
                Body::Workload(w) if kind == "Workload" && w.node == node => Some(ns.as_str()),
                _ => None,
            })
            .collect();
        let relevant = |(kind, ns, _): &Key, body: &Body| match body {
            Body::Workload(w) => w.node == node,
            Body::Service(_) => true,
            Body::AuthorizationPolicy(_) | Body::PeerAuthentication(_) => {
                ns == ROOT_NAMESPACE || node_namespaces.contains(ns.as_str())
            }
        } && !kind.is_empty();
        let snapshot = since.is_none_or(|v| v < s.oldest);
        let since = since.unwrap_or(0);
        let mut update = ConfigUpdate {
            version: s.version,
            snapshot,
            ..ConfigUpdate::default()
        };
        for (k, (v, body)) in &s.resources {
            let wanted = relevant(k, body);
            if wanted && (snapshot || *v > since) {
                update.upserts.push(Resource {
                    key: Some(wire_key(k)),
                    version: *v,
                    body: Some(body.clone()),
                });
            } else if !wanted && !snapshot && *v > since {
                // It changed and is no longer for this node (a workload that moved).
                update.removals.push(wire_key(k));
            }
        }
        if !snapshot {
            for (k, v) in &s.removed {
                if *v > since {
                    update.removals.push(wire_key(k));
                }
            }
        }
        update
    }

    fn record(&self, node: &str, f: impl FnOnce(&mut SubscriberStatus)) {
        f(self.lock().subscribers.entry(node.to_owned()).or_default());
    }
}

fn wire_key((kind, namespace, name): &Key) -> ResourceKey {
    ResourceKey {
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    }
}

pub struct Distribution {
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for Distribution {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let node = self
            .auth
            .authenticate(&crate::auth::bearer_token(&request))
            .await
            .map_err(|e| {
                tracing::warn!(reason = e.reason(), "config subscription refused");
                Status::unauthenticated(format!("{}: {e}", e.reason()))
            })?;
        let mut incoming = request.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), incoming.next()).await {
            Ok(Some(Ok(SubscribeRequest {
                request: Some(Msg::Hello(h)),
            }))) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "hello_expected: the first message must be a Hello",
                ));
            }
        };
        // The token names the node; a Hello that names one must name the same.
        if !hello.node.is_empty() && hello.node != node {
            return Err(Status::permission_denied(format!(
                "wrong_node: the token is node {node:?}'s, not {:?}'s",
                hello.node
            )));
        }
        let hub = Arc::clone(&self.hub);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut changed = hub.changed.subscribe();
            let mut closing = hub.closing.subscribe();
            let since = (hello.resume_from > 0).then_some(hello.resume_from);
            let first = hub.update_for(&node, since);
            tracing::info!(%node, version = first.version, snapshot = first.snapshot, resources = first.upserts.len(), "subscriber connected");
            let mut at = first.version;
            hub.record(&node, |s| {
                s.connected = true;
                s.sent = at;
            });
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = closing.changed() => break,
                    r = changed.changed() => {
                        if r.is_err() { break; }
                        let update = hub.update_for(&node, Some(at));
                        at = update.version;
                        if update.upserts.is_empty() && update.removals.is_empty() {
                            continue;
                        }
                        hub.record(&node, |s| s.sent = at);
                        if tx.send(Ok(update)).await.is_err() { break; }
                    }
                    msg = incoming.next() => match msg {
                        Some(Ok(SubscribeRequest { request: Some(Msg::Ack(a)) })) => {
                            hub.record(&node, |s| s.acked = s.acked.max(a.version));
                        }
                        Some(Ok(SubscribeRequest { request: Some(Msg::Nack(n)) })) => {
                            tracing::warn!(%node, version = n.version, reason = %n.reason, "configuration NACKed");
                            hub.record(&node, |s| s.nacked = Some((n.version, n.reason.clone())));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
            hub.record(&node, |s| s.connected = false);
            tracing::info!(%node, "subscriber gone");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use api::proto::config::Workload;

    use super::*;

    fn wl(node: &str, addr: &str) -> Body {
        Body::Workload(Workload {
            node: node.into(),
            addresses: vec![addr.into()],
            ..Workload::default()
        })
    }

    fn k(kind: &str, ns: &str, name: &str) -> Key {
        (kind.into(), ns.into(), name.into())
    }

    #[test]
    fn incremental_updates_and_snapshots() {
        let hub = Hub::new();
        let v0 = hub.version();
        let mut res = BTreeMap::from([
            (k("Workload", "shop", "a"), wl("n1", "10.0.0.1")),
            (k("Workload", "shop", "b"), wl("n2", "10.0.0.2")),
        ]);
        let v1 = hub.publish(res.clone()).unwrap();
        assert_eq!(hub.publish(res.clone()), None, "no change, no version");

        let snap = hub.update_for("n1", None);
        assert!(snap.snapshot);
        assert_eq!(snap.upserts.len(), 1, "only n1's workload");
        assert_eq!(snap.version, v1);

        res.insert(k("Workload", "shop", "a"), wl("n1", "10.0.0.9"));
        res.remove(&k("Workload", "shop", "b"));
        let v2 = hub.publish(res.clone()).unwrap();
        let up = hub.update_for("n1", Some(v1));
        assert!(!up.snapshot);
        assert_eq!(up.version, v2);
        assert_eq!(up.upserts.len(), 1);
        assert_eq!(up.upserts[0].version, v2);
        assert_eq!(up.removals.len(), 1, "b's removal is sent (harmless to n1)");

        // Nothing new since v2.
        let none = hub.update_for("n1", Some(v2));
        assert!(none.upserts.is_empty() && none.removals.is_empty());
        // From before this hub existed: a snapshot.
        assert!(hub.update_for("n1", Some(v0 - 1)).snapshot);

        // A workload moving to n2 leaves n1.
        res.insert(k("Workload", "shop", "a"), wl("n2", "10.0.0.9"));
        hub.publish(res).unwrap();
        let up = hub.update_for("n1", Some(v2));
        assert!(up.upserts.is_empty());
        assert_eq!(up.removals[0].name, "a");
    }
}
