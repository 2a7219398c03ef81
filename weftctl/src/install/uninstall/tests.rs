use http::Method;
use serde_json::json;

use super::*;
use crate::testing::{cluster, not_found, reply};

fn cleanup_status(ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
           "metadata": {"name": cleanup::NAME, "namespace": "weft-system", "generation": 1},
           "spec": {"selector": {}, "template": {}},
           "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "numberReady": ready,
                      "updatedNumberScheduled": 2, "currentNumberScheduled": 2,
                      "numberMisscheduled": 0}})
}

fn options(crds: bool) -> Options {
    Options {
        crds,
        poll: Duration::ZERO,
        timeout: Duration::from_secs(5),
    }
}

/// Plays the API server: records `(method, path)` of each request; deletes of what
/// `gone` names answer 404; the cleanup is ready at its second read.
async fn scenario(
    crds: bool,
    gone: &'static [&'static str],
) -> (Vec<(Method, String)>, Vec<String>) {
    let (client, mut handle) = cluster();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut reads = 0;
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().clone(), req.uri().path().to_owned());
            let answer = match method {
                Method::PATCH => {
                    assert!(
                        path.ends_with(&format!("/daemonsets/{}", cleanup::NAME)),
                        "{path}"
                    );
                    let body = req.into_body().collect_bytes().await.unwrap();
                    let ds: Value = serde_json::from_slice(&body).unwrap();
                    let spec = &ds["spec"]["template"]["spec"];
                    assert_eq!(spec["hostNetwork"], true);
                    assert_eq!(
                        spec["initContainers"][0]["command"],
                        json!(["weft-agent", "uninstall"])
                    );
                    assert_eq!(spec["initContainers"][1]["command"][2], "--uninstall");
                    reply(200, ds)
                }
                Method::GET => {
                    reads += 1;
                    reply(200, cleanup_status(if reads < 2 { 1 } else { 2 }))
                }
                _ if gone.iter().any(|g| path.ends_with(g)) => not_found(),
                _ => reply(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ),
            };
            seen.push((method, path));
            send.send_response(answer);
        }
        seen
    });
    let mut lines = Vec::new();
    uninstall_all(&client, &Values::default(), &options(crds), |l| {
        lines.push(l.to_owned())
    })
    .await
    .unwrap();
    drop(client);
    (server.await.unwrap(), lines)
}

#[tokio::test]
async fn the_agents_go_first_then_every_node_is_cleaned_then_the_rest_and_the_crds_stay() {
    let (seen, lines) = scenario(false, &["/gatewayclasses/weft-waypoint"]).await;
    let deletes: Vec<&str> = seen
        .iter()
        .filter(|(m, _)| m == Method::DELETE)
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(
        deletes[0],
        "/apis/apps/v1/namespaces/weft-system/daemonsets/weft-agent"
    );
    // The cleanup is applied and waited for before anything else goes.
    let applied = seen.iter().position(|(m, _)| m == Method::PATCH).unwrap();
    let done = seen.iter().rposition(|(m, _)| m == Method::GET).unwrap();
    assert!(applied < done);
    assert_eq!(
        seen[done + 1].1,
        format!(
            "/apis/apps/v1/namespaces/weft-system/daemonsets/{}",
            cleanup::NAME
        )
    );
    assert!(
        lines.contains(&"node cleanup: 1/2 nodes done".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"the node cleanup ran on 2 nodes".to_owned()),
        "{lines:?}"
    );
    // Then the rest, last applied first; the namespace at the end; no CRD.
    let rest = &deletes[2..];
    assert_eq!(
        rest[..2],
        [
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/weft-gateway",
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/weft-waypoint"
        ]
    );
    assert_eq!(*rest.last().unwrap(), "/api/v1/namespaces/weft-system");
    assert!(
        rest.iter()
            .all(|p| !p.contains("customresourcedefinitions")),
        "{rest:?}"
    );
    assert!(rest.contains(&"/apis/apps/v1/namespaces/weft-system/deployments/weft-controlplane"));
    assert!(
        lines.contains(&"GatewayClass weft-waypoint was not there".to_owned()),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().unwrap(),
        "kept Weft's CRDs and their documents (`--crds` removes them)"
    );
    // Everything installed but the CRDs and the agents' DaemonSet, plus the cleanup's.
    let installed = render(&Values::default()).len();
    assert_eq!(deletes.len(), 1 + 1 + (installed - 1 - crds_len()));
}

fn crds_len() -> usize {
    super::super::crds().len()
}

#[tokio::test]
async fn with_crds_they_go_too_and_again_is_no_error() {
    let (seen, _) = scenario(true, &[]).await;
    let crds = seen
        .iter()
        .filter(|(m, p)| m == Method::DELETE && p.contains("customresourcedefinitions"))
        .count();
    assert_eq!(crds, crds_len());
    // Nothing there any more: every delete is a 404, and it still succeeds.
    let (_, lines) = scenario(
        false,
        &[
            "weft-agent",
            "weft-waypoint",
            "weft-controlplane",
            "weft-system",
            cleanup::NAME,
        ],
    )
    .await;
    assert!(
        lines.iter().any(|l| l.ends_with("was not there")),
        "{lines:?}"
    );
}
