use super::*;

const DOCS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {serviceAccount: cart, node: node-1, addresses: [10.244.1.3]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-2, namespace: shop, labels: {app: cart, weft.dev/mesh: disabled}}
spec: {serviceAccount: cart, node: node-2, addresses: [10.244.2.3]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
";

#[test]
fn enrollment_waypoints_and_endpoints() {
    let (docs, problems) = crate::model::parse("t", DOCS);
    assert!(problems.is_empty(), "{problems:?}");
    let out = translate(&docs, "cluster.local");
    let Body::Workload(w1) = &out[&("Workload".into(), "shop".into(), "cart-1".into())] else {
        panic!()
    };
    assert!(w1.enrolled);
    let Body::Workload(w2) = &out[&("Workload".into(), "shop".into(), "cart-2".into())] else {
        panic!()
    };
    assert!(!w2.enrolled, "opted out");
    let Body::Service(s) = &out[&("Service".into(), "shop".into(), "cart".into())] else {
        panic!()
    };
    assert_eq!(s.addresses, vec!["10.96.0.10"]);
    assert_eq!(s.ports[0].target_port, 8080);
    assert_eq!(s.endpoints.len(), 2);
    assert_eq!(
        s.endpoints[0].identity,
        "spiffe://cluster.local/ns/shop/sa/cart"
    );
    assert_eq!(s.endpoints[0].node, "node-1");
}

#[test]
fn policy_operations_with_l7_conditions_are_rules_of_their_own() {
    let policy = |to: &str| {
        let text = format!(
            "apiVersion: security.weft.dev/v1alpha1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: p, namespace: shop}}\n\
                 spec: {{rules: [{{from: [{{source: {{namespaces: [shop]}}}}], to: {to}}}]}}\n"
        );
        let (docs, problems) = crate::model::parse("t", &text);
        assert!(problems.is_empty(), "{problems:?}");
        let out = translate(&docs, "cluster.local");
        match &out[&("AuthorizationPolicy".into(), "shop".into(), "p".into())] {
            Body::AuthorizationPolicy(p) => p.rules.clone(),
            other => panic!("{other:?}"),
        }
    };
    // Ports alone: one rule, any of the ports (as agents have always had it).
    let rules = policy("[{operation: {ports: [80]}}, {operation: {ports: [\"81\"]}}]");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].ports, vec![80, 81]);
    // With L7 conditions: GET goes with 80 only, and 81 takes any method.
    let rules = policy(
        "[{operation: {ports: [80], methods: [GET], headers: [{name: X-Env, values: [prod]}]}}, \
             {operation: {ports: [81]}}]",
    );
    assert_eq!(rules.len(), 2);
    assert_eq!(
        (rules[0].ports.as_slice(), rules[0].methods.as_slice()),
        (&[80][..], &["GET".to_owned()][..])
    );
    assert_eq!(
        rules[0].headers[0].name, "x-env",
        "header names are lowercase"
    );
    assert_eq!(
        (rules[1].ports.as_slice(), rules[1].methods.len()),
        (&[81][..], 0)
    );
    assert_eq!(rules[0].from, rules[1].from, "both keep the rule's sources");
    // One operation keeps its conditions in one rule; none, a rule without any.
    let rules = policy("[{operation: {paths: [/admin/*]}}]");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].paths, vec!["/admin/*"]);
    let rules = policy("[]");
    assert_eq!(rules.len(), 1);
    assert!(rules[0].ports.is_empty() && rules[0].methods.is_empty());
}

#[test]
fn endpoint_slices_give_the_ready_endpoints() {
    let slices = "
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{port: 5432}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: db-vm, namespace: shop}
spec: {serviceAccount: db, node: vm-1, addresses: [192.0.2.7]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: cart-abc, namespace: shop, labels: {kubernetes.io/service-name: cart}}
addressType: IPv4
endpoints:
  - addresses: [10.244.1.3]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: cart-1}
  - addresses: [10.244.2.3]
    conditions: {ready: false}
    targetRef: {kind: Pod, name: cart-2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-manual, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
  - addresses: [192.0.2.7]
  - addresses: [198.51.100.1]
";
    let (docs, problems) = crate::model::parse("t", &format!("{DOCS}{slices}"));
    assert!(problems.is_empty(), "{problems:?}");
    assert!(crate::validate::validate(&docs).is_empty());
    let out = translate(&docs, "cluster.local");
    let service = |name: &str| match &out[&("Service".into(), "shop".into(), name.into())] {
        Body::Service(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    // The selector would pick both cart workloads; the slice says only one is ready.
    let cart = service("cart");
    let names: Vec<&str> = cart.endpoints.iter().map(|e| e.workload.as_str()).collect();
    assert_eq!(names, vec!["shop/cart-1"]);
    // A Service without a selector: its endpoint that is a workload (by address) is
    // distributed with that workload's identity; the one outside the mesh is not.
    let db = service("db");
    assert_eq!(db.endpoints.len(), 1, "{db:?}");
    assert_eq!(db.endpoints[0].workload, "shop/db-vm");
    assert_eq!(
        db.endpoints[0].identity,
        "spiffe://cluster.local/ns/shop/sa/db"
    );
    assert_eq!(db.endpoints[0].node, "vm-1");
}

#[test]
fn traffic_filters_and_backend_policies_are_inlined() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/good/resiliency.yaml"
    ))
    .unwrap();
    let (docs, problems) = crate::model::parse("t", &text);
    assert!(problems.is_empty(), "{problems:?}");
    let out = translate(&docs, "cluster.local");
    let Body::Service(s) = &out[&("Service".into(), "shop".into(), "cart".into())] else {
        panic!()
    };
    assert_eq!(s.load_balancer, "CONSISTENT_HASH");
    let b = s.backend.as_ref().expect("the BackendPolicy's settings");
    let cb = b.circuit_breaker.as_ref().unwrap();
    assert_eq!(
        (
            cb.max_connections,
            cb.max_pending_requests,
            cb.max_requests,
            cb.max_retries
        ),
        (100, 50, 200, 10)
    );
    let o = b.outlier_detection.as_ref().unwrap();
    assert_eq!(
        (
            o.consecutive_5xx,
            o.base_ejection_ms,
            o.max_ejection_ms,
            o.max_ejection_ppm
        ),
        (5, 30_000, 300_000, 500_000)
    );
    let r = b.retry_budget.as_ref().unwrap();
    assert_eq!((r.ppm, r.min_retries), (200_000, 3));
    assert_eq!(
        b.consistent_hash.as_ref().and_then(|h| h.key.clone()),
        Some(wire::consistent_hash::Key::Header("x-user".into()))
    );

    let Body::HttpRoute(route) = &out[&("HTTPRoute".into(), "shop".into(), "cart".into())] else {
        panic!()
    };
    let rule = &route.rules[0];
    assert_eq!(
        (rule.request_timeout_ms, rule.backend_request_timeout_ms),
        (2000, 500)
    );
    use wire::route_filter::Filter;
    let filters: Vec<&Filter> = rule
        .filters
        .iter()
        .filter_map(|f| f.filter.as_ref())
        .collect();
    let fault = filters.iter().find_map(|f| match f {
        Filter::Fault(f) => Some(f),
        _ => None,
    });
    let fault = fault.expect("the fault inlined");
    assert_eq!(
        (
            fault.delay_ms,
            fault.delay_ppm,
            fault.abort_http_status,
            fault.abort_ppm
        ),
        (1000, 500_000, 503, 100_000)
    );
    let limit = filters.iter().find_map(|f| match f {
        Filter::RateLimit(r) => Some(r),
        _ => None,
    });
    let limit = limit.expect("the rate limit inlined");
    assert_eq!(
        (limit.requests, limit.interval_ms, limit.burst),
        (100, 1000, 20)
    );
    let retry = rule.retry.as_ref().expect("the filter's retry on the rule");
    assert_eq!(
        (
            retry.attempts,
            retry.on_5xx,
            retry.on_connect_failure,
            retry.on_reset
        ),
        (3, true, true, true)
    );
    assert_eq!(
        (
            retry.per_try_timeout_ms,
            retry.backoff_ms,
            retry.max_backoff_ms
        ),
        (500, 25, 250)
    );
    assert_eq!(retry.grpc_statuses, vec![14]);

    let Body::GrpcRoute(g) = &out[&("GRPCRoute".into(), "shop".into(), "cart-grpc".into())] else {
        panic!()
    };
    assert_eq!(g.rules[0].retry.as_ref().map(|r| r.attempts), Some(3));
}
