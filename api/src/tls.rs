//! Mutual TLS between mesh peers: checking a peer's certificate chain against the trust
//! bundle and its SPIFFE identity, and the rustls verifiers that do it during the
//! handshake. Used by the agent and the waypoint.
//!
//! A peer is accepted when its chain leads to a root of the bundle (with the right key
//! usage, within its validity), its leaf is not a CA, and it carries exactly one URI SAN,
//! a SPIFFE workload ID in our trust domain — the one expected, when one is expected.

use std::sync::{Arc, RwLock};

use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::{extensions::GeneralName, prelude::FromDer as _};

use crate::identity::Identity;

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("the peer sent no certificate")]
    NoCertificate,
    #[error("the peer certificate cannot be parsed")]
    Malformed,
    #[error("the peer certificate has expired")]
    Expired,
    #[error("the peer certificate is not valid yet")]
    NotYetValid,
    #[error("the peer certificate was not issued by a root of the trust bundle")]
    UnknownIssuer,
    #[error("the peer certificate is a CA certificate")]
    CaCertificate,
    #[error("the peer certificate is not valid for this use (key usage)")]
    WrongUsage,
    #[error("the peer chain is invalid: {detail}")]
    Chain { detail: String },
    #[error("the peer certificate has no URI SAN")]
    NoUriSan,
    #[error("the peer certificate has {count} URI SANs; exactly one is allowed")]
    MultipleUriSans { count: usize },
    #[error("the peer URI SAN contains a NUL byte")]
    NulInSan,
    #[error("the peer URI SAN {uri:?} is not a SPIFFE workload ID: {detail}")]
    NotSpiffe { uri: String, detail: String },
    #[error("the peer is in trust domain {got:?}, not {want:?}")]
    ForeignTrustDomain { got: String, want: String },
    #[error("the peer is {got}, expected {want}")]
    UnexpectedIdentity {
        got: Box<Identity>,
        want: Box<Identity>,
    },
}

impl PeerError {
    pub fn reason(&self) -> &'static str {
        match self {
            PeerError::NoCertificate => "no_certificate",
            PeerError::Malformed => "malformed_certificate",
            PeerError::Expired => "expired",
            PeerError::NotYetValid => "not_yet_valid",
            PeerError::UnknownIssuer => "unknown_issuer",
            PeerError::CaCertificate => "ca_certificate",
            PeerError::WrongUsage => "wrong_key_usage",
            PeerError::Chain { .. } => "invalid_chain",
            PeerError::NoUriSan => "no_uri_san",
            PeerError::MultipleUriSans { .. } => "multiple_uri_sans",
            PeerError::NulInSan => "nul_in_san",
            PeerError::NotSpiffe { .. } => "not_spiffe",
            PeerError::ForeignTrustDomain { .. } => "foreign_trust_domain",
            PeerError::UnexpectedIdentity { .. } => "unexpected_identity",
        }
    }
}

/// Which side of a connection the peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is a server (we are the client): it needs the serverAuth usage.
    Server,
    /// The peer is a client: it needs clientAuth.
    Client,
}

/// The roots a peer's chain must lead to, and the trust domain its identity must be in.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: String,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
}

impl TrustBundle {
    /// A bundle of DER root certificates; fails if one is not a usable trust anchor.
    pub fn new(
        trust_domain: impl Into<String>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, PeerError> {
        let mut anchors = Vec::with_capacity(roots.len());
        let mut subjects = Vec::with_capacity(roots.len());
        for root in &roots {
            let anchor = webpki::anchor_from_trusted_cert(root)
                .map_err(|e| PeerError::Chain {
                    detail: format!("trust bundle root: {e}"),
                })?
                .to_owned();
            subjects.push(DistinguishedName::from(anchor.subject.as_ref().to_vec()));
            anchors.push(anchor);
        }
        Ok(TrustBundle {
            trust_domain: trust_domain.into(),
            roots,
            anchors,
            subjects,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Checks a peer's chain (leaf first) and returns its identity.
    pub fn verify_peer(
        &self,
        chain: &[CertificateDer<'_>],
        role: PeerRole,
        expected: Option<&Identity>,
        now: UnixTime,
    ) -> Result<Identity, PeerError> {
        let (leaf, intermediates) = chain.split_first().ok_or(PeerError::NoCertificate)?;
        // The identity first: its errors are the most telling, and they need no chain.
        let identity = spiffe_identity(leaf)?;
        if identity.trust_domain() != self.trust_domain {
            return Err(PeerError::ForeignTrustDomain {
                got: identity.trust_domain().to_owned(),
                want: self.trust_domain.clone(),
            });
        }
        let ee = webpki::EndEntityCert::try_from(leaf).map_err(|_| PeerError::Malformed)?;
        let usage = match role {
            PeerRole::Server => webpki::KeyUsage::server_auth(),
            PeerRole::Client => webpki::KeyUsage::client_auth(),
        };
        ee.verify_for_usage(
            algorithms().all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(chain_error)?;
        if let Some(want) = expected
            && *want != identity
        {
            return Err(PeerError::UnexpectedIdentity {
                got: Box::new(identity),
                want: Box::new(want.clone()),
            });
        }
        Ok(identity)
    }
}

fn chain_error(e: webpki::Error) -> PeerError {
    use webpki::Error as W;
    match e {
        W::CertExpired { .. } => PeerError::Expired,
        W::CertNotValidYet { .. } => PeerError::NotYetValid,
        W::UnknownIssuer => PeerError::UnknownIssuer,
        W::CaUsedAsEndEntity => PeerError::CaCertificate,
        W::RequiredEkuNotFoundContext(_) => PeerError::WrongUsage,
        W::BadDer | W::BadDerTime => PeerError::Malformed,
        other => PeerError::Chain {
            detail: format!("{other:?}"),
        },
    }
}

/// The SPIFFE identity of a leaf certificate: its only URI SAN.
pub fn spiffe_identity(leaf: &CertificateDer<'_>) -> Result<Identity, PeerError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
        .map_err(|_| PeerError::Malformed)?;
    if cert.is_ca() {
        return Err(PeerError::CaCertificate);
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PeerError::Malformed)?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(PeerError::NoUriSan),
        [one] => *one,
        many => return Err(PeerError::MultipleUriSans { count: many.len() }),
    };
    if uri.contains('\0') {
        return Err(PeerError::NulInSan);
    }
    uri.parse()
        .map_err(|e: crate::identity::Error| PeerError::NotSpiffe {
            uri: uri.to_owned(),
            detail: e.to_string(),
        })
}

/// A certificate signing request for `identity`, signed by `key`: what an agent sends to
/// the CA. It asks for nothing but the identity's URI SAN.
pub fn workload_csr(identity: &Identity, key: &rcgen::KeyPair) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.to_string().try_into()?)];
    Ok(params.serialize_request(key)?.der().to_vec())
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// A trust bundle that can be replaced while connections use it (the control plane
/// pushes changes).
#[derive(Debug, Clone)]
pub struct SharedBundle(Arc<RwLock<Arc<TrustBundle>>>);

impl SharedBundle {
    pub fn new(bundle: TrustBundle) -> Self {
        SharedBundle(Arc::new(RwLock::new(Arc::new(bundle))))
    }

    pub fn get(&self) -> Arc<TrustBundle> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn replace(&self, bundle: TrustBundle) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(bundle);
    }
}

fn tls_error(e: PeerError) -> rustls::Error {
    rustls::Error::General(e.to_string())
}

/// Verifies the server of a connection we open: its chain and the identity the control
/// plane says the destination has.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    bundle: SharedBundle,
    expected: Identity,
}

impl SpiffeServerVerifier {
    pub fn new(bundle: SharedBundle, expected: Identity) -> Self {
        SpiffeServerVerifier { bundle, expected }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        self.bundle
            .get()
            .verify_peer(&chain, PeerRole::Server, Some(&self.expected), now)
            .map_err(tls_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Verifies the client of a connection we accept: a certificate is required, and it must
/// carry an identity of our trust domain. Which identity may do what is policy's
/// business, later.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    bundle: SharedBundle,
    subjects: Vec<DistinguishedName>,
}

impl SpiffeClientVerifier {
    pub fn new(bundle: SharedBundle) -> Self {
        let subjects = bundle.get().subjects.clone();
        SpiffeClientVerifier { bundle, subjects }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        self.bundle
            .get()
            .verify_peer(&chain, PeerRole::Client, None, now)
            .map_err(tls_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

#[cfg(test)]
mod tests;
