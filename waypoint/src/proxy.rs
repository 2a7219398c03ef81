//! One request through the waypoint: normalized (`normalize.rs`), routed
//! (`route.rs`), filtered (`filters.rs`), sent to a backend chosen by weight and an
//! endpoint chosen by the Service's balancer, after the endpoint's policies allow it
//! (`authorize.rs`) and its rate limits, faults and circuit breaker let it through; sent
//! and retried by `attempt.rs`; and counted, logged and traced when its response ends
//! (`exchange.rs`). Whatever the waypoint answers itself comes from `respond.rs`.

use std::{sync::Arc, time::Instant};

use dataplane::{
    discovery::{Key, Protocol as Declared},
    policy::{self, Scope},
};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header, uri::PathAndQuery};
use hyper::body::Incoming;

use crate::{
    Waypoint,
    attempt::{self, Attempts},
    balance::Unreachable,
    body::{self, Body},
    downstream::Downstream,
    exchange::Exchange,
    fault::Injected,
    metrics::Metrics,
    normalize::{self, Normalized},
    respond::Reply,
    route::{self, Lookup, Selected},
    upstream::Version,
    view::{Destination, Target, View},
};

pub(crate) fn is_grpc(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Answers one request of a tunnel.
pub async fn handle(
    waypoint: Arc<Waypoint>,
    down: Arc<Downstream>,
    req: Request<Incoming>,
) -> Response<Body> {
    down.activity.started();
    let grpc = is_grpc(&req);
    let sampling = waypoint
        .settings
        .tracing
        .as_ref()
        .map_or(0.0, |t| t.sampling);
    let view = waypoint.view();
    let mut exchange = Exchange::start(&view, &down, &req, grpc, sampling);
    let result = forward(&waypoint, &down, &view, req, &mut exchange).await;
    drop(view);
    let response = match result {
        Ok(response) => response,
        Err(reply) => {
            exchange.local_reply(&waypoint.metrics, &reply);
            reply.response(grpc)
        }
    };
    exchange.finish(waypoint, down, response)
}

/// The decision for a request that reaches no endpoint (a redirect, no route): that of
/// the workloads the tunnel names.
fn check_target(
    waypoint: &Waypoint,
    view: &View,
    down: &Downstream,
    request: &policy::Request<'_>,
    exchange: &mut Exchange,
) -> Result<(), Reply> {
    let decision =
        crate::authorize::target(view, &down.target, &down.source(), Scope::Request(request));
    exchange.decided(&waypoint.metrics, decision.as_ref())
}

async fn forward(
    waypoint: &Arc<Waypoint>,
    down: &Downstream,
    view: &View,
    mut req: Request<Incoming>,
    exchange: &mut Exchange,
) -> Result<Response<Body>, Reply> {
    let normalized =
        normalize::request(&req, &down.authority.to_string()).map_err(Reply::BadRequest)?;
    exchange.normalized(&normalized);
    let upgrade = crate::upgrade::requested(&req).then(|| hyper::upgrade::on(&mut req));
    let grpc = exchange.grpc;
    let lookup = view.routes.lookup(
        down.target.service(),
        down.authority.port(),
        grpc,
        &route::Request {
            method: req.method(),
            normalized: &normalized,
            headers: req.headers(),
        },
    );
    let policy_request = policy::Request {
        method: req.method().as_str(),
        path: &normalized.path,
        host: &normalized.host,
        headers: req.headers(),
    };
    let selected = match lookup {
        Lookup::Default => None,
        Lookup::Matched(s) => Some(s),
        Lookup::NoMatch => {
            check_target(waypoint, view, down, &policy_request, exchange)?;
            return Err(Reply::NoRoute {
                destination: down.target.name(),
            });
        }
    };
    if let Some(s) = &selected {
        exchange.routed(&s.route.name);
        if let Some(redirect) = &s.rule().filters.redirect {
            check_target(waypoint, view, down, &policy_request, exchange)?;
            let port = normalized.port.unwrap_or(down.authority.port());
            let location = redirect.location(
                ("http", &normalized.host, port),
                &normalized.path,
                normalized.query.as_deref(),
                s.matched_prefix(),
            );
            return Err(Reply::Redirect {
                status: redirect.status,
                location,
            });
        }
    }
    let hash_source = (&req, down.peer.ip());
    let (destination, declared, service, backend) =
        destination(waypoint, view, down, selected.as_ref(), hash_source)?;
    exchange.destination(&destination, &service);
    let decision = crate::authorize::destination(
        view,
        &destination,
        &down.source(),
        Scope::Request(&policy_request),
    );
    exchange.decided(&waypoint.metrics, decision.as_ref())?;
    let rule = selected.as_ref().map(Selected::rule);
    let filters = rule.map(|r| &r.filters);
    let limited = |wait| Reply::RateLimited {
        retry_after: crate::ratelimit::retry_after(wait),
    };
    if let Some(bucket) = &waypoint.rate_limit {
        bucket.take().map_err(limited)?;
    }
    if let (Some(s), Some(limit)) = (&selected, filters.and_then(|f| f.rate_limit)) {
        (waypoint.buckets)
            .take((&s.route.name, s.rule), limit)
            .map_err(limited)?;
    }
    let injected = filters
        .and_then(|f| f.fault.as_ref())
        .map(|f| f.draw())
        .unwrap_or_default();
    if let Injected { delay: Some(d), .. } = injected {
        tokio::time::sleep(d).await;
    }
    if let Some(abort) = injected.abort {
        return Err(Reply::FaultAbort(abort));
    }

    // A retry's endpoint is authorized on the request as it came.
    let retried = rule.is_some_and(|r| r.retry.is_some());
    let (method, original_headers) = (
        req.method().clone(),
        if retried {
            req.headers().clone()
        } else {
            http::HeaderMap::new()
        },
    );
    let policy_request = policy::Request {
        method: method.as_str(),
        path: &normalized.path,
        host: &normalized.host,
        headers: &original_headers,
    };

    // The request as the endpoint gets it.
    let downstream_version = req.version();
    let (mut parts, incoming) = req.into_parts();
    normalize::remove_hop_by_hop(&mut parts.headers, upgrade.is_some());
    if let Some(ops) = filters.and_then(|f| f.request_headers.as_ref()) {
        ops.apply(&mut parts.headers);
    }
    let mut path = normalized.path.clone();
    let rewrite = filters.and_then(|f| f.rewrite.as_ref());
    if let Some(change) = rewrite.and_then(|r| r.path.as_ref()) {
        path = change.apply(
            &normalized.path,
            selected.as_ref().and_then(Selected::matched_prefix),
        );
    }
    let host = match rewrite.and_then(|r| r.hostname.clone()) {
        Some(h) => h,
        None => parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            })
            .unwrap_or_else(|| HeaderValue::from_static("localhost")),
    };
    exchange.forwarding(&mut parts.headers, down);
    let target = Normalized {
        path,
        ..normalized.clone()
    }
    .path_and_query();
    let version = match declared {
        Declared::Http2 | Declared::Grpc => Version::Http2,
        _ if downstream_version == http::Version::HTTP_2 => Version::Http2,
        _ => Version::Http1,
    };
    parts.uri = match version {
        Version::Http1 => {
            parts.headers.insert(header::HOST, host);
            Uri::from(
                PathAndQuery::try_from(target.as_str())
                    .map_err(|_| Reply::BadRequest(normalize::Rejection::NotOriginForm))?,
            )
        }
        Version::Http2 => {
            parts.headers.remove(header::HOST);
            let authority = host.to_str().unwrap_or("localhost");
            Uri::try_from(format!("http://{authority}{target}"))
                .map_err(|_| Reply::BadRequest(normalize::Rejection::BadHost))?
        }
    };
    parts.version = match version {
        Version::Http1 => http::Version::HTTP_11,
        Version::Http2 => http::Version::HTTP_2,
    };
    let mut body = exchange.count_request(body::boxed(incoming));
    if let Some(mirrors) = filters.map(|f| &f.mirrors).filter(|m| !m.is_empty()) {
        let host = normalized.host.as_str();
        body = crate::mirror::start(waypoint, view, down, (&parts, host), body, mirrors, version);
    }
    let (request_timeout, backend_timeout) =
        rule.map_or((None, None), |r| (r.request_timeout, r.backend_timeout));
    let retry = rule.and_then(|r| r.retry.as_ref()).filter(|r| {
        upgrade.is_none()
            && (grpc
                || r.non_idempotent
                || !crate::retry::may_repeat_effect(
                    &parts.method,
                    !hyper::body::Body::is_end_stream(&body),
                ))
    });
    let attempts = Attempts {
        waypoint,
        view,
        down,
        policy_request: &policy_request,
        service: &service,
        backend: backend.as_ref().map(|(key, port, hash)| attempt::Backend {
            key,
            port: *port,
            hash: *hash,
            guard: {
                let b = view.service(key).map(|s| &s.backend);
                let (limits, budget) =
                    b.map_or_else(Default::default, |b| (b.limits, b.retry_budget));
                waypoint.breakers.service(key, limits, budget)
            },
        }),
        retry,
        per_try: retry.and_then(|r| r.per_try_timeout).or(backend_timeout),
        deadline: request_timeout.map(|t| Instant::now() + t),
        version,
    };
    let admitted = match &attempts.backend {
        Some(b) => {
            let admit = b.guard.admit();
            let admitted = match attempts.deadline {
                Some(d) => tokio::time::timeout_at(d.into(), admit)
                    .await
                    .map_err(|_| Reply::Timeout)?,
                None => admit.await,
            };
            Some(admitted.map_err(|limit| {
                Metrics::count(&waypoint.metrics.overflows, &service, limit.label());
                Reply::Overflow(limit)
            })?)
        }
        None => None,
    };
    let mut response = match upgrade {
        Some(on_upgrade) => {
            let _in_flight = waypoint.balancer.start(destination.addr);
            let started = Instant::now();
            let upstream_req = Request::from_parts(parts, body);
            let send = waypoint.upstreams.send_upgrade(
                &destination,
                &down.client,
                upstream_req,
                attempts.backend.as_ref().map(|b| &*b.guard),
            );
            let sent = match attempts.deadline {
                Some(d) => tokio::time::timeout_at(d.into(), send)
                    .await
                    .map_err(|_| Reply::Timeout)?,
                None => send.await,
            };
            exchange.upstream_answered(started.elapsed());
            let mut response = sent.map_err(|e| {
                tracing::debug!(error = %e, upstream = %destination.addr, "upgrade failed");
                Reply::upstream(&e)
            })?;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(crate::upgrade::splice(on_upgrade, upstream_side));
            }
            drop(admitted);
            response.map(body::boxed)
        }
        None => {
            attempts
                .run(destination, (parts, body), admitted, exchange)
                .await?
        }
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    normalize::remove_hop_by_hop(response.headers_mut(), switching);
    if let Some(ops) = filters.and_then(|f| f.response_headers.as_ref()) {
        ops.apply(response.headers_mut());
    }
    *response.version_mut() = downstream_version;
    Ok(response)
}

/// A backend Service, its port and the request's hash for it.
type ServiceBackend = (Key, u16, Option<u64>);

/// Where a request goes: an endpoint of the rule's backend (by weight), or without a
/// rule the tunnel's own target; with what its port declares, the Service's name, and
/// the Service backend (for retries and its circuit breaker).
fn destination(
    waypoint: &Waypoint,
    view: &View,
    down: &Downstream,
    selected: Option<&Selected>,
    (req, source): (&Request<Incoming>, std::net::IpAddr),
) -> Result<(Destination, Declared, String, Option<ServiceBackend>), Reply> {
    let (key, port) = match (selected, &down.target) {
        (Some(s), _) => {
            let b = crate::backend::weighted(&s.rule().backends).ok_or(Reply::NoBackend)?;
            (b.service.clone(), b.port)
        }
        (None, Target::Service { key, port }) => (key.clone(), port.port),
        (None, Target::Workload { key, port }) => {
            let d = view
                .workload_destination(key, *port)
                .ok_or_else(|| Reply::NoEndpoints {
                    service: down.target.name(),
                })?;
            return Ok((d, Declared::Undeclared, down.target.name(), None));
        }
        // Only routes send anywhere from a gateway listener.
        (None, Target::Gateway { .. }) => {
            return Err(Reply::NoRoute {
                destination: down.target.name(),
            });
        }
    };
    let name = format!("{}/{}", key.1, key.2);
    let v4 = down.authority.is_ipv4();
    let hash = crate::maglev::service_hash(view.service(&key), req.headers(), source);
    let (destination, declared) = waypoint
        .balancer
        .destination(view, &key, (port, v4), hash)
        .map_err(|e| match e {
            Unreachable::UnknownService => Reply::UnknownBackend {
                backend: name.clone(),
            },
            Unreachable::UnknownPort => Reply::UnknownBackend {
                backend: format!("{name}:{port}"),
            },
            Unreachable::NoEndpoints => Reply::NoEndpoints {
                service: name.clone(),
            },
        })?;
    Ok((destination, declared, name, Some((key, port, hash))))
}
