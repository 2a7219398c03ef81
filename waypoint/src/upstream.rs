//! Connections from the waypoint to endpoints. A mesh endpoint is reached over HBONE
//! with the waypoint's own identity (its agent sees the waypoint as the peer), pooled
//! by the HBONE pool; one outside the mesh over plain TCP. Each CONNECT carries the
//! caller the waypoint forwards for (`baggage: weft.source.principal=…`, and for a
//! stream `forwarded: for=…`), so HTTP connections over them are pooled per caller
//! identity: HTTP/1.1 connections kept idle up to a number per endpoint, one HTTP/2
//! connection per endpoint multiplexing its requests.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use api::identity::Identity;
use bytes::Bytes;
use dataplane::hbone::{self, H2Stream, StreamSlot};
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::{
    body::{Frame, Incoming},
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use prometheus_client::metrics::{counter::Counter, family::Family};

use crate::{
    body::Body,
    breaker::{Held, ServiceGuard},
    metrics::ProtocolLabels,
    view::Destination,
};

/// The bytes to one endpoint: an HBONE stream (with its place on the pooled
/// connection) or a TCP connection.
pub enum Io {
    Hbone(H2Stream, StreamSlot),
    Tcp(TcpStream),
    /// TLS originated to an ExternalService.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s, _) => Pin::new(s).poll_read(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Hbone(s, _) => Pin::new(s).poll_write(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s, _) => Pin::new(s).poll_flush(cx),
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s, _) => Pin::new(s).poll_shutdown(cx),
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Hbone(#[from] hbone::Error),
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The Service's circuit breaker allows no more connections.
    #[error("the backend's connection limit is reached")]
    Overflow,
    #[error("HTTP with {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Hbone(e) => e.reason(),
            Error::Connect { .. } => "upstream_connect",
            Error::Overflow => "overflow_connections",
            Error::Http { .. } => "upstream_http",
        }
    }

    /// For `map_err`: an HTTP error with the endpoint `addr`.
    fn http(addr: SocketAddr) -> impl Fn(hyper::Error) -> Self {
        move |source| Error::Http { addr, source }
    }

    /// Whether the request never reached the endpoint (a connection failure).
    pub fn before_sending(&self) -> bool {
        match self {
            Error::Hbone(_) | Error::Connect { .. } | Error::Overflow => true,
            Error::Http { source, .. } => source.is_canceled(),
        }
    }
}

/// The caller a connection is opened for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub principal: Identity,
    /// Only for streams (HTTP connections are shared by the caller's pods).
    pub address: Option<std::net::IpAddr>,
}

impl Caller {
    fn connect_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("weft.source.principal={}", self.principal)) {
            h.insert("baggage", v);
        }
        if let Some(ip) = self.address {
            let value = match ip {
                std::net::IpAddr::V4(v4) => format!("for={v4}"),
                std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert("forwarded", v);
            }
        }
        h
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http1,
    Http2,
}

type PoolKey = (SocketAddr, Identity);
/// An idle HTTP/1.1 connection and since when.
type Idle = (http1::SendRequest<Body>, Instant);

pub struct Upstreams {
    hbone: hbone::Pool,
    identity: Identity,
    connect_timeout: std::time::Duration,
    idle_max: usize,
    /// A pooled HTTP connection unused for this long is closed.
    idle_timeout: std::time::Duration,
    h1: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    h2: Mutex<HashMap<PoolKey, (http2::SendRequest<Body>, Instant)>>,
    /// HTTP connections opened, by protocol.
    pub opened: Family<ProtocolLabels, Counter>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    pub fn new(
        hbone: hbone::Pool,
        identity: Identity,
        (connect_timeout, idle_timeout): (std::time::Duration, std::time::Duration),
        idle_max: usize,
    ) -> Self {
        Upstreams {
            hbone,
            identity,
            connect_timeout,
            idle_max,
            idle_timeout,
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            opened: Default::default(),
        }
    }

    /// A byte stream to `dest` for `caller`.
    pub async fn connect(&self, dest: &Destination, caller: &Caller) -> Result<Io, Error> {
        if !dest.mesh {
            let tcp = hbone::dial(dest.addr, self.connect_timeout)
                .await
                .map_err(|e| match e {
                    hbone::Error::Connect { source, .. } => Error::Connect {
                        addr: dest.addr,
                        source,
                    },
                    other => Error::Hbone(other),
                })?;
            if let Some(o) = &dest.origination {
                let tls = o.connect(tcp).await.map_err(|source| Error::Connect {
                    addr: dest.addr,
                    source,
                })?;
                return Ok(Io::Tls(Box::new(tls)));
            }
            return Ok(Io::Tcp(tcp));
        }
        let timeout = self.connect_timeout;
        let peer = SocketAddr::new(dest.addr.ip(), hbone::HBONE_PORT);
        let tunnel = self
            .hbone
            .connect(
                |peer| hbone::dial(peer, timeout),
                &self.identity,
                (peer, &dest.identity),
                dest.addr,
                caller.connect_headers(),
            )
            .await?;
        Ok(Io::Hbone(tunnel.io, tunnel.slot))
    }

    /// Sends `req` to `dest` with `version`, on a pooled connection when one is free;
    /// a new one only with leave from `limit` (the backend Service's circuit breaker).
    pub async fn send(
        self: &Arc<Self>,
        dest: &Destination,
        caller: &Identity,
        (version, limit): (Version, Option<&ServiceGuard>),
        req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let key = (dest.addr, caller.clone());
        let http = Error::http(dest.addr);
        let leave = || {
            limit
                .map(|g| g.connection().map_err(|_| Error::Overflow))
                .transpose()
        };
        match version {
            Version::Http2 => {
                let mut sender = match self.h2_idle(&key) {
                    Some(s) => s,
                    None => self.open_h2(dest, caller, &key, leave()?).await?,
                };
                let response = sender.send_request(req).await.map_err(http)?;
                Ok(response.map(crate::body::boxed))
            }
            Version::Http1 => {
                let mut sender = match self.h1_idle(&key) {
                    Some(s) => s,
                    None => self.open_h1(dest, caller, false, leave()?).await?,
                };
                let response = sender.send_request(req).await.map_err(http)?;
                let pool = Arc::clone(self);
                Ok(response.map(|body| {
                    crate::body::boxed(Returning {
                        body,
                        back: Some((pool, key, sender)),
                    })
                }))
            }
        }
    }

    /// Sends an upgrade request (`Upgrade: websocket`) on a connection of its own,
    /// which the upgraded stream then owns.
    pub async fn send_upgrade(
        &self,
        dest: &Destination,
        caller: &Identity,
        req: Request<Body>,
        limit: Option<&ServiceGuard>,
    ) -> Result<Response<Incoming>, Error> {
        let held = limit
            .map(|g| g.connection().map_err(|_| Error::Overflow))
            .transpose()?;
        let mut sender = self.open_h1(dest, caller, true, held).await?;
        sender
            .send_request(req)
            .await
            .map_err(Error::http(dest.addr))
    }

    fn h1_idle(&self, key: &PoolKey) -> Option<http1::SendRequest<Body>> {
        let mut pool = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let list = pool.get_mut(key)?;
        while let Some((s, _)) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn h1_return(&self, key: PoolKey, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut pool = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let list = pool.entry(key).or_default();
        list.retain(|(s, _)| !s.is_closed());
        if list.len() < self.idle_max {
            list.push((sender, Instant::now()));
        }
    }

    fn h2_idle(&self, key: &PoolKey) -> Option<http2::SendRequest<Body>> {
        let mut pool = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        match pool.get_mut(key) {
            Some((s, used)) if !s.is_closed() => {
                *used = Instant::now();
                Some(s.clone())
            }
            Some(_) => {
                pool.remove(key);
                None
            }
            None => None,
        }
    }

    async fn open_h1(
        &self,
        dest: &Destination,
        caller: &Identity,
        upgrades: bool,
        held: Option<Held>,
    ) -> Result<http1::SendRequest<Body>, Error> {
        let io = self.connect(dest, &self.caller(caller)).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(Error::http(dest.addr))?;
        self.opened
            .get_or_create(&ProtocolLabels { protocol: "http1" })
            .inc();
        let addr = dest.addr;
        tokio::spawn(async move {
            let _held = held;
            let r = if upgrades {
                conn.with_upgrades().await
            } else {
                conn.await
            };
            if let Err(e) = r {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn open_h2(
        &self,
        dest: &Destination,
        caller: &Identity,
        key: &PoolKey,
        held: Option<Held>,
    ) -> Result<http2::SendRequest<Body>, Error> {
        let io = self.connect(dest, &self.caller(caller)).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(hbone::WINDOW)
            .initial_connection_window_size(hbone::CONNECTION_WINDOW)
            .handshake(TokioIo::new(io))
            .await
            .map_err(Error::http(dest.addr))?;
        self.opened
            .get_or_create(&ProtocolLabels { protocol: "http2" })
            .inc();
        let addr = dest.addr;
        tokio::spawn(async move {
            let _held = held;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        let mut pool = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        // Another request may have opened one meanwhile; either serves.
        pool.insert(key.clone(), (sender.clone(), Instant::now()));
        Ok(sender)
    }

    fn caller(&self, principal: &Identity) -> Caller {
        Caller {
            principal: principal.clone(),
            address: None,
        }
    }

    /// Drops pooled connections that closed or stayed unused for the idle timeout (an
    /// HTTP/2 connection with requests still open lives on until they end), and HBONE
    /// connections idle too long.
    pub fn sweep(&self) {
        let limit = self.idle_timeout;
        let mut h1 = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        h1.retain(|_, list| {
            list.retain(|(s, idle)| !s.is_closed() && idle.elapsed() < limit);
            !list.is_empty()
        });
        drop(h1);
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.retain(|_, (s, used)| !s.is_closed() && used.elapsed() < limit);
        drop(h2);
        self.hbone.sweep();
    }
}

/// An HTTP/1.1 response body that gives its connection back to the pool once read to
/// its end (a connection whose response was not read to the end is not reused).
struct Returning {
    body: Incoming,
    back: Option<(Arc<Upstreams>, PoolKey, http1::SendRequest<Body>)>,
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            _ => false,
        };
        if ended && let Some((pool, key, sender)) = self.back.take() {
            pool.h1_return(key, sender);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
