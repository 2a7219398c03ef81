//! `weftctl install` against a cluster: each rendered object applied server-side
//! (field manager `weftctl`), in order, with a progress line each. Applying again
//! changes nothing that is already so.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::Value;

pub const FIELD_MANAGER: &str = "weftctl";

/// `Kind namespace/name` (or `Kind name`).
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The API of the object's kind (in its namespace, if it has one), and its name.
pub fn api_for<'o>(client: &Client, object: &'o Value) -> (Api<DynamicObject>, &'o str) {
    let ar = controlplane::kubernetes::api_resource(object);
    let api = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    (api, object["metadata"]["name"].as_str().unwrap_or_default())
}

/// Applies `objects` in order; stops at the first the API server refuses, saying which
/// and why (a missing Gateway API, which the GatewayClass needs, is named).
pub async fn apply_all(
    client: &Client,
    objects: &[Value],
    mut progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for object in objects {
        let (api, name) = api_for(client, object);
        match api.patch(name, &params, &Patch::Apply(object)).await {
            Ok(_) => progress(&format!("applied {}", describe(object))),
            Err(kube::Error::Api(s))
                if s.code == 404
                    && object["apiVersion"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("gateway.networking.k8s.io/")) =>
            {
                anyhow::bail!(
                    "{}: the cluster does not serve the Gateway API; install its CRDs \
                     (https://gateway-api.sigs.k8s.io, standard channel) and run again",
                    describe(object)
                )
            }
            Err(e) => anyhow::bail!("{}: {e}", describe(object)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;
    use crate::install::{Values, render};

    async fn scenario(objects: Vec<Value>) -> Vec<String> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let expected = objects.clone();
        let task = tokio::spawn(async move {
            let mut lines = Vec::new();
            apply_all(&client, &objects, |l| lines.push(l.to_owned()))
                .await
                .map(|()| lines)
        });
        let mut paths = Vec::new();
        for object in &expected {
            let (req, reply) = handle.next_request().await.expect("a request");
            assert_eq!(req.method(), http::Method::PATCH);
            let query = req.uri().query().unwrap_or_default().to_owned();
            assert!(query.contains("fieldManager=weftctl") && query.contains("force=true"));
            paths.push(req.uri().path().to_owned());
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let sent: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(&sent, object, "sent as rendered");
            reply.send_response(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(bytes.to_vec()))
                    .unwrap(),
            );
        }
        let lines = task.await.unwrap().unwrap();
        assert_eq!(lines.len(), expected.len());
        assert_eq!(lines[0], format!("applied {}", describe(&expected[0])));
        paths
    }

    #[tokio::test]
    async fn install_applies_what_the_dry_run_prints_in_order_and_again_the_same() {
        let objects = render(&Values::default());
        let first = scenario(objects.clone()).await;
        assert_eq!(
            first[0],
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/workloads.weft.dev"
        );
        assert!(first.contains(&"/api/v1/namespaces/weft-system".to_owned()));
        assert!(
            first
                .contains(&"/apis/apps/v1/namespaces/weft-system/daemonsets/weft-agent".to_owned())
        );
        assert_eq!(
            first.last().unwrap(),
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/weft-gateway"
        );
        // Idempotent: a second run asks for exactly the same.
        assert_eq!(scenario(objects).await, first);
    }

    #[tokio::test]
    async fn a_cluster_without_the_gateway_api_is_told_what_to_install() {
        let objects = render(&Values::default());
        let class = objects
            .iter()
            .find(|o| o["metadata"]["name"] == "weft-waypoint")
            .unwrap()
            .clone();
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let task = tokio::spawn(async move { apply_all(&client, &[class], |_| {}).await });
        let (_, reply) = handle.next_request().await.unwrap();
        let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        reply.send_response(
            Response::builder()
                .status(404)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
                .unwrap(),
        );
        let e = task.await.unwrap().unwrap_err().to_string();
        assert!(
            e.contains("Gateway API") && e.contains("GatewayClass weft-waypoint"),
            "{e}"
        );
    }
}
