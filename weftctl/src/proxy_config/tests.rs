use serde_json::json;

use super::*;
use crate::testing::{cluster, not_found, reply};

fn sample() -> PodConfig {
    PodConfig {
        pod: "shop/cart-1".into(),
        node: "node-1".into(),
        in_mesh: true,
        identity: "spiffe://cluster.local/ns/shop/sa/cart".into(),
        addresses: vec!["10.244.1.3".into()],
        enrollment: None,
        certificate: Some(api::admin::Certificate {
            state: "ready".into(),
            not_after: Some(u64::MAX / 2),
        }),
        waypoint: Some("cart-waypoint".into()),
        peer_authentication: "STRICT".into(),
        policies: vec!["AuthorizationPolicy shop/cart-reads".into()],
        services: vec!["shop/cart".into()],
        config_version: 7,
    }
}

#[tokio::test]
async fn finds_the_agent_of_the_pods_node_and_asks_it_through_the_api_server() {
    let (client, mut handle) = cluster();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), "/api/v1/namespaces/shop/pods/cart-1");
        send.send_response(reply(
            200,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "cart-1", "namespace": "shop"},
                   "spec": {"nodeName": "node-1", "containers": []}}),
        ));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), "/api/v1/namespaces/weft-system/pods");
        let query = req.uri().query().unwrap().to_owned();
        assert!(
            query.contains("labelSelector=app.kubernetes.io%2Fname%3Dweft-agent"),
            "{query}"
        );
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dnode-1"),
            "{query}"
        );
        send.send_response(reply(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                   "items": [{"metadata": {"name": "weft-agent-x7k2p", "namespace": "weft-system"},
                              "spec": {"nodeName": "node-1", "containers": []}}]}),
        ));
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/weft-system/pods/weft-agent-x7k2p:15020/proxy/v1/pods/shop/cart-1"
        );
        send.send_response(reply(200, serde_json::to_value(sample()).unwrap()));
    });
    let config = fetch(&client, "weft-system", "shop", "cart-1")
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(config, sample());
    let text = human(&config, false);
    assert!(text.contains("mesh               in the mesh"), "{text}");
    assert!(
        text.contains("certificate        ready, expires in "),
        "{text}"
    );
    assert!(
        text.contains("policies           AuthorizationPolicy shop/cart-reads"),
        "{text}"
    );
    // The same data for scripts.
    let yaml = output::render(Some(Format::Yaml), &config, |_| String::new());
    assert!(yaml.contains("peerAuthentication: STRICT"), "{yaml}");
    let json: serde_json::Value =
        serde_json::from_str(&output::render(Some(Format::Json), &config, |_| {
            String::new()
        }))
        .unwrap();
    assert_eq!(json["configVersion"], 7);
}

#[tokio::test]
async fn a_missing_pod_or_agent_is_said_plainly() {
    let (client, mut handle) = cluster();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(not_found());
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(
            200,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
                   "spec": {"nodeName": "node-9", "containers": []}}),
        ));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
        ));
    });
    let e = fetch(&client, "weft-system", "shop", "nope")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "the cluster has no pod shop/nope");
    let e = fetch(&client, "weft-system", "shop", "p")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no Weft agent runs on node node-9 (the DaemonSet weft-agent in weft-system)"
    );
    server.await.unwrap();
    assert!(parse_pod("cart-1").is_err());
    assert_eq!(parse_pod("shop/cart-1").unwrap(), ("shop", "cart-1"));
}
