//! The hub: the resources in force, each with the version at which it last changed and
//! its audience, and a log of what changed at each version. A subscriber at version `v`
//! is brought to the current one from the log entries after `v` alone: for each key that
//! changed, whether the subscriber had it at `v` (its audience then) and whether it
//! needs it now. So an update costs what changed, not what there is, on a live stream
//! and after a reconnect alike. A subscriber from before the oldest entry kept (or from
//! before a restart) gets a snapshot.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque, hash_map},
    sync::Mutex,
};

use api::proto::config::{ConfigUpdate, Resource, ResourceKey, resource::Body};
use tokio::sync::watch;

use super::audience::{Audience, Context, Subscriber, SubscriberKind};
use crate::resources::Key;

/// How many changes are kept for resuming subscribers.
const LOG: usize = 100_000;

/// What a subscriber last said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberStatus {
    pub kind: SubscriberKind,
    /// Whether a stream of it is open.
    pub connected: bool,
    /// Its open streams (a reconnect may overlap the end of the stream it replaces).
    pub streams: u32,
    pub sent: u64,
    pub acked: u64,
    pub nacked: Option<(u64, String)>,
}

struct Entry {
    version: u64,
    body: Body,
    audience: Audience,
}

/// One key's change at `version`: its audience before (none: it was new) and whether
/// its body changed (a removal is one), as opposed to its audience alone.
struct Change {
    version: u64,
    key: Key,
    before: Option<Audience>,
    body_changed: bool,
}

#[derive(Default)]
struct State {
    version: u64,
    /// Changes after this version can be replayed; before it, only a snapshot.
    oldest: u64,
    resources: BTreeMap<Key, Entry>,
    log: VecDeque<Change>,
    context: Context,
    /// Workload keys by node, for agents' snapshots.
    workloads_by_node: HashMap<String, BTreeSet<Key>>,
    subscribers: BTreeMap<String, SubscriberStatus>,
}

/// The node of a workload.
fn node_of(body: &Body) -> Option<String> {
    match body {
        Body::Workload(w) => Some(w.node.clone()),
        _ => None,
    }
}

impl State {
    fn index(&mut self, key: &Key, node: Option<String>) {
        if let Some(node) = node {
            self.workloads_by_node
                .entry(node)
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &Key, node: Option<String>) {
        if let Some(node) = node
            && let hash_map::Entry::Occupied(mut set) = self.workloads_by_node.entry(node)
        {
            set.get_mut().remove(key);
            if set.get().is_empty() {
                set.remove();
            }
        }
    }
}

pub struct Hub {
    state: Mutex<State>,
    pub(super) changed: watch::Sender<u64>,
    /// Set when the control plane stops: every stream ends, so the server can close.
    pub(super) closing: watch::Sender<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Hub")
            .field("version", &s.version)
            .field("resources", &s.resources.len())
            .field("log", &s.log.len())
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the keys of `kind` start and, exclusive, end in the (kind, namespace,
/// name)-ordered map.
fn kind_bounds(kind: &str) -> (Key, Key) {
    (
        (kind.to_owned(), String::new(), String::new()),
        (format!("{kind}\0"), String::new(), String::new()),
    )
}

fn wire_key((kind, namespace, name): &Key) -> ResourceKey {
    ResourceKey {
        kind: kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    }
}

fn resource(key: &Key, entry: &Entry) -> Resource {
    Resource {
        key: Some(wire_key(key)),
        version: entry.version,
        body: Some(entry.body.clone()),
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

    /// Subscribers by name: an agent by its node, a waypoint by `namespace/name`.
    pub fn subscribers(&self) -> BTreeMap<String, SubscriberStatus> {
        self.lock().subscribers.clone()
    }

    /// How many changes are kept for resuming subscribers (for tests and status).
    /// Runs `f` on each published resource in force (the service graph's inventory
    /// reads them without translating the documents again).
    pub fn for_each_resource(&self, mut f: impl FnMut(&Key, &Body)) {
        for (key, entry) in &self.lock().resources {
            f(key, &entry.body);
        }
    }

    pub fn log_len(&self) -> usize {
        self.lock().log.len()
    }

    /// Puts `resources` in force; returns the new version if anything changed (a body,
    /// or who needs it).
    pub fn publish(&self, resources: BTreeMap<Key, Body>) -> Option<u64> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let context = Context::new(&resources, &s.context);
        let next = s.version + 1;
        let mut changes = Vec::new();
        let gone: Vec<Key> = s
            .resources
            .keys()
            .filter(|k| !resources.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(entry) = s.resources.remove(&key) {
                s.unindex(&key, node_of(&entry.body));
                changes.push(Change {
                    version: next,
                    key,
                    before: Some(entry.audience),
                    body_changed: true,
                });
            }
        }
        for (key, body) in resources {
            let audience = context.audience(&key, &body);
            match s.resources.get_mut(&key) {
                Some(entry) => {
                    let body_changed = entry.body != body;
                    if !body_changed && entry.audience == audience {
                        continue;
                    }
                    let before = std::mem::replace(&mut entry.audience, audience);
                    if body_changed {
                        let (old_node, new_node) = (node_of(&entry.body), node_of(&body));
                        entry.body = body;
                        entry.version = next;
                        if old_node != new_node {
                            s.unindex(&key, old_node);
                            s.index(&key, new_node);
                        }
                    }
                    changes.push(Change {
                        version: next,
                        key,
                        before: Some(before),
                        body_changed,
                    });
                }
                None => {
                    s.index(&key, node_of(&body));
                    s.resources.insert(
                        key.clone(),
                        Entry {
                            version: next,
                            body,
                            audience,
                        },
                    );
                    changes.push(Change {
                        version: next,
                        key,
                        before: None,
                        body_changed: true,
                    });
                }
            }
        }
        s.context = context;
        if changes.is_empty() {
            return None;
        }
        s.version = next;
        s.log.extend(changes);
        while s.log.len() > LOG {
            if let Some(dropped) = s.log.pop_front() {
                s.oldest = s.oldest.max(dropped.version);
            }
        }
        drop(guard);
        self.changed.send_replace(next);
        Some(next)
    }

    /// What `subscriber` needs to go from version `since` (None: nothing) to now.
    pub fn update_for(&self, subscriber: &Subscriber, since: Option<u64>) -> ConfigUpdate {
        let s = self.lock();
        let snapshot = since.is_none_or(|v| v < s.oldest || v > s.version);
        let mut update = ConfigUpdate {
            version: s.version,
            snapshot,
            ..ConfigUpdate::default()
        };
        match since {
            Some(since) if !snapshot => {
                // The first change of a key after `since` tells what the subscriber had;
                // the entry now, what it needs.
                let start = s.log.partition_point(|c| c.version <= since);
                let mut changed: HashMap<&Key, (Option<&Audience>, bool)> = HashMap::new();
                let mut order = Vec::new();
                for c in s.log.range(start..) {
                    match changed.entry(&c.key) {
                        hash_map::Entry::Vacant(v) => {
                            v.insert((c.before.as_ref(), c.body_changed));
                            order.push(&c.key);
                        }
                        hash_map::Entry::Occupied(mut o) => o.get_mut().1 |= c.body_changed,
                    }
                }
                for key in order {
                    let (before, body_changed) = changed[key];
                    let had = before.is_some_and(|a| a.includes(subscriber));
                    let has = s
                        .resources
                        .get(key)
                        .filter(|e| e.audience.includes(subscriber));
                    match has {
                        Some(entry) if body_changed || !had => {
                            update.upserts.push(resource(key, entry));
                        }
                        None if had => update.removals.push(wire_key(key)),
                        Some(_) | None => {}
                    }
                }
            }
            _ => {
                let mut add = |key: &Key, entry: &Entry| {
                    if entry.audience.includes(subscriber) {
                        update.upserts.push(resource(key, entry));
                    }
                };
                match subscriber {
                    // An agent's workloads are those of its node: the index has them,
                    // and the other workloads need not be looked at.
                    Subscriber::Agent { node } => {
                        let (start, end) = kind_bounds("Workload");
                        let before = s.resources.range(..start);
                        let after = s.resources.range(end..);
                        for (key, entry) in before.chain(after) {
                            add(key, entry);
                        }
                        for key in s.workloads_by_node.get(node).into_iter().flatten() {
                            if let Some(entry) = s.resources.get(key) {
                                add(key, entry);
                            }
                        }
                    }
                    Subscriber::Waypoint(_) => {
                        for (key, entry) in &s.resources {
                            add(key, entry);
                        }
                    }
                }
            }
        }
        update
    }

    pub(super) fn record(&self, subscriber: &Subscriber, f: impl FnOnce(&mut SubscriberStatus)) {
        let mut s = self.lock();
        let status = s.subscribers.entry(subscriber.name()).or_default();
        status.kind = subscriber.kind();
        f(status);
        status.connected = status.streams > 0;
    }
}

#[cfg(test)]
mod tests {
    use api::proto::config::{self as wire};

    use super::super::audience::WaypointId;
    use super::*;

    fn wl(node: &str, addr: &str) -> Body {
        Body::Workload(wire::Workload {
            node: node.into(),
            addresses: vec![addr.into()],
            ..wire::Workload::default()
        })
    }

    fn policy(principal: &str) -> Body {
        Body::AuthorizationPolicy(wire::AuthorizationPolicy {
            action: "ALLOW".into(),
            rules: vec![wire::PolicyRule {
                from: vec![wire::PolicySource {
                    principals: vec![principal.into()],
                    ..wire::PolicySource::default()
                }],
                ..wire::PolicyRule::default()
            }],
            ..wire::AuthorizationPolicy::default()
        })
    }

    fn k(kind: &str, ns: &str, name: &str) -> Key {
        (kind.into(), ns.into(), name.into())
    }

    fn agent(node: &str) -> Subscriber {
        Subscriber::Agent { node: node.into() }
    }

    fn names(keys: impl IntoIterator<Item = ResourceKey>) -> Vec<String> {
        let mut out: Vec<String> = keys
            .into_iter()
            .map(|k| format!("{} {}/{}", k.kind, k.namespace, k.name))
            .collect();
        out.sort();
        out
    }

    fn upserts(u: &ConfigUpdate) -> Vec<String> {
        names(u.upserts.iter().filter_map(|r| r.key.clone()))
    }

    fn removals(u: &ConfigUpdate) -> Vec<String> {
        names(u.removals.clone())
    }

    #[test]
    fn incremental_updates_and_snapshots() {
        let hub = Hub::new();
        let v0 = hub.version();
        let n1 = agent("n1");
        let mut res = BTreeMap::from([
            (k("Workload", "shop", "a"), wl("n1", "10.0.0.1")),
            (k("Workload", "shop", "b"), wl("n2", "10.0.0.2")),
        ]);
        let v1 = hub.publish(res.clone()).unwrap();
        assert_eq!(hub.publish(res.clone()), None, "no change, no version");

        let snap = hub.update_for(&n1, None);
        assert!(snap.snapshot);
        assert_eq!(
            upserts(&snap),
            vec!["Workload shop/a"],
            "only n1's workload"
        );
        assert_eq!(snap.version, v1);

        res.insert(k("Workload", "shop", "a"), wl("n1", "10.0.0.9"));
        res.remove(&k("Workload", "shop", "b"));
        let v2 = hub.publish(res.clone()).unwrap();
        let up = hub.update_for(&n1, Some(v1));
        assert!(!up.snapshot);
        assert_eq!(up.version, v2);
        assert_eq!(upserts(&up), vec!["Workload shop/a"]);
        assert_eq!(up.upserts[0].version, v2);
        assert!(
            up.removals.is_empty(),
            "b was never n1's: its removal is not sent"
        );
        let up = hub.update_for(&agent("n2"), Some(v1));
        assert_eq!(removals(&up), vec!["Workload shop/b"]);
        assert!(up.upserts.is_empty());

        // Nothing new since v2.
        let none = hub.update_for(&n1, Some(v2));
        assert!(none.upserts.is_empty() && none.removals.is_empty());
        // From before this hub existed, or from a version it never had: a snapshot.
        assert!(hub.update_for(&n1, Some(v0 - 1)).snapshot);
        assert!(hub.update_for(&n1, Some(v2 + 100)).snapshot);

        // A workload moving to n2 leaves n1 and reaches n2.
        res.insert(k("Workload", "shop", "a"), wl("n2", "10.0.0.9"));
        let v3 = hub.publish(res).unwrap();
        let up = hub.update_for(&n1, Some(v2));
        assert!(up.upserts.is_empty());
        assert_eq!(removals(&up), vec!["Workload shop/a"]);
        let up = hub.update_for(&agent("n2"), Some(v2));
        assert_eq!(upserts(&up), vec!["Workload shop/a"]);
        // Resuming from v1 over several versions: n2 had b, which is gone, and gets a.
        let up = hub.update_for(&agent("n2"), Some(v1));
        assert_eq!(upserts(&up), vec!["Workload shop/a"]);
        assert_eq!(removals(&up), vec!["Workload shop/b"]);
        assert_eq!(up.version, v3);
        // The snapshot of n2 is what the increments built.
        assert_eq!(
            upserts(&hub.update_for(&agent("n2"), None)),
            vec!["Workload shop/a"]
        );
    }

    #[test]
    fn a_namespace_entering_a_node_brings_its_policies() {
        let hub = Hub::new();
        let n1 = agent("n1");
        let mut res = BTreeMap::from([
            (k("Workload", "shop", "a"), wl("n1", "10.0.0.1")),
            (k("Workload", "bank", "vault"), wl("n2", "10.0.0.2")),
            (
                k("AuthorizationPolicy", "bank", "vault"),
                policy("cluster.local/ns/bank/sa/teller"),
            ),
        ]);
        let v1 = hub.publish(res.clone()).unwrap();
        assert_eq!(upserts(&hub.update_for(&n1, None)), vec!["Workload shop/a"]);

        // A bank workload lands on n1: the bank policy comes with it, unchanged.
        res.insert(k("Workload", "bank", "vault-2"), wl("n1", "10.0.0.3"));
        let v2 = hub.publish(res.clone()).unwrap();
        let up = hub.update_for(&n1, Some(v1));
        assert_eq!(
            upserts(&up),
            vec!["AuthorizationPolicy bank/vault", "Workload bank/vault-2"]
        );
        assert_eq!(
            up.upserts
                .iter()
                .find(|r| r
                    .key
                    .as_ref()
                    .is_some_and(|k| k.kind == "AuthorizationPolicy"))
                .map(|r| r.version),
            Some(v1),
            "the policy keeps the version at which it last changed"
        );
        // n2 had the policy all along and it did not change: nothing for n2.
        let up = hub.update_for(&agent("n2"), Some(v1));
        assert!(up.upserts.is_empty() && up.removals.is_empty(), "{up:?}");

        // It leaves again: so does the policy.
        res.remove(&k("Workload", "bank", "vault-2"));
        hub.publish(res).unwrap();
        let up = hub.update_for(&n1, Some(v2));
        assert_eq!(
            removals(&up),
            vec!["AuthorizationPolicy bank/vault", "Workload bank/vault-2"]
        );
    }

    #[test]
    fn waypoints_gain_routes_when_a_service_binds_to_them() {
        let hub = Hub::new();
        let wp = Subscriber::Waypoint(WaypointId {
            namespace: "shop".into(),
            name: "wp".into(),
        });
        let service = |waypoint: &str| {
            Body::Service(wire::Service {
                waypoint: waypoint.into(),
                ..wire::Service::default()
            })
        };
        let route = Body::HttpRoute(wire::HttpRoute {
            parents: vec![wire::ParentRef {
                kind: "Service".into(),
                namespace: "shop".into(),
                name: "cart".into(),
                ..wire::ParentRef::default()
            }],
            ..wire::HttpRoute::default()
        });
        let mut res = BTreeMap::from([
            (k("Service", "shop", "cart"), service("")),
            (k("HTTPRoute", "shop", "cart"), route),
        ]);
        let v1 = hub.publish(res.clone()).unwrap();
        assert!(hub.update_for(&wp, None).upserts.is_empty());
        assert!(
            hub.update_for(&agent("n1"), None)
                .upserts
                .iter()
                .all(|r| r.key.as_ref().unwrap().kind == "Service"),
            "agents get no routes"
        );

        res.insert(k("Service", "shop", "cart"), service("wp"));
        let v2 = hub.publish(res.clone()).unwrap();
        let up = hub.update_for(&wp, Some(v1));
        assert_eq!(
            upserts(&up),
            vec!["HTTPRoute shop/cart", "Service shop/cart"]
        );
        // The agents see the Service change, and nothing of the route.
        let up = hub.update_for(&agent("n1"), Some(v1));
        assert_eq!(upserts(&up), vec!["Service shop/cart"]);
        assert!(up.removals.is_empty());

        res.insert(k("Service", "shop", "cart"), service(""));
        hub.publish(res).unwrap();
        let up = hub.update_for(&wp, Some(v2));
        assert_eq!(
            removals(&up),
            vec!["HTTPRoute shop/cart", "Service shop/cart"]
        );
    }

    #[test]
    fn the_log_is_bounded_and_older_subscribers_get_snapshots() {
        let hub = Hub::new();
        let n1 = agent("n1");
        let many = |addr: u32| -> BTreeMap<Key, Body> {
            (0..LOG / 2 + 1)
                .map(|i| {
                    (
                        k("Workload", "shop", &format!("w{i}")),
                        wl("n1", &format!("10.{addr}.0.1")),
                    )
                })
                .collect()
        };
        let v1 = hub.publish(many(1)).unwrap();
        let v2 = hub.publish(many(2)).unwrap();
        assert!(!hub.update_for(&n1, Some(v1)).snapshot);
        hub.publish(many(3)).unwrap();
        assert!(hub.log_len() <= LOG);
        assert!(
            hub.update_for(&n1, Some(v1)).snapshot,
            "v2's changes are partly gone"
        );
        let up = hub.update_for(&n1, Some(v2));
        assert!(!up.snapshot);
        assert_eq!(up.upserts.len(), LOG / 2 + 1);
    }
}
