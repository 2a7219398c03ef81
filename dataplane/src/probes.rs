//! The two small HTTP endpoints every data-plane process serves on TCP: Prometheus
//! metrics (`GET /metrics`, 15020) and readiness (`GET /healthz/ready`, 15021).

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;

/// The registry in the OpenMetrics text format.
pub fn metrics_response(registry: &Registry) -> Response<Full<Bytes>> {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => Response::builder()
            .status(StatusCode::OK)
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(text)))
            .expect("static response parts are valid"),
        Err(_) => text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        ),
    }
}

fn text_response(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static response parts are valid")
}

/// Serves `GET /metrics` (and nothing else) on a TCP listener, for Prometheus.
pub async fn serve_metrics(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    serve_metrics_and(listener, registry, |_| None).await
}

/// Serves `GET /metrics`, and what `more` answers for other `GET` paths (JSON text
/// document of the process's state, for `weftctl`).
pub async fn serve_metrics_and<F>(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    more: F,
) where
    F: Fn(&str) -> Option<String> + Send + Sync + 'static,
{
    serve(listener, move |req| {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => metrics_response(&registry),
            (&Method::GET, path) => match more(path) {
                Some(doc) => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(doc)))
                    .expect("static response parts are valid"),
                None => text_response(StatusCode::NOT_FOUND, "not served here\n"),
            },
            _ => text_response(StatusCode::NOT_FOUND, "only GET is served here\n"),
        }
    })
    .await
}

/// `GET /healthz/ready`: 200 while `ready`, 503 otherwise (starting or draining).
pub async fn serve_readiness(listener: tokio::net::TcpListener, ready: Arc<AtomicBool>) {
    serve(listener, move |req| {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz/ready") if ready.load(Ordering::Acquire) => {
                text_response(StatusCode::OK, "ready\n")
            }
            (&Method::GET, "/healthz/ready") => text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting, waiting for configuration, or draining\n",
            ),
            _ => text_response(
                StatusCode::NOT_FOUND,
                "only GET /healthz/ready is served here\n",
            ),
        }
    })
    .await
}

async fn serve<F>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let answer = Arc::clone(&answer);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = answer(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
