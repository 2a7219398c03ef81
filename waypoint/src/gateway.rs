//! Gateway mode: the waypoint binary as the mesh's ingress (a Gateway of class
//! `weft-gateway`). Clients from outside the mesh connect to its HTTP listener, or to
//! its HTTPS listener where TLS is terminated with the certificate of
//! `WEFT_GATEWAY_TLS_CERT` (ALPN `h2` and `http/1.1`). Their requests take the
//! Gateway's HTTPRoutes (hostnames, matches, filters, weights) and go into the mesh over
//! HBONE with the gateway's own identity, through the same request path as a
//! waypoint's. A request no route takes is answered 404.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use crate::{
    Waypoint,
    detect::{self, Protocol, Rewind},
    downstream::Downstream,
};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("the certificate and key: {0}")]
    Tls(#[from] rustls::Error),
}

/// The TLS side of the HTTPS listener, from PEM files (a Secret mounted in Kubernetes,
/// files in the lab): the certificate chain, then the key.
pub fn tls(cert: &str, key: &str) -> Result<TlsAcceptor, Error> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Pem {
            path: cert.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(Error::Pem {
            path: cert.to_owned(),
            reason: "no certificate in it".to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| Error::Pem {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts the clients of one listener until the task is aborted.
pub async fn serve(waypoint: Arc<Waypoint>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (waypoint, tls) = (Arc::clone(&waypoint), tls.clone());
        let span = tracing::debug_span!("gateway", %peer);
        tokio::spawn(
            async move {
                if let Err(reason) = connection(&waypoint, tcp, peer, tls).await {
                    waypoint.metrics.refused(reason);
                    tracing::debug!(reason, "gateway connection refused or failed");
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
    tls: Option<TlsAcceptor>,
) -> Result<(), &'static str> {
    let local = tcp.local_addr().map_err(|_| "gateway_local_addr")?;
    let _ = tcp.set_nodelay(true);
    let settings = &waypoint.settings;
    let down = Arc::new(Downstream::gateway(
        (&settings.identity, &settings.namespace, &settings.name),
        peer,
        local,
    ));
    match tls {
        Some(acceptor) => {
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                .await
                .map_err(|_| "gateway_tls_handshake_timeout")?
                .map_err(|_| "gateway_tls_handshake")?;
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            crate::http::serve(waypoint, down, protocol, stream).await;
        }
        None => {
            let mut tcp = tcp;
            // Plain HTTP: HTTP/1.1, or HTTP/2 with prior knowledge; anything else is
            // taken as HTTP/1.1 and refused by the parser (400).
            let (protocol, read) = detect::detect(&mut tcp, Some(settings.http.header_timeout))
                .await
                .map_err(|_| "gateway_no_request")?;
            let protocol = match protocol {
                Protocol::Http2 => Protocol::Http2,
                _ => Protocol::Http1,
            };
            crate::http::serve(waypoint, down, protocol, Rewind::new(read, tcp)).await;
        }
    }
    Ok(())
}
