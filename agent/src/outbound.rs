//! The outbound proxy: connections that the capture programs redirected to the 15001
//! listener inside a pod's namespace are carried to their original destination.
//!
//! The upstream socket is created inside the same namespace (so the destination sees
//! the pod's own address) and carries the agent's mark, so the capture programs leave
//! it alone. A destination in the mesh is reached over HBONE with the pod's own
//! identity; anything else over plain TCP (see [`crate::view`] for the routing).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use crate::{
    copy::{self, Counted},
    ebpf::Capture,
    hbone,
    inbound::Refusal,
    mesh::{Mesh, Pod},
    metrics::{self, ConnectionLabels, Direction, DirectionLabels, ReasonLabels, Reporter},
    netns::{self, ConnectError, connect_hbone, connect_marked},
    view::{Route, RouteError, random_pick},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no original destination recorded for a connection from {peer}")]
    NoOriginalDst { peer: SocketAddr },
    #[error(transparent)]
    Socket(#[from] netns::Error),
    #[error("connecting to {dst} failed: {source}")]
    Connect {
        dst: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {dst} timed out after {timeout:?}")]
    ConnectTimeout { dst: SocketAddr, timeout: Duration },
    #[error("proxying failed: {source}")]
    Io {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Hbone(hbone::Error),
    #[error("the same-node destination refused the connection: {0:?}")]
    Local(Refusal),
    #[error("{dst} is not in the mesh's registry and the namespace is REGISTRY_ONLY")]
    RegistryOnly { dst: SocketAddr },
    #[error("DNS over TCP: {source}")]
    Dns {
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoOriginalDst { .. } => "no_original_dst",
            Error::Socket(e) => e.reason(),
            Error::Route(e) => e.reason(),
            Error::Hbone(e) => e.reason(),
            Error::Local(Refusal::Denied) => "local_unauthorized",
            Error::Local(Refusal::ForeignTarget | Refusal::AgentPort) => "local_bad_target",
            Error::Local(Refusal::Upstream) => "local_upstream_connect",
            Error::Connect { .. } => "connect",
            Error::ConnectTimeout { .. } => "connect_timeout",
            Error::Io { .. } => "io",
            Error::Dns { .. } => "dns",
            Error::RegistryOnly { .. } => "registry_only",
        }
    }
}

#[derive(Debug)]
pub struct Outbound {
    capture: Arc<Capture>,
    mesh: Arc<Mesh>,
    /// DNS over TCP (port 53) goes to the resolver, as UDP does.
    dns: Option<Arc<crate::dns::Resolver>>,
}

/// The CONNECT headers that tell the peer (a waypoint, for its telemetry) which
/// workload the connection comes from: `baggage: weft.source.workload=<ns>/<name>`.
fn source_baggage(pod: &Pod) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Some(w) = &pod.workload
        && let Ok(v) =
            http::HeaderValue::from_str(&format!("weft.source.workload={}/{}", w.namespace, w.name))
    {
        h.insert("baggage", v);
    }
    h
}

impl Outbound {
    pub fn new(
        capture: Arc<Capture>,
        mesh: Arc<Mesh>,
        dns: Option<Arc<crate::dns::Resolver>>,
    ) -> Self {
        Outbound { capture, mesh, dns }
    }

    fn metrics(&self) -> &metrics::Metrics {
        &self.mesh.metrics
    }

    /// Accepts on one capture listener until the task is aborted (unenrollment).
    /// Connections already accepted run on in their own tasks.
    pub async fn serve(self: Arc<Self>, pod: Arc<Pod>, listener: TcpListener) {
        self.mesh.ready_for(&pod).await;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::warn!(netns = %pod.netns.path().display(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.metrics().outbound.accepted.inc();
            let open = self.mesh.open.open();
            let this = Arc::clone(&self);
            let pod = Arc::clone(&pod);
            let span = tracing::debug_span!("outbound", %peer, pod = %pod.name());
            tokio::spawn(
                async move {
                    let _open = open;
                    let o = &this.metrics().outbound;
                    o.active.inc();
                    if let Err(e) = this.proxy(&pod, stream, peer).await {
                        tracing::debug!(error = %e, "outbound connection failed");
                        o.failures
                            .get_or_create(&ReasonLabels { reason: e.reason() })
                            .inc();
                        this.metrics().traffic.failure(Reporter::Source, e.reason());
                    }
                    o.active.dec();
                    o.closed.inc();
                }
                .instrument(span),
            );
        }
    }

    async fn proxy(
        &self,
        pod: &Pod,
        mut downstream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let dst = self
            .capture
            .take_original_dst(pod.netns.cookie(), peer)
            .ok_or(Error::NoOriginalDst { peer })?;
        let _ = downstream.set_nodelay(true);
        if dst.port() == 53
            && let Some(resolver) = &self.dns
        {
            let namespace = pod
                .workload
                .as_ref()
                .map_or("default", |w| w.namespace.as_str());
            return resolver
                .serve_tcp(&pod.netns, namespace, downstream, dst)
                .await
                .map_err(|source| Error::Dns { source });
        }
        let view = self.mesh.view();
        if let Some(w) = &pod.workload
            && view.registry_only(&w.namespace)
            && !view.knows(dst.ip())
        {
            tracing::info!(target: "weft::access", src = %peer, dst = %dst, pod = %pod.name(), "refused: outside the registry (REGISTRY_ONLY)");
            return Err(Error::RegistryOnly { dst });
        }
        let route = view.route(dst, &mut random_pick)?;
        let mut labels = ConnectionLabels {
            reporter: Reporter::Source,
            ..ConnectionLabels::default()
        };
        pod.as_source(&mut labels);
        let counted = Counted::default();
        let (result, target) = match (&route, &pod.identity) {
            (
                Route::Hbone {
                    peer: hbone_peer,
                    identity,
                    authority,
                    workload,
                    service,
                    ..
                },
                Some(source),
            ) => {
                labels.connection_security_policy = "mutual_tls";
                labels.destination_principal = identity.to_string();
                labels.destination_workload_namespace = identity.namespace().to_owned();
                if let Some((_, name)) = workload.split_once('/') {
                    labels.destination_workload = name.to_owned();
                }
                if let Some(s) = service {
                    labels.destination_service = s.clone();
                }
                // A workload of this node (not a waypoint: the tunnel's peer is the
                // destination itself): handed to its inbound side in the agent.
                let local = self
                    .mesh
                    .same_node_fast_path
                    .then(|| self.mesh.local.get(hbone_peer.ip()))
                    .flatten()
                    .filter(|dst| {
                        dst.addresses.contains(&authority.ip())
                            && dst.identity.as_ref() == Some(identity)
                    });
                if let Some(dst_pod) = local {
                    let from = pod
                        .addresses
                        .iter()
                        .find(|a| a.is_ipv4() == authority.is_ipv4())
                        .map_or(peer, |a| SocketAddr::new(*a, peer.port()));
                    let admitted = crate::inbound::admit(
                        &self.mesh,
                        &dst_pod,
                        source,
                        (from, *authority),
                        None,
                    )
                    .await;
                    match admitted {
                        Ok(admitted) => {
                            self.metrics().traffic.opened.get_or_create(&labels).inc();
                            admitted.run(&mut downstream, &counted).await;
                        }
                        Err(refusal) => {
                            labels.response_flags = if refusal == Refusal::Denied {
                                "DENIED"
                            } else {
                                "UF"
                            };
                            self.log(&labels, peer, dst, 0, 0, start);
                            return Err(Error::Local(refusal));
                        }
                    }
                    (Ok(()), *authority)
                } else {
                    let tunnel = match self
                        .mesh
                        .pool
                        .connect(
                            |peer| async move {
                                connect_hbone(&pod.netns, peer, self.mesh.settings.connect_timeout)
                                    .await
                                    .map_err(|e| e.into_hbone(peer))
                            },
                            source,
                            (*hbone_peer, identity),
                            *authority,
                            source_baggage(pod),
                        )
                        .await
                    {
                        Ok(t) => t,
                        Err(e) => {
                            labels.response_flags = if matches!(e, hbone::Error::Refused { status, .. } if status == hyper::StatusCode::UNAUTHORIZED)
                            {
                                "DENIED"
                            } else {
                                "UF"
                            };
                            self.log(&labels, peer, dst, 0, 0, start);
                            return Err(Error::Hbone(e));
                        }
                    };
                    if tunnel.new_connection {
                        self.metrics().traffic.hbone_connections_opened.inc();
                    }
                    self.metrics().traffic.opened.get_or_create(&labels).inc();
                    let mut io = tunnel.io;
                    let r =
                        copy::tcp_h2(&mut downstream, &mut io, counted.a_to_b(), counted.b_to_a())
                            .await;
                    drop(tunnel.slot);
                    (r, *authority)
                }
            }
            (Route::Hbone { authority, .. }, None)
            | (
                Route::Passthrough {
                    addr: authority, ..
                },
                _,
            ) => {
                // Outside the mesh, or a source without an identity: plain TCP.
                if let Route::Passthrough {
                    service: Some(s), ..
                } = &route
                {
                    labels.destination_service = s.clone();
                }
                if let Some((ns, name)) = view.workload_name(authority.ip()) {
                    labels.destination_workload = name;
                    labels.destination_workload_namespace = ns;
                }
                let mut upstream = match connect_marked(
                    &pod.netns,
                    *authority,
                    self.mesh.settings.connect_timeout,
                )
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        labels.response_flags = "UF";
                        self.log(&labels, peer, dst, 0, 0, start);
                        return Err(match e {
                            ConnectError::Socket(e) => Error::Socket(e),
                            ConnectError::Io(source) => Error::Connect {
                                dst: *authority,
                                source,
                            },
                            ConnectError::Timeout => Error::ConnectTimeout {
                                dst: *authority,
                                timeout: self.mesh.settings.connect_timeout,
                            },
                        });
                    }
                };
                self.metrics().traffic.opened.get_or_create(&labels).inc();
                (
                    copy::bidirectional(&mut downstream, &mut upstream, &counted).await,
                    *authority,
                )
            }
        };
        let (sent, received) = counted.get();
        let bytes = &self.metrics().outbound.bytes;
        bytes
            .get_or_create(&DirectionLabels {
                direction: Direction::Sent,
            })
            .inc_by(sent);
        bytes
            .get_or_create(&DirectionLabels {
                direction: Direction::Received,
            })
            .inc_by(received);
        self.metrics().traffic.closed(&labels, sent, received);
        tracing::debug!(%target, "outbound connection ended");
        self.log(&labels, peer, dst, sent, received, start);
        result.map_err(|source| Error::Io { source })
    }

    fn log(
        &self,
        labels: &ConnectionLabels,
        src: SocketAddr,
        dst: SocketAddr,
        sent: u64,
        received: u64,
        start: Instant,
    ) {
        let decision = crate::policy::Decision {
            allowed: labels.response_flags != "DENIED",
            reason: "-".to_owned(),
            audited: Vec::new(),
            version: self.mesh.view().config.version,
        };
        crate::access::access_log(
            labels,
            (src, dst, None),
            &decision,
            sent,
            received,
            start.elapsed(),
        );
    }
}
