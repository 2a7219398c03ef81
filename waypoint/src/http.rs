//! HTTP on a tunnelled stream: HTTP/1.1 (keep-alive, chunked, upgrades such as
//! WebSocket) or HTTP/2 with prior knowledge (gRPC among it), served by hyper with the
//! waypoint's limits — an HTTP/1.1 header section must come within the header timeout
//! of the connection's start or of its first byte (else the connection is closed), and
//! fit in the header size limit (else 431).
//! Draining, and a connection idle (no request in flight) for the idle timeout, end
//! HTTP/1.1 connections after their current request and send HTTP/2 GOAWAY.

use std::{convert::Infallible, pin::Pin, sync::Arc};

use hyper::{body::Incoming, server::conn, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Waypoint, detect::Protocol, downstream::Downstream};

/// Serves the requests of one stream until it ends.
pub async fn serve<S>(waypoint: &Arc<Waypoint>, down: Arc<Downstream>, protocol: Protocol, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle_out = {
        let (down, timeout) = (Arc::clone(&down), waypoint.settings.http.idle_timeout);
        async move { down.activity.idle_for(timeout).await }
    };
    let service = {
        let (waypoint, down) = (Arc::clone(waypoint), Arc::clone(&down));
        service_fn(move |req: hyper::Request<Incoming>| {
            let (waypoint, down) = (Arc::clone(&waypoint), Arc::clone(&down));
            async move { Ok::<_, Infallible>(crate::proxy::handle(waypoint, down, req).await) }
        })
    };
    let limits = &waypoint.settings.http;
    let mut drain = waypoint.drain.clone();
    let result = match protocol {
        Protocol::Http2 => {
            let hbone = &waypoint.settings.hbone;
            let c = conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(limits.max_header_bytes)
                .max_concurrent_streams(hbone.max_streams)
                .initial_stream_window_size(dataplane::hbone::WINDOW)
                .initial_connection_window_size(dataplane::hbone::CONNECTION_WINDOW)
                .keep_alive_interval(hbone.keepalive_interval)
                .keep_alive_timeout(hbone.keepalive_timeout)
                .serve_connection(TokioIo::new(io), service);
            until_drained(c, (&mut drain, idle_out), |c| c.graceful_shutdown()).await
        }
        _ => {
            // hyper's header timer would also run while a kept-alive connection waits
            // for its next request; the deadline is kept here instead, from the bytes.
            let overdue = {
                let (down, timeout) = (Arc::clone(&down), limits.header_timeout);
                async move { down.activity.head_overdue(timeout).await }
            };
            let io = TokioIo::new(crate::arrivals::Arrivals::new(io, Arc::clone(&down)));
            let c = conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .max_buf_size((limits.max_header_bytes as usize).max(8192))
                .keep_alive(true)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::select! {
                r = until_drained(c, (&mut drain, idle_out), |c| c.graceful_shutdown()) => r,
                () = overdue => {
                    waypoint.metrics.refused("header_timeout");
                    tracing::debug!("no whole header section within the header timeout; closing");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Answers the requests of a connection over the waypoint's connection limit with 503
/// (`Reply::Overloaded`, `connection: close`) and ends it: HTTP/1.1 after the first
/// response, HTTP/2 with a GOAWAY sent at once, so only the requests already sent are
/// answered. The header deadline still applies.
pub async fn refuse<S>(waypoint: &Arc<Waypoint>, down: &Downstream, protocol: Protocol, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tracing::debug!(peer = %down.peer, "over the connection limit: 503");
    let service = service_fn(|req: hyper::Request<Incoming>| async move {
        let grpc = crate::proxy::is_grpc(&req);
        Ok::<_, Infallible>(crate::respond::Reply::Overloaded.response(grpc))
    });
    let limits = &waypoint.settings.http;
    let io = TokioIo::new(io);
    let result = match protocol {
        Protocol::Http2 => {
            let c = conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(limits.max_header_bytes)
                .max_concurrent_streams(1)
                .serve_connection(io, service);
            tokio::pin!(c);
            c.as_mut().graceful_shutdown();
            tokio::time::timeout(limits.header_timeout, c).await
        }
        _ => {
            let c = conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size((limits.max_header_bytes as usize).max(8192))
                .keep_alive(false)
                .serve_connection(io, service);
            tokio::time::timeout(limits.header_timeout, c).await
        }
    };
    if let Ok(Err(e)) = result {
        tracing::debug!(error = %e, "a refused connection ended with an error");
    }
}

/// Runs connection `c` to its end; if the waypoint drains or the connection stays
/// idle first, asks it to end gracefully (`shutdown`) and waits for that.
async fn until_drained<C, T>(
    c: C,
    (drain, idle): (
        &mut tokio::sync::watch::Receiver<bool>,
        impl Future<Output = ()>,
    ),
    shutdown: impl FnOnce(Pin<&mut C>),
) -> T
where
    C: Future<Output = T>,
{
    tokio::pin!(c);
    tokio::select! {
        r = c.as_mut() => return r,
        _ = drain.wait_for(|d| *d) => {}
        () = idle => tracing::debug!("HTTP connection idle for the idle timeout; closing"),
    }
    shutdown(c.as_mut());
    c.await
}
