//! The outbound proxy: connections that the capture programs redirected to the 15001
//! listener inside a pod's namespace are carried to their original destination.
//!
//! The upstream socket is created inside the same namespace (so the destination sees
//! the pod's own address) and carries the agent's mark, so the capture programs leave
//! it alone. Today the upstream leg is plain TCP; HBONE replaces it for mesh
//! destinations.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use socket2::Domain;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::Instrument as _;

use crate::{
    ebpf::Capture,
    metrics::{self, Direction, DirectionLabels, ReasonLabels},
    netns::{self, Netns},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no original destination recorded for a connection from {peer}")]
    NoOriginalDst { peer: SocketAddr },
    #[error(transparent)]
    Socket(#[from] netns::Error),
    #[error("setting up the upstream socket failed: {source}")]
    SocketSetup {
        #[source]
        source: std::io::Error,
    },
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
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoOriginalDst { .. } => "no_original_dst",
            Error::Socket(e) => e.reason(),
            Error::SocketSetup { .. } => "socket_setup",
            Error::Connect { .. } => "connect",
            Error::ConnectTimeout { .. } => "connect_timeout",
            Error::Io { .. } => "io",
        }
    }
}

#[derive(Debug)]
pub struct Outbound {
    capture: Arc<Capture>,
    metrics: Arc<metrics::Metrics>,
    connect_timeout: Duration,
}

impl Outbound {
    pub fn new(
        capture: Arc<Capture>,
        metrics: Arc<metrics::Metrics>,
        connect_timeout: Duration,
    ) -> Self {
        Outbound {
            capture,
            metrics,
            connect_timeout,
        }
    }

    /// Accepts on one capture listener until the task is aborted (unenrollment).
    /// Connections already accepted run on in their own tasks.
    pub async fn serve(self: Arc<Self>, netns: Arc<Netns>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::warn!(netns = %netns.path().display(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.metrics.outbound.accepted.inc();
            let this = Arc::clone(&self);
            let netns = Arc::clone(&netns);
            let span = tracing::debug_span!("outbound", %peer, netns = %netns.path().display());
            tokio::spawn(
                async move {
                    this.metrics.outbound.active.inc();
                    if let Err(e) = this.proxy(&netns, stream, peer).await {
                        tracing::debug!(error = %e, "outbound connection failed");
                        this.metrics
                            .outbound
                            .failures
                            .get_or_create(&ReasonLabels { reason: e.reason() })
                            .inc();
                    }
                    this.metrics.outbound.active.dec();
                    this.metrics.outbound.closed.inc();
                }
                .instrument(span),
            );
        }
    }

    async fn proxy(
        &self,
        netns: &Netns,
        mut downstream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let dst = self
            .capture
            .take_original_dst(netns.cookie(), peer)
            .ok_or(Error::NoOriginalDst { peer })?;
        let mut upstream = self.connect(netns, dst).await?;
        let _ = downstream.set_nodelay(true);
        let result = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
        let (sent, received) = match &result {
            Ok((sent, received)) => (*sent, *received),
            Err(_) => (0, 0),
        };
        let bytes = &self.metrics.outbound.bytes;
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
        tracing::info!(
            target: "weft::access",
            src = %peer,
            dst = %dst,
            netns = %netns.path().display(),
            sent,
            received,
            duration_ms = start.elapsed().as_millis() as u64,
            outcome = if result.is_ok() { "ok" } else { "error" },
            "outbound connection"
        );
        result.map(|_| ()).map_err(|source| Error::Io { source })
    }

    async fn connect(&self, netns: &Netns, dst: SocketAddr) -> Result<TcpStream, Error> {
        let domain = if dst.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = netns.socket(domain).await?;
        socket
            .set_mark(agent_common::AGENT_SOCKET_MARK)
            .and_then(|()| socket.set_tcp_nodelay(true))
            .map_err(|source| Error::SocketSetup { source })?;
        let socket = TcpSocket::from_std_stream(socket.into());
        match tokio::time::timeout(self.connect_timeout, socket.connect(dst)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(Error::Connect { dst, source }),
            Err(_) => Err(Error::ConnectTimeout {
                dst,
                timeout: self.connect_timeout,
            }),
        }
    }
}
