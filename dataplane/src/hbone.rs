//! HBONE: TCP streams carried as HTTP/2 `CONNECT` streams over mutual TLS 1.3 (ALPN
//! `h2`) between agents, on port 15008.
//!
//! The client side keeps a pool of HTTP/2 connections keyed by the source identity,
//! the peer's address and the identity the peer must present; streams are multiplexed
//! over a pooled connection up to a per-connection limit, after which another
//! connection is opened. Connections idle for a while are closed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use api::{config::Source, identity::Identity};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::identity::CertManager;

pub mod baggage;
mod server;

pub use server::serve;

/// The port HBONE listens on, in each pod and on waypoints.
pub const HBONE_PORT: u16 = 15008;

pub const CONNECT_TIMEOUT: &str = "WEFT_CONNECT_TIMEOUT";
pub const TLS_HANDSHAKE_TIMEOUT: &str = "WEFT_TLS_HANDSHAKE_TIMEOUT";
pub const HBONE_MAX_HEADER_LIST_SIZE: &str = "WEFT_HBONE_MAX_HEADER_LIST_SIZE";
pub const HBONE_MAX_STREAMS: &str = "WEFT_HBONE_MAX_STREAMS";
pub const HBONE_KEEPALIVE_INTERVAL: &str = "WEFT_HBONE_KEEPALIVE_INTERVAL";
pub const HBONE_KEEPALIVE_TIMEOUT: &str = "WEFT_HBONE_KEEPALIVE_TIMEOUT";
pub const HBONE_POOL_IDLE_TIMEOUT: &str = "WEFT_HBONE_POOL_IDLE_TIMEOUT";

/// Limits and timeouts of HBONE, both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Deadline for the TLS handshake (and, client side, the HTTP/2 preface).
    pub handshake_timeout: Duration,
    /// Deadline for a TCP `connect()` (to a peer agent or to the application).
    pub connect_timeout: Duration,
    /// Largest header list accepted (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_list_size: u32,
    /// Streams per HTTP/2 connection, both what a client opens and what a server
    /// accepts (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams: u32,
    /// Interval of HTTP/2 keepalive pings; a peer that does not answer within
    /// `keepalive_timeout` is dropped.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A pooled client connection without streams for this long is closed.
    pub pool_idle_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_header_list_size: 16 * 1024,
            max_streams: 100,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// The settings from `WEFT_CONNECT_TIMEOUT`, `WEFT_TLS_HANDSHAKE_TIMEOUT` and
    /// `WEFT_HBONE_*`, each defaulting to [`Settings::default`].
    pub fn from_source(source: &impl Source) -> Result<Self, api::config::Error> {
        use api::config::{bounded, duration};
        let d = Settings::default();
        Ok(Settings {
            connect_timeout: duration(source, CONNECT_TIMEOUT, d.connect_timeout)?,
            handshake_timeout: duration(source, TLS_HANDSHAKE_TIMEOUT, d.handshake_timeout)?,
            max_header_list_size: bounded(
                source,
                HBONE_MAX_HEADER_LIST_SIZE,
                d.max_header_list_size,
                1024..=1024 * 1024,
            )?,
            max_streams: bounded(source, HBONE_MAX_STREAMS, d.max_streams, 1..=10_000)?,
            keepalive_interval: duration(source, HBONE_KEEPALIVE_INTERVAL, d.keepalive_interval)?,
            keepalive_timeout: duration(source, HBONE_KEEPALIVE_TIMEOUT, d.keepalive_timeout)?,
            pool_idle_timeout: duration(source, HBONE_POOL_IDLE_TIMEOUT, d.pool_idle_timeout)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {peer} failed: {source}")]
    Connect {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {peer} timed out")]
    ConnectTimeout { peer: SocketAddr },
    #[error("TLS with {peer} failed: {source}")]
    Tls {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS handshake with {peer} timed out")]
    TlsTimeout { peer: SocketAddr },
    #[error("{peer} did not negotiate h2")]
    NoH2 { peer: SocketAddr },
    #[error("HTTP/2 with {peer} failed: {source}")]
    H2 {
        peer: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("{peer} answered CONNECT {authority} with {status}")]
    Refused {
        peer: SocketAddr,
        authority: SocketAddr,
        status: StatusCode,
    },
    /// The socket to connect from could not be made (`reason` names why, for metrics).
    #[error("socket: {source}")]
    Socket {
        reason: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate manager (no control plane)")]
    NoCertificates,
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "hbone_connect",
            Error::ConnectTimeout { .. } => "hbone_connect_timeout",
            Error::Tls { .. } => "hbone_tls",
            Error::TlsTimeout { .. } => "hbone_tls_timeout",
            Error::NoH2 { .. } => "hbone_no_h2",
            Error::H2 { .. } => "hbone_h2",
            Error::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                "hbone_unauthorized"
            }
            Error::Refused { .. } => "hbone_refused",
            Error::Socket { reason, .. } => reason,
            Error::NoCertificates => "no_certificates",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    source: Identity,
    peer: SocketAddr,
    peer_identity: Identity,
}

#[derive(Debug)]
struct Pooled {
    sender: h2::client::SendRequest<Bytes>,
    streams: AtomicUsize,
    idle_since: Mutex<Option<Instant>>,
    /// Set when the connection's task ends.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Pooled {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Holds a stream's place on its pooled connection.
#[derive(Debug)]
pub struct StreamSlot(Arc<Pooled>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }
}

/// An open HBONE stream: its bytes, and its place on the pooled connection.
#[derive(Debug)]
pub struct Tunnel {
    pub io: H2Stream,
    pub slot: StreamSlot,
    /// Whether the stream was opened on a new connection.
    pub new_connection: bool,
}

#[derive(Debug)]
pub struct Pool {
    settings: Settings,
    certs: Option<CertManager>,
    connections: Mutex<HashMap<PoolKey, Vec<Arc<Pooled>>>>,
}

impl Pool {
    pub fn new(settings: Settings, certs: Option<CertManager>) -> Self {
        Pool {
            settings,
            certs,
            connections: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Arc<Pooled>>>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot on a pooled connection that can take one more stream, if any.
    fn reuse(&self, key: &PoolKey) -> Option<StreamSlot> {
        let mut all = self.lock();
        let list = all.get_mut(key)?;
        list.retain(|c| !c.is_closed());
        let max = self.settings.max_streams as usize;
        for c in list.iter() {
            let mut n = c.streams.load(Ordering::Acquire);
            while n < max {
                match c
                    .streams
                    .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Some(StreamSlot(Arc::clone(c))),
                    Err(now) => n = now,
                }
            }
        }
        None
    }

    /// Closes connections that had no stream for the idle timeout.
    pub fn sweep(&self) {
        let limit = self.settings.pool_idle_timeout;
        let mut all = self.lock();
        for list in all.values_mut() {
            list.retain(|c| {
                let idle = *c.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                let expired = c.streams.load(Ordering::Acquire) == 0
                    && idle.is_some_and(|t| t.elapsed() >= limit);
                !expired && !c.is_closed()
            });
        }
        all.retain(|_, list| !list.is_empty());
    }

    /// Opens a `CONNECT authority` stream to `peer` (which must be `peer_identity`),
    /// presenting `source`'s certificate, with `headers` on the request; a new TCP
    /// connection, when one is needed, comes from `dial(peer)`.
    ///
    /// A stream the peer did not process (its connection sent GOAWAY, as a draining
    /// agent does, or refused the stream) is opened once more on a new connection:
    /// nothing of it reached the destination.
    pub async fn connect<D, F>(
        &self,
        dial: D,
        source: &Identity,
        (peer, peer_identity): (SocketAddr, &Identity),
        authority: SocketAddr,
        headers: HeaderMap,
    ) -> Result<Tunnel, Error>
    where
        D: Fn(SocketAddr) -> F,
        F: Future<Output = Result<TcpStream, Error>>,
    {
        let key = PoolKey {
            source: source.clone(),
            peer,
            peer_identity: peer_identity.clone(),
        };
        let mut retried = false;
        let (slot, new_connection, response, send) = loop {
            let (slot, new_connection) = match self.reuse(&key) {
                Some(slot) => (slot, false),
                None => (self.open(dial(peer).await?, &key).await?, true),
            };
            let mut request = Request::builder()
                .method(Method::CONNECT)
                .uri(authority.to_string())
                .body(())
                .expect("an ip:port authority is a valid CONNECT target");
            *request.headers_mut() = headers.clone();
            let opened = async {
                let mut sender = slot.0.sender.clone().ready().await?;
                let (response, send) = sender.send_request(request, false)?;
                Ok::<_, h2::Error>((response.await?, send))
            }
            .await;
            match opened {
                Ok((response, send)) => break (slot, new_connection, response, send),
                Err(e) if !retried && unprocessed(&e) => {
                    tracing::debug!(%peer, error = %e, "stream not processed; opening a new connection");
                    slot.0.closed.store(true, Ordering::Release);
                    retried = true;
                }
                Err(source) => return Err(Error::H2 { peer, source }),
            }
        };
        if response.status() != StatusCode::OK {
            return Err(Error::Refused {
                peer,
                authority,
                status: response.status(),
            });
        }
        Ok(Tunnel {
            io: H2Stream::new(send, response.into_body()),
            slot,
            new_connection,
        })
    }

    /// Opens a new pooled connection over `tcp` and takes its first stream slot.
    async fn open(&self, tcp: TcpStream, key: &PoolKey) -> Result<StreamSlot, Error> {
        let certs = self.certs.as_ref().ok_or(Error::NoCertificates)?;
        let peer = key.peer;
        let tls =
            tokio_rustls::TlsConnector::from(certs.client_config(&key.source, &key.peer_identity));
        // The peer is verified by its SPIFFE identity, not a DNS name; the name only
        // has to be well-formed.
        let name = ServerName::IpAddress(peer.ip().into());
        let stream =
            match tokio::time::timeout(self.settings.handshake_timeout, tls.connect(name, tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(Error::Tls { peer, source }),
                Err(_) => return Err(Error::TlsTimeout { peer }),
            };
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(Error::NoH2 { peer });
        }
        let s = &self.settings;
        let (sender, mut connection) = h2::client::Builder::new()
            .max_header_list_size(s.max_header_list_size)
            .initial_window_size(WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(FRAME)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|source| Error::H2 { peer, source })?;
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pings = connection.ping_pong();
        let (interval, timeout) = (s.keepalive_interval, s.keepalive_timeout);
        let done = Arc::clone(&closed);
        tokio::spawn(async move {
            let alive = async {
                match pings {
                    Some(p) => keepalive(p, interval, timeout).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut connection => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HBONE connection ended");
                    }
                }
                () = alive => tracing::info!(%peer, "HBONE peer stopped answering pings; closing"),
            }
            done.store(true, Ordering::Release);
        });
        let pooled = Arc::new(Pooled {
            sender,
            streams: AtomicUsize::new(1),
            idle_since: Mutex::new(None),
            closed,
        });
        self.lock()
            .entry(key.clone())
            .or_default()
            .push(Arc::clone(&pooled));
        Ok(StreamSlot(pooled))
    }
}

/// Whether an error on opening a stream says the peer never processed it: the
/// connection's GOAWAY left it out, or the peer refused it.
fn unprocessed(e: &h2::Error) -> bool {
    (e.is_go_away() && e.is_remote()) || e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// Flow-control windows and frame size, both sides: large enough that one stream can
/// fill a fast link without waiting for window updates.
pub const WINDOW: u32 = 4 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
pub const FRAME: u32 = 64 * 1024;

/// A plain TCP connection to `dst` within `timeout`, with `TCP_NODELAY`, as the
/// waypoint makes them (the agent makes its own inside pod namespaces).
pub async fn dial(dst: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    match tokio::time::timeout(timeout, TcpStream::connect(dst)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(source)) => Err(Error::Connect { peer: dst, source }),
        Err(_) => Err(Error::ConnectTimeout { peer: dst }),
    }
}

/// The bytes of one HBONE stream as a byte stream: reads take DATA frames (and give
/// their flow-control capacity back), writes send DATA frames within the capacity h2
/// assigns, shutdown ends the stream. No task or channel sits in between.
#[derive(Debug)]
pub struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    buf: Bytes,
    shut: bool,
}

impl H2Stream {
    pub fn new(send: h2::SendStream<Bytes>, recv: h2::RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            buf: Bytes::new(),
            shut: false,
        }
    }
}

impl H2Stream {
    /// The two directions, for a copy that hands `Bytes` to h2 and takes them from it
    /// without going through a buffer of its own: the send half, the receive half,
    /// bytes already taken from the receive half but not read yet, and whether the send
    /// half has been ended.
    pub(crate) fn parts(
        &mut self,
    ) -> (
        &mut h2::SendStream<Bytes>,
        &mut h2::RecvStream,
        Bytes,
        &mut bool,
    ) {
        (
            &mut self.send,
            &mut self.recv,
            std::mem::take(&mut self.buf),
            &mut self.shut,
        )
    }
}

/// Waits until h2 has given the stream some capacity to send (after
/// `reserve_capacity`); the bytes it may send now.
pub(crate) fn poll_send_capacity(
    send: &mut h2::SendStream<Bytes>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<usize>> {
    use std::task::Poll;
    loop {
        let available = send.capacity();
        if available > 0 {
            return Poll::Ready(Ok(available));
        }
        match send.poll_capacity(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_io(e))),
            Poll::Ready(None) => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }
}

/// An h2 error as an I/O error: a stream the peer ended without error (a graceful
/// reset) is the end of its bytes, reported by the callers; anything else is a reset.
pub(crate) fn h2_io(e: h2::Error) -> std::io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| std::io::Error::other("h2 I/O error"));
    }
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, e)
}

impl tokio::io::AsyncRead for H2Stream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.buf.is_empty() {
            match self.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.buf = data;
                }
                // The peer ended the stream without error (a graceful reset): the end
                // of the bytes.
                Poll::Ready(Some(Err(e))) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_io(e))),
            }
        }
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        bytes::Buf::advance(&mut self.buf, n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for H2Stream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(data.len());
        let available = std::task::ready!(poll_send_capacity(&mut self.send, cx))?;
        let n = available.min(data.len());
        self.send
            .send_data(Bytes::copy_from_slice(&data[..n]), false)
            .map_err(h2_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // h2 writes what it has as soon as its connection task runs.
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.shut {
            self.shut = true;
            self.send.send_data(Bytes::new(), true).map_err(h2_io)?;
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// Pings the peer every `interval`; returns when one is not answered within `timeout`
/// (or the connection is gone).
pub async fn keepalive(mut pings: h2::PingPong, interval: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}
