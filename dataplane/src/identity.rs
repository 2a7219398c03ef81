//! Workload certificates: the agent generates each workload's key (keys never leave
//! it), sends a CSR to the control plane's CA, keeps the certificate, and renews it at
//! half its lifetime (less a random jitter). A failed attempt is retried with
//! exponential backoff (0.5 s doubling, capped); the current certificate keeps serving
//! until it expires, and after that the identity fails closed.
//!
//! The trust bundle follows the control plane's watch stream.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use api::{
    identity::Identity,
    proto::ca::{
        CreateCertificateRequest, WatchTrustBundleRequest,
        certificate_service_client::CertificateServiceClient,
    },
    tls::{PeerRole, SharedBundle, TrustBundle},
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no certificate is managed for {identity}")]
    Unknown { identity: Identity },
    #[error("the certificate of {identity} has not been issued yet")]
    Pending { identity: Identity },
    #[error("the certificate of {identity} expired; connections for it are refused")]
    Expired { identity: Identity },
    #[error("the control plane refused or failed: {status}")]
    ControlPlane { status: Box<tonic::Status> },
    #[error("creating the key or CSR failed: {detail}")]
    Key { detail: String },
    #[error("the issued certificate does not verify: {source}")]
    Invalid {
        #[source]
        source: api::tls::PeerError,
    },
    #[error("the control plane address or CA is invalid: {detail}")]
    Setup { detail: String },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unknown { .. } => "unknown_identity",
            Error::Pending { .. } => "certificate_pending",
            Error::Expired { .. } => "certificate_expired",
            Error::ControlPlane { .. } => "control_plane",
            Error::Key { .. } => "key",
            Error::Invalid { .. } => "invalid_certificate",
            Error::Setup { .. } => "setup",
        }
    }
}

mod settings;

pub use settings::{
    CERT_LIFETIME, CONTROLPLANE, CONTROLPLANE_CA, CONTROLPLANE_NAME, CSR_BACKOFF_MAX, CaSettings,
    ControlPlane, TRUST_DOMAIN, trust_domain,
};

/// A certificate in use: chain, key and the rustls form of both.
pub struct Issued {
    pub chain: Vec<CertificateDer<'static>>,
    pub certified_key: Arc<CertifiedKey>,
    pub not_after: SystemTime,
    pub received: SystemTime,
    /// Keeps the key bytes for tests that check they never went on the wire.
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl Issued {
    pub fn key_der(&self) -> &[u8] {
        self.key_der.secret_pkcs8_der()
    }

    pub fn is_expired(&self) -> bool {
        SystemTime::now() >= self.not_after
    }

    /// When to renew: half way from receipt to expiry, less up to a tenth of that span.
    fn renew_in(&self) -> Duration {
        let span = self
            .not_after
            .duration_since(self.received)
            .unwrap_or_default();
        let jitter = span.mul_f64(rand::random::<f64>() * 0.1);
        let at = self.received + span / 2 - jitter;
        at.duration_since(SystemTime::now()).unwrap_or_default()
    }
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

struct Entry {
    refs: usize,
    current: watch::Receiver<Option<Arc<Issued>>>,
    attempts: Arc<Mutex<VecDeque<Instant>>>,
    task: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inner {
    settings: CaSettings,
    channel: Channel,
    client: CertificateServiceClient<Channel>,
    bundle: SharedBundle,
    bundle_version: watch::Sender<u64>,
    entries: Mutex<HashMap<Identity, Entry>>,
}

/// The agent's certificates, one per workload identity on this node.
#[derive(Clone)]
pub struct CertManager(Arc<Inner>);

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("address", &self.0.settings.address)
            .finish_non_exhaustive()
    }
}

const ATTEMPTS_KEPT: usize = 64;

impl CertManager {
    /// Sets up the client (connecting lazily) and starts following the trust bundle.
    /// `initial_roots` is the bundle until the control plane sends one.
    pub fn new(settings: CaSettings) -> Result<Self, Error> {
        let setup = |detail: String| Error::Setup { detail };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&settings.ca_pem))
            .domain_name(settings.server_name.clone());
        let channel = Channel::from_shared(format!("https://{}", settings.address))
            .map_err(|e| setup(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| setup(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        use rustls_pki_types::pem::PemObject as _;
        let roots: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(settings.ca_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| setup(format!("control plane CA: {e}")))?;
        let bundle = SharedBundle::new(
            TrustBundle::new(&settings.trust_domain, roots)
                .map_err(|e| setup(format!("control plane CA: {e}")))?,
        );
        let manager = CertManager(Arc::new(Inner {
            client: CertificateServiceClient::new(channel.clone()),
            channel,
            bundle,
            bundle_version: watch::channel(0).0,
            entries: Mutex::new(HashMap::new()),
            settings,
        }));
        tokio::spawn(follow_bundle(Arc::downgrade(&manager.0)));
        Ok(manager)
    }

    /// A manager for the control plane `cp`: its CA from `cp.ca_file`, the token from
    /// `cp.token_file`.
    pub fn for_control_plane(cp: &ControlPlane, trust_domain: &str) -> Result<Self, Error> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| Error::Setup {
                detail: format!("reading {}: {e}", path.display()),
            })
        };
        Self::new(CaSettings {
            address: cp.address.clone(),
            server_name: cp.server_name.clone(),
            ca_pem: read(&cp.ca_file)?,
            token: read(&cp.token_file)?.trim().to_owned(),
            trust_domain: trust_domain.to_owned(),
            lifetime: cp.cert_lifetime,
            backoff_initial: Duration::from_millis(500),
            backoff_max: cp.backoff_max,
        })
    }

    /// The (TLS, lazily connected) channel to the control plane, for other services.
    pub fn channel(&self) -> Channel {
        self.0.channel.clone()
    }

    pub fn token(&self) -> &str {
        &self.0.settings.token
    }

    pub fn bundle(&self) -> SharedBundle {
        self.0.bundle.clone()
    }

    /// The version of the last trust bundle received (0: none yet).
    pub fn bundle_version(&self) -> watch::Receiver<u64> {
        self.0.bundle_version.subscribe()
    }

    /// Starts managing `identity` (or counts one more user of it).
    pub fn acquire(&self, identity: &Identity) {
        let mut entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get_mut(identity) {
            e.refs += 1;
            return;
        }
        let (tx, rx) = watch::channel(None);
        let attempts = Arc::new(Mutex::new(VecDeque::new()));
        let task = tokio::spawn(renew(
            Arc::downgrade(&self.0),
            identity.clone(),
            tx,
            Arc::clone(&attempts),
        ));
        entries.insert(
            identity.clone(),
            Entry {
                refs: 1,
                current: rx,
                attempts,
                task,
            },
        );
    }

    /// One user fewer; the certificate (and its key) is dropped with the last.
    pub fn release(&self, identity: &Identity) {
        let mut entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get_mut(identity) {
            e.refs -= 1;
            if e.refs == 0 {
                entries.remove(identity);
                tracing::info!(%identity, "certificate dropped");
            }
        }
    }

    pub fn managed(&self) -> Vec<Identity> {
        let entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.keys().cloned().collect()
    }

    /// The certificate to use now; fails closed when it has expired.
    pub fn current(&self, identity: &Identity) -> Result<Arc<Issued>, Error> {
        let entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(identity).ok_or_else(|| Error::Unknown {
            identity: identity.clone(),
        })?;
        let issued = entry
            .current
            .borrow()
            .clone()
            .ok_or_else(|| Error::Pending {
                identity: identity.clone(),
            })?;
        if issued.is_expired() {
            return Err(Error::Expired {
                identity: identity.clone(),
            });
        }
        Ok(issued)
    }

    /// Waits until a certificate for `identity` is there (or `limit` passes).
    pub async fn ready(&self, identity: &Identity, limit: Duration) -> Result<Arc<Issued>, Error> {
        let mut rx = {
            let entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .get(identity)
                .ok_or_else(|| Error::Unknown {
                    identity: identity.clone(),
                })?
                .current
                .clone()
        };
        let _ = tokio::time::timeout(
            limit,
            rx.wait_for(|c| c.as_ref().is_some_and(|i| !i.is_expired())),
        )
        .await;
        self.current(identity)
    }

    /// When the CA was asked for `identity`'s certificate, oldest first (the last
    /// few dozen attempts).
    pub fn attempts(&self, identity: &Identity) -> Vec<Instant> {
        let entries = self.0.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(identity)
            .map(|e| {
                e.attempts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A rustls server configuration that presents `identity`'s current certificate
    /// (looked up at each handshake) and requires a client of our trust domain.
    pub fn server_config(&self, identity: &Identity) -> Arc<rustls::ServerConfig> {
        let verifier = Arc::new(api::tls::SpiffeClientVerifier::new(self.bundle()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 is supported")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver {
                manager: self.clone(),
                identity: identity.clone(),
            }));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// A rustls client configuration that presents `identity`'s current certificate
    /// and accepts only a server with identity `peer`.
    pub fn client_config(&self, identity: &Identity, peer: &Identity) -> Arc<rustls::ClientConfig> {
        let verifier = Arc::new(api::tls::SpiffeServerVerifier::new(
            self.bundle(),
            peer.clone(),
        ));
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 is supported")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(Resolver {
                manager: self.clone(),
                identity: identity.clone(),
            }));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Hands rustls the current certificate of one identity at each handshake, so new
/// connections use a renewed certificate at once; none after expiry (fail closed).
#[derive(Debug)]
struct Resolver {
    manager: CertManager,
    identity: Identity,
}

impl Resolver {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        match self.manager.current(&self.identity) {
            Ok(issued) => Some(Arc::clone(&issued.certified_key)),
            Err(e) => {
                tracing::warn!(identity = %self.identity, reason = e.reason(), "no certificate to present");
                None
            }
        }
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

async fn fetch(inner: &Inner, identity: &Identity) -> Result<Issued, Error> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::Key {
            detail: e.to_string(),
        })?;
    let csr = api::tls::workload_csr(identity, &key).map_err(|e| Error::Key {
        detail: e.to_string(),
    })?;
    let request = CreateCertificateRequest {
        identity: identity.to_string(),
        csr_der: csr,
        lifetime_seconds: inner.settings.lifetime.map_or(0, |l| l.as_secs()),
    };
    let response = inner
        .client
        .clone()
        .create_certificate(with_token(request, &inner.settings.token))
        .await
        .map_err(|status| Error::ControlPlane {
            status: Box::new(status),
        })?
        .into_inner();
    let chain: Vec<CertificateDer<'static>> = response
        .cert_chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    inner
        .bundle
        .get()
        .verify_peer(&chain, PeerRole::Server, Some(identity), UnixTime::now())
        .map_err(|source| Error::Invalid { source })?;
    let not_after = not_after(&chain[0]).ok_or(Error::Invalid {
        source: api::tls::PeerError::Malformed,
    })?;
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing_key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key_der.clone_key()))
        .map_err(|e| Error::Key {
            detail: e.to_string(),
        })?;
    Ok(Issued {
        certified_key: Arc::new(CertifiedKey::new(chain.clone(), signing_key)),
        chain,
        not_after,
        received: SystemTime::now(),
        key_der,
    })
}

fn not_after(leaf: &CertificateDer<'_>) -> Option<SystemTime> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref()).ok()?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Fetches and renews one identity's certificate for as long as it is managed.
async fn renew(
    inner: std::sync::Weak<Inner>,
    identity: Identity,
    current: watch::Sender<Option<Arc<Issued>>>,
    attempts: Arc<Mutex<VecDeque<Instant>>>,
) {
    let mut backoff: Option<Duration> = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        {
            let mut a = attempts.lock().unwrap_or_else(|p| p.into_inner());
            if a.len() == ATTEMPTS_KEPT {
                a.pop_front();
            }
            a.push_back(Instant::now());
        }
        let (initial, max) = (strong.settings.backoff_initial, strong.settings.backoff_max);
        let wait = match fetch(&strong, &identity).await {
            Ok(issued) => {
                let wait = issued.renew_in();
                tracing::info!(%identity, renew_in = ?wait, "certificate issued");
                current.send_replace(Some(Arc::new(issued)));
                backoff = None;
                wait
            }
            Err(e) => {
                let next = backoff.map_or(initial, |b| (b * 2).min(max));
                backoff = Some(next);
                tracing::warn!(%identity, reason = e.reason(), error = %e, retry_in = ?next, "certificate request failed");
                next
            }
        };
        drop(strong);
        tokio::time::sleep(wait).await;
    }
}

/// Follows the control plane's trust bundle, reconnecting with backoff.
async fn follow_bundle(inner: std::sync::Weak<Inner>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (max, mut client, token) = (
            strong.settings.backoff_max,
            strong.client.clone(),
            strong.settings.token.clone(),
        );
        drop(strong);
        match client
            .watch_trust_bundle(with_token(WatchTrustBundleRequest {}, &token))
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                while let Ok(Some(msg)) = stream.message().await {
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    let roots = msg
                        .roots_der
                        .into_iter()
                        .map(CertificateDer::from)
                        .collect();
                    match TrustBundle::new(&msg.trust_domain, roots) {
                        Ok(bundle) if msg.trust_domain == strong.settings.trust_domain => {
                            strong.bundle.replace(bundle);
                            strong.bundle_version.send_replace(msg.version);
                            tracing::info!(version = msg.version, "trust bundle updated");
                            backoff = Duration::from_millis(500);
                        }
                        Ok(_) => {
                            tracing::warn!(got = %msg.trust_domain, "trust bundle for another trust domain ignored")
                        }
                        Err(e) => tracing::warn!(error = %e, "unusable trust bundle ignored"),
                    }
                }
            }
            Err(status) => tracing::debug!(%status, "trust bundle watch failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max);
    }
}
