use api::proto::config::{
    ConfigUpdate, Hello, SubscribeRequest, config_service_client::ConfigServiceClient,
    subscribe_request::Request as Msg,
};
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::{
    Running, Runtime,
    config::{Config, Mode},
    kube_mock::json,
};

const SECRETS: &str = "/api/v1/secrets";
const LEASES: &str = "/apis/coordination.k8s.io/v1/leases";
const ACCOUNTS: &str = "/api/v1/serviceaccounts";
const CONFIG_MAPS: &str = "/api/v1/configmaps";
const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const CREATE_SECRET: &str = "POST /api/v1/namespaces/weft-system/secrets";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const AGENT_TOKEN: &str = "token-of-the-agent-on-node-1";

/// The API server's answer to a TokenReview: only the agent's token is good.
fn review(request: &Value) -> http::Response<kube::client::Body> {
    let mut answer = request.clone();
    answer["status"] = if request["spec"]["token"] == AGENT_TOKEN {
        json!({
            "authenticated": true,
            "audiences": request["spec"]["audiences"],
            "user": {
                "username": "system:serviceaccount:weft-system:weft-agent",
                "extra": {crate::auth::NODE_NAME_EXTRA: ["node-1"]},
            },
        })
    } else {
        json!({"authenticated": false, "error": "invalid bearer token"})
    };
    json(201, answer)
}

async fn launch(fake_client: Client, state: &std::path::Path) -> Running {
    let env = std::collections::HashMap::from([
        (crate::config::STATE_DIR, state.to_str().unwrap()),
        (crate::config::SOURCE, "kubernetes"),
        (crate::config::LISTEN, "127.0.0.1:0"),
        (crate::config::WEBHOOK_LISTEN, "off"),
        (crate::config::METRICS_LISTEN, "off"),
    ]);
    let config = Config::from_source(&env).unwrap();
    let Mode::Kubernetes(k) = config.mode.clone() else {
        panic!("{:?}", config.mode)
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        crate::launch(
            config,
            Runtime::Kubernetes(Box::new(k), fake_client),
            quick(),
        ),
    )
    .await
    .expect("the control plane starts")
    .unwrap()
}

/// A subscription: the agent's side of the request stream, and the updates.
type Subscription = (
    tokio::sync::mpsc::Sender<SubscribeRequest>,
    tonic::Streaming<ConfigUpdate>,
);

async fn subscribe(cp: &Running, token: &str) -> Result<Subscription, tonic::Status> {
    subscribe_as(cp, token, Hello::default()).await
}

async fn subscribe_as(
    cp: &Running,
    token: &str,
    hello: Hello,
) -> Result<Subscription, tonic::Status> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            &cp.trust_bundle_pem,
        ))
        .domain_name("weft-controlplane");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", cp.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(SubscribeRequest {
        request: Some(Msg::Hello(hello)),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let updates = ConfigServiceClient::new(channel)
        .subscribe(request)
        .await?
        .into_inner();
    Ok((tx, updates))
}

fn names(update: &ConfigUpdate, kind: &str) -> Vec<String> {
    update
        .upserts
        .iter()
        .filter_map(|r| r.key.as_ref())
        .filter(|k| k.kind == kind)
        .map(|k| format!("{}/{}", k.namespace, k.name))
        .collect()
}

#[tokio::test]
async fn the_cluster_reaches_a_subscribed_agent() {
    let (client, fake) = shop();
    fake.install(&[SECRETS, LEASES]);
    fake.on_create(TOKEN_REVIEWS, review);
    let state = std::env::temp_dir().join(format!("weft-k8s-{}", rand::random::<u64>()));
    let cp = launch(client.clone(), &state).await;

    // The root was created in the Secret.
    assert_eq!(fake.requests(CREATE_SECRET).len(), 1);
    let secret = fake
        .get(SECRETS, "weft-system", "weft-root-ca")
        .expect("the CA Secret exists");
    assert!(secret["data"]["root-cert.pem"].is_string(), "{secret}");
    assert!(
        described(&cp.documents()).contains(&"Workload shop/cart-1".to_owned()),
        "{:#?}",
        cp.documents()
    );

    // The agent's token is reviewed; the snapshot has its node's workload and the
    // Service with its endpoint.
    let (_requests, mut updates) = subscribe(&cp, AGENT_TOKEN).await.unwrap();
    let first = updates.message().await.unwrap().unwrap();
    assert!(first.snapshot);
    assert_eq!(names(&first, "Workload"), vec!["shop/cart-1"]);
    let service = first
        .upserts
        .iter()
        .find(|r| r.key.as_ref().is_some_and(|k| k.kind == "Service"))
        .and_then(|r| r.body.clone());
    let Some(Body::Service(service)) = service else {
        panic!("{first:?}")
    };
    assert_eq!(service.endpoints.len(), 1);
    assert_eq!(service.endpoints[0].workload, "shop/cart-1");
    assert_eq!(
        service.endpoints[0].identity,
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
    let reviews = fake.requests(&format!("POST {TOKEN_REVIEWS}"));
    assert_eq!(reviews.len(), 1, "{reviews:?}");

    // A new pod on the node reaches the agent as an update.
    fake.apply(PODS, pod("cart-2", "10.244.1.4"));
    let update = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let update = updates.message().await.unwrap().unwrap();
            if !names(&update, "Workload").is_empty() {
                return update;
            }
        }
    })
    .await
    .expect("the new pod is pushed");
    assert!(!update.snapshot);
    assert_eq!(names(&update, "Workload"), vec!["shop/cart-2"]);

    // A bad policy is refused; status.json says which field, and why.
    fake.apply(
        POLICIES,
        policy("cart", "spiffe://cluster.local/ns/shop/sa/x"),
    );
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = std::fs::read_to_string(state.join("status.json")).unwrap();
            let status: Value = serde_json::from_str(&text).unwrap();
            if status["problems"].as_array().is_some_and(|p| !p.is_empty()) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the problem shows in status.json");
    let problem = &status["problems"][0];
    assert_eq!(
        problem["source"],
        "kubernetes AuthorizationPolicy shop/cart"
    );
    assert_eq!(
        problem["path"],
        "spec.rules[0].from[0].source.principals[0]"
    );
    assert_eq!(cp.problems().len(), 1);
    assert_eq!(
        principal(&cp.documents(), "cart").as_deref(),
        Some("cluster.local/ns/shop/sa/frontend"),
        "the last good policy stays in force"
    );

    // Any other token is refused, with the reason.
    let refused = subscribe(&cp, "somebody-elses-token").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().starts_with("token_rejected"),
        "{refused:?}"
    );
    let trust = cp.trust_bundle_pem.clone();
    cp.stop().await;

    // A restart finds the root in the Secret and keeps it.
    let again = launch(client, &state).await;
    assert_eq!(again.trust_bundle_pem, trust);
    assert_eq!(fake.requests(CREATE_SECRET).len(), 1);
    again.stop().await;
    std::fs::remove_dir_all(&state).unwrap();
}

const WAYPOINT_TOKEN: &str = "token-of-the-waypoint-pod";
const CART_TOKEN: &str = "token-of-the-cart-pod";

/// Like `review`, and pods' own tokens too: bound to the pod and its node.
fn review_pods(request: &Value) -> http::Response<kube::client::Body> {
    let pod = |sa: &str, pod: &str| {
        json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:shop:{sa}"),
                "extra": {
                    crate::auth::NODE_NAME_EXTRA: ["node-1"],
                    crate::auth::POD_NAME_EXTRA: [pod],
                },
            },
        })
    };
    let answer = match request["spec"]["token"].as_str() {
        Some(WAYPOINT_TOKEN) => pod("waypoint", "shop-waypoint-7f9c"),
        Some(CART_TOKEN) => pod("cart", "cart-1"),
        _ => return review(request),
    };
    let mut reviewed = request.clone();
    reviewed["status"] = answer;
    json(201, reviewed)
}

#[tokio::test]
async fn a_waypoint_pod_subscribes_with_its_own_token() {
    let (client, fake) = shop();
    fake.install(&[SECRETS, LEASES]);
    fake.on_create(TOKEN_REVIEWS, review_pods);
    // The waypoint's pod, and the Service bound to it.
    let mut waypoint_pod = pod("shop-waypoint-7f9c", "10.244.1.2");
    waypoint_pod["metadata"]["labels"] =
        json!({"gateway.networking.k8s.io/gateway-name": "shop-waypoint"});
    waypoint_pod["spec"]["serviceAccountName"] = json!("waypoint");
    fake.apply(PODS, waypoint_pod);
    fake.apply(
        SERVICES,
        json!({
            "metadata": {"name": "cart", "namespace": "shop",
                         "labels": {"weft.dev/use-waypoint": "shop-waypoint"}},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "cart"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }),
    );
    let state = std::env::temp_dir().join(format!("weft-k8s-{}", rand::random::<u64>()));
    let cp = launch(client, &state).await;
    let as_waypoint = || Hello {
        waypoint: Some(api::proto::config::WaypointRef {
            namespace: "shop".into(),
            name: "shop-waypoint".into(),
        }),
        ..Hello::default()
    };

    let (_requests, mut updates) = subscribe_as(&cp, WAYPOINT_TOKEN, as_waypoint())
        .await
        .unwrap();
    let first = updates.message().await.unwrap().unwrap();
    assert!(first.snapshot);
    assert_eq!(names(&first, "HTTPRoute"), vec!["shop/cart"]);
    assert_eq!(names(&first, "Service"), vec!["shop/cart"]);
    assert_eq!(names(&first, "AuthorizationPolicy"), vec!["shop/cart"]);
    assert_eq!(cp.hub.subscribers()["shop/shop-waypoint"].streams, 1);

    // Another pod's token is not the waypoint's, and a pod's token is no node's.
    let refused = subscribe_as(&cp, CART_TOKEN, as_waypoint())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().starts_with("not_the_waypoint"),
        "{refused:?}"
    );
    let refused = subscribe(&cp, WAYPOINT_TOKEN).await.unwrap_err();
    assert!(refused.message().starts_with("not_a_node"), "{refused:?}");
    // The node's agent token vouches for the waypoint too: its pod runs there.
    assert!(subscribe_as(&cp, AGENT_TOKEN, as_waypoint()).await.is_ok());
    cp.stop().await;
    std::fs::remove_dir_all(&state).unwrap();
}

/// Waits (10 s at most) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_running_control_plane_runs_its_waypoint_gateways() {
    let (client, fake) = shop();
    fake.install(&[SECRETS, LEASES, ACCOUNTS, CONFIG_MAPS, DEPLOYMENTS]);
    fake.on_create(TOKEN_REVIEWS, review);
    let state = std::env::temp_dir().join(format!("weft-k8s-{}", rand::random::<u64>()));
    let cp = launch(client, &state).await;
    until("the waypoint's Deployment", || {
        fake.get(DEPLOYMENTS, "shop", "shop-waypoint").is_some()
    })
    .await;
    until("the Gateway's status", || {
        fake.get(GATEWAYS, "shop", "shop-waypoint")
            .is_some_and(|g| g["status"]["conditions"][0]["status"] == "True")
    })
    .await;
    // It leads: the only replica took the Lease.
    let lease = fake
        .get(LEASES, "weft-system", crate::kubernetes::leader::LEASE)
        .expect("the Lease");
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    let roots = fake
        .get(CONFIG_MAPS, "shop", "shop-waypoint-weft-roots")
        .expect("the roots' ConfigMap");
    assert_eq!(roots["data"]["roots.pem"], cp.trust_bundle_pem.as_str());
    assert!(fake.get(ACCOUNTS, "shop", "shop-waypoint").is_some());
    // And for the agents, in the control plane's own namespace.
    until("the roots' ConfigMap of weft-system", || {
        fake.get(CONFIG_MAPS, "weft-system", "weft-roots")
            .is_some_and(|m| m["data"]["roots.pem"] == cp.trust_bundle_pem.as_str())
    })
    .await;
    let service = fake
        .get(SERVICES, "shop", "shop-waypoint")
        .expect("its Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 15008);
    // Its own status change does not make it apply again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deployment_path = "PATCH /apis/apps/v1/namespaces/shop/deployments/shop-waypoint";
    assert_eq!(fake.requests(deployment_path).len(), 1);

    // A new generation without the HBONE listener: no longer accepted.
    fake.apply(
        GATEWAYS,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "shop-waypoint", "namespace": "shop", "generation": 2},
            "spec": {"gatewayClassName": "weft-waypoint",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        }),
    );
    until("the refusal in the status", || {
        fake.get(GATEWAYS, "shop", "shop-waypoint")
            .is_some_and(|g| g["status"]["conditions"][0]["status"] == "False")
    })
    .await;
    assert_eq!(fake.requests(deployment_path).len(), 1);
    cp.stop().await;
    std::fs::remove_dir_all(&state).unwrap();
}

#[tokio::test]
async fn a_follower_writes_nothing_until_the_leader_stops_renewing() {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::MicroTime, jiff};
    let (client, fake) = shop();
    fake.install(&[SECRETS, LEASES, ACCOUNTS, CONFIG_MAPS, DEPLOYMENTS]);
    fake.on_create(TOKEN_REVIEWS, review);
    // Another replica renewed the Lease 10 s ago: it holds it for 5 s more.
    let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(10);
    fake.apply(
        LEASES,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": crate::kubernetes::leader::LEASE, "namespace": "weft-system"},
               "spec": {"holderIdentity": "weft-controlplane-other", "leaseDurationSeconds": 15,
                        "renewTime": MicroTime(renewed), "leaseTransitions": 4}}),
    );
    let state = std::env::temp_dir().join(format!("weft-k8s-{}", rand::random::<u64>()));
    let cp = launch(client, &state).await;
    // It serves, but writes nothing to the cluster while the other leads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fake.get(DEPLOYMENTS, "shop", "shop-waypoint").is_none());
    assert!(fake.get(CONFIG_MAPS, "weft-system", "weft-roots").is_none());
    assert!(
        fake.requests("PATCH").is_empty(),
        "{:?}",
        fake.requests("PATCH")
    );
    // The other stops renewing: this one takes over and does the writes.
    until("the waypoint's Deployment from the new leader", || {
        fake.get(DEPLOYMENTS, "shop", "shop-waypoint").is_some()
    })
    .await;
    until("the roots' ConfigMap from the new leader", || {
        fake.get(CONFIG_MAPS, "weft-system", "weft-roots").is_some()
    })
    .await;
    let lease = fake
        .get(LEASES, "weft-system", crate::kubernetes::leader::LEASE)
        .unwrap();
    assert_ne!(lease["spec"]["holderIdentity"], "weft-controlplane-other");
    assert_eq!(lease["spec"]["leaseTransitions"], 5);
    cp.stop().await;
    std::fs::remove_dir_all(&state).unwrap();
}
