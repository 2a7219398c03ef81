//! The API server the tests of `weftctl`'s cluster commands play: a kube client over a
//! `tower-test` mock (kube-rs's way of testing clients), and canned answers.

use http::{Request, Response};
use kube::{Client, client::Body};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client, and the handle the test answers its requests on.
pub fn cluster() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// A JSON answer.
pub fn reply(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

/// The API server's 404, as a `Status`.
pub fn not_found() -> Response<Body> {
    reply(
        404,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}
