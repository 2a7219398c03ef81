use http::Method;

use super::*;
use crate::kube_mock::{self, body, json as answer};

fn gateway(listeners: Value, generation: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "cart-waypoint", "namespace": "shop", "uid": "u-1", "generation": generation},
        "spec": {"gatewayClassName": "weft-waypoint", "listeners": listeners},
    }))
    .unwrap()
}

fn hbone() -> Value {
    json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}])
}

fn settings() -> Settings {
    Settings {
        image: "registry.example/weft:1".into(),
        controlplane: "weft-controlplane.weft-system.svc:15012".into(),
        trust_domain: "cluster.local".into(),
        roots_pem: "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n".into(),
        token_audience: "weft".into(),
    }
}

fn env_of(deployment: &Value) -> BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_waypoint_gateway_gets_its_objects_applied_and_its_status_written() {
    let (client, mut api) = kube_mock::mock();
    let gw = gateway(hbone(), 3);
    let task = {
        let gw = gw.clone();
        tokio::spawn(async move { reconcile(&client, &gw, &settings()).await })
    };
    for (path, name) in [
        ("/api/v1/namespaces/shop/serviceaccounts/", "cart-waypoint"),
        (
            "/api/v1/namespaces/shop/configmaps/",
            "cart-waypoint-weft-roots",
        ),
        (
            "/apis/apps/v1/namespaces/shop/deployments/",
            "cart-waypoint",
        ),
        ("/api/v1/namespaces/shop/services/", "cart-waypoint"),
    ] {
        let (req, reply) = api.next_request().await.expect("a request");
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri().path(), format!("{path}{name}"));
        let query = req.uri().query().unwrap_or_default().to_owned();
        assert!(
            query.contains("fieldManager=weft-controlplane") && query.contains("force=true"),
            "{query}"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let mut object = body(req).await;
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["uid"], &owner["controller"]),
            (&json!("Gateway"), &json!("u-1"), &json!(true)),
            "{object}"
        );
        match object["kind"].as_str().unwrap() {
            "ConfigMap" => assert!(
                object["data"]["roots.pem"]
                    .as_str()
                    .unwrap()
                    .contains("root")
            ),
            "Deployment" => {
                let env = env_of(&object);
                assert_eq!(env["WEFT_WAYPOINT_NAMESPACE"], "shop");
                assert_eq!(env["WEFT_WAYPOINT_NAME"], "cart-waypoint");
                assert_eq!(
                    env["WEFT_CONTROLPLANE"],
                    "weft-controlplane.weft-system.svc:15012"
                );
                let pod = &object["spec"]["template"];
                assert_eq!(pod["metadata"]["labels"]["weft.dev/mesh"], "disabled");
                assert_eq!(pod["metadata"]["labels"][GATEWAY_LABEL], "cart-waypoint");
                assert_eq!(pod["spec"]["serviceAccountName"], "cart-waypoint");
                assert_eq!(
                    pod["spec"]["containers"][0]["image"],
                    "registry.example/weft:1"
                );
                let token = &pod["spec"]["volumes"][1]["projected"]["sources"][0];
                assert_eq!(token["serviceAccountToken"]["audience"], "weft");
            }
            "Service" => {
                assert_eq!(object["spec"]["selector"][GATEWAY_LABEL], "cart-waypoint");
                assert_eq!(object["spec"]["ports"][0]["port"], 15008);
                object["spec"]["clusterIP"] = "10.96.0.30".into();
            }
            _ => {}
        }
        reply.send_response(answer(200, object));
    }
    let (req, reply) = api.next_request().await.expect("the status");
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/cart-waypoint/status"
    );
    let patch = body(req).await;
    let conditions = patch["status"]["conditions"].as_array().unwrap();
    for (i, kind) in ["Accepted", "Programmed"].iter().enumerate() {
        assert_eq!(conditions[i]["type"], *kind);
        assert_eq!(conditions[i]["status"], "True");
        assert_eq!(conditions[i]["observedGeneration"], 3);
    }
    assert_eq!(
        patch["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "10.96.0.30"}])
    );
    reply.send_response(answer(200, serde_json::to_value(&gw).unwrap()));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_gateway_without_an_hbone_listener_is_not_accepted_and_gets_nothing() {
    let (client, mut api) = kube_mock::mock();
    let gw = gateway(json!([{"name": "http", "port": 80, "protocol": "HTTP"}]), 1);
    let task = {
        let gw = gw.clone();
        tokio::spawn(async move { reconcile(&client, &gw, &settings()).await })
    };
    let (req, reply) = api.next_request().await.expect("the status");
    assert!(req.uri().path().ends_with("/gateways/cart-waypoint/status"));
    let patch = body(req).await;
    let accepted = &patch["status"]["conditions"][0];
    assert_eq!(
        (&accepted["type"], &accepted["status"]),
        (&json!("Accepted"), &json!("False"))
    );
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("HBONE on port 15008")
    );
    reply.send_response(answer(200, serde_json::to_value(&gw).unwrap()));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_api_server_error_is_returned_for_the_next_try() {
    let (client, mut api) = kube_mock::mock();
    let gw = gateway(hbone(), 1);
    let task = tokio::spawn(async move { reconcile(&client, &gw, &settings()).await });
    let (_, reply) = api.next_request().await.expect("a request");
    reply.send_response(kube_mock::status(403, "Forbidden"));
    let err = task.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("Forbidden"), "{err}");
}

#[test]
fn only_new_or_changed_waypoint_gateways_are_reconciled() {
    let mut applied = Applied::default();
    let v1 = gateway(hbone(), 1);
    let mut other: DynamicObject = gateway(hbone(), 1);
    other.data["spec"]["gatewayClassName"] = "istio".into();
    other.metadata.name = Some("ingress".into());
    assert_eq!(
        applied.changed([&v1, &other]).len(),
        1,
        "other classes are left alone"
    );
    applied.done(&v1);
    assert!(applied.changed([&v1]).is_empty(), "applied already");
    let v2 = gateway(hbone(), 2);
    assert_eq!(applied.changed([&v2]).len(), 1, "a new generation");
    // Deleted and made again under the same name: a new uid.
    let mut again = gateway(hbone(), 1);
    again.metadata.uid = Some("u-2".into());
    assert_eq!(applied.changed([&again]).len(), 1);
    applied.retain([]);
    assert_eq!(applied.changed([&v1]).len(), 1, "forgotten once gone");
}

#[test]
fn an_ingress_gateway_runs_in_gateway_mode_behind_a_load_balancer() {
    let mut g = gateway(
        json!([
            {"name": "http", "port": 8080, "protocol": "HTTP"},
            {"name": "https", "port": 8443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"kind": "Secret", "name": "shop-tls"}]}},
        ]),
        1,
    );
    g.data["spec"]["gatewayClassName"] = "weft-gateway".into();
    assert_eq!(refusal(&g), None);
    let objects = objects(&g, &settings());
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let env = env_of(deployment);
    assert_eq!(env["WEFT_GATEWAY_HTTP_ADDR"], "0.0.0.0:8080");
    assert_eq!(env["WEFT_GATEWAY_HTTPS_ADDR"], "0.0.0.0:8443");
    assert_eq!(
        env["WEFT_GATEWAY_TLS_CERT"],
        "/var/run/weft/gateway-tls/tls.crt"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "shop-tls"),
        "{pod}"
    );
    let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    let ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 8443]);
    // A waypoint keeps its HBONE Service.
    let w = objects_of_waypoint();
    let service = w.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"], 15008);
    // Without a listener it can serve, it is refused.
    let mut bad = gateway(
        json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}]),
        1,
    );
    bad.data["spec"]["gatewayClassName"] = "weft-gateway".into();
    assert!(refusal(&bad).unwrap().contains("HTTP listener"));
}

fn objects_of_waypoint() -> Vec<Value> {
    objects(&gateway(hbone(), 1), &settings())
}
