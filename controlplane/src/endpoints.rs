//! The control plane's HTTP listener (`WEFT_CP_METRICS_LISTEN`, 15014): `GET /metrics`
//! (OpenMetrics text, see `metrics.rs`), `GET /debug/status` (the status of
//! `status.json`, as JSON) and the service graph (`GET /graph`, see `graph.rs`).

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;

/// What `GET /debug/status` answers.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Serves `GET /metrics`, `GET /debug/status` and the graph over HTTP/1.1 until the
/// task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    status: StatusFn,
    graph: Arc<crate::graph::Source>,
) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        let status = Arc::clone(&status);
        let graph = Arc::clone(&graph);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (registry, status, graph) = (
                    Arc::clone(&registry),
                    Arc::clone(&status),
                    Arc::clone(&graph),
                );
                async move {
                    let path = req.uri().path();
                    if req.method() == Method::GET && path.starts_with("/graph") {
                        let (code, content_type, body) =
                            crate::graph::respond(&graph, path, req.uri().query()).await;
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .status(code)
                                .header(header::CONTENT_TYPE, content_type)
                                .header(header::CACHE_CONTROL, "no-store")
                                .body(Full::new(Bytes::from(body)))
                                .expect("graph response parts are valid"),
                        );
                    }
                    Ok(respond(&req, &registry, &status))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn respond<B>(req: &Request<B>, registry: &Registry, status: &StatusFn) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding the metrics failed\n".to_owned(),
                ),
            }
        }
        (&Method::GET, "/debug/status") => {
            reply(StatusCode::OK, "application/json", status().to_string())
        }
        (_, "/metrics" | "/debug/status") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "served here: GET /metrics, GET /debug/status, GET /graph\n".to_owned(),
        ),
    }
}
