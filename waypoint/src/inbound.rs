//! The waypoint's way in: HBONE on 15008, admitted as an agent admits — mutual TLS
//! with a client certificate of the trust domain, HTTP/2 where every stream must be a
//! `CONNECT` (else 400) to a Service address and port, or a workload address, that this
//! waypoint serves (else 400), from a client the destination's policies could let
//! through (else 401: policies decide each request later, with the request). Then the
//! stream is taken as HTTP or passed through as TCP by what its port declares, or, when
//! the port declares nothing, by what its first bytes are.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use api::identity::Identity;
use bytes::Bytes;
use dataplane::{
    discovery::Protocol as Declared,
    hbone::{self, H2Stream},
    policy,
};
use h2::{RecvStream, server::SendResponse};
use http::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;

use crate::{
    Waypoint,
    detect::{self, Protocol, Rewind},
    downstream::Downstream,
    view::Target,
};

/// Accepts HBONE connections until the task is aborted.
pub async fn serve(waypoint: Arc<Waypoint>, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let waypoint = Arc::clone(&waypoint);
        let span = tracing::debug_span!("hbone", %peer);
        tokio::spawn(
            async move {
                if let Err(reason) = connection(&waypoint, tcp, peer).await {
                    waypoint.metrics.refused(reason);
                    tracing::debug!(reason, "HBONE connection refused or failed");
                }
            }
            .instrument(span),
        );
    }
}

async fn connection(
    waypoint: &Arc<Waypoint>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(), &'static str> {
    hbone::serve(
        tcp,
        waypoint.certs.server_config(&waypoint.settings.identity),
        &waypoint.settings.hbone,
        waypoint.drain.clone(),
        |client, req, respond| {
            let (waypoint, client) = (Arc::clone(waypoint), client.clone());
            tokio::spawn(stream(waypoint, client, peer, req, respond).in_current_span());
        },
    )
    .await
}

fn respond(mut reply: SendResponse<Bytes>, code: StatusCode) {
    let mut r = Response::new(());
    *r.status_mut() = code;
    let _ = reply.send_response(r, true);
}

/// Admits one CONNECT stream and hands it to HTTP or to the TCP pass-through.
async fn stream(
    waypoint: Arc<Waypoint>,
    client: Identity,
    peer: SocketAddr,
    req: Request<RecvStream>,
    reply: SendResponse<Bytes>,
) {
    let metrics = &waypoint.metrics;
    if req.method() != Method::CONNECT {
        metrics.refused("hbone_not_connect");
        return respond(reply, StatusCode::BAD_REQUEST);
    }
    let Some(authority) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        metrics.refused("hbone_bad_authority");
        return respond(reply, StatusCode::BAD_REQUEST);
    };
    let authority = SocketAddr::new(authority.ip().to_canonical(), authority.port());
    let view = waypoint.view();
    let Some(target) = view.target(authority) else {
        metrics.refused("hbone_not_served");
        return respond(reply, StatusCode::BAD_REQUEST);
    };
    let down = Arc::new(Downstream::new(
        client,
        peer,
        (target, authority),
        req.headers(),
    ));
    let decision = crate::authorize::target(
        &view,
        &down.target,
        &down.source(),
        policy::Scope::AnyRequest,
    );
    if let Some(d) = &decision
        && !d.allowed
    {
        metrics.refused("hbone_denied");
        crate::access::tunnel_denied(&down, d);
        return respond(reply, StatusCode::UNAUTHORIZED);
    }
    let declared = match &down.target {
        Target::Service { port, .. } => port.protocol,
        Target::Workload { .. } | Target::Gateway { .. } => Declared::Undeclared,
    };
    // Over the connection limit the stream is still taken, so that an HTTP client gets
    // its 503 at once (a refused CONNECT would reach it as a reset).
    let permit = Arc::clone(&waypoint.connections).try_acquire_owned().ok();
    let mut reply = reply;
    let mut ok = Response::new(());
    *ok.status_mut() = StatusCode::OK;
    let send = match reply.send_response(ok, false) {
        Ok(send) => send,
        Err(_) => return metrics.refused("hbone_stream_gone"),
    };
    metrics.tunnels_accepted.inc();
    metrics.tunnels_active.inc();
    let mut io = H2Stream::new(send, req.into_body());
    let timeout = waypoint.settings.http.detect_timeout;
    let detected = match declared {
        Declared::Tcp => Ok((Protocol::Opaque, Bytes::new())),
        Declared::Undeclared => detect::detect(&mut io, Some(timeout)).await,
        // Declared HTTP: whatever comes is parsed as HTTP (and refused when it is not);
        // nothing at all within the header timeout closes the stream there.
        Declared::Http | Declared::Http2 | Declared::Grpc => {
            detect::detect(&mut io, Some(waypoint.settings.http.header_timeout))
                .await
                .map(|(p, read)| match p {
                    Protocol::Opaque => (Protocol::Http1, read),
                    p => (p, read),
                })
        }
    };
    match (detected, permit) {
        (Ok((protocol, read)), None) => {
            metrics.refused("overloaded");
            if protocol != Protocol::Opaque {
                crate::http::refuse(&waypoint, &down, protocol, Rewind::new(read, io)).await;
            }
        }
        (Ok((Protocol::Opaque, read)), Some(_permit)) => {
            crate::tcp::pass(&waypoint, &down, Rewind::new(read, io)).await
        }
        (Ok((protocol, read)), Some(_permit)) => {
            crate::http::serve(&waypoint, down, protocol, Rewind::new(read, io)).await
        }
        (Err(e), _) => {
            tracing::debug!(error = %e, "the stream ended before its protocol was known")
        }
    }
    metrics.tunnels_active.dec();
}
