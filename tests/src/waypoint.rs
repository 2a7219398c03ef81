//! What the waypoint tests share: their topology (two versions of cart behind one
//! Service, and a Service for each; a waypoint for `shop/cart` on node-2), the pods and
//! identities they use, and helpers for requests, logs and routes.

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::lab::{Lab, sa};

pub const TOPOLOGY: &str = "\
underlay: 10.250.0.0/24
serviceSubnet: 10.96.0.0/16
nodes:
  - {name: node-1, podSubnet: 10.244.1.0/24}
  - {name: node-2, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: shop, labels: {weft.dev/mesh: enabled}}
  - {name: legacy}
pods:
  - {name: frontend-1, namespace: shop, node: node-1, serviceAccount: frontend, labels: {app: frontend}}
  - {name: cart-v1-1, namespace: shop, node: node-1, serviceAccount: cart, labels: {app: cart, version: v1}}
  - {name: cart-v1-2, namespace: shop, node: node-2, serviceAccount: cart, labels: {app: cart, version: v1}}
  - {name: cart-v2-1, namespace: shop, node: node-2, serviceAccount: cart, labels: {app: cart, version: v2}}
  - {name: billing-1, namespace: legacy, node: node-1, serviceAccount: billing, labels: {app: billing}}
services:
  - name: cart
    namespace: shop
    vip: 10.96.0.10
    selector: {app: cart}
    ports:
      - {name: http, port: 80, targetPort: 8080}
      - {name: echo, port: 7000, targetPort: 7000}
      - {name: grpc, port: 9090, targetPort: 9090}
  - name: cart-v1
    namespace: shop
    vip: 10.96.0.11
    selector: {app: cart, version: v1}
    ports:
      - {name: http, port: 80, targetPort: 8080}
  - name: cart-v2
    namespace: shop
    vip: 10.96.0.12
    selector: {app: cart, version: v2}
    ports:
      - {name: http, port: 80, targetPort: 8080}
waypoints:
  - {name: cart-waypoint, namespace: shop, node: node-2, vip: 10.96.0.30, services: [cart]}
";

pub const WAYPOINT: &str = "shop/cart-waypoint";
pub const FRONTEND: &str = "shop/frontend-1";
pub const CART_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart-waypoint";
pub const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

pub fn cart(port: u16) -> String {
    sa(CART_VIP, port).to_string()
}

/// `weft-sample http` from the frontend to cart's port 80, with `extra` arguments.
pub fn http(lab: &Lab, extra: &[&str]) -> Value {
    let to = cart(80);
    let mut args = vec!["http", "--connect", &to];
    args.extend_from_slice(extra);
    lab.sample_json(FRONTEND, &args)
}

/// `weft-sample raw` from the frontend to cart's port 80 with the corpus `file`: what
/// came back of each request.
pub fn raw(lab: &Lab, file: &std::path::Path) -> Value {
    let to = cart(80);
    lab.sample_json(
        FRONTEND,
        &["raw", "--connect", &to, "--file", file.to_str().unwrap()],
    )
}

/// The JSON body of the first answer in a `weft-sample http` report (what the sample
/// app saw of the request).
pub fn first_body(v: &Value) -> Value {
    let body = v["first"]["body"]
        .as_str()
        .unwrap_or_else(|| panic!("no body: {v}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

pub fn count(v: &Value, field: &str, key: &str) -> u64 {
    v[field][key].as_u64().unwrap_or(0)
}

/// The `weft::access` lines of a log that contain every one of `words`.
pub fn access_lines<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("weft::access") && words.iter().all(|w| l.contains(w)))
        .collect()
}

pub fn route(rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: cart, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, name: cart, port: 80}}]
  rules:
{rules}"
    )
}
