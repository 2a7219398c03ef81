use http::Method;
use serde_json::json;

use super::*;
use crate::kube_mock::{self, body, json as reply, status};

fn settings(me: &str) -> Settings {
    Settings::new("weft-system", me)
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn held(holder: &str, renewed: i64, transitions: i32) -> serde_json::Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": LEASE, "namespace": "weft-system", "resourceVersion": "41"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "acquireTime": MicroTime(at(0)), "renewTime": MicroTime(at(renewed)),
                    "leaseTransitions": transitions}})
}

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/weft-system/leases";

/// One round at `now` against a Lease that is `current` (None: missing), the write
/// answered `write_status`; what was written (if anything) and the outcome.
async fn one_round(
    me: &str,
    now: i64,
    current: Option<serde_json::Value>,
    write_status: u16,
) -> (bool, Option<(Method, serde_json::Value)>) {
    let (client, mut handle) = kube_mock::mock();
    let api: Api<Lease> = Api::namespaced(client, "weft-system");
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.uri().path(), format!("{PATH}/{LEASE}"));
        match current {
            Some(l) => send.send_response(reply(200, l)),
            None => send.send_response(status(404, "NotFound")),
        }
        let (req, send) = handle.next_request().await?;
        let method = req.method().clone();
        let written = body(req).await;
        send.send_response(if write_status == 200 || write_status == 201 {
            reply(write_status, written.clone())
        } else {
            status(write_status, "Conflict")
        });
        Some((method, written))
    });
    let lead = round(&api, &settings(me), at(now)).await.unwrap();
    drop(api);
    (lead, server.await.unwrap())
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let (lead, written) = one_round("cp-a", 0, None, 201).await;
    assert!(lead);
    let (method, lease) = written.unwrap();
    assert_eq!(method, Method::POST);
    assert_eq!(lease["spec"]["holderIdentity"], "cp-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
}

#[tokio::test]
async fn a_fresh_lease_of_another_is_left_alone() {
    let (lead, written) = one_round("cp-b", 10, Some(held("cp-a", 0, 0)), 200).await;
    assert!(!lead);
    assert!(written.is_none(), "no write while cp-a's lease is fresh");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_version_read() {
    let (lead, written) = one_round("cp-b", 16, Some(held("cp-a", 0, 2)), 200).await;
    assert!(lead);
    let (method, lease) = written.unwrap();
    assert_eq!(method, Method::PUT);
    assert_eq!(lease["metadata"]["resourceVersion"], "41");
    assert_eq!(lease["spec"]["holderIdentity"], "cp-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 3);
    assert_eq!(lease["spec"]["acquireTime"], json!(MicroTime(at(16))));
}

#[tokio::test]
async fn the_holder_renews_and_loses_only_to_a_faster_writer() {
    let (lead, written) = one_round("cp-a", 5, Some(held("cp-a", 0, 1)), 200).await;
    assert!(lead);
    let (_, lease) = written.unwrap();
    assert_eq!(lease["spec"]["renewTime"], json!(MicroTime(at(5))));
    // Renewing keeps when it was acquired and the count of transitions.
    assert_eq!(lease["spec"]["acquireTime"], json!(MicroTime(at(0))));
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // Two replicas take an expired lease at once: the API server refuses the second.
    let (lead, _) = one_round("cp-c", 30, Some(held("cp-a", 0, 1)), 409).await;
    assert!(!lead);
}
