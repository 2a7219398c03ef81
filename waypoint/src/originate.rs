//! TLS origination for ExternalServices reached through an egress waypoint: the
//! application sends plaintext HTTP into the mesh, the waypoint sends HTTPS to the
//! service, verifying its certificate against the ExternalService's CAs and its name
//! against the SNI (`tls.sni`, else the first host). Built once per configuration; a CA
//! bundle that does not parse refuses the configuration.

use std::sync::Arc;

use dataplane::discovery::TlsOrigination;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

/// How a waypoint speaks TLS to one ExternalService.
#[derive(Clone)]
pub struct Origination {
    pub sni: ServerName<'static>,
    connector: TlsConnector,
}

impl std::fmt::Debug for Origination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origination")
            .field("sni", &self.sni)
            .finish()
    }
}

impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        self.sni == other.sni
    }
}

impl Eq for Origination {}

impl Origination {
    pub fn new(t: &TlsOrigination) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(t.ca_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls.caCertificates: {e}"))?;
        if certs.is_empty() {
            return Err("tls.caCertificates: no certificate".to_owned());
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("tls.caCertificates: {e}"))?;
        }
        let sni = ServerName::try_from(t.sni.clone()).map_err(|e| format!("tls.sni: {e}"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Origination {
            sni,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The TLS handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.sni.clone(), tcp).await
    }
}
