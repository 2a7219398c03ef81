//! The inbound side of a pod: the HBONE listener (15008) and the plaintext capture
//! listener (15006), both inside the pod's namespace.
//!
//! HBONE: mutual TLS with a client certificate of the trust domain, then HTTP/2 where
//! every stream must be a `CONNECT` (else 400) to one of this pod's addresses on a
//! port that is not the agent's (else 400), allowed by the pod's AuthorizationPolicies
//! for the client's identity (else 401). Then the agent connects to the application
//! and splices the stream to it.
//!
//! Plaintext (steered here by `sk_lookup`; the accepted socket's local address is
//! what the client asked for): refused under PeerAuthentication STRICT, else checked
//! against the policies with the client's address only.
//!
//! Every connection that gets through is tracked, and closed when a policy change
//! denies it.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use api::identity::Identity;
use bytes::Bytes;
use h2::{RecvStream, server::SendResponse};
use http::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use crate::{
    access::{access_log, original_caller},
    copy::Counted,
    hbone::{self, H2Stream},
    mesh::{self, Mesh, Pod},
    metrics::{ConnectionLabels, Reporter},
    netns::connect_app,
    policy,
};

/// The two inbound listeners of a pod.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Hbone,
    Plaintext,
}

/// Accepts HBONE connections until the task is aborted.
pub async fn serve_hbone(mesh: Arc<Mesh>, pod: Arc<Pod>, listener: TcpListener) {
    accept_loop(mesh, pod, listener, Kind::Hbone).await
}

/// Accepts plaintext connections steered here by `sk_lookup`, until aborted.
pub async fn serve_plaintext(mesh: Arc<Mesh>, pod: Arc<Pod>, listener: TcpListener) {
    accept_loop(mesh, pod, listener, Kind::Plaintext).await
}

async fn accept_loop(mesh: Arc<Mesh>, pod: Arc<Pod>, listener: TcpListener, kind: Kind) {
    mesh.ready_for(&pod).await;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(netns = %pod.netns.path().display(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = mesh.open.open();
        let mesh = Arc::clone(&mesh);
        let pod = Arc::clone(&pod);
        let span = tracing::debug_span!("inbound", ?kind, %peer, pod = %pod.name());
        tokio::spawn(
            async move {
                let _open = open;
                let result = match kind {
                    Kind::Hbone => hbone_connection(&mesh, &pod, tcp, peer).await,
                    Kind::Plaintext => plaintext_connection(&mesh, &pod, tcp, peer).await,
                };
                if let Err(reason) = result {
                    mesh.metrics.traffic.failure(Reporter::Destination, reason);
                    tracing::debug!(reason, "inbound connection refused");
                }
            }
            .instrument(span),
        );
    }
}

async fn hbone_connection(
    mesh: &Arc<Mesh>,
    pod: &Arc<Pod>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(), &'static str> {
    let (Some(certs), Some(identity)) = (&mesh.certs, &pod.identity) else {
        return Err("no_identity");
    };
    hbone::serve(
        tcp,
        certs.server_config(identity),
        &mesh.settings,
        mesh.drain.clone(),
        |client, req, respond| {
            let (mesh, pod, client) = (Arc::clone(mesh), Arc::clone(pod), client.clone());
            tokio::spawn(connect_stream(mesh, pod, client, peer, req, respond).in_current_span());
        },
    )
    .await
}

/// A response with `code` and no body.
fn status(code: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = code;
    r
}

fn respond(mut respond: SendResponse<Bytes>, code: StatusCode) {
    let _ = respond.send_response(status(code), true);
}

/// Answers one stream of an HBONE connection.
async fn connect_stream(
    mesh: Arc<Mesh>,
    pod: Arc<Pod>,
    client: Identity,
    peer: SocketAddr,
    req: Request<RecvStream>,
    reply: SendResponse<Bytes>,
) {
    let traffic = &mesh.metrics.traffic;
    let target = match connect_target(&req) {
        Ok(target) => target,
        Err(reason) => {
            traffic.failure(Reporter::Destination, reason);
            return respond(reply, StatusCode::BAD_REQUEST);
        }
    };
    let original = original_caller(req.headers());
    let admitted = match admit(&mesh, &pod, &client, (peer, target), original.as_deref()).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let (reason, code) = match refusal {
                Refusal::ForeignTarget => ("hbone_foreign_authority", StatusCode::BAD_REQUEST),
                Refusal::AgentPort => ("hbone_agent_port", StatusCode::BAD_REQUEST),
                Refusal::Denied => return respond(reply, StatusCode::UNAUTHORIZED),
                Refusal::Upstream => return respond(reply, StatusCode::SERVICE_UNAVAILABLE),
            };
            traffic.failure(Reporter::Destination, reason);
            return respond(reply, code);
        }
    };
    let mut reply = reply;
    let send = match reply.send_response(status(StatusCode::OK), false) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "the HBONE stream went away before the answer");
            traffic.failure(Reporter::Destination, "hbone_stream_gone");
            return;
        }
    };
    let mut tunnel = H2Stream::new(send, req.into_body());
    admitted.run(&mut tunnel, &Counted::default()).await;
}

/// The target of an HBONE request head: a `CONNECT` to `ip:port`, the address in
/// canonical form (an IPv4-mapped IPv6 address as IPv4). The error is the reason.
pub fn connect_target<B>(req: &Request<B>) -> Result<SocketAddr, &'static str> {
    if req.method() != Method::CONNECT {
        return Err("hbone_not_connect");
    }
    let target = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
        .ok_or("hbone_bad_authority")?;
    Ok(SocketAddr::new(target.ip().to_canonical(), target.port()))
}

/// Why a connection for a mesh pod was not handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The destination is not one of the pod's addresses.
    ForeignTarget,
    /// The destination is one of the agent's own ports.
    AgentPort,
    /// Authorization denies it.
    Denied,
    /// The application did not accept the connection.
    Upstream,
}

/// The destination side of a connection from a mesh client, for an HBONE stream and
/// for the same-node fast path alike (where the agent holds both identities): the
/// target must be an application port of the pod, authorization is checked with the
/// client's identity and address (`peer`), and the application is connected. Admitted,
/// the connection is counted, logged, tracked for revocation and copied by
/// [`Admitted::run`].
pub(crate) async fn admit<'m>(
    mesh: &'m Mesh,
    pod: &Arc<Pod>,
    client: &Identity,
    (peer, target): (SocketAddr, SocketAddr),
    original: Option<&str>,
) -> Result<Admitted<'m>, Refusal> {
    if !pod.addresses.contains(&target.ip()) {
        return Err(Refusal::ForeignTarget);
    }
    if agent_common::AGENT_PORTS.contains(&target.port()) {
        return Err(Refusal::AgentPort);
    }
    let traffic = &mesh.metrics.traffic;
    let view = mesh.view();
    let mut labels = ConnectionLabels {
        reporter: Reporter::Destination,
        connection_security_policy: "mutual_tls",
        source_principal: client.to_string(),
        source_workload_namespace: client.namespace().to_owned(),
        ..ConnectionLabels::default()
    };
    if let Some((_, name)) = view.workload_name(peer.ip()) {
        labels.source_workload = name;
    }
    pod.as_destination(&mut labels);
    let source = policy::Source {
        identity: Some(client),
        ip: peer.ip(),
    };
    let decision = mesh::authorize(&view.config, pod, target.port(), &source);
    traffic.authorization(&labels, decision.allowed);
    for audit in &decision.audited {
        tracing::info!(target: "weft::access", policy = %audit, src = %peer, src_identity = %client, dst = %target, "audit");
    }
    if !decision.allowed {
        labels.response_flags = "DENIED";
        access_log(
            &labels,
            (peer, target, original),
            &decision,
            0,
            0,
            Duration::ZERO,
        );
        return Err(Refusal::Denied);
    }
    let start = Instant::now();
    let from = pod
        .client_address
        .then_some((peer.ip(), &*mesh.client_legs));
    let (app, leg) =
        match connect_app(&pod.netns, from, target, mesh.settings.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%target, error = %e, "connecting to the application failed");
                traffic.failure(Reporter::Destination, "upstream_connect");
                labels.response_flags = "UF";
                access_log(
                    &labels,
                    (peer, target, original),
                    &decision,
                    0,
                    0,
                    start.elapsed(),
                );
                return Err(Refusal::Upstream);
            }
        };
    Ok(Admitted {
        original: original.map(str::to_owned),
        mesh,
        pod: Arc::clone(pod),
        client: client.clone(),
        labels,
        app,
        _leg: leg,
        addrs: (peer, target),
        decision,
        start,
    })
}

/// A connection the destination side admitted, connected to the application.
pub(crate) struct Admitted<'m> {
    mesh: &'m Mesh,
    pod: Arc<Pod>,
    client: Identity,
    labels: ConnectionLabels,
    app: TcpStream,
    /// Open while the connection is: the application side left from the client's address.
    _leg: Option<crate::ebpf::Leg<'m>>,
    addrs: (SocketAddr, SocketAddr),
    decision: policy::Decision,
    start: Instant,
    /// The caller a waypoint forwards for, as its CONNECT request says.
    original: Option<String>,
}

impl Admitted<'_> {
    /// Copies between the client side and the application until both are done (or a
    /// policy change revokes the connection); `counted` carries client → application
    /// as `a_to_b`.
    pub(crate) async fn run<C: Client>(self, client_side: &mut C, counted: &Counted) {
        let (peer, target) = self.addrs;
        self.mesh
            .metrics
            .traffic
            .opened
            .get_or_create(&self.labels)
            .inc();
        let (_guard, revoked) =
            self.mesh
                .tracker
                .track(self.pod, Some(self.client), peer.ip(), target.port());
        splice(
            self.mesh,
            self.labels,
            client_side,
            self.app,
            revoked,
            self.addrs,
            self.decision,
            (self.start, self.original.as_deref()),
            counted,
        )
        .await;
    }
}

async fn plaintext_connection(
    mesh: &Arc<Mesh>,
    pod: &Arc<Pod>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(), &'static str> {
    // Not rewritten by the kernel: the address the client connected to.
    let target = tcp.local_addr().map_err(|_| "no_local_address")?;
    let target = SocketAddr::new(target.ip().to_canonical(), target.port());
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let view = mesh.view();
    let mut labels = ConnectionLabels {
        reporter: Reporter::Destination,
        ..ConnectionLabels::default()
    };
    if let Some((ns, name)) = view.workload_name(peer.ip()) {
        labels.source_workload = name;
        labels.source_workload_namespace = ns;
    }
    pod.as_destination(&mut labels);
    let traffic = &mesh.metrics.traffic;
    let refuse = |tcp: TcpStream| {
        // A reset tells the client at once that it was refused.
        reset_on_close(&tcp);
        drop(tcp);
    };
    if mesh.client_legs.is_open(peer, target) {
        // The agent's own leg to the application, captured back to it: carrying it
        // again would loop until the agent ran out of sockets.
        tracing::error!(%peer, %target, "a leg of this agent to an application came back to its own listener; refused (CLIENT_LEGS is not the map the inbound capture reads)");
        refuse(tcp);
        return Err("own_leg");
    }
    if mesh::peer_mode(&view.config, pod) == policy::PeerMode::Strict {
        let decision = policy::Decision {
            allowed: false,
            reason: "PeerAuthentication STRICT".to_owned(),
            audited: Vec::new(),
            version: view.config.version,
        };
        traffic.authorization(&labels, false);
        labels.response_flags = "DENIED";
        access_log(
            &labels,
            (peer, target, None),
            &decision,
            0,
            0,
            Duration::ZERO,
        );
        refuse(tcp);
        return Err("plaintext_strict");
    }
    let source = policy::Source {
        identity: None,
        ip: peer.ip(),
    };
    let decision = mesh::authorize(&view.config, pod, target.port(), &source);
    traffic.authorization(&labels, decision.allowed);
    if !decision.allowed {
        labels.response_flags = "DENIED";
        access_log(
            &labels,
            (peer, target, None),
            &decision,
            0,
            0,
            Duration::ZERO,
        );
        refuse(tcp);
        return Err("plaintext_denied");
    }
    let start = Instant::now();
    let from = pod
        .client_address
        .then_some((peer.ip(), &*mesh.client_legs));
    let (app, _leg) =
        match connect_app(&pod.netns, from, target, mesh.settings.connect_timeout).await {
            Ok(s) => s,
            Err(_) => {
                labels.response_flags = "UF";
                access_log(
                    &labels,
                    (peer, target, None),
                    &decision,
                    0,
                    0,
                    start.elapsed(),
                );
                refuse(tcp);
                return Err("upstream_connect");
            }
        };
    let _ = tcp.set_nodelay(true);
    traffic.opened.get_or_create(&labels).inc();
    let (_guard, revoked) = mesh
        .tracker
        .track(Arc::clone(pod), None, peer.ip(), target.port());
    let mut tcp = tcp;
    splice(
        mesh,
        labels,
        &mut tcp,
        app,
        revoked,
        (peer, target),
        decision,
        (start, None),
        &Counted::default(),
    )
    .await;
    Ok(())
}

/// Copies both ways between the client side and the application until both are done,
/// or until a policy change revokes the connection; then counts and logs it.
#[allow(clippy::too_many_arguments)]
async fn splice<C: Client>(
    mesh: &Mesh,
    mut labels: ConnectionLabels,
    client: &mut C,
    mut app: TcpStream,
    revoked: tokio::sync::oneshot::Receiver<()>,
    (peer, target): (SocketAddr, SocketAddr),
    decision: policy::Decision,
    (start, original): (Instant, Option<&str>),
    counted: &Counted,
) {
    let traffic = &mesh.metrics.traffic;
    traffic.inbound_active.inc();
    tokio::select! {
        r = client.copy_with(&mut app, counted) => {
            if r.is_err() {
                labels.response_flags = "UC";
            }
        }
        Ok(()) = revoked => {
            labels.response_flags = "REVOKED";
            reset_on_close(&app);
            tracing::info!(%peer, %target, "connection closed: a policy change denies it");
        }
    }
    traffic.inbound_active.dec();
    let (sent, received) = counted.get();
    let flags = labels.response_flags;
    labels.response_flags = if flags == "UC" { "-" } else { flags };
    traffic.closed(&labels, sent, received);
    access_log(
        &labels,
        (peer, target, original),
        &decision,
        sent,
        received,
        start.elapsed(),
    );
}

/// The client side of an inbound connection: an HBONE stream or a plaintext TCP
/// connection, each copied to the application its own way.
pub(crate) trait Client {
    /// Copies both ways with `app` until both directions end; counts client → app as
    /// `a_to_b`.
    async fn copy_with(&mut self, app: &mut TcpStream, counted: &Counted) -> std::io::Result<()>;
}

impl Client for H2Stream {
    async fn copy_with(&mut self, app: &mut TcpStream, counted: &Counted) -> std::io::Result<()> {
        crate::copy::tcp_h2(app, self, counted.b_to_a(), counted.a_to_b()).await
    }
}

impl Client for TcpStream {
    async fn copy_with(&mut self, app: &mut TcpStream, counted: &Counted) -> std::io::Result<()> {
        crate::copy::bidirectional(self, app, counted).await
    }
}

/// Makes the close of `tcp` a reset (`SO_LINGER` 0), so the peer learns at once that
/// the connection was refused or cut. Closing a non-blocking socket with a zero linger
/// does not wait.
fn reset_on_close(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}
