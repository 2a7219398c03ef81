//! A Kubernetes API server played by the test: a kube client over a `tower-test` mock
//! service, and canned answers. Each test's scenario task takes the client's requests
//! in order, checks them and answers (kube-rs's own way of testing controllers). For
//! watches, whose requests come from many tasks at once, [`FakeApi`] answers from a small
//! in-memory store instead of a script.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use http::{Request, Response};
use kube::{Client, client::Body};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

pub fn json(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// A `Status` failure answer, as the API server sends for errors.
pub fn status(code: u16, reason: &str) -> Response<Body> {
    json(
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "code": code,
            "message": format!("the server says {reason}"),
        }),
    )
}

/// The JSON body of a request.
pub async fn body(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

type Reply = tower_test::mock::SendResponse<Response<Body>>;
type Reactor = Box<dyn Fn(&serde_json::Value) -> Response<Body> + Send>;

/// An API server for watch scenarios, played in memory over the mock: collections of
/// objects with resource versions; lists; watches, each answered with the events since
/// the version asked for and then ended (so the client watches again, as after a
/// connection that drops); reads and creates of single objects. A collection that was
/// not installed answers 404, as a kind whose CRD is missing does.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    version: u64,
    collections: BTreeMap<String, Collection>,
    /// `LIST <collection>`, `WATCH <collection> <version>`, `GET …`, `POST …`.
    requests: Vec<String>,
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<(String, String), serde_json::Value>,
    /// `(version, watch event)`, oldest first.
    events: Vec<(u64, serde_json::Value)>,
    /// Watches waiting for an event: the version they watch from, and their answer.
    parked: Vec<(u64, Reply)>,
    /// Answers the next lists and watches get instead of the normal ones.
    next_lists: VecDeque<Response<Body>>,
    next_watches: VecDeque<Response<Body>>,
    on_create: Option<Reactor>,
}

/// A collection path (`/api/v1/pods`, `/apis/<group>/<version>/<plural>`), and the
/// namespace and name a request path names.
fn route(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let (base, rest) = match path.strip_prefix("/api/v1/") {
        Some(rest) => ("/api/v1".to_owned(), rest),
        None => {
            let mut parts = path.strip_prefix("/apis/")?.splitn(3, '/');
            let (group, version) = (parts.next()?, parts.next()?);
            (format!("/apis/{group}/{version}"), parts.next()?)
        }
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, plural, name) = match segments.as_slice() {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    Some((
        format!("{base}/{plural}"),
        namespace.map(str::to_owned),
        name.map(str::to_owned),
    ))
}

fn key_of(object: &serde_json::Value) -> (String, String) {
    let field = |f: &str| {
        object["metadata"][f]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

fn watch_answer(events: &[serde_json::Value]) -> Response<Body> {
    let mut body = Vec::new();
    for e in events {
        serde_json::to_writer(&mut body, e).unwrap();
        body.push(b'\n');
    }
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

impl Collection {
    fn since(&self, version: u64) -> Vec<serde_json::Value> {
        self.events
            .iter()
            .filter(|(v, _)| *v > version)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn wake(&mut self) {
        for (from, reply) in std::mem::take(&mut self.parked) {
            let events = self.since(from);
            reply.send_response(watch_answer(&events));
        }
    }
}

impl FakeState {
    fn record(&mut self, collection: &str, kind: &str, mut object: serde_json::Value) {
        self.version += 1;
        let version = self.version;
        object["metadata"]["resourceVersion"] = version.to_string().into();
        let c = self.collections.entry(collection.to_owned()).or_default();
        let key = key_of(&object);
        let kind = match kind {
            "" if c.objects.contains_key(&key) => "MODIFIED",
            "" => "ADDED",
            other => other,
        };
        if kind == "DELETED" {
            c.objects.remove(&key);
        } else {
            c.objects.insert(key, object.clone());
        }
        c.events
            .push((version, serde_json::json!({"type": kind, "object": object})));
        c.wake();
    }

    fn answer(&mut self, req: http::request::Parts, body: &[u8], reply: Reply) {
        let path = req.uri.path().to_owned();
        // `…/<name>/status`: the status subresource of the object.
        let (object_path, status_only) = match path.strip_suffix("/status") {
            Some(p) => (p.to_owned(), true),
            None => (path.clone(), false),
        };
        let query: BTreeMap<String, String> = req
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let Some((collection, namespace, name)) = route(&object_path) else {
            reply.send_response(status(404, "NotFound"));
            return;
        };
        let version = self.version;
        let Some(c) = self.collections.get_mut(&collection) else {
            self.requests
                .push(format!("{} {path} (not installed)", req.method));
            reply.send_response(status(404, "NotFound"));
            return;
        };
        let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        match (&req.method, name) {
            (&http::Method::GET, None) if watching => {
                let from: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                self.requests.push(format!("WATCH {collection} {from}"));
                if let Some(answer) = c.next_watches.pop_front() {
                    reply.send_response(answer);
                    return;
                }
                let events = c.since(from);
                if events.is_empty() {
                    c.parked.push((from, reply));
                } else {
                    reply.send_response(watch_answer(&events));
                }
            }
            (&http::Method::GET, None) => {
                self.requests.push(format!("LIST {collection}"));
                if let Some(answer) = c.next_lists.pop_front() {
                    reply.send_response(answer);
                    return;
                }
                let items: Vec<&serde_json::Value> = c
                    .objects
                    .iter()
                    .filter(|((ns, _), _)| namespace.as_ref().is_none_or(|want| want == ns))
                    .map(|(_, o)| o)
                    .collect();
                reply.send_response(json(
                    200,
                    serde_json::json!({
                        "apiVersion": "v1", "kind": "List",
                        "metadata": {"resourceVersion": version.to_string()},
                        "items": items,
                    }),
                ));
            }
            (&http::Method::GET, Some(name)) => {
                self.requests.push(format!("GET {path}"));
                let key = (namespace.unwrap_or_default(), name);
                match c.objects.get(&key) {
                    Some(o) => reply.send_response(json(200, o.clone())),
                    None => reply.send_response(status(404, "NotFound")),
                }
            }
            (&http::Method::POST, None) => {
                self.requests.push(format!("POST {path}"));
                let mut object: serde_json::Value = serde_json::from_slice(body).unwrap();
                if let Some(react) = &c.on_create {
                    reply.send_response(react(&object));
                    return;
                }
                if let Some(ns) = namespace {
                    object["metadata"]["namespace"] = ns.into();
                }
                if c.objects.contains_key(&key_of(&object)) {
                    reply.send_response(status(409, "AlreadyExists"));
                    return;
                }
                self.record(&collection, "ADDED", object.clone());
                let stored = self.collections[&collection].objects[&key_of(&object)].clone();
                reply.send_response(json(201, stored));
            }
            // Server-side apply: the object as sent (or, for the status subresource,
            // its status on the stored object).
            (&http::Method::PATCH, Some(name)) => {
                self.requests.push(format!("PATCH {path}"));
                let sent: serde_json::Value = serde_json::from_slice(body).unwrap();
                let key = (namespace.clone().unwrap_or_default(), name);
                let object = match (status_only, c.objects.get(&key)) {
                    (true, None) => {
                        reply.send_response(status(404, "NotFound"));
                        return;
                    }
                    (true, Some(stored)) => {
                        let mut o = stored.clone();
                        o["status"] = sent["status"].clone();
                        o
                    }
                    (false, stored) => {
                        let mut o = sent;
                        if let Some(ns) = namespace {
                            o["metadata"]["namespace"] = ns.into();
                        }
                        if let Some(uid) = stored.map(|s| s["metadata"]["uid"].clone()) {
                            o["metadata"]["uid"] = uid;
                        }
                        o
                    }
                };
                self.record(&collection, "", object.clone());
                let stored = self.collections[&collection].objects[&key_of(&object)].clone();
                reply.send_response(json(200, stored));
            }
            // A replace: refused (409) unless it carries the stored resource version.
            (&http::Method::PUT, Some(name)) => {
                self.requests.push(format!("PUT {path}"));
                let mut sent: serde_json::Value = serde_json::from_slice(body).unwrap();
                let key = (namespace.clone().unwrap_or_default(), name);
                let Some(stored) = c.objects.get(&key) else {
                    reply.send_response(status(404, "NotFound"));
                    return;
                };
                if sent["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                    reply.send_response(status(409, "Conflict"));
                    return;
                }
                if let Some(ns) = namespace {
                    sent["metadata"]["namespace"] = ns.into();
                }
                self.record(&collection, "", sent.clone());
                let stored = self.collections[&collection].objects[&key_of(&sent)].clone();
                reply.send_response(json(200, stored));
            }
            _ => {
                self.requests.push(format!("{} {path}", req.method));
                reply.send_response(status(405, "MethodNotAllowed"));
            }
        }
    }
}

impl FakeApi {
    /// Serves the requests of `handle` until its client is gone.
    pub fn serve(mut handle: Handle) -> Self {
        let fake = FakeApi {
            state: Arc::default(),
        };
        let state = Arc::clone(&fake.state);
        tokio::spawn(async move {
            while let Some((req, reply)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .answer(parts, &body, reply);
            }
        });
        fake
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes `collections` exist (their kinds are served).
    pub fn install(&self, collections: &[&str]) {
        self.with(|s| {
            for c in collections {
                s.collections.entry((*c).to_owned()).or_default();
            }
        });
    }

    /// Makes `collection` go away (its CRD is deleted): open watches end, and every
    /// request after answers 404.
    pub fn uninstall(&self, collection: &str) {
        self.with(|s| {
            if let Some(c) = s.collections.remove(collection) {
                for (_, reply) in c.parked {
                    reply.send_response(watch_answer(&[]));
                }
            }
        });
    }

    /// Adds or changes an object (an ADDED or MODIFIED event).
    pub fn apply(&self, collection: &str, object: serde_json::Value) {
        self.with(|s| s.record(collection, "", object));
    }

    /// Deletes an object (a DELETED event).
    pub fn delete(&self, collection: &str, namespace: &str, name: &str) {
        self.with(|s| {
            let key = (namespace.to_owned(), name.to_owned());
            let object = s.collections[collection].objects[&key].clone();
            s.record(collection, "DELETED", object);
        });
    }

    /// Removes an object without an event, as when its deletion happened while a watch
    /// was away and its event has been compacted away since.
    pub fn forget(&self, collection: &str, namespace: &str, name: &str) {
        self.with(|s| {
            s.version += 1;
            let c = s.collections.get_mut(collection).unwrap();
            c.objects.remove(&(namespace.to_owned(), name.to_owned()));
        });
    }

    /// Ends the watches of `collection` with a 410 Gone error event (their resource
    /// version is too old), now if one is open, else at the next.
    pub fn expire_watches(&self, collection: &str) {
        let gone = || {
            watch_answer(&[serde_json::json!({
                "type": "ERROR",
                "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": "too old resource version",
                },
            })])
        };
        self.with(|s| {
            let c = s.collections.get_mut(collection).unwrap();
            let parked = std::mem::take(&mut c.parked);
            if parked.is_empty() {
                c.next_watches.push_back(gone());
            }
            for (_, reply) in parked {
                reply.send_response(gone());
            }
        });
    }

    /// The next watch of `collection` is refused with `answer`.
    pub fn refuse_next_watch(&self, collection: &str, answer: Response<Body>) {
        self.with(|s| {
            let c = s.collections.get_mut(collection).unwrap();
            c.next_watches.push_back(answer);
        });
    }

    /// The next list of `collection` is refused with `answer`.
    pub fn refuse_next_list(&self, collection: &str, answer: Response<Body>) {
        self.with(|s| {
            let c = s.collections.get_mut(collection).unwrap();
            c.next_lists.push_back(answer);
        });
    }

    /// Answers creations in `collection` with `react` (TokenReviews).
    pub fn on_create(
        &self,
        collection: &str,
        react: impl Fn(&serde_json::Value) -> Response<Body> + Send + 'static,
    ) {
        self.with(|s| {
            s.collections
                .entry(collection.to_owned())
                .or_default()
                .on_create = Some(Box::new(react));
        });
    }

    /// The requests so far that start with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<String> {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.starts_with(prefix))
                .cloned()
                .collect()
        })
    }

    /// An object as the fake holds it.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        self.with(|s| {
            s.collections
                .get(collection)?
                .objects
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        })
    }
}
