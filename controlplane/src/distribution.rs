//! Configuration distribution: `ConfigService.Subscribe`. The hub (`distribution/hub.rs`)
//! holds the resources in force and the log of their changes; each resource's audience
//! (`distribution/audience.rs`) says which agents and waypoints need it. A subscriber
//! gets a snapshot or only what changed since the version it names, then live updates,
//! and ACKs or NACKs each.
//!
//! Who subscribes is decided here, from the caller's token and its Hello: without a
//! waypoint, the agent of the token's node; with one, that waypoint, if the token vouches
//! for one of its workloads (`Registry::waypoint_access`). A waypoint's right is checked
//! again at each change: a waypoint that no longer runs where its token says (or that is
//! gone) loses its stream.

mod audience;
mod hub;

use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Duration, time::Instant};

use api::proto::config::{
    ConfigUpdate, SubscribeRequest, config_service_server::ConfigService,
    subscribe_request::Request as Msg,
};
pub use audience::{Subscriber, SubscriberKind, WaypointId};
pub use hub::{Hub, SubscriberStatus};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    auth::{Authenticator, Caller},
    metrics::{self, KindLabels, NackLabels, NackReason, ReasonLabels},
    registry::{Registry, WaypointRefusal},
};

/// Why a subscription was refused (or ended).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Auth(#[from] crate::auth::Error),
    #[error("the first message must be a Hello")]
    HelloExpected,
    #[error("the token is node {token_node:?}'s, not {hello_node:?}'s")]
    WrongNode {
        token_node: String,
        hello_node: String,
    },
    #[error("a hello without a waypoint subscribes a node's agent, and this is a pod's token")]
    NotANode,
    #[error("the waypoint's namespace and name are needed")]
    NoWaypointName,
    #[error(transparent)]
    Waypoint(#[from] WaypointRefusal),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Auth(e) => e.reason(),
            Refusal::HelloExpected => "hello_expected",
            Refusal::WrongNode { .. } => "wrong_node",
            Refusal::NotANode => "not_a_node",
            Refusal::NoWaypointName => "no_waypoint_name",
            Refusal::Waypoint(e) => e.reason(),
        }
    }
}

pub struct Distribution {
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<metrics::Metrics>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

impl Distribution {
    /// Who the stream is for, from the caller's token and its Hello.
    fn subscriber(
        &self,
        caller: &Caller,
        hello: &api::proto::config::Hello,
    ) -> Result<Subscriber, Refusal> {
        // The token names the node; a Hello that names one must name the same.
        if !hello.node.is_empty() && hello.node != caller.node() {
            return Err(Refusal::WrongNode {
                token_node: caller.node().to_owned(),
                hello_node: hello.node.clone(),
            });
        }
        match &hello.waypoint {
            None => match caller {
                Caller::Node { node } => Ok(Subscriber::Agent { node: node.clone() }),
                Caller::Pod { .. } => Err(Refusal::NotANode),
            },
            Some(w) => {
                if w.namespace.is_empty() || w.name.is_empty() {
                    return Err(Refusal::NoWaypointName);
                }
                let id = WaypointId {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                };
                self.registry.waypoint_access(caller, &id)?;
                Ok(Subscriber::Waypoint(id))
            }
        }
    }

    fn refuse(&self, refusal: &Refusal) -> Status {
        tracing::warn!(reason = refusal.reason(), error = %refusal, "config subscription refused");
        self.metrics
            .distribution
            .refused
            .get_or_create(&ReasonLabels {
                reason: refusal.reason(),
            })
            .inc();
        subscription_status(refusal)
    }
}

/// Counts an open stream for as long as it lives.
struct Open {
    hub: Arc<Hub>,
    metrics: Arc<metrics::Metrics>,
    subscriber: Subscriber,
}

impl Open {
    fn new(hub: Arc<Hub>, metrics: Arc<metrics::Metrics>, subscriber: Subscriber) -> Self {
        hub.record(&subscriber, |s| s.streams += 1);
        metrics
            .distribution
            .subscribers
            .get_or_create(&KindLabels {
                kind: subscriber.kind(),
            })
            .inc();
        Open {
            hub,
            metrics,
            subscriber,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.hub.record(&self.subscriber, |s| {
            s.streams = s.streams.saturating_sub(1)
        });
        self.metrics
            .distribution
            .subscribers
            .get_or_create(&KindLabels {
                kind: self.subscriber.kind(),
            })
            .dec();
    }
}

/// Updates sent and not yet covered by an ACK (or NACK), with when they were sent.
#[derive(Default)]
struct InFlight(VecDeque<(u64, Instant)>);

impl InFlight {
    /// Takes the updates up to `version`; yields how long each waited.
    fn settle(&mut self, version: u64) -> Vec<Duration> {
        let mut waited = Vec::new();
        while let Some((v, sent)) = self.0.front() {
            if *v > version {
                break;
            }
            waited.push(sent.elapsed());
            self.0.pop_front();
        }
        waited
    }
}

#[tonic::async_trait]
impl ConfigService for Distribution {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self
            .auth
            .caller(&crate::auth::bearer_token(&request))
            .await
            .map_err(|e| self.refuse(&e.into()))?;
        let mut incoming = request.into_inner();
        let hello = match tokio::time::timeout(Duration::from_secs(10), incoming.next()).await {
            Ok(Some(Ok(SubscribeRequest {
                request: Some(Msg::Hello(h)),
            }))) => h,
            _ => return Err(self.refuse(&Refusal::HelloExpected)),
        };
        let subscriber = self
            .subscriber(&caller, &hello)
            .map_err(|r| self.refuse(&r))?;
        let hub = Arc::clone(&self.hub);
        let registry = Arc::clone(&self.registry);
        let metrics = Arc::clone(&self.metrics);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let name = subscriber.name();
            let kind = subscriber.kind();
            let labels = KindLabels { kind };
            let d = &metrics.distribution;
            let _open = Open::new(Arc::clone(&hub), Arc::clone(&metrics), subscriber.clone());
            let mut changed = hub.changed.subscribe();
            let mut closing = hub.closing.subscribe();
            let mut registry_updates = registry.updates();
            // A waypoint's right to its stream, checked again whenever it may have
            // changed (and before anything more is sent).
            let revoked = || match &subscriber {
                Subscriber::Waypoint(w) => registry.waypoint_access(&caller, w).err(),
                Subscriber::Agent { .. } => None,
            };
            let waypoint = kind == SubscriberKind::Waypoint;
            let mut in_flight = InFlight::default();
            let since = (hello.resume_from > 0).then_some(hello.resume_from);
            let first = hub.update_for(&subscriber, since);
            tracing::info!(subscriber = %name, kind = kind.as_str(), version = first.version, snapshot = first.snapshot, resources = first.upserts.len(), "subscriber connected");
            let mut at = first.version;
            hub.record(&subscriber, |s| s.sent = at);
            in_flight.0.push_back((at, Instant::now()));
            d.pushes.get_or_create(&labels).inc();
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let ending = loop {
                tokio::select! {
                    _ = closing.changed() => break None,
                    r = registry_updates.changed(), if waypoint => {
                        if r.is_err() { break None; }
                        if let Some(e) = revoked() { break Some(e); }
                    }
                    r = changed.changed() => {
                        if r.is_err() { break None; }
                        if let Some(e) = revoked() { break Some(e); }
                        let update = hub.update_for(&subscriber, Some(at));
                        at = update.version;
                        if update.upserts.is_empty() && update.removals.is_empty() {
                            continue;
                        }
                        hub.record(&subscriber, |s| s.sent = at);
                        in_flight.0.push_back((at, Instant::now()));
                        d.pushes.get_or_create(&labels).inc();
                        if tx.send(Ok(update)).await.is_err() { break None; }
                    }
                    msg = incoming.next() => match msg {
                        Some(Ok(SubscribeRequest { request: Some(Msg::Ack(a)) })) => {
                            d.acks.get_or_create(&labels).inc();
                            let latency = d.push_to_ack.get_or_create(&labels);
                            for waited in in_flight.settle(a.version) {
                                latency.observe(waited.as_secs_f64());
                            }
                            hub.record(&subscriber, |s| s.acked = s.acked.max(a.version));
                        }
                        Some(Ok(SubscribeRequest { request: Some(Msg::Nack(n)) })) => {
                            tracing::warn!(subscriber = %name, version = n.version, reason = %n.reason, "configuration NACKed");
                            d.nacks
                                .get_or_create(&NackLabels { kind, reason: NackReason::of(&n.reason) })
                                .inc();
                            in_flight.settle(n.version);
                            hub.record(&subscriber, |s| s.nacked = Some((n.version, n.reason.clone())));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break None,
                    },
                }
            };
            if let Some(e) = ending {
                let refusal = Refusal::from(e);
                tracing::warn!(subscriber = %name, reason = refusal.reason(), error = %refusal, "waypoint subscription ended");
                let _ = tx.send(Err(subscription_status(&refusal))).await;
            }
            tracing::info!(subscriber = %name, "subscriber gone");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The status of a refused (or ended) configuration subscription.
pub fn subscription_status(refusal: &Refusal) -> tonic::Status {
    use crate::registry::WaypointRefusal as W;
    use Refusal as R;
    use tonic::Status;
    let message = format!("{}: {refusal}", refusal.reason());
    match refusal {
        R::Auth(e) if e.is_internal() => Status::internal(message),
        R::Auth(_) => Status::unauthenticated(message),
        R::HelloExpected | R::NoWaypointName => Status::invalid_argument(message),
        R::WrongNode { .. }
        | R::NotANode
        | R::Waypoint(W::NotOnNode { .. } | W::NotTheWaypoint { .. }) => {
            Status::permission_denied(message)
        }
        R::Waypoint(W::Unknown { .. }) => Status::not_found(message),
    }
}
