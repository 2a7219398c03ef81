//! Every answer the waypoint gives itself, in one place: why (a [`Reply`]), the
//! status, the body a person can read, the response flag telemetry carries, and for a
//! gRPC request the same as a gRPC status (a trailers-only response), since gRPC
//! clients read `grpc-status`, not the HTTP status.

use http::{HeaderValue, Response, StatusCode, header};

use crate::{body, breaker::Overflow, fault::Abort, normalize::Rejection};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The request is malformed or ambiguous.
    BadRequest(Rejection),
    /// A policy denies it.
    Denied { policy: String },
    /// Routes apply to the destination and none matches.
    NoRoute { destination: String },
    /// A rule's backend is not a Service the waypoint knows (or lacks the port).
    UnknownBackend { backend: String },
    /// Every backend of the rule has weight 0, or it has none.
    NoBackend,
    /// The backend Service has no endpoint.
    NoEndpoints { service: String },
    /// The endpoint could not be reached.
    ConnectFailed { reason: &'static str },
    /// The endpoint failed after the request was sent.
    UpstreamFailed,
    /// No response within the route's timeout.
    Timeout,
    /// A circuit breaker's limit.
    Overflow(Overflow),
    /// A fault filter's abort.
    FaultAbort(Abort),
    /// A rate limit; `retry_after` in seconds.
    RateLimited { retry_after: u64 },
    /// A redirect filter.
    Redirect {
        status: StatusCode,
        location: String,
    },
    /// The waypoint holds as many client connections as it may
    /// (`WEFT_WAYPOINT_MAX_CONNECTIONS`); this one is refused at once.
    Overloaded,
}

impl Reply {
    /// What the waypoint answers when an endpoint failed: never reached (503 `UF`), or
    /// failed after the request went (502 `UC`).
    pub fn upstream(e: &crate::upstream::Error) -> Self {
        if e.before_sending() {
            Reply::ConnectFailed { reason: e.reason() }
        } else {
            Reply::UpstreamFailed
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Reply::BadRequest(_) => StatusCode::BAD_REQUEST,
            Reply::Denied { .. } => StatusCode::FORBIDDEN,
            Reply::NoRoute { .. } => StatusCode::NOT_FOUND,
            Reply::UnknownBackend { .. } | Reply::NoBackend => StatusCode::INTERNAL_SERVER_ERROR,
            Reply::NoEndpoints { .. } | Reply::ConnectFailed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reply::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Reply::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Reply::Overflow(_) => StatusCode::SERVICE_UNAVAILABLE,
            Reply::FaultAbort(Abort::Http(status)) => *status,
            Reply::FaultAbort(Abort::Grpc(_)) => StatusCode::OK,
            Reply::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Reply::Redirect { status, .. } => *status,
            Reply::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The response flag of telemetry (Envoy's names where they exist).
    pub fn flag(&self) -> &'static str {
        match self {
            Reply::BadRequest(_) => "DPE",
            Reply::Denied { .. } => "DENIED",
            Reply::NoRoute { .. } => "NR",
            Reply::UnknownBackend { .. } | Reply::NoBackend => "NC",
            Reply::NoEndpoints { .. } => "UH",
            Reply::ConnectFailed { .. } => "UF",
            Reply::UpstreamFailed => "UC",
            Reply::Timeout => "UT",
            Reply::Overflow(_) => "UO",
            Reply::FaultAbort(_) => "FI",
            Reply::RateLimited { .. } => "RL",
            Reply::Redirect { .. } => "-",
            Reply::Overloaded => "LO",
        }
    }

    /// For metrics: why the waypoint answered.
    pub fn reason(&self) -> &'static str {
        match self {
            Reply::BadRequest(r) => r.reason(),
            Reply::Denied { .. } => "denied",
            Reply::NoRoute { .. } => "no_route",
            Reply::UnknownBackend { .. } => "unknown_backend",
            Reply::NoBackend => "no_backend",
            Reply::NoEndpoints { .. } => "no_endpoints",
            Reply::ConnectFailed { reason } => reason,
            Reply::UpstreamFailed => "upstream_failed",
            Reply::Timeout => "timeout",
            Reply::Overflow(_) => "overflow",
            Reply::FaultAbort(_) => "fault_abort",
            Reply::RateLimited { .. } => "rate_limited",
            Reply::Redirect { .. } => "redirect",
            Reply::Overloaded => "overloaded",
        }
    }

    fn text(&self) -> String {
        match self {
            Reply::BadRequest(r) => format!("bad request: {r}"),
            Reply::Denied { .. } => "RBAC: access denied".to_owned(),
            Reply::NoRoute { destination } => {
                format!("no route of {destination} matches this request")
            }
            Reply::UnknownBackend { backend } => {
                format!("the route's backend {backend} is not known to this waypoint")
            }
            Reply::NoBackend => "the matching rule has no backend to send to".to_owned(),
            Reply::NoEndpoints { service } => {
                format!("no healthy upstream: {service} has no endpoint")
            }
            Reply::ConnectFailed { reason } => format!("upstream connect error: {reason}"),
            Reply::UpstreamFailed => "upstream connection failed after the request".to_owned(),
            Reply::Timeout => "upstream request timeout".to_owned(),
            Reply::Overflow(limit) => format!(
                "upstream overflow: the circuit breaker's {} limit",
                limit.label()
            ),
            Reply::FaultAbort(_) => "fault filter abort".to_owned(),
            Reply::RateLimited { .. } => "local rate limited".to_owned(),
            Reply::Redirect { .. } => String::new(),
            Reply::Overloaded => "overloaded: the waypoint's connection limit".to_owned(),
        }
    }

    /// The gRPC status for this answer (HTTP to gRPC as gRPC's own mapping has it).
    fn grpc_status(&self) -> u32 {
        if let Reply::FaultAbort(Abort::Grpc(code)) = self {
            return *code;
        }
        match self.status() {
            StatusCode::BAD_REQUEST => 13,  // INTERNAL
            StatusCode::UNAUTHORIZED => 16, // UNAUTHENTICATED
            StatusCode::FORBIDDEN => 7,     // PERMISSION_DENIED
            StatusCode::NOT_FOUND => 12,    // UNIMPLEMENTED
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => 14, // UNAVAILABLE
            _ => 2,                         // UNKNOWN
        }
    }

    /// The response; `grpc` answers a gRPC request the gRPC way.
    pub fn response(&self, grpc: bool) -> Response<body::Body> {
        let text = self.text();
        let grpc_abort = matches!(self, Reply::FaultAbort(Abort::Grpc(_)));
        let mut r = if (grpc || grpc_abort) && !matches!(self, Reply::Redirect { .. }) {
            let mut r = Response::new(body::empty());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            if let Ok(v) = HeaderValue::from_str(&text) {
                h.insert("grpc-message", v);
            }
            r
        } else {
            let mut r = Response::new(body::full(if text.is_empty() {
                String::new()
            } else {
                format!("{text}\n")
            }));
            *r.status_mut() = self.status();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        };
        if let Reply::Redirect { location, .. } = self
            && let Ok(v) = HeaderValue::from_str(location)
        {
            r.headers_mut().insert(header::LOCATION, v);
        }
        if let Reply::RateLimited { retry_after } = self {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let Reply::Overloaded = self {
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r.headers_mut()
            .insert("x-weft-reply", HeaderValue::from_static(self.reason()));
        r
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn bodies_a_person_can_read_and_grpc_statuses() {
        let denied = Reply::Denied {
            policy: "shop/p".into(),
        };
        let r = denied.response(false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"RBAC: access denied\n");
        let g = denied.response(true);
        assert_eq!(g.status(), StatusCode::OK);
        assert_eq!(g.headers()["grpc-status"], "7");
        assert_eq!(Reply::Timeout.response(true).headers()["grpc-status"], "14");
        let redirect = Reply::Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            location: "http://cart/new".into(),
        };
        let r = redirect.response(false);
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()["location"], "http://cart/new");
    }
}
