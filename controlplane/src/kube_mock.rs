//! A Kubernetes API server played by the test: a kube client over a `tower-test` mock
//! service, and canned answers. Each test's scenario task takes the client's requests
//! in order, checks them and answers (kube-rs's own way of testing controllers).

use http::{Request, Response};
use kube::{Client, client::Body};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

pub fn json(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// A `Status` failure answer, as the API server sends for errors.
pub fn status(code: u16, reason: &str) -> Response<Body> {
    json(
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "code": code,
            "message": format!("the server says {reason}"),
        }),
    )
}

/// The JSON body of a request.
pub async fn body(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
