use super::*;

fn arc<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(json).unwrap())
}

fn pod(json: serde_json::Value) -> Arc<core::Pod> {
    arc(json)
}

fn shop() -> Cluster {
    Cluster {
        namespaces: vec![arc(serde_json::json!({
            "metadata": {"name": "shop", "labels": {"weft.dev/mesh": "enabled"}},
        }))],
        pods: vec![
            pod(serde_json::json!({
                "metadata": {"name": "cart-1", "namespace": "shop", "labels": {"app": "cart"}},
                "spec": {"nodeName": "node-1", "serviceAccountName": "cart", "containers": []},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.3"}, {"ip": "fd00::3"}]},
            })),
            // Scheduled; its sandbox (and address) is being made.
            pod(serde_json::json!({
                "metadata": {"name": "starting", "namespace": "shop", "labels": {"app": "cart"}},
                "spec": {"nodeName": "node-1", "serviceAccountName": "cart", "containers": []},
            })),
            // Not scheduled yet.
            pod(serde_json::json!({
                "metadata": {"name": "pending", "namespace": "shop"},
                "spec": {"containers": []},
            })),
            // On the host's network: never in the mesh.
            pod(serde_json::json!({
                "metadata": {"name": "host", "namespace": "shop"},
                "spec": {"nodeName": "node-1", "hostNetwork": true, "containers": []},
                "status": {"podIPs": [{"ip": "192.0.2.1"}]},
            })),
            // Finished.
            pod(serde_json::json!({
                "metadata": {"name": "job", "namespace": "shop"},
                "spec": {"nodeName": "node-1", "containers": []},
                "status": {"phase": "Succeeded", "podIPs": [{"ip": "10.244.1.9"}]},
            })),
        ],
        services: vec![arc(serde_json::json!({
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "cart"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))],
        ..Cluster::default()
    }
}

fn ok(objects: &Objects) -> Vec<Document> {
    objects
        .values()
        .map(|o| o.clone().expect("translated"))
        .collect()
}

#[test]
fn pods_become_workloads_and_the_rest_validates() {
    let objects = documents(&shop());
    let sources: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        sources,
        vec![
            "kubernetes Namespace shop",
            "kubernetes Pod shop/cart-1",
            "kubernetes Pod shop/starting",
            "kubernetes Service shop/cart",
        ]
    );
    let docs = ok(&objects);
    let Object::Workload(w) = &docs[1].object else {
        panic!("{:?}", docs[1])
    };
    assert_eq!(w.spec.node, "node-1");
    assert_eq!(w.spec.service_account, "cart");
    assert_eq!(w.spec.addresses, vec!["10.244.1.3", "fd00::3"]);
    let Object::Workload(starting) = &docs[2].object else {
        panic!("{:?}", docs[2])
    };
    assert_eq!(starting.spec.service_account, "cart");
    assert!(starting.spec.addresses.is_empty());
    assert!(crate::validate::validate(&docs).is_empty());
    // And the translation downstream sees an enrolled workload behind the Service.
    let res = crate::resources::translate(&docs, "cluster.local");
    let api::proto::config::resource::Body::Service(s) =
        &res[&("Service".into(), "shop".into(), "cart".into())]
    else {
        panic!()
    };
    // The starting pod is not behind it until it has an address.
    assert_eq!(s.endpoints.len(), 1);
    assert!(s.endpoints[0].enrolled);
    assert_eq!(
        res[&("Namespace".into(), String::new(), "shop".into())],
        api::proto::config::resource::Body::Namespace(api::proto::config::Namespace {
            enrolled: true,
            outbound_policy: String::new(),
        })
    );
}

#[test]
fn endpoint_slices_of_existing_services_only() {
    let mut cluster = shop();
    let slice = |name: &str, service: &str| -> Arc<discovery::EndpointSlice> {
        arc(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.3"], "conditions": {"ready": false},
                           "nodeName": "node-1",
                           "targetRef": {"kind": "Pod", "namespace": "shop", "name": "cart-1"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
    };
    cluster.endpoint_slices = vec![slice("cart-x1", "cart"), slice("gone-x1", "gone")];
    let objects = documents(&cluster);
    assert!(objects.contains_key("kubernetes EndpointSlice shop/cart-x1"));
    assert!(!objects.contains_key("kubernetes EndpointSlice shop/gone-x1"));
    let docs = ok(&objects);
    assert!(crate::validate::validate(&docs).is_empty());
    let res = crate::resources::translate(&docs, "cluster.local");
    let api::proto::config::resource::Body::Service(s) =
        &res[&("Service".into(), "shop".into(), "cart".into())]
    else {
        panic!()
    };
    assert!(s.endpoints.is_empty(), "the only endpoint is not ready");
}

fn dynamic(json: serde_json::Value) -> Arc<DynamicObject> {
    arc(json)
}

fn waypoint(name: &str, class: &str) -> Arc<DynamicObject> {
    dynamic(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7",
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"gatewayClassName": class,
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE",
                                "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
        "status": {"conditions": []},
    }))
}

fn route(name: &str, parents: serde_json::Value) -> Arc<DynamicObject> {
    dynamic(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"parentRefs": parents,
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"group": "", "kind": "Service", "name": "cart",
                                             "port": 80, "weight": 1}]}]},
    }))
}

#[test]
fn gateway_api_objects_of_weft_only() {
    let mut cluster = shop();
    cluster.gateways = vec![
        waypoint("shop-waypoint", "weft-waypoint"),
        waypoint("ingress", "istio"),
    ];
    let gw = |name: &str| serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name});
    cluster.http_routes = vec![
        // To the waypoint, and to another controller's Gateway.
        route(
            "both",
            serde_json::json!([gw("ingress"), gw("shop-waypoint")]),
        ),
        // A mesh route on a Service.
        route(
            "mesh",
            serde_json::json!([{"group": "", "kind": "Service", "name": "cart"}]),
        ),
        // Someone else's.
        route("theirs", serde_json::json!([gw("ingress")])),
        // A waypoint that does not exist: validation will say so.
        route(
            "typo",
            serde_json::json!([gw("shop-waypiont"), {"kind": "Service", "name": "cart"}]),
        ),
    ];
    let objects = documents(&cluster);
    assert!(objects.contains_key("kubernetes Gateway shop/shop-waypoint"));
    assert!(!objects.contains_key("kubernetes Gateway shop/ingress"));
    assert!(!objects.contains_key("kubernetes HTTPRoute shop/theirs"));
    let docs = ok(&objects);
    let Some(Object::HttpRoute(both)) = docs
        .iter()
        .map(|d| &d.object)
        .find(|o| o.metadata().name == "both")
    else {
        panic!("{docs:#?}")
    };
    let parents: Vec<&str> = both
        .spec
        .parent_refs
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        parents,
        vec!["shop-waypoint"],
        "the other controller's parent is dropped"
    );
    let problems = crate::validate::validate(&docs);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].origin.source, "kubernetes HTTPRoute shop/typo");
    assert_eq!(problems[0].path, "spec.parentRefs[0]");
}

#[test]
fn weft_objects_are_parsed_with_field_paths() {
    let policy = |rules: serde_json::Value| {
        dynamic(serde_json::json!({
            "apiVersion": "security.weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u-1", "generation": 3},
            "spec": {"action": "ALLOW", "rules": rules},
        }))
    };
    let good = custom(
        "AuthorizationPolicy",
        &policy(serde_json::json!([{"from": [{"source": {"namespaces": ["shop"]}}]}])),
    )
    .unwrap();
    assert_eq!(good.origin.source, "kubernetes AuthorizationPolicy shop/p");
    assert_eq!(good.object.describe(), "AuthorizationPolicy shop/p");

    let bad = custom(
        "AuthorizationPolicy",
        &policy(serde_json::json!([{"to": [{"operation": {"notPorts": ["80"]}}]}])),
    )
    .unwrap_err();
    assert_eq!(bad[0].path, "spec.rules[0].to[0].operation.notPorts");
    assert!(
        bad[0].reason.contains("unknown field `notPorts`"),
        "{bad:?}"
    );
    assert_eq!(bad[0].object.as_deref(), Some("AuthorizationPolicy shop/p"));

    // A Workload of a VM, as the CRD stores it.
    let vm = custom(
        "Workload",
        &dynamic(serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": "vm-1", "namespace": "shop"},
            "spec": {"serviceAccount": "legacy", "node": "vm-host-1", "addresses": ["192.0.2.10"]},
        })),
    )
    .unwrap();
    let Object::Workload(w) = vm.object else {
        panic!()
    };
    assert_eq!(w.spec.addresses, vec!["192.0.2.10"]);
}

#[test]
fn a_gateway_keeps_what_it_says_beyond_the_defaults() {
    let mut gateway = (*waypoint("shop-waypoint", "weft-waypoint")).clone();
    gateway.data["spec"]["listeners"][0]["allowedRoutes"] =
        serde_json::json!({"namespaces": {"from": "All"}});
    let problems = custom("Gateway", &gateway).unwrap_err();
    assert_eq!(problems[0].path, "spec.listeners[0].allowedRoutes");
    assert!(problems[0].reason.contains("allowedRoutes"), "{problems:?}");
}
