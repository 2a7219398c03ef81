use serde_json::json;

use super::*;
use crate::testing::{cluster, reply};

fn text(body: &str) -> http::Response<kube::client::Body> {
    http::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .unwrap()
}

fn pods(items: serde_json::Value) -> http::Response<kube::client::Body> {
    reply(
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
    )
}

fn pod(ns: &str, name: &str, node: &str, phase: &str) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": ns},
           "spec": {"nodeName": node, "containers": []},
           "status": {"phase": phase}})
}

const LINE: &str = "weft_tcp_connections_opened_total{reporter=\"destination\",destination_workload_namespace=\"shop\",destination_workload=\"cart-1\",connection_security_policy=\"mutual_tls\"}";

#[tokio::test]
async fn top_reads_every_running_agent_and_waypoint_through_the_pod_proxy() {
    let (client, mut handle) = cluster();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), "/api/v1/namespaces/weft-system/pods");
        assert!(req.uri().query().unwrap().contains("weft-agent"));
        send.send_response(pods(json!([
            pod("weft-system", "weft-agent-a", "node-1", "Running"),
            pod("weft-system", "weft-agent-b", "node-2", "Pending"),
        ])));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), "/api/v1/pods");
        assert!(req.uri().query().unwrap().contains("gateway-name"));
        send.send_response(pods(json!([pod(
            "shop",
            "cart-waypoint-1",
            "node-2",
            "Running"
        )])));
        for (path, value) in [
            (
                "/api/v1/namespaces/weft-system/pods/weft-agent-a:15020/proxy/metrics",
                10,
            ),
            (
                "/api/v1/namespaces/shop/pods/cart-waypoint-1:15020/proxy/metrics",
                5,
            ),
        ] {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.uri().path(), path, "the pending agent is not asked");
            send.send_response(text(&format!("{LINE} {value}\n")));
        }
    });
    let samples = read(&client, "weft-system").await.unwrap();
    server.await.unwrap();
    assert_eq!(samples.len(), 2);
    let total: f64 = samples.iter().map(|s| s.2).sum();
    assert_eq!(total, 15.0);
    // Two such readings make the rates `weftctl top` prints.
    let later: Vec<top::Sample> = samples
        .iter()
        .map(|(n, l, v)| (n.clone(), l.clone(), v * 2.0))
        .collect();
    let rows = top::rates(&samples, &later, 5.0);
    assert_eq!(rows[0].workload, "shop/cart-1");
    assert_eq!(rows[0].connections_per_second, 3.0);
    assert_eq!(rows[0].mtls_share, Some(1.0));
}

#[tokio::test]
async fn access_lines_come_from_the_pods_node_agent_and_the_waypoints() {
    let (client, mut handle) = cluster();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), "/api/v1/namespaces/shop/pods/cart-1");
        send.send_response(reply(200, pod("shop", "cart-1", "node-1", "Running")));
        let (req, send) = handle.next_request().await.unwrap();
        assert!(
            req.uri()
                .query()
                .unwrap()
                .contains("spec.nodeName%3Dnode-1")
        );
        send.send_response(pods(json!([pod(
            "weft-system",
            "weft-agent-a",
            "node-1",
            "Running"
        )])));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(pods(json!([pod(
            "shop",
            "cart-waypoint-1",
            "node-2",
            "Running"
        )])));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/weft-system/pods/weft-agent-a/log"
        );
        assert_eq!(req.uri().query(), Some("&container=agent"));
        send.send_response(text(
            "INFO weft::access: connection src_workload=shop/frontend-1 dst_workload=shop/cart-1 sent=3\n\
             INFO weft::access: connection src_workload=shop/frontend-1 dst_workload=shop/cart-2 sent=3\n\
             INFO agent: enrolled\n",
        ));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/shop/pods/cart-waypoint-1/log"
        );
        assert_eq!(req.uri().query(), Some("&container=waypoint"));
        send.send_response(text(
            "INFO weft::access: request src_workload=shop/frontend-2 dst_workload=shop/cart-1 status=200\n",
        ));
    });
    let lines = access_lines(&client, "weft-system", "shop", "cart-1")
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("src_workload=shop/frontend-1"));
    assert!(lines[1].contains("status=200"));
}
