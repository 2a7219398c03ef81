//! The HTTP endpoint of `serve --http`: HTTP/1.1 and HTTP/2 prior knowledge on one
//! listener. Every request is answered with JSON that describes it (the pod's name, the
//! client's address, the method, path, query, version, headers and the body's length);
//! `GET /status/<code>` answers with that status code, and a request that asks to
//! upgrade to WebSocket becomes a WebSocket echo. `GET /seen` tells how many requests
//! the server answered and the last ones (method, path, body length), for tests that
//! look at what reached an application (a mirror's copies, say).
//!
//! For resiliency tests: `?delay_ms=N` on any request answers after N ms; `/flaky`
//! answers 500 and 200 in turn (exactly half fail); `/mode?status=500` makes every
//! later request (but `/seen` and `/mode`) answer 500, `/mode?status=0` ends that.
//!
//! The `http` client is in `client`.

pub mod client;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, Response, StatusCode, Version,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, UPGRADE},
    http::request::Parts,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use crate::{accept_failed, websocket};

/// Accepts connections on `listener` and serves each on its own task, with upgrades
/// (for WebSocket) on HTTP/1.1.
pub async fn serve(listener: TcpListener, name: Arc<str>) -> anyhow::Result<()> {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            accept_failed().await;
            continue;
        };
        // Small answers go out at once; the benchmarks measure their latency.
        let _ = stream.set_nodelay(true);
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| answer(Arc::clone(&name), peer, req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The requests answered: how many, and the last [`SEEN_KEPT`].
#[derive(Default)]
struct Seen {
    count: u64,
    recent: std::collections::VecDeque<serde_json::Value>,
}

const SEEN_KEPT: usize = 1000;

static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(Seen {
    count: 0,
    recent: std::collections::VecDeque::new(),
});

fn seen_json() -> Vec<u8> {
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    serde_json::to_vec(&serde_json::json!({
        "count": seen.count,
        "recent": seen.recent,
    }))
    .expect("serializable")
}

/// The status every request gets, set by `/mode` (0: none).
static FORCED: AtomicU16 = AtomicU16::new(0);
/// Requests to `/flaky` so far.
static FLAKY: AtomicU64 = AtomicU64::new(0);

/// A query parameter's value.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn answer(
    name: Arc<str>,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if wants_websocket(&req) {
        return Ok(websocket::accept(&mut req));
    }
    if req.uri().path() == "/seen" {
        return Ok(Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(seen_json())))
            .expect("valid response"));
    }
    if req.uri().path() == "/mode" {
        let status = query_param(req.uri().query(), "status").and_then(|s| s.parse().ok());
        let Some(status) = status.filter(|s| *s == 0 || (200..=599).contains(s)) else {
            return Ok(Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Full::new(Bytes::from_static(
                    b"expected ?status=0 or 200..599\n",
                )))
                .expect("valid response"));
        };
        FORCED.store(status, Ordering::Relaxed);
        return Ok(Response::new(Full::new(Bytes::from(format!(
            "status {status}\n"
        )))));
    }
    if let Some(ms) = query_param(req.uri().query(), "delay_ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let (parts, body) = req.into_parts();
    let mut status = status_asked(parts.uri.path()).unwrap_or(StatusCode::OK);
    if parts.uri.path() == "/flaky" && FLAKY.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
        status = StatusCode::INTERNAL_SERVER_ERROR;
    }
    let forced = FORCED.load(Ordering::Relaxed);
    if forced != 0 {
        status = StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let body_bytes = body_length(body).await;
    {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        seen.count += 1;
        if seen.recent.len() == SEEN_KEPT {
            seen.recent.pop_front();
        }
        seen.recent.push_back(serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "body_bytes": body_bytes,
        }));
    }
    let json = describe(&name, peer, &parts, body_bytes);
    Ok(Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json)))
        .expect("valid response"))
}

/// Does the request ask to upgrade to WebSocket (`Upgrade: websocket`, any case, maybe
/// among other protocols)?
fn wants_websocket<B>(req: &Request<B>) -> bool {
    req.headers().get_all(UPGRADE).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// The status code `/status/<code>` asks for: a final status (200 to 599); `None` for
/// any other path. A code that cannot be answered is a bad request.
fn status_asked(path: &str) -> Option<StatusCode> {
    let code = path.strip_prefix("/status/")?;
    Some(
        code.parse::<u16>()
            .ok()
            .filter(|c| (200..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST),
    )
}

/// Reads the whole body, frame by frame, and counts its bytes (without keeping them).
/// A body cut short counts what arrived.
async fn body_length(mut body: Incoming) -> u64 {
    let mut length = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
        }
    }
    length
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// The answer's JSON. The fields `pod`, `client`, `method`, `path` and `headers` are
/// read by the tests and the benchmark; keep them.
fn describe(name: &str, peer: SocketAddr, req: &Parts, body_bytes: u64) -> Vec<u8> {
    let headers: BTreeMap<String, String> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "pod": name,
        "client": peer.to_string(),
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "query": req.uri.query(),
        "version": version_name(req.version),
        "headers": headers,
        "body_bytes": body_bytes,
    }))
    .expect("serializable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paths() {
        assert_eq!(status_asked("/"), None);
        assert_eq!(status_asked("/statusx/500"), None);
        assert_eq!(
            status_asked("/status/503"),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(status_asked("/status/200"), Some(StatusCode::OK));
        assert_eq!(status_asked("/status/101"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status_asked("/status/600"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(status_asked("/status/abc"), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn websocket_upgrades_are_recognised() {
        let ask = |value: &str| {
            let req = Request::builder().header(UPGRADE, value).body(()).unwrap();
            wants_websocket(&req)
        };
        assert!(ask("websocket"));
        assert!(ask("WebSocket"));
        assert!(ask("h2c, websocket"));
        assert!(!ask("h2c"));
        assert!(!wants_websocket(&Request::new(())));
    }

    #[test]
    fn describes_the_request() {
        let (parts, ()) = Request::post("/a/b?x=1&y")
            .header("x-test", "yes")
            .body(())
            .unwrap()
            .into_parts();
        let json: serde_json::Value = serde_json::from_slice(&describe(
            "cart-1",
            "10.0.0.1:4000".parse().unwrap(),
            &parts,
            12,
        ))
        .unwrap();
        assert_eq!(json["pod"], "cart-1");
        assert_eq!(json["client"], "10.0.0.1:4000");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["path"], "/a/b");
        assert_eq!(json["query"], "x=1&y");
        assert_eq!(json["version"], "HTTP/1.1");
        assert_eq!(json["headers"]["x-test"], "yes");
        assert_eq!(json["body_bytes"], 12);
        let (parts, ()) = Request::get("/").body(()).unwrap().into_parts();
        let json: serde_json::Value =
            serde_json::from_slice(&describe("p", "[::1]:1".parse().unwrap(), &parts, 0)).unwrap();
        assert!(json["query"].is_null());
    }

    #[tokio::test]
    async fn http1_and_http2_on_one_listener() {
        use client::{Connection, Protocol, Template};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, "cart-1".into()));
        for (protocol, version) in [(Protocol::Http1, "HTTP/1.1"), (Protocol::Http2, "HTTP/2.0")] {
            let template = Template::new(
                protocol,
                "POST",
                &addr.to_string(),
                "/status/418?x=1",
                &[],
                5,
            )
            .unwrap();
            let mut connection = Connection::new(addr, protocol);
            for _ in 0..2 {
                let response = connection.send(template.request()).await.unwrap();
                assert_eq!(response.status(), 418);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["version"], version);
                assert_eq!(json["pod"], "cart-1");
                assert_eq!(json["path"], "/status/418");
                assert_eq!(json["query"], "x=1");
                assert_eq!(json["body_bytes"], 5);
            }
            // Both requests went over one keep-alive connection.
            assert_eq!(connection.opened(), 1);
        }
    }
}
