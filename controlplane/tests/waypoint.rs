//! Waypoint subscriptions against a real control plane on loopback (local mode, gRPC over
//! TLS): what a waypoint receives and what agents keep receiving, changes reaching only
//! those they concern, the refusals, a waypoint losing its stream when its workload moves
//! away, and a resumed stream getting only what changed.

mod support;

use api::proto::config::{Hello, resource::Body, route_filter::Filter};
use support::{Folder, Subscriber, waypoint};

const BASE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: bank, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: weft-system}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-1, namespace: shop, labels: {app: cart, weft.dev/use-waypoint: wp}}
spec: {serviceAccount: cart, node: node-2, addresses: [10.244.2.3]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {serviceAccount: db, node: node-2, addresses: [10.244.2.4]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: vault-1, namespace: bank, labels: {app: vault}}
spec: {serviceAccount: vault, node: node-1, addresses: [10.244.1.9]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop, labels: {weft.dev/use-waypoint: wp}}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart-v2, namespace: shop}
spec: {clusterIP: 10.96.0.11, selector: {app: cart-v2}, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: cart}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}, method: GET, headers: [{name: X-Canary, value: \"yes\"}]}]
      filters:
        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-mesh, value: weft}]}}
      backendRefs: [{name: cart, port: 80, weight: 90}, {name: cart-v2, port: 80, weight: 10}]
      timeouts: {request: 10s, backendRequest: 1500ms}
      retry: {codes: [503], attempts: 3, backoff: 100ms}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cart-grpc, namespace: shop}
spec:
  parentRefs: [{name: wp}]
  rules:
    - matches: [{method: {service: shop.Cart, method: Add}}]
      backendRefs: [{name: cart, port: 80}]
---
apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-reads, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  rules:
    - from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]
      to:
        - {operation: {ports: [\"8080\"], methods: [GET], paths: [/api/*], headers: [{name: X-Tenant, values: [blue]}]}}
        - {operation: {ports: [\"9090\"]}}
---
apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: vault, namespace: bank}
spec:
  rules: [{from: [{source: {namespaces: [bank]}}]}]
---
apiVersion: security.weft.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: mesh, namespace: weft-system}
spec: {mtls: {mode: STRICT}}
";

const GATEWAY: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop}
spec: {gatewayClassName: weft-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
";

/// The waypoint's own pod, on `node`.
fn waypoint_pod(node: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {{name: wp-1, namespace: shop, labels: {{gateway.networking.k8s.io/gateway-name: wp}}}}\n\
         spec: {{serviceAccount: waypoint, node: {node}, addresses: [10.244.1.2]}}\n"
    )
}

/// A Service `db` bound to the waypoint or not, with a route attached to it.
fn db(bound: bool) -> String {
    let label = if bound {
        ", labels: {weft.dev/use-waypoint: wp}"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: db, namespace: shop{label}}}\n\
         spec: {{clusterIP: 10.96.0.20, selector: {{app: db}}, ports: [{{port: 5432}}]}}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: db, namespace: shop}}\n\
         spec: {{parentRefs: [{{kind: Service, name: db}}], rules: [{{backendRefs: [{{name: db, port: 5432}}]}}]}}\n"
    )
}

fn as_waypoint(resume_from: u64) -> Hello {
    Hello {
        node: String::new(),
        resume_from,
        waypoint: waypoint("shop", "wp"),
    }
}

fn as_agent() -> Hello {
    Hello::default()
}

fn body<'a>(s: &'a Subscriber, key: &str) -> &'a Body {
    s.resources[key]
        .body
        .as_ref()
        .unwrap_or_else(|| panic!("{key} has no body"))
}

async fn start(folder: &Folder) -> controlplane::Running {
    folder.write("base.yaml", BASE);
    folder.write("gateway.yaml", GATEWAY);
    folder.write("waypoint.yaml", &waypoint_pod("node-1"));
    folder.write("db.yaml", &db(false));
    let cp = controlplane::start(folder.config(&[])).await.unwrap();
    assert!(cp.problems().is_empty(), "{:?}", cp.problems());
    cp
}

#[tokio::test]
async fn a_waypoint_gets_what_its_services_need() {
    let folder = Folder::new(&["node-1", "node-2"]);
    let cp = start(&folder).await;

    let mut wp = Subscriber::connect(&cp, &folder.token("node-1"), as_waypoint(0))
        .await
        .unwrap();
    let snapshot = wp.next().await.unwrap();
    assert!(snapshot.snapshot);
    assert_eq!(
        wp.keys(),
        vec![
            "AuthorizationPolicy shop/cart-reads",
            "GRPCRoute shop/cart-grpc",
            "HTTPRoute shop/cart",
            "PeerAuthentication weft-system/mesh",
            "Service shop/cart",
            "Service shop/cart-v2",
            "Workload shop/cart-1",
        ],
        "its Service and the one its route sends to, the routes on them and on the \
         Gateway, the workload bound to it, the policies of its namespace and the mesh's; \
         not db (not bound), not bank's policy, not the route of db"
    );

    // The route as the waypoint needs it: matches, filters, weighted backends, timeouts
    // and retries.
    let Body::HttpRoute(route) = body(&wp, "HTTPRoute shop/cart") else {
        panic!("{:?}", body(&wp, "HTTPRoute shop/cart"))
    };
    assert_eq!(route.parents[0].kind, "Service");
    assert_eq!(
        (
            route.parents[0].namespace.as_str(),
            route.parents[0].name.as_str()
        ),
        ("shop", "cart")
    );
    let rule = &route.rules[0];
    let m = &rule.matches[0];
    let path = m.path.as_ref().unwrap();
    assert_eq!(
        (path.r#type.as_str(), path.value.as_str()),
        ("PathPrefix", "/api")
    );
    assert_eq!(m.method, "GET");
    assert_eq!(
        (
            m.headers[0].r#type.as_str(),
            m.headers[0].name.as_str(),
            m.headers[0].value.as_str()
        ),
        ("Exact", "x-canary", "yes")
    );
    let Some(Filter::RequestHeaderModifier(modifier)) = &rule.filters[0].filter else {
        panic!("{:?}", rule.filters)
    };
    assert_eq!(modifier.set[0].name, "x-mesh");
    assert_eq!(modifier.set[0].value, "weft");
    let backends: Vec<(&str, u32, u32)> = rule
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.port, b.weight))
        .collect();
    assert_eq!(backends, vec![("cart", 80, 90), ("cart-v2", 80, 10)]);
    assert_eq!(rule.request_timeout_ms, 10_000);
    assert_eq!(rule.backend_request_timeout_ms, 1_500);
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(
        (retry.codes.as_slice(), retry.attempts, retry.backoff_ms),
        (&[503][..], 3, 100)
    );

    let Body::GrpcRoute(grpc) = body(&wp, "GRPCRoute shop/cart-grpc") else {
        panic!()
    };
    assert_eq!(grpc.parents[0].kind, "Gateway");
    let method = grpc.rules[0].matches[0].method.as_ref().unwrap();
    assert_eq!(
        (method.service.as_str(), method.method.as_str()),
        ("shop.Cart", "Add")
    );
    assert_eq!(grpc.rules[0].backends[0].weight, 1, "the default weight");

    // The policy with its L7 conditions; the operation with them is a rule of its own,
    // so that GET is never paired with port 9090.
    let Body::AuthorizationPolicy(policy) = body(&wp, "AuthorizationPolicy shop/cart-reads") else {
        panic!()
    };
    assert_eq!(policy.rules.len(), 2, "{policy:?}");
    let l7 = &policy.rules[0];
    assert_eq!(l7.ports, vec![8080]);
    assert_eq!(l7.methods, vec!["GET"]);
    assert_eq!(l7.paths, vec!["/api/*"]);
    assert_eq!(l7.headers[0].name, "x-tenant");
    assert_eq!(l7.headers[0].values, vec!["blue"]);
    assert_eq!(
        l7.from[0].principals,
        vec!["cluster.local/ns/shop/sa/frontend"]
    );
    let l4 = &policy.rules[1];
    assert_eq!(l4.ports, vec![9090]);
    assert!(l4.methods.is_empty() && l4.paths.is_empty() && l4.headers.is_empty());
    assert_eq!(l4.from, l7.from);

    // Agents keep getting their node's workloads, every Service and Namespace (whether
    // it is in the mesh) and their namespaces' policies, and no routes.
    let mut agent = Subscriber::connect(&cp, &folder.token("node-2"), as_agent())
        .await
        .unwrap();
    agent.next().await.unwrap();
    assert_eq!(
        agent.keys(),
        vec![
            "AuthorizationPolicy shop/cart-reads",
            "Namespace /bank",
            "Namespace /shop",
            "Namespace /weft-system",
            "PeerAuthentication weft-system/mesh",
            "Service shop/cart",
            "Service shop/cart-v2",
            "Service shop/db",
            "Workload shop/cart-1",
            "Workload shop/db-1",
        ]
    );

    // db binds to the waypoint: the waypoint gets db, its route and its workload; the
    // agent only db's new version.
    let (wp_before, agent_before) = (wp.received.len(), agent.received.len());
    folder.write("db.yaml", &db(true));
    wp.until("db", |s| s.resources.contains_key("HTTPRoute shop/db"))
        .await;
    let update = &wp.received[wp_before];
    assert!(!update.snapshot);
    let mut got: Vec<String> = update
        .upserts
        .iter()
        .map(|r| r.key.as_ref().unwrap())
        .map(|k| format!("{} {}/{}", k.kind, k.namespace, k.name))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec!["HTTPRoute shop/db", "Service shop/db", "Workload shop/db-1"]
    );
    agent
        .until("db bound", |s| match &s.resources["Service shop/db"].body {
            Some(Body::Service(svc)) => svc.waypoint == "wp",
            _ => false,
        })
        .await;
    let update = &agent.received[agent_before];
    assert_eq!(update.upserts.len(), 1, "{update:?}");
    assert!(update.removals.is_empty());
    let acked = wp.version;
    support::eventually("the waypoint's ACK", || {
        cp.hub.subscribers()["shop/wp"].acked == acked
    })
    .await;

    // Unbound again: the waypoint loses them.
    folder.write("db.yaml", &db(false));
    wp.until("db gone", |s| !s.resources.contains_key("Service shop/db"))
        .await;
    assert!(!wp.resources.contains_key("HTTPRoute shop/db"));
    assert!(!wp.resources.contains_key("Workload shop/db-1"));

    // What the waypoint built from increments is what a snapshot says now.
    let fresh = {
        let mut s = Subscriber::connect(&cp, &folder.token("node-1"), as_waypoint(0))
            .await
            .unwrap();
        s.next().await.unwrap();
        s
    };
    assert_eq!(fresh.resources, wp.resources);
    let status = controlplane::status_json(&cp.hub, &[]);
    assert_eq!(status["subscribers"]["shop/wp"]["kind"], "waypoint");
    assert_eq!(status["subscribers"]["node-2"]["kind"], "agent");
    cp.stop().await;
}

#[tokio::test]
async fn waypoint_subscriptions_are_refused_with_reasons() {
    let folder = Folder::new(&["node-1", "node-2"]);
    let cp = start(&folder).await;
    let refused = |hello: Hello, token: String| {
        let cp = &cp;
        async move {
            match Subscriber::connect(cp, &token, hello).await {
                Ok(_) => panic!("accepted"),
                Err(status) => status,
            }
        }
    };

    // The waypoint's workload is not on node-2.
    let s = refused(as_waypoint(0), folder.token("node-2")).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    assert!(s.message().starts_with("waypoint_not_on_node"), "{s:?}");
    // No such waypoint.
    let hello = Hello {
        waypoint: waypoint("shop", "ghost"),
        ..Hello::default()
    };
    let s = refused(hello, folder.token("node-1")).await;
    assert_eq!(s.code(), tonic::Code::NotFound);
    assert!(s.message().starts_with("unknown_waypoint"), "{s:?}");
    // Not a token of any node.
    let s = refused(as_waypoint(0), controlplane::auth::new_token()).await;
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert!(s.message().starts_with("unknown_token"), "{s:?}");
    // A Hello that names another node than the token's.
    let hello = Hello {
        node: "node-2".into(),
        ..as_waypoint(0)
    };
    let s = refused(hello, folder.token("node-1")).await;
    assert!(s.message().starts_with("wrong_node"), "{s:?}");
    // A waypoint without a name.
    let hello = Hello {
        waypoint: waypoint("shop", ""),
        ..Hello::default()
    };
    let s = refused(hello, folder.token("node-1")).await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    // A Gateway of the right name in another namespace is another waypoint.
    let hello = Hello {
        waypoint: waypoint("bank", "wp"),
        ..Hello::default()
    };
    let s = refused(hello, folder.token("node-1")).await;
    assert!(s.message().starts_with("unknown_waypoint"), "{s:?}");
    assert!(!cp.hub.subscribers().contains_key("shop/wp"));
    cp.stop().await;
}

#[tokio::test]
async fn a_waypoint_that_moves_away_loses_its_stream_and_resumes_where_it_runs() {
    let folder = Folder::new(&["node-1", "node-2"]);
    let cp = start(&folder).await;
    let mut wp = Subscriber::connect(&cp, &folder.token("node-1"), as_waypoint(0))
        .await
        .unwrap();
    wp.next().await.unwrap();
    let had = wp.resources.clone();
    let version = wp.version;

    // The waypoint's pod is now on node-2: node-1's token no longer vouches for the
    // waypoint, and its stream ends.
    folder.write("waypoint.yaml", &waypoint_pod("node-2"));
    let ended = loop {
        match wp.next().await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::PermissionDenied);
    assert!(
        ended.message().starts_with("waypoint_not_on_node"),
        "{ended:?}"
    );

    // From node-2 it resumes from the version it has: not a snapshot, and nothing it
    // needs changed (the waypoint's own workload is not among its resources).
    let mut again = Subscriber::connect(&cp, &folder.token("node-2"), as_waypoint(version))
        .await
        .unwrap();
    let update = again.next().await.unwrap();
    assert!(!update.snapshot, "{update:?}");
    assert!(
        update.upserts.is_empty() && update.removals.is_empty(),
        "{update:?}"
    );
    assert_eq!(update.version, cp.hub.version());

    // A change while it was away arrives as only that change.
    let version = again.version;
    drop(again);
    folder.write(
        "extra.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {name: cart-2, namespace: shop, labels: {app: cart, weft.dev/use-waypoint: wp}}\n\
         spec: {serviceAccount: cart, node: node-2, addresses: [10.244.2.8]}\n",
    );
    let newer = version;
    support::eventually("the new workload", || cp.hub.version() > newer).await;
    let mut resumed = Subscriber::connect(&cp, &folder.token("node-2"), as_waypoint(version))
        .await
        .unwrap();
    resumed.resources = had;
    let update = resumed.next().await.unwrap();
    assert!(!update.snapshot);
    let mut got: Vec<String> = update
        .upserts
        .iter()
        .map(|r| r.key.as_ref().unwrap())
        .map(|k| format!("{} {}/{}", k.kind, k.namespace, k.name))
        .collect();
    got.sort();
    assert_eq!(got, vec!["Service shop/cart", "Workload shop/cart-2"]);
    // Applied to what the waypoint had, that is what a snapshot says now.
    let mut fresh = Subscriber::connect(&cp, &folder.token("node-2"), as_waypoint(0))
        .await
        .unwrap();
    assert!(fresh.next().await.unwrap().snapshot);
    assert_eq!(resumed.resources, fresh.resources);
    cp.stop().await;
}

#[tokio::test]
async fn a_waypoint_whose_gateway_goes_loses_its_stream() {
    let folder = Folder::new(&["node-1"]);
    let cp = start(&folder).await;
    let mut wp = Subscriber::connect(&cp, &folder.token("node-1"), as_waypoint(0))
        .await
        .unwrap();
    wp.next().await.unwrap();
    let version = cp.hub.version();

    // The Services and workloads still name it, so they are refused and keep their last
    // good versions: nothing the subscribers have changes, but the waypoint is gone.
    std::fs::remove_file(folder.path("gateway.yaml")).unwrap();
    let ended = wp.next().await.unwrap_err();
    assert_eq!(ended.code(), tonic::Code::NotFound);
    assert!(ended.message().starts_with("unknown_waypoint"), "{ended:?}");
    assert!(!cp.problems().is_empty());
    assert_eq!(cp.hub.version(), version, "no update was published");
    cp.stop().await;
}
