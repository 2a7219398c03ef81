//! The ingress gateway: a Gateway of class `weft-gateway` run by the waypoint binary in
//! gateway mode on node-1, HTTP and HTTPS listeners (TLS terminated with a certificate
//! of the lab's ingress CA), an HTTPRoute attached to it, and curl in a namespace
//! outside the mesh as the client. Requests go into the mesh over HBONE with the
//! gateway's own identity.

use std::process::Output;

use serde_json::Value;
use tests::{lab::Lab, weftctl, wire::eventually};
use weftctl::lab;

/// The default topology with an `ingress` namespace holding the gateway and an
/// `outside` namespace (not in the mesh) holding a client.
fn topology() -> String {
    let t = lab::topology::DEFAULT
        .replace(
            "namespaces:\n",
            "namespaces:\n  - name: ingress\n  - name: outside\n",
        )
        .replace(
            "pods:\n",
            "pods:\n  - name: client-1\n    namespace: outside\n    node: node-2\n    labels: {app: client}\n",
        );
    format!(
        "{t}  - name: shop-gateway\n    namespace: ingress\n    node: node-1\n    vip: 10.96.0.40\n    ingress: true\n"
    )
}

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop-ingress, namespace: shop}
spec:
  parentRefs: [{kind: Gateway, name: shop-gateway, namespace: ingress}]
  hostnames: [shop.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /v2}}]
      backendRefs: [{name: cart-v2, port: 80}]
    - backendRefs: [{name: cart-v1, port: 80}]
";

/// curl in the client's pod, outside the mesh.
fn curl(args: &[&str]) -> Output {
    let mut all = vec![
        "lab",
        "exec",
        "outside/client-1",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "10",
    ];
    all.extend(args);
    weftctl(&all)
}

/// The status and body of one curl.
fn get(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend(args);
    let out = curl(&all);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

#[test]
fn clients_outside_the_mesh_reach_services_through_the_ingress_gateway() {
    let lab = Lab::up(&topology(), &[], &[]);
    let gw = lab.ip("ingress/shop-gateway");
    lab.apply_to_waypoints("shop-ingress", ROUTE, &["ingress/shop-gateway"]);
    let http = format!("http://{gw}:{}", lab::ingress::HTTP_PORT);
    let resolve = format!("shop.example.com:{}:{gw}", lab::ingress::HTTPS_PORT);
    let https = format!("https://shop.example.com:{}", lab::ingress::HTTPS_PORT);
    let ca = lab::ingress::ca_file();
    let ca = ca.to_str().unwrap();

    // HTTP: the route's hostname and paths decide.
    eventually(
        std::time::Duration::from_secs(10),
        "the route at the gateway",
        || get(&["-H", "Host: shop.example.com", &format!("{http}/")]).0 == 200,
    );
    let (code, body) = get(&["-H", "Host: shop.example.com", &format!("{http}/cart")]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pod"], "cart-1", "{v}");
    // The client as the gateway saw it, for the application.
    assert_eq!(
        v["headers"]["x-forwarded-for"],
        lab.ip("outside/client-1").to_string(),
        "{v}"
    );
    let (code, body) = get(&["-H", "Host: shop.example.com", &format!("{http}/v2/x")]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pod"], "cart-2", "{v}");
    // A host no route names: 404 from the gateway.
    let (code, _) = get(&["-H", "Host: other.example.com", &format!("{http}/")]);
    assert_eq!(code, 404);

    // HTTPS, verified against the lab's ingress CA, over HTTP/1.1 and HTTP/2.
    for version in ["--http1.1", "--http2"] {
        let (code, body) = get(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            version,
            &format!("{https}/v2"),
        ]);
        assert_eq!(code, 200, "{version}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pod"], "cart-2", "{v}");
    }
    // Without the CA the certificate is not trusted (curl's exit 60).
    let out = curl(&["--resolve", &resolve, &format!("{https}/")]);
    assert_eq!(out.status.code(), Some(60), "{out:?}");

    // Into the mesh the gateway is the client, in mutual TLS, with its own identity:
    // the agent of cart-2's node took its tunnel so.
    let agent = lab.metrics("node-2");
    assert!(
        agent
            .lines()
            .any(|l| l.starts_with("weft_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains(
                    "source_principal=\"spiffe://cluster.local/ns/ingress/sa/shop-gateway\""
                )
                && l.contains("destination_workload=\"cart-2\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")),
        "{agent}"
    );
    let out = weftctl(&["lab", "logs", "--access", "shop/cart-2"]);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.lines().any(|l| l
            .contains("src_identity=spiffe://cluster.local/ns/ingress/sa/shop-gateway")
            && l.contains("dst_identity=spiffe://cluster.local/ns/shop/sa/cart")),
        "{logs}"
    );
    // And its own metrics count the requests, from outside (no mutual TLS in).
    let metrics = lab.pod_metrics("ingress/shop-gateway");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weft_requests_total{")
                && l.contains("destination_service=\"shop/cart-v2\"")
                && l.contains("connection_security_policy=\"none\"")
                && l.contains("response_code=\"200\"")),
        "{metrics}"
    );
}
