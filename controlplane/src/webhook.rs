//! The validating admission webhook: Kubernetes sends each created or updated Weft
//! object (AdmissionReview, `POST /validate`, HTTPS on 15017) and the same validation
//! as `weftctl validate` answers — against the configuration in force, so references
//! and conflicts are checked too. A refusal lists every problem with its field path.
//! The values the API server fills in by default are read as the Kubernetes source reads
//! them, and Gateways of other classes are left to their controllers.

use std::{
    convert::Infallible,
    sync::{Arc, RwLock},
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};

use crate::{
    model::{Document, parse},
    validate::weft_class,
};

/// Largest AdmissionReview accepted (the API server sends at most a few MiB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How the object under review is named in problems.
const SOURCE: &str = "admission request";

/// Answers one AdmissionReview (JSON in, JSON out).
pub fn review(body: &[u8], in_force: &[Document]) -> serde_json::Value {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return serde_json::to_value(
                AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review(),
            )
            .unwrap_or_default();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return serde_json::to_value(AdmissionResponse::invalid(e.to_string()).into_review())
                .unwrap_or_default();
        }
    };
    let response = AdmissionResponse::from(&request);
    let kind = request.kind.kind.as_str();
    let class = request
        .object
        .as_ref()
        .and_then(|o| o.data.pointer("/spec/gatewayClassName"))
        .and_then(|c| c.as_str());
    let response = match &request.object {
        // Deletions take nothing away that validation protects.
        None => response,
        // Another controller's Gateway is not Weft's to judge.
        Some(_) if kind == "Gateway" && !class.is_some_and(weft_class) => response,
        Some(object) => {
            let mut value = serde_json::to_value(object).unwrap_or_default();
            crate::kubernetes::without_defaults(kind, &mut value);
            let text = value.to_string();
            let (docs, mut problems) = parse(SOURCE, &text);
            if let Some(doc) = docs.first() {
                let key = doc.object.describe();
                let mut set: Vec<Document> = in_force
                    .iter()
                    .filter(|d| d.object.describe() != key)
                    .cloned()
                    .collect();
                set.push(doc.clone());
                problems.extend(
                    crate::validate::validate(&set)
                        .into_iter()
                        .filter(|p| p.origin.source == SOURCE),
                );
            }
            if problems.is_empty() {
                response
            } else {
                let message = problems
                    .iter()
                    .map(|p| {
                        if p.path.is_empty() {
                            p.reason.clone()
                        } else {
                            format!("{}: {}", p.path, p.reason)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::info!(%message, "admission refused");
                response.deny(message)
            }
        }
    };
    serde_json::to_value(response.into_review()).unwrap_or_default()
}

/// Serves the webhook with TLS until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    in_force: Arc<RwLock<Vec<Document>>>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let in_force = Arc::clone(&in_force);
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let in_force = Arc::clone(&in_force);
                async move { Ok::<_, Infallible>(handle(req, &in_force).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    in_force: &RwLock<Vec<Document>>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    if req.method() != Method::POST || req.uri().path() != "/validate" {
        return reply(
            StatusCode::NOT_FOUND,
            b"{\"error\":\"POST /validate only\"}".to_vec(),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                b"{\"error\":\"too large\"}".to_vec(),
            );
        }
    };
    let docs = in_force.read().unwrap_or_else(|p| p.into_inner()).clone();
    reply(
        StatusCode::OK,
        serde_json::to_vec(&review(&body, &docs)).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "security.weft.dev", "version": "v1alpha1", "kind": "AuthorizationPolicy"},
                "resource": {"group": "security.weft.dev", "version": "v1alpha1", "resource": "authorizationpolicies"},
                "name": "p",
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": object,
                "dryRun": false,
            },
        }))
        .unwrap()
    }

    fn policy(spec: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "security.weft.dev/v1alpha1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": spec,
        })
    }

    #[test]
    fn a_good_object_is_allowed() {
        let out = review(
            &admission(policy(serde_json::json!({
                "rules": [{"from": [{"source": {"namespaces": ["shop"]}}]}],
            }))),
            &[],
        );
        assert_eq!(out["response"]["allowed"], true, "{out}");
        assert_eq!(
            out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
    }

    #[test]
    fn a_bad_object_is_refused_with_its_field_paths() {
        let out = review(
            &admission(policy(serde_json::json!({
                "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/40"], "namespaces": ["Shop"]}}]}],
            }))),
            &[],
        );
        assert_eq!(out["response"]["allowed"], false, "{out}");
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("spec.rules[0].from[0].source.ipBlocks[0]: "),
            "{message}"
        );
        assert!(
            message.contains("spec.rules[0].from[0].source.namespaces[0]: "),
            "{message}"
        );
    }

    #[test]
    fn resiliency_settings_are_refused_with_their_field_paths() {
        for (object, field) in [
            (
                serde_json::json!({
                    "apiVersion": "weft.dev/v1alpha1",
                    "kind": "TrafficFilter",
                    "metadata": {"name": "chaos", "namespace": "shop"},
                    "spec": {"fault": {"abort": {"httpStatus": 503, "percentage": 150}}},
                }),
                "spec.fault.abort.percentage: ",
            ),
            (
                serde_json::json!({
                    "apiVersion": "weft.dev/v1alpha1",
                    "kind": "TrafficFilter",
                    "metadata": {"name": "r", "namespace": "shop"},
                    "spec": {"retry": {"attempts": 11}},
                }),
                "spec.retry.attempts: ",
            ),
            (
                serde_json::json!({
                    "apiVersion": "weft.dev/v1alpha1",
                    "kind": "BackendPolicy",
                    "metadata": {"name": "cart", "namespace": "shop"},
                    "spec": {
                        "targetRefs": [{"kind": "Service", "name": "cart"}],
                        "retryBudget": {"percent": 120},
                    },
                }),
                "spec.retryBudget.percent: ",
            ),
        ] {
            let out = review(&admission(object), &[]);
            assert_eq!(out["response"]["allowed"], false, "{out}");
            let message = out["response"]["status"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{message}");
        }
    }

    #[test]
    fn l7_rules_are_checked_against_the_configuration_in_force() {
        let (in_force, problems) = parse(
            "cluster",
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: cart-1, namespace: shop, labels: {app: cart}}\n\
             spec: {node: n1, addresses: [10.0.0.1]}\n",
        );
        assert!(problems.is_empty());
        let out = review(
            &admission(policy(serde_json::json!({
                "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
            }))),
            &in_force,
        );
        assert_eq!(out["response"]["allowed"], false, "{out}");
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("no waypoint serves"), "{message}");
    }

    fn gateway_review(class: &str, protocol: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0f4c1b52-3e0c-4a8e-9d49-6a1b5e1b7f10",
                "kind": {"group": "gateway.networking.k8s.io", "version": "v1", "kind": "Gateway"},
                "resource": {"group": "gateway.networking.k8s.io", "version": "v1", "resource": "gateways"},
                "name": "gw",
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": {
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "metadata": {"name": "gw", "namespace": "shop"},
                    "spec": {"gatewayClassName": class, "listeners": [{
                        "name": "mesh", "port": 15008, "protocol": protocol,
                        // What the API server adds when the listener says nothing.
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }]},
                },
                "dryRun": false,
            },
        }))
        .unwrap()
    }

    #[test]
    fn gateways_as_the_api_server_sends_them() {
        let out = review(&gateway_review("weft-waypoint", "HBONE"), &[]);
        assert_eq!(out["response"]["allowed"], true, "{out}");
        let out = review(&gateway_review("weft-waypoint", "HTTP"), &[]);
        assert_eq!(out["response"]["allowed"], false, "{out}");
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("spec.listeners[0].protocol: "),
            "{message}"
        );
        // Another controller's Gateway.
        let out = review(&gateway_review("istio", "HTTP"), &[]);
        assert_eq!(out["response"]["allowed"], true, "{out}");
    }

    #[test]
    fn garbage_is_answered_not_crashed_on() {
        let out = review(b"{not json", &[]);
        assert_eq!(out["response"]["allowed"], false, "{out}");
    }
}
