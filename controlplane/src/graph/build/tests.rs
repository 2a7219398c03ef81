use super::*;

fn series(reporter: &str, src: &str, dst: &str, service: &str, mtls: bool, value: f64) -> Series {
    let split = |w: &str| match w.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => ("unknown".to_owned(), "unknown".to_owned()),
    };
    let (sns, sw) = split(src);
    let (dns, dw) = split(dst);
    let labels = [
        ("reporter", reporter.to_owned()),
        ("source_workload", sw),
        ("source_workload_namespace", sns),
        ("destination_workload", dw),
        ("destination_workload_namespace", dns),
        ("destination_service", service.to_owned()),
        (
            "connection_security_policy",
            if mtls { "mutual_tls" } else { "none" }.to_owned(),
        ),
    ];
    Series {
        labels: labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        value,
    }
}

fn workload(id: &str, enrolled: bool) -> Node {
    let (ns, name) = id.split_once('/').unwrap();
    Node {
        id: id.to_owned(),
        kind: NodeKind::Workload,
        namespace: ns.to_owned(),
        name: name.to_owned(),
        enrolled,
    }
}

fn edge<'g>(g: &'g Graph, from: &str, to: &str) -> Vec<&'g Edge> {
    g.edges
        .iter()
        .filter(|e| e.source == from && e.destination == to)
        .collect()
}

#[test]
fn traffic_to_a_service_goes_through_its_node_and_the_server_side_counts() {
    let rates = Rates {
        // Both agents saw the same connections; the client's report (which names the
        // Service) is taken, not the server's (which cannot).
        opened: vec![
            series(
                "source",
                "shop/frontend-1",
                "shop/cart-1",
                "shop/cart",
                true,
                10.0,
            ),
            series(
                "destination",
                "shop/frontend-1",
                "shop/cart-1",
                "unknown",
                true,
                10.0,
            ),
            series(
                "source",
                "shop/frontend-2",
                "shop/cart-1",
                "shop/cart",
                true,
                5.0,
            ),
            series(
                "destination",
                "shop/frontend-2",
                "shop/cart-1",
                "unknown",
                true,
                5.0,
            ),
        ],
        bytes: vec![
            series(
                "source",
                "shop/frontend-1",
                "shop/cart-1",
                "shop/cart",
                true,
                1000.0,
            ),
            series(
                "destination",
                "shop/frontend-1",
                "shop/cart-1",
                "unknown",
                true,
                1000.0,
            ),
        ],
        ..Rates::default()
    };
    let inventory = vec![
        workload("shop/frontend-1", true),
        workload("shop/frontend-2", true),
        workload("shop/cart-1", true),
    ];
    let g = build(inventory, &rates, "1m");
    let into_service = edge(&g, "shop/frontend-1", "svc:shop/cart");
    assert_eq!(into_service.len(), 1);
    assert_eq!(into_service[0].rate, 10.0);
    assert!(into_service[0].mtls);
    assert_eq!(into_service[0].bytes_rate, 1000.0);
    // The Service's hop to its workload sums its clients.
    let out_of_service = edge(&g, "svc:shop/cart", "shop/cart-1");
    assert_eq!(out_of_service[0].rate, 15.0);
    // And no edge straight from the client to the workload.
    assert!(edge(&g, "shop/frontend-1", "shop/cart-1").is_empty());
    // The Service was not in the inventory: it is added, not enrolled.
    let svc = g.nodes.iter().find(|n| n.id == "svc:shop/cart").unwrap();
    assert_eq!(svc.kind, NodeKind::Service);
    assert!(!svc.enrolled);
    assert_eq!(
        (svc.namespace.as_str(), svc.name.as_str()),
        ("shop", "cart")
    );
}

#[test]
fn a_destination_outside_the_mesh_is_known_from_the_client_and_plaintext_is_marked() {
    let rates = Rates {
        opened: vec![
            series(
                "source",
                "shop/frontend-1",
                "legacy/billing-1",
                "",
                false,
                3.0,
            ),
            // A client outside the mesh, seen by the server's agent.
            series("destination", "unknown", "shop/cart-2", "", false, 4.0),
        ],
        ..Rates::default()
    };
    let g = build(vec![workload("legacy/billing-1", false)], &rates, "1m");
    let e = edge(&g, "shop/frontend-1", "legacy/billing-1");
    assert_eq!((e[0].rate, e[0].mtls), (3.0, false));
    let e = edge(&g, "unknown", "shop/cart-2");
    assert_eq!((e[0].rate, e[0].mtls), (4.0, false));
    let unknown = g.nodes.iter().find(|n| n.id == "unknown").unwrap();
    assert_eq!(unknown.kind, NodeKind::Unknown);
    assert!(
        !g.nodes
            .iter()
            .find(|n| n.id == "legacy/billing-1")
            .unwrap()
            .enrolled
    );
}

#[test]
fn mtls_and_plaintext_between_the_same_nodes_are_two_edges() {
    let rates = Rates {
        opened: vec![
            series("destination", "shop/a", "shop/b", "", true, 1.0),
            series("destination", "shop/a", "shop/b", "", false, 2.0),
        ],
        ..Rates::default()
    };
    let g = build(Vec::new(), &rates, "1m");
    let mut e: Vec<(bool, f64)> = edge(&g, "shop/a", "shop/b")
        .iter()
        .map(|e| (e.mtls, e.rate))
        .collect();
    e.sort_by_key(|a| a.0);
    assert_eq!(e, vec![(false, 2.0), (true, 1.0)]);
}

#[test]
fn denials_failures_and_requests_make_their_figures() {
    let rates = Rates {
        denied: vec![series(
            "destination",
            "legacy/billing-1",
            "shop/cart-1",
            "",
            false,
            2.5,
        )],
        opened: vec![series("destination", "shop/a", "shop/b", "", true, 4.0)],
        failed: vec![series("destination", "shop/a", "shop/b", "", true, 1.0)],
        requests: vec![{
            let mut s = series("waypoint", "shop/a", "shop/cart-1", "shop/cart", true, 20.0);
            s.labels.insert("request_protocol".into(), "grpc".into());
            s
        }],
        request_errors: vec![{
            let mut s = series("waypoint", "shop/a", "shop/cart-1", "shop/cart", true, 5.0);
            s.labels.insert("request_protocol".into(), "grpc".into());
            s
        }],
        request_p99: vec![
            {
                let mut s = series("waypoint", "shop/a", "shop/cart-1", "shop/cart", true, 12.5);
                s.labels.insert("request_protocol".into(), "grpc".into());
                s
            },
            // histogram_quantile of nothing is NaN: not a figure.
            series(
                "waypoint",
                "shop/x",
                "shop/cart-1",
                "shop/cart",
                true,
                f64::NAN,
            ),
        ],
        ..Rates::default()
    };
    let g = build(Vec::new(), &rates, "30s");
    assert_eq!(g.window, "30s");
    let denied = edge(&g, "legacy/billing-1", "shop/cart-1");
    assert!(denied[0].denied());
    assert_eq!(denied[0].rate, 0.0);
    let failing = edge(&g, "shop/a", "shop/b");
    assert_eq!(failing[0].error_share, 0.25);
    assert!(!failing[0].denied());
    let grpc = edge(&g, "shop/a", "svc:shop/cart");
    assert_eq!(grpc[0].protocol, "grpc");
    assert_eq!(grpc[0].rate, 20.0);
    assert_eq!(grpc[0].error_share, 0.25);
    assert_eq!(grpc[0].p99_ms, Some(12.5));
    // No edge from shop/x: its only series was NaN.
    assert!(edge(&g, "shop/x", "svc:shop/cart").is_empty());
}

#[test]
fn a_namespace_keeps_its_nodes_and_their_neighbours() {
    let rates = Rates {
        opened: vec![
            series(
                "destination",
                "legacy/billing-1",
                "shop/cart-1",
                "",
                false,
                1.0,
            ),
            series("destination", "other/a", "other/b", "", true, 1.0),
        ],
        ..Rates::default()
    };
    let inventory = vec![
        workload("shop/cart-1", true),
        workload("shop/idle", true),
        workload("legacy/billing-1", false),
        workload("legacy/unrelated", false),
        workload("other/a", true),
        workload("other/b", true),
    ];
    let mut g = build(inventory, &rates, "1m");
    g.keep_namespace("shop");
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["legacy/billing-1", "shop/cart-1", "shop/idle"]);
    assert_eq!(g.edges.len(), 1);
}

#[test]
fn the_inventory_holds_workloads_and_services_with_their_enrollment() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {node: node-1, addresses: [10.244.1.5]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: billing-1, namespace: legacy, labels: {app: billing}}
spec: {node: node-1, addresses: [10.244.1.6]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: legacy}
spec: {clusterIP: 10.96.0.20, selector: {app: billing}, ports: [{port: 80}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: wp-1, namespace: legacy, labels: {gateway.networking.k8s.io/gateway-name: wp}}
spec: {node: node-1, addresses: [10.244.1.7]}
---
apiVersion: v1
kind: Service
metadata: {name: wp, namespace: legacy}
spec: {clusterIP: 10.96.0.30, selector: {gateway.networking.k8s.io/gateway-name: wp}, ports: [{port: 15008}]}
"#;
    let (docs, problems) = crate::model::parse("test.yaml", yaml);
    assert!(problems.is_empty(), "{problems:?}");
    let resources = crate::resources::translate(&docs, "cluster.local");
    let nodes = inventory(&resources);
    let enrolled: Vec<(&str, bool)> = nodes.iter().map(|n| (n.id.as_str(), n.enrolled)).collect();
    assert_eq!(
        enrolled,
        [
            ("svc:legacy/billing", false),
            ("svc:legacy/wp", true),
            ("svc:shop/cart", true),
            ("legacy/billing-1", false),
            ("legacy/wp-1", true),
            ("shop/cart-1", true)
        ]
    );
}
