//! The local admin API: HTTP/1.1 with JSON bodies on a Unix socket (mode 0600).
//!
//! | method | path             | body                  | answer                      |
//! |--------|------------------|-----------------------|-----------------------------|
//! | POST   | `/v1/enroll`     | `{"netns": "<path>"}` | the enrollment              |
//! | POST   | `/v1/unenroll`   | `{"netns": "<path>"}` | the removed enrollment      |
//! | GET    | `/v1/enrollments`|                       | every enrollment            |
//! | GET    | `/v1/stats`      |                       | counters, as JSON           |
//! | GET    | `/v1/pods/NS/NAME` |                     | the pod's `PodConfig`       |
//! | POST   | `/v1/cni/add`    | a `CniRequest`        | a `CniAnswer`               |
//! | POST   | `/v1/cni/del`    | a `CniRequest`        | a `CniAnswer`               |
//! | POST   | `/v1/cni/check`  | a `CniRequest`        | a `CniAnswer`               |
//! | GET    | `/metrics`       |                       | Prometheus text             |
//!
//! Errors answer with a status that fits and `{"error": "...", "reason": "..."}`.
//! Every request is answered; none changes anything unless it succeeds.

use std::{
    convert::Infallible,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use api::admin::{CniRequest, NetnsRequest};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::UnixListener;

use crate::{
    ebpf::{Attachment, Capture},
    enroll::{self, Enrollments},
    metrics::Metrics,
    pods::{self, Pods},
};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;

pub struct Admin {
    pub enrollments: Arc<Enrollments>,
    pub capture: Arc<Capture>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    /// The configuration from the control plane, when there is one.
    pub config: Option<tokio::sync::watch::Receiver<Arc<crate::discovery::Config>>>,
    /// The pods the CNI plugin announces (only with a control plane: it says which
    /// pods are in the mesh).
    pub pods: Option<Arc<Pods>>,
}

#[derive(Debug, serde::Serialize)]
struct Stats {
    /// The process answering (it changes with an upgrade).
    pid: u32,
    cgroup: PathBuf,
    attachments: Vec<(&'static str, Attachment)>,
    enrolled_namespaces: usize,
    outbound: OutboundStats,
    decisions: std::collections::BTreeMap<&'static str, u64>,
    /// Identities whose certificates this agent holds now.
    identities: Vec<String>,
    acceleration: AccelerationStats,
}

#[derive(Debug, serde::Serialize)]
struct AccelerationStats {
    /// Whether local legs established from now on are accelerated (`WEFT_SOCKMAP`).
    enabled: bool,
    /// Sockets in the acceleration map now (two per open accelerated leg).
    sockets: usize,
}

#[derive(Debug, serde::Serialize)]
struct OutboundStats {
    accepted: u64,
    active: i64,
    closed: u64,
}

/// Binds the admin socket, replacing a stale one left by an agent that died.
pub fn bind(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let this = Arc::clone(&this);
                    async move { Ok::<_, Infallible>(this.handle(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let route = (req.method().clone(), req.uri().path().to_owned());
        match (&route.0, route.1.as_str()) {
            (&Method::POST, "/v1/enroll") => match read_netns(req).await {
                Ok(request) => match self
                    .enrollments
                    .enroll(&request.netns, request.workload)
                    .await
                {
                    Ok(e) => json(StatusCode::OK, &e),
                    Err(e) => enroll_error(&e),
                },
                Err(resp) => resp,
            },
            (&Method::POST, "/v1/unenroll") => match read_netns(req).await {
                Ok(request) => match self.enrollments.unenroll(&request.netns).await {
                    Ok(e) => json(StatusCode::OK, &e),
                    Err(e) => enroll_error(&e),
                },
                Err(resp) => resp,
            },
            (&Method::GET, "/v1/enrollments") => {
                json(StatusCode::OK, &self.enrollments.list().await)
            }
            (&Method::GET, "/v1/stats") => json(StatusCode::OK, &self.stats().await),
            (&Method::GET, "/v1/config") => match &self.config {
                Some(rx) => json(StatusCode::OK, &config_view(&rx.borrow())),
                None => error(
                    StatusCode::NOT_FOUND,
                    "no control plane is configured (WEFT_CONTROLPLANE)",
                    "no_control_plane",
                ),
            },
            (&Method::GET, "/metrics") => dataplane::probes::metrics_response(&self.registry),
            (&Method::GET, path) if path.starts_with("/v1/pods/") => self.pod(path),
            (&Method::POST, "/v1/cni/add" | "/v1/cni/del" | "/v1/cni/check") => {
                let Some(pods) = &self.pods else {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the agent has no control plane (WEFT_CONTROLPLANE): it cannot tell which pods are in the mesh",
                        "no_control_plane",
                    );
                };
                let request: CniRequest = match read_json(req).await {
                    Ok(r) => r,
                    Err(resp) => return resp,
                };
                let answer = match route.1.as_str() {
                    "/v1/cni/add" => pods.add(request).await,
                    "/v1/cni/del" => pods.del(request).await,
                    _ => pods.check(request).await,
                };
                match answer {
                    Ok(a) => json(StatusCode::OK, &a),
                    Err(e) => pods_error(&e),
                }
            }
            (
                _,
                "/v1/enroll" | "/v1/unenroll" | "/v1/enrollments" | "/v1/stats" | "/v1/config"
                | "/metrics" | "/v1/cni/add" | "/v1/cni/del" | "/v1/cni/check",
            ) => error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not allowed on {}", route.0, route.1),
                "method_not_allowed",
            ),
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("no such endpoint: {}", route.1),
                "not_found",
            ),
        }
    }

    fn pod(&self, path: &str) -> Response<Full<Bytes>> {
        let Some((ns, name)) = crate::proxy_config::pod_path(path) else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected /v1/pods/<namespace>/<name>",
                "malformed",
            );
        };
        let Some(rx) = &self.config else {
            return error(
                StatusCode::NOT_FOUND,
                "no control plane is configured (WEFT_CONTROLPLANE)",
                "no_control_plane",
            );
        };
        match crate::proxy_config::pod_config(&rx.borrow(), &self.enrollments, ns, name) {
            Some(pod) => json(StatusCode::OK, &pod),
            None => error(
                StatusCode::NOT_FOUND,
                &format!(
                    "this agent's configuration has no pod {ns}/{name} (pods of other nodes are their agents')"
                ),
                "unknown_pod",
            ),
        }
    }

    async fn stats(&self) -> Stats {
        let o = &self.metrics.outbound;
        Stats {
            pid: std::process::id(),
            cgroup: self.capture.cgroup().to_owned(),
            attachments: self.capture.attachments().to_vec(),
            enrolled_namespaces: self.enrollments.list().await.len(),
            identities: self.enrollments.managed_identities(),
            acceleration: AccelerationStats {
                enabled: self.capture.accelerate(),
                sockets: self.capture.local_sockets(),
            },
            outbound: OutboundStats {
                accepted: o.accepted.get(),
                active: o.active.get(),
                closed: o.closed.get(),
            },
            decisions: self
                .capture
                .decisions()
                .into_iter()
                .map(|(d, v)| (d.reason(), v))
                .collect(),
        }
    }
}

/// The configuration the agent has, for people and tests: its version and the keys
/// (`namespace/name`) of what it holds, by kind.
fn config_view(c: &crate::discovery::Config) -> serde_json::Value {
    let names = |keys: Vec<&crate::discovery::Key>| -> Vec<String> {
        keys.into_iter()
            .map(|(_, ns, n)| format!("{ns}/{n}"))
            .collect()
    };
    serde_json::json!({
        "version": c.version,
        "updates": c.updates,
        "workloads": names(c.workloads.keys().collect()),
        "services": names(c.services.keys().collect()),
        // Each Service's endpoint addresses, sorted.
        "endpoints": c.services.iter().map(|((_, ns, n), s)| {
            let mut addrs: Vec<String> = s
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.iter().map(ToString::to_string))
                .collect();
            addrs.sort();
            (format!("{ns}/{n}"), addrs)
        }).collect::<std::collections::BTreeMap<_, _>>(),
        "policies": names(c.policies.keys().collect()),
    })
}

/// Reads and checks a `{"netns": "<absolute path>"}` body.
async fn read_netns(req: Request<Incoming>) -> Result<NetnsRequest, Response<Full<Bytes>>> {
    let request: NetnsRequest = read_json(req).await?;
    if !request.netns.is_absolute() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("netns: {:?} is not an absolute path", request.netns),
            "malformed",
        ));
    }
    Ok(request)
}

/// Reads a JSON body of type `T`, refusing other media types, large bodies and
/// malformed JSON each with its own status.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Full<Bytes>>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)",
            "content_type",
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_BODY} bytes or could not be read"),
                "body",
            ));
        }
    };
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("malformed request: {e}"),
            "malformed",
        )
    })
}

fn pods_error(e: &pods::Error) -> Response<Full<Bytes>> {
    let status = match e {
        pods::Error::Enroll(e) => return enroll_error(e),
        pods::Error::Malformed(_) => StatusCode::BAD_REQUEST,
        pods::Error::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        pods::Error::Inconsistent(_) => StatusCode::CONFLICT,
        pods::Error::State { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string(), e.reason())
}

fn enroll_error(e: &enroll::Error) -> Response<Full<Bytes>> {
    use crate::netns::Error as N;
    let status = match e {
        enroll::Error::AlreadyEnrolled { .. } => StatusCode::CONFLICT,
        enroll::Error::NotEnrolled { .. } => StatusCode::NOT_FOUND,
        enroll::Error::InvalidWorkload { .. } => StatusCode::BAD_REQUEST,
        // A successor takes over in a moment: the CNI plugin says "try again later".
        enroll::Error::HandingOver => StatusCode::SERVICE_UNAVAILABLE,
        enroll::Error::Netns(N::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            StatusCode::NOT_FOUND
        }
        enroll::Error::Netns(N::NotNetns { .. } | N::Open { .. }) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string(), e.reason())
}

fn error(status: StatusCode, message: &str, reason: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": message, "reason": reason }),
    )
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
