//! The Kubernetes source against an API server played in memory (`kube_mock::FakeApi`):
//! lists, watch events, watches that end or expire, failures, and objects that are
//! refused.

use std::time::Duration;

use api::proto::config::resource::Body;
use serde_json::{Value, json};
use tokio::sync::watch as signal;

use super::*;
use crate::{
    kube_mock::{FakeApi, mock, status},
    kubernetes::source::{KubernetesSource, follow},
    model::{Document, Object, Problem},
};

const NAMESPACES: &str = "/api/v1/namespaces";
const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const POLICIES: &str = "/apis/security.weft.dev/v1alpha1/authorizationpolicies";
const PEER_AUTHENTICATIONS: &str = "/apis/security.weft.dev/v1alpha1/peerauthentications";
const WORKLOADS: &str = "/apis/weft.dev/v1alpha1/workloads";

/// Every kind but GRPCRoute, whose CRD this cluster does not have.
const INSTALLED: [&str; 9] = [
    NAMESPACES,
    PODS,
    SERVICES,
    SLICES,
    GATEWAYS,
    HTTP_ROUTES,
    POLICIES,
    PEER_AUTHENTICATIONS,
    WORKLOADS,
];

const SETTLE: Duration = Duration::from_millis(20);

fn quick() -> Settings {
    Settings {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(80),
    }
}

fn pod(name: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "cart"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "cart",
                 "containers": [{"name": "app", "image": "cart:1"}]},
        "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
    })
}

fn slice(ready: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = ready
        .iter()
        .map(|(name, ip)| {
            json!({"addresses": [ip], "conditions": {"ready": true},
                   "targetRef": {"kind": "Pod", "namespace": "shop", "name": name}})
        })
        .collect();
    json!({
        "metadata": {"name": "cart-x1", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "cart"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn policy(name: &str, principal: &str) -> Value {
    json!({
        "apiVersion": "security.weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"action": "ALLOW",
                 "rules": [{"from": [{"source": {"principals": [principal]}}]}]},
    })
}

/// A cluster with the shop namespace, a cart pod behind a Service, a waypoint, a mesh
/// route and a policy.
fn shop() -> (Client, FakeApi) {
    let (client, handle) = mock();
    let fake = FakeApi::serve(handle);
    fake.install(&INSTALLED);
    fake.apply(
        NAMESPACES,
        json!({"metadata": {"name": "shop", "labels": {"weft.dev/mesh": "enabled"}}}),
    );
    fake.apply(PODS, pod("cart-1", "10.244.1.3"));
    fake.apply(
        SERVICES,
        json!({
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "cart"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }),
    );
    fake.apply(SLICES, slice(&[("cart-1", "10.244.1.3")]));
    fake.apply(
        GATEWAYS,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "shop-waypoint", "namespace": "shop"},
            "spec": {"gatewayClassName": "weft-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE",
                                    "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
        }),
    );
    fake.apply(
        HTTP_ROUTES,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "cart"}],
                     "rules": [{"backendRefs": [{"name": "cart", "port": 80}]}]},
        }),
    );
    fake.apply(
        POLICIES,
        policy("cart", "cluster.local/ns/shop/sa/frontend"),
    );
    (client, fake)
}

/// The configuration in force, as the source hands it out after each settled burst.
struct InForce {
    rx: signal::Receiver<(Vec<Document>, Vec<Problem>)>,
    _task: tokio::task::JoinHandle<()>,
}

impl InForce {
    /// Starts the watches, waits for their first lists and follows them.
    async fn follow(client: &Client) -> (InForce, BTreeMap<Kind, KindStatus>) {
        let mut watches = Watches::start(client, &quick());
        tokio::time::timeout(Duration::from_secs(10), watches.synced())
            .await
            .expect("every kind is listed");
        let status = watches.status();
        let mut source = KubernetesSource::default();
        let first = source.reload(&watches.snapshot());
        let (tx, rx) = signal::channel((first, source.problems().to_vec()));
        let task = tokio::spawn(follow(watches, source, SETTLE, move |docs, problems, _| {
            tx.send_replace((docs, problems.to_vec()));
        }));
        (InForce { rx, _task: task }, status)
    }

    fn now(&self) -> (Vec<Document>, Vec<Problem>) {
        self.rx.borrow().clone()
    }

    /// Waits (at most 10 s) until the configuration in force satisfies `f`.
    async fn until(
        &mut self,
        what: &str,
        f: impl Fn(&[Document], &[Problem]) -> bool,
    ) -> (Vec<Document>, Vec<Problem>) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            match self.rx.wait_for(|(docs, problems)| f(docs, problems)).await {
                Ok(state) => Some(state.clone()),
                Err(_) => None,
            }
        })
        .await;
        match found {
            Ok(Some(state)) => state,
            _ => panic!("never: {what}; in force: {:#?}", self.now()),
        }
    }
}

fn described(docs: &[Document]) -> Vec<String> {
    let mut out: Vec<String> = docs.iter().map(|d| d.object.describe()).collect();
    out.sort();
    out
}

fn addresses(docs: &[Document], pod: &str) -> Option<Vec<String>> {
    docs.iter().find_map(|d| match &d.object {
        Object::Workload(w) if w.metadata.name == pod => Some(w.spec.addresses.clone()),
        _ => None,
    })
}

fn endpoints(docs: &[Document], service: &str) -> Vec<String> {
    let resources = crate::resources::translate(docs, "cluster.local");
    match resources.get(&("Service".into(), "shop".into(), service.into())) {
        Some(Body::Service(s)) => s.endpoints.iter().map(|e| e.workload.clone()).collect(),
        _ => Vec::new(),
    }
}

fn principal(docs: &[Document], name: &str) -> Option<String> {
    docs.iter().find_map(|d| match &d.object {
        Object::AuthorizationPolicy(p) if p.metadata.name == name => {
            Some(p.spec.rules[0].from[0].source.principals[0].clone())
        }
        _ => None,
    })
}

#[tokio::test]
async fn the_first_lists_are_in_force_and_watch_events_follow() {
    let (client, fake) = shop();
    let (mut in_force, status) = InForce::follow(&client).await;

    // A kind the API server does not serve counts as listed, and empty.
    let grpc = &status[&Kind::GrpcRoute];
    assert!(grpc.synced && !grpc.served, "{grpc:?}");
    assert!(status[&Kind::Pod].synced && status[&Kind::Pod].served);

    let (docs, problems) = in_force.now();
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        described(&docs),
        vec![
            "AuthorizationPolicy shop/cart",
            "EndpointSlice shop/cart-x1",
            "Gateway shop/shop-waypoint",
            "HTTPRoute shop/cart",
            "Namespace shop",
            "Service shop/cart",
            "Workload shop/cart-1",
        ]
    );
    assert_eq!(endpoints(&docs, "cart"), vec!["shop/cart-1"]);

    // ADDED: a second pod, and the slice that makes it ready.
    fake.apply(PODS, pod("cart-2", "10.244.1.4"));
    fake.apply(
        SLICES,
        slice(&[("cart-1", "10.244.1.3"), ("cart-2", "10.244.1.4")]),
    );
    in_force
        .until("cart-2 is an endpoint", |docs, _| {
            endpoints(docs, "cart") == ["shop/cart-1", "shop/cart-2"]
        })
        .await;

    // MODIFIED: the first pod has a new address.
    fake.apply(PODS, pod("cart-1", "10.244.1.30"));
    in_force
        .until("cart-1 has its new address", |docs, _| {
            addresses(docs, "cart-1") == Some(vec!["10.244.1.30".to_owned()])
        })
        .await;

    // DELETED: the second pod leaves.
    fake.delete(PODS, "shop", "cart-2");
    fake.apply(SLICES, slice(&[("cart-1", "10.244.1.30")]));
    let (docs, _) = in_force
        .until("cart-2 is gone", |docs, _| {
            addresses(docs, "cart-2").is_none()
        })
        .await;
    assert_eq!(endpoints(&docs, "cart"), vec!["shop/cart-1"]);

    // Every answer to a watch ended its stream: the watcher watched again from the last
    // version it had, without listing again.
    assert_eq!(fake.requests(&format!("LIST {PODS}")).len(), 1);
    let watches = fake.requests(&format!("WATCH {PODS} "));
    assert!(watches.len() >= 4, "{watches:?}");
    let versions: Vec<u64> = watches
        .iter()
        .map(|w| w.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|v| v[0] < v[1]),
        "each watch resumes after the last version seen: {versions:?}"
    );
}

#[tokio::test]
async fn expired_watches_list_again_and_converge() {
    let (client, fake) = shop();
    fake.apply(PODS, pod("cart-2", "10.244.1.4"));
    fake.apply(PODS, pod("cart-3", "10.244.1.5"));
    let (mut in_force, _) = InForce::follow(&client).await;
    assert!(addresses(&in_force.now().0, "cart-2").is_some());

    // cart-2 is deleted while the watch is away, and its event is lost; the watch's
    // version expires (410 Gone in the stream): only a new list can tell.
    fake.forget(PODS, "shop", "cart-2");
    fake.expire_watches(PODS);
    in_force
        .until("the list without cart-2 replaced the store", |docs, _| {
            addresses(docs, "cart-2").is_none() && addresses(docs, "cart-1").is_some()
        })
        .await;
    assert_eq!(fake.requests(&format!("LIST {PODS}")).len(), 2);

    // The watch's start is refused as expired (HTTP 410): the watcher starts over.
    fake.forget(PODS, "shop", "cart-3");
    fake.refuse_next_watch(PODS, status(410, "Expired"));
    fake.apply(PODS, pod("cart-4", "10.244.1.6"));
    in_force
        .until("cart-4 is in, cart-3 is out", |docs, _| {
            addresses(docs, "cart-4").is_some() && addresses(docs, "cart-3").is_none()
        })
        .await;
    assert_eq!(fake.requests(&format!("LIST {PODS}")).len(), 3);

    // The list that follows an expiry fails once: after a wait, the next succeeds.
    fake.refuse_next_list(SERVICES, status(500, "InternalError"));
    fake.forget(SERVICES, "shop", "cart");
    fake.expire_watches(SERVICES);
    let (docs, _) = in_force
        .until("the Service is gone", |docs, _| {
            !described(docs).contains(&"Service shop/cart".to_owned())
        })
        .await;
    assert_eq!(fake.requests(&format!("LIST {SERVICES}")).len(), 3);
    // The slice refers to a Service that is gone: it is no longer taken either.
    assert!(!described(&docs).contains(&"EndpointSlice shop/cart-x1".to_owned()));
    // The route on that Service cannot be in force, but its last good version stays.
    assert!(described(&docs).contains(&"HTTPRoute shop/cart".to_owned()));
}

#[tokio::test]
async fn a_bad_object_is_refused_and_its_last_good_version_stays() {
    let (client, fake) = shop();
    let (mut in_force, _) = InForce::follow(&client).await;
    let good = "cluster.local/ns/shop/sa/frontend";
    assert_eq!(principal(&in_force.now().0, "cart").as_deref(), Some(good));

    // A value that is wrong.
    fake.apply(
        POLICIES,
        policy("cart", "spiffe://cluster.local/ns/shop/sa/x"),
    );
    let (docs, problems) = in_force
        .until("the bad principal is refused", |_, problems| {
            !problems.is_empty()
        })
        .await;
    assert_eq!(principal(&docs, "cart").as_deref(), Some(good));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0].origin.source,
        "kubernetes AuthorizationPolicy shop/cart"
    );
    assert_eq!(
        problems[0].path,
        "spec.rules[0].from[0].source.principals[0]"
    );
    assert!(problems[0].reason.contains("spiffe://"), "{}", problems[0]);

    // A field Weft does not implement.
    let mut unknown = policy("cart", good);
    unknown["spec"]["rules"][0]["to"] = json!([{"operation": {"notPorts": ["80"]}}]);
    fake.apply(POLICIES, unknown);
    let (docs, problems) = in_force
        .until("the unknown field is refused", |_, problems| {
            problems
                .iter()
                .any(|p| p.path == "spec.rules[0].to[0].operation.notPorts")
        })
        .await;
    assert_eq!(principal(&docs, "cart").as_deref(), Some(good));
    assert!(problems[0].reason.contains("notPorts"), "{}", problems[0]);

    // A new object that never was good is not taken.
    fake.apply(POLICIES, policy("other", "nobody"));
    let (docs, _) = in_force
        .until("the new bad policy is refused", |_, problems| {
            problems
                .iter()
                .any(|p| p.origin.source == "kubernetes AuthorizationPolicy shop/other")
        })
        .await;
    assert_eq!(principal(&docs, "other"), None);

    // Fixed and cleaned up: the new version is in force and no problem is left.
    let fixed = "cluster.local/ns/shop/sa/checkout";
    fake.apply(POLICIES, policy("cart", fixed));
    fake.delete(POLICIES, "shop", "other");
    let (docs, _) = in_force
        .until("the fixed policy is in force", |docs, problems| {
            problems.is_empty() && principal(docs, "cart").as_deref() == Some(fixed)
        })
        .await;
    assert_eq!(principal(&docs, "other"), None);
}

#[tokio::test]
async fn a_kind_installed_later_is_picked_up() {
    let (client, fake) = shop();
    let (mut in_force, _) = InForce::follow(&client).await;
    let grpc_routes = "/apis/gateway.networking.k8s.io/v1/grpcroutes";
    fake.install(&[grpc_routes]);
    fake.apply(
        grpc_routes,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "cart-grpc", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "shop-waypoint"}],
                     "rules": [{"matches": [{"method": {"service": "shop.Cart"}}],
                                "backendRefs": [{"name": "cart", "port": 80}]}]},
        }),
    );
    in_force
        .until("the GRPCRoute is in force", |docs, _| {
            described(docs).contains(&"GRPCRoute shop/cart-grpc".to_owned())
        })
        .await;
}

#[tokio::test]
async fn a_kind_no_longer_served_is_emptied() {
    let (client, fake) = shop();
    let (mut in_force, _) = InForce::follow(&client).await;
    assert!(principal(&in_force.now().0, "cart").is_some());
    fake.uninstall(POLICIES);
    in_force
        .until("the policy is gone with its CRD", |docs, _| {
            principal(docs, "cart").is_none()
        })
        .await;
    // The watch from the last version was refused (404), and so was the new list.
    let refused = fake.requests(&format!("GET {POLICIES} (not installed)"));
    assert!(refused.len() >= 2, "{refused:?}");
}

#[test]
fn backoff_doubles_up_to_its_limit_and_starts_over() {
    let mut b = Backoff::new(&Settings {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
    });
    let waits: Vec<Duration> = (0..5).map(|_| b.next()).collect();
    for (wait, base) in waits.iter().zip([100, 200, 400, 400, 400]) {
        let base = Duration::from_millis(base);
        assert!(*wait <= base && *wait >= base * 3 / 4, "{waits:?}");
    }
    b.reset();
    assert!(b.next() <= Duration::from_millis(100));
}

/// A control plane in Kubernetes mode, against the same API server: its root CA is kept
/// in a Secret, agents are let in by TokenReview, and what the cluster holds reaches a
/// subscribed agent, change by change.
mod control_plane;
