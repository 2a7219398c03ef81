//! The control plane's gRPC server (TLS, port 15012): the certificate service and the
//! configuration service. Errors become gRPC statuses here and nowhere else; each status
//! message starts with the refusal's reason (`identity_not_on_node: …`).

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use api::{
    identity::Identity,
    proto::ca::{
        CreateCertificateRequest, CreateCertificateResponse, TrustBundle, WatchTrustBundleRequest,
        certificate_service_server::{CertificateService, CertificateServiceServer},
    },
};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt as _, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::{auth::Authenticator, ca::Authority, limit::RateLimiter, registry::Registry};

/// The current trust bundle, as pushed to watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub version: u64,
    pub roots_der: Vec<Vec<u8>>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Auth(#[from] crate::auth::Error),
    #[error("too many certificate requests from node {node}; retry in {retry_after:?}")]
    RateLimited { node: String, retry_after: Duration },
    #[error("{identity:?} is not a workload identity: {detail}")]
    InvalidIdentity { identity: String, detail: String },
    #[error("{identity} is in trust domain {got:?}; this CA serves {want:?}")]
    ForeignTrustDomain {
        identity: Box<Identity>,
        got: String,
        want: String,
    },
    #[error("no workload with identity {identity} runs on node {node}")]
    IdentityNotOnNode {
        identity: Box<Identity>,
        node: String,
    },
    #[error(transparent)]
    Ca(#[from] crate::ca::Error),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Auth(e) => e.reason(),
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::InvalidIdentity { .. } => "invalid_identity",
            Refusal::ForeignTrustDomain { .. } => "foreign_trust_domain",
            Refusal::IdentityNotOnNode { .. } => "identity_not_on_node",
            Refusal::Ca(e) => e.reason(),
        }
    }

    fn status(&self) -> Status {
        let message = format!("{}: {self}", self.reason());
        match self {
            Refusal::Auth(e) if e.is_internal() => Status::internal(message),
            Refusal::Auth(_) => Status::unauthenticated(message),
            Refusal::RateLimited { .. } => Status::resource_exhausted(message),
            Refusal::InvalidIdentity { .. } | Refusal::ForeignTrustDomain { .. } => {
                Status::invalid_argument(message)
            }
            Refusal::IdentityNotOnNode { .. } => Status::permission_denied(message),
            Refusal::Ca(e) if e.is_request_error() => Status::invalid_argument(message),
            Refusal::Ca(_) => Status::internal(message),
        }
    }
}

pub struct CaService {
    pub authority: Arc<Authority>,
    pub registry: Arc<Registry>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
    pub bundle: watch::Receiver<Bundle>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl CaService {
    async fn create(
        &self,
        token: &str,
        req: &CreateCertificateRequest,
    ) -> Result<(String, Identity, CreateCertificateResponse), (Option<String>, Refusal)> {
        let node = self
            .auth
            .authenticate(token)
            .await
            .map_err(|e| (None, e.into()))?;
        let fail = |r: Refusal| (Some(node.clone()), r);
        self.limiter.check(&node).map_err(|retry_after| {
            fail(Refusal::RateLimited {
                node: node.clone(),
                retry_after,
            })
        })?;
        let identity: Identity = req.identity.parse().map_err(|e: api::identity::Error| {
            fail(Refusal::InvalidIdentity {
                identity: req.identity.clone(),
                detail: e.to_string(),
            })
        })?;
        let want = &self.authority.settings().trust_domain;
        if identity.trust_domain() != want {
            return Err(fail(Refusal::ForeignTrustDomain {
                got: identity.trust_domain().to_owned(),
                want: want.clone(),
                identity: Box::new(identity),
            }));
        }
        if !self.registry.allows(&node, &identity) {
            return Err(fail(Refusal::IdentityNotOnNode {
                identity: Box::new(identity),
                node: node.clone(),
            }));
        }
        let lifetime =
            (req.lifetime_seconds > 0).then(|| Duration::from_secs(req.lifetime_seconds));
        let chain = self
            .authority
            .sign(&req.csr_der, &identity, lifetime)
            .map_err(|e| fail(e.into()))?;
        Ok((
            node,
            identity,
            CreateCertificateResponse {
                cert_chain_der: chain.into_iter().map(|c| c.to_vec()).collect(),
            },
        ))
    }
}

type BundleStream = Pin<Box<dyn Stream<Item = Result<TrustBundle, Status>> + Send>>;

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let token = crate::auth::bearer_token(&request);
        let peer = request.remote_addr();
        let req = request.into_inner();
        match self.create(&token, &req).await {
            Ok((node, identity, response)) => {
                tracing::info!(%node, %identity, "certificate issued");
                self.metrics.certificates.issued.inc();
                Ok(Response::new(response))
            }
            Err((node, refusal)) => {
                self.metrics
                    .certificates
                    .refused
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: refusal.reason(),
                    })
                    .inc();
                tracing::warn!(
                    node = node.as_deref().unwrap_or("-"),
                    peer = ?peer,
                    identity = %req.identity,
                    reason = refusal.reason(),
                    error = %refusal,
                    "certificate refused"
                );
                Err(refusal.status())
            }
        }
    }

    type WatchTrustBundleStream = BundleStream;

    async fn watch_trust_bundle(
        &self,
        request: Request<WatchTrustBundleRequest>,
    ) -> Result<Response<Self::WatchTrustBundleStream>, Status> {
        if let Err(e) = self
            .auth
            .authenticate(&crate::auth::bearer_token(&request))
            .await
        {
            let refusal = Refusal::from(e);
            tracing::warn!(reason = refusal.reason(), "trust bundle watch refused");
            return Err(refusal.status());
        }
        let trust_domain = self.authority.settings().trust_domain.clone();
        let stream = WatchStream::new(self.bundle.clone()).map(move |b| {
            Ok(TrustBundle {
                trust_domain: trust_domain.clone(),
                roots_der: b.roots_der,
                version: b.version,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves the certificate and configuration services with TLS on `listener` until
/// `shutdown` completes.
pub async fn serve(
    service: CaService,
    distribution: crate::distribution::Distribution,
    serving_cert_pem: String,
    serving_key_pem: String,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(serving_cert_pem, serving_key_pem),
    );
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, "certificate service listening");
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(CertificateServiceServer::new(service))
        .add_service(
            api::proto::config::config_service_server::ConfigServiceServer::new(distribution),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
