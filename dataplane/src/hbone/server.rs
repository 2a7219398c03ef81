//! The server side of HBONE, as the agent (in each pod) and the waypoint run it: mutual
//! TLS within the handshake deadline, the client's SPIFFE identity from its
//! certificate, HTTP/2 with this side's limits and windows, keepalive pings, and on
//! drain a GOAWAY that lets the open streams end.

use std::sync::Arc;

use api::identity::Identity;
use bytes::Bytes;
use h2::{RecvStream, server::SendResponse};
use http::Request;
use tokio::{net::TcpStream, sync::watch};

use super::{CONNECTION_WINDOW, FRAME, Settings, WINDOW, keepalive};

/// The server side of an HBONE connection, after the TLS handshake: HTTP/2 with this
/// side's limits and windows. Fails when the client's preface does not come within the
/// handshake deadline.
async fn accept_h2<T>(
    tls: T,
    s: &Settings,
) -> Result<h2::server::Connection<T, Bytes>, &'static str>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(s.max_streams)
        .max_header_list_size(s.max_header_list_size)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME)
        .handshake::<_, Bytes>(tls);
    match tokio::time::timeout(s.handshake_timeout, handshake).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(_)) => Err("hbone_h2"),
        Err(_) => Err("hbone_h2_timeout"),
    }
}

/// Serves one accepted connection until it ends: each stream goes to `on_stream` with
/// the client's identity. The error is the reason, for metrics.
pub async fn serve<F>(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    s: &Settings,
    mut drain: watch::Receiver<bool>,
    mut on_stream: F,
) -> Result<(), &'static str>
where
    F: FnMut(&Identity, Request<RecvStream>, SendResponse<Bytes>),
{
    let _ = tcp.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(s.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return Err("tls_handshake");
        }
        Err(_) => return Err("tls_handshake_timeout"),
    };
    let client = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no_client_certificate")
        .and_then(|leaf| api::tls::spiffe_identity(leaf).map_err(|e| e.reason()))?;
    let mut connection = accept_h2(tls, s).await?;
    let pings = connection.ping_pong();
    let alive = async {
        match pings {
            Some(p) => keepalive(p, s.keepalive_interval, s.keepalive_timeout).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(alive);
    let mut draining = false;
    loop {
        let mut start_drain = false;
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((req, respond))) => on_stream(&client, req, respond),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "HBONE connection failed");
                    return Err("hbone_h2");
                }
                None => return Ok(()),
            },
            _ = drain.wait_for(|d| *d), if !draining => start_drain = true,
            () = &mut alive => return Err("hbone_keepalive"),
        }
        if start_drain {
            // GOAWAY; the open streams go on until they end.
            draining = true;
            connection.graceful_shutdown();
        }
    }
}
