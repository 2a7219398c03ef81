//! Sending a routed request to its backend: each attempt within its limit (the retry's
//! per-try timeout, else the backend request timeout) and all of them within the
//! request timeout; an attempt whose outcome the rule retries is tried again, on an
//! endpoint picked again, after a backoff — while the body can be sent again and the
//! Service's circuit breaker and retry budget leave room. Every attempt's outcome
//! feeds outlier detection. Whatever the request holds (its place in the circuit
//! breaker, its count in flight) is held until the response's body ends.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dataplane::{
    discovery::Key,
    policy::{self, Scope},
};
use http::{Request, Response, request::Parts};
use prometheus_client::metrics::gauge::Gauge;

use crate::{
    Waypoint,
    balance::InFlight,
    body::{self, Body},
    breaker::{Admitted, Held, Overflow, ServiceGuard},
    downstream::Downstream,
    exchange::Exchange,
    metrics::Metrics,
    replay::{Replay, Replayable},
    respond::Reply,
    retry::{Outcome, Retry},
    upstream::Version,
    view::{Destination, View},
};

/// A Service backend: where a retry picks its endpoint again.
pub struct Backend<'a> {
    pub key: &'a Key,
    pub port: u16,
    pub hash: Option<u64>,
    pub guard: Arc<ServiceGuard>,
}

/// What one request's attempts share.
pub struct Attempts<'a> {
    pub waypoint: &'a Arc<Waypoint>,
    pub view: &'a View,
    pub down: &'a Downstream,
    pub policy_request: &'a policy::Request<'a>,
    /// `namespace/name` of the backend, for metrics.
    pub service: &'a str,
    /// `None`: the tunnel's own workload (no retries, no breaker).
    pub backend: Option<Backend<'a>>,
    pub retry: Option<&'a Retry>,
    pub per_try: Option<Duration>,
    pub deadline: Option<Instant>,
    pub version: Version,
}

/// A count of attempts in flight, for as long as it lives.
struct Active(Gauge);

impl Active {
    fn new(g: &Gauge) -> Self {
        g.inc();
        Active(g.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a response keeps until its body ends.
struct Holds {
    _admitted: Option<Admitted>,
    _in_flight: InFlight,
    _active: Active,
    _retry: Option<Held>,
}

/// What the upstream side made of an attempt.
type Sent = Result<Response<Body>, crate::upstream::Error>;

fn outcome_of(sent: &Sent) -> Outcome {
    match sent {
        Ok(r) => Outcome::Answered {
            status: r.status(),
            grpc_status: r
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        },
        Err(e) if e.before_sending() => Outcome::ConnectFailed,
        Err(_) => Outcome::Reset,
    }
}

fn label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Answered { .. } => "status",
        Outcome::ConnectFailed => "connect_failure",
        Outcome::Reset => "reset",
        Outcome::TimedOut => "per_try_timeout",
    }
}

/// The same request again, for another attempt.
fn again(template: &Parts, body: Replay) -> Request<Body> {
    let mut r = Request::new(body::boxed(body));
    *r.method_mut() = template.method.clone();
    *r.uri_mut() = template.uri.clone();
    *r.version_mut() = template.version;
    *r.headers_mut() = template.headers.clone();
    r
}

impl Attempts<'_> {
    fn metrics(&self) -> &Metrics {
        &self.waypoint.metrics
    }

    /// The limit of the next attempt; `Err` when the request's time is up.
    fn limit(&self) -> Result<Option<Duration>, Reply> {
        let left = match self.deadline {
            Some(d) => Some(
                d.checked_duration_since(Instant::now())
                    .filter(|l| !l.is_zero())
                    .ok_or(Reply::Timeout)?,
            ),
            None => None,
        };
        Ok(match (self.per_try, left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Sends one attempt; `Err(())` when its limit passed first. A connection the
    /// circuit breaker does not allow is the waypoint's answer, not the endpoint's.
    async fn send(
        &self,
        destination: &Destination,
        req: Request<Body>,
        limit: Option<Duration>,
    ) -> Result<Sent, ()> {
        let limit_connections = self.backend.as_ref().map(|b| &*b.guard);
        let send = self.waypoint.upstreams.send(
            destination,
            &self.down.client,
            (self.version, limit_connections),
            req,
        );
        match limit {
            Some(t) => tokio::time::timeout(t, send).await.map_err(drop),
            None => Ok(send.await),
        }
    }

    /// `Err` (503 `UO`) when the attempt went nowhere for the circuit breaker's
    /// connection limit.
    fn no_connection_left(&self, sent: &Result<Sent, ()>) -> Result<(), Reply> {
        if let Ok(Err(crate::upstream::Error::Overflow)) = sent {
            let limit = Overflow::Connections;
            Metrics::count(&self.metrics().overflows, self.service, limit.label());
            return Err(Reply::Overflow(limit));
        }
        Ok(())
    }

    /// Feeds outlier detection with the outcome of an attempt to `destination`.
    fn observe(&self, destination: &Destination, outcome: &Outcome) {
        let Some(b) = &self.backend else { return };
        let Some(service) = self.view.service(b.key) else {
            return;
        };
        let Some(rule) = &service.backend.outlier else {
            return;
        };
        let outliers = &self.waypoint.balancer.outliers;
        let endpoints = service.endpoints.len();
        let ip = destination.addr.ip();
        if let Some(length) = outliers.record((b.key, endpoints), rule, ip, outcome, Instant::now())
        {
            let reason = if outcome.is_gateway_error() {
                "gateway_error"
            } else {
                "5xx"
            };
            Metrics::count(&self.metrics().ejections, self.service, reason);
            tracing::info!(
                service = self.service,
                endpoint = %ip,
                ejected_for = ?length,
                "outlier detection ejected an endpoint"
            );
        }
    }

    /// Another endpoint for a retry, if the policies allow the caller there.
    fn pick_again(&self, exchange: &mut Exchange) -> Option<Destination> {
        let b = self.backend.as_ref()?;
        let v4 = self.down.authority.is_ipv4();
        let (d, _) = (self.waypoint.balancer)
            .destination(self.view, b.key, (b.port, v4), b.hash)
            .ok()?;
        let decision = crate::authorize::destination(
            self.view,
            &d,
            &self.down.source(),
            Scope::Request(self.policy_request),
        );
        if decision.is_some_and(|d| !d.allowed) {
            return None;
        }
        exchange.destination(&d, self.service);
        Some(d)
    }

    /// Sends the request, retrying as the rule says; the response keeps `admitted`
    /// until its body ends.
    pub async fn run(
        &self,
        mut destination: Destination,
        (parts, body): (Parts, Body),
        admitted: Option<Admitted>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Reply> {
        let started = Instant::now();
        let retry = self.retry.filter(|_| self.backend.is_some());
        let Some(retry) = retry else {
            let limit = self.limit()?;
            let _active = Active::new(&self.metrics().upstream_active);
            let in_flight = self.waypoint.balancer.start(destination.addr);
            let sent = self
                .send(&destination, Request::from_parts(parts, body), limit)
                .await;
            exchange.upstream_answered(started.elapsed());
            self.no_connection_left(&sent)?;
            let Ok(sent) = sent else {
                self.observe(&destination, &Outcome::TimedOut);
                return Err(Reply::Timeout);
            };
            self.observe(&destination, &outcome_of(&sent));
            return self.answer(sent, destination, (admitted, in_flight, _active, None));
        };
        let mut source = Replayable::new(body);
        let mut next_body = source.attempt();
        let mut retry_held: Option<Held> = None;
        let mut n = 0;
        while let Some(attempt_body) = next_body.take() {
            let limit = self.limit()?;
            let active = Active::new(&self.metrics().upstream_active);
            let in_flight = self.waypoint.balancer.start(destination.addr);
            let sent = self
                .send(&destination, again(&parts, attempt_body), limit)
                .await;
            self.no_connection_left(&sent)?;
            let outcome = match &sent {
                Ok(s) => outcome_of(s),
                Err(()) => Outcome::TimedOut,
            };
            self.observe(&destination, &outcome);
            let worth_it = n < retry.attempts
                && retry.retries(&outcome)
                && source.can_replay()
                && self.deadline.is_none_or(|d| Instant::now() < d);
            let leave = if worth_it {
                let b = self.backend.as_ref().expect("retries only with a backend");
                match b.guard.retry() {
                    Ok(held) => source.attempt().map(|body| (held, body)),
                    Err(limit) => {
                        Metrics::count(&self.metrics().overflows, self.service, limit.label());
                        None
                    }
                }
            } else {
                None
            };
            let Some((held, body)) = leave else {
                exchange.upstream_answered(started.elapsed());
                let Ok(sent) = sent else {
                    return Err(Reply::Timeout);
                };
                return self.answer(sent, destination, (admitted, in_flight, active, retry_held));
            };
            drop((sent, in_flight, active));
            n += 1;
            Metrics::count(&self.metrics().retries, self.service, label(&outcome));
            let mut wait = retry.backoff(n);
            if let Some(d) = self.deadline {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
            tokio::time::sleep(wait).await;
            retry_held = Some(held);
            next_body = Some(body);
            destination = self
                .pick_again(exchange)
                .ok_or_else(|| Reply::NoEndpoints {
                    service: self.service.to_owned(),
                })?;
        }
        unreachable!("the first attempt always has the body; a retry goes with its own")
    }

    /// The response of the last attempt, holding `holds` until its body ends.
    fn answer(
        &self,
        sent: Result<Response<Body>, crate::upstream::Error>,
        destination: Destination,
        (admitted, in_flight, active, retry): (Option<Admitted>, InFlight, Active, Option<Held>),
    ) -> Result<Response<Body>, Reply> {
        let response = sent.map_err(|e| {
            tracing::debug!(error = %e, upstream = %destination.addr, "upstream request failed");
            Reply::upstream(&e)
        })?;
        let holds = Holds {
            _admitted: admitted,
            _in_flight: in_flight,
            _active: active,
            _retry: retry,
        };
        Ok(response.map(|b| body::boxed(body::Counted::new(b, move |_| drop(holds)))))
    }
}
