//! Weft's control plane: the certificate authority (`ca`), node authentication
//! (`auth`), the registry of workloads and their nodes (`registry`), rate limiting
//! (`limit`) and the gRPC server (`server`). `start` ties them together.
#![forbid(unsafe_code)]

pub mod auth;
pub mod ca;
pub mod config;
#[cfg(test)]
mod kube_mock;
pub mod limit;
pub mod model;
pub mod registry;
pub mod server;
pub mod validate;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};

use crate::{
    ca::Authority,
    config::Config,
    server::{Bundle, CaService},
};

/// A running control plane.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// The roots agents must trust, PEM (also written to `<state>/ca/trust-bundle.pem`).
    pub trust_bundle_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    bundle_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.bundle_task.abort();
        let _ = (&mut self.task).await;
    }
}

fn load_authority(config: &Config) -> anyhow::Result<Authority> {
    let settings = ca::Settings {
        trust_domain: config.trust_domain.clone(),
        default_lifetime: config.cert_lifetime,
        max_lifetime: config.cert_max_lifetime,
    };
    match &config.plugged_ca {
        Some(p) => {
            let read = |path: &Path| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let chain = match &p.chain {
                Some(c) => read(c)?,
                None => String::new(),
            };
            let authority = Authority::from_pem(
                &read(&p.cert)?,
                &read(&p.key)?,
                &chain,
                &read(&p.root)?,
                settings,
            )
            .context("loading the plugged-in CA")?;
            tracing::info!(cert = %p.cert.display(), "using the plugged-in CA");
            Ok(authority)
        }
        None => {
            let dir = config.state_dir.join("ca");
            let (authority, created) =
                ca::local::load_or_create(&dir, settings).context("loading the root CA")?;
            tracing::info!(dir = %dir.display(), created, "using Weft's own root CA");
            Ok(authority)
        }
    }
}

/// Roots to publish: the CA's, plus any in `<state>/ca/extra-roots.pem` (for rotating
/// to a new root: publish both, then switch).
fn current_roots(authority: &Authority, extra: &Path) -> Vec<Vec<u8>> {
    let mut roots: Vec<Vec<u8>> = authority.roots().iter().map(|r| r.to_vec()).collect();
    if let Ok(text) = std::fs::read_to_string(extra) {
        use rustls_pki_types::{CertificateDer, pem::PemObject as _};
        for cert in CertificateDer::pem_slice_iter(text.as_bytes()).flatten() {
            if !roots.contains(&cert.to_vec()) {
                roots.push(cert.to_vec());
            }
        }
    }
    roots
}

/// Loads the CA, binds the listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(config.state_dir.join("ca"))
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let authority = Arc::new(load_authority(&config)?);
    let extra = config.state_dir.join("ca/extra-roots.pem");
    let (bundle_tx, bundle_rx) = watch::channel(Bundle {
        version: 1,
        roots_der: current_roots(&authority, &extra),
    });
    let trust_bundle_pem: String = authority.roots().iter().map(ca::pem_of).collect();
    std::fs::write(
        config.state_dir.join("ca/trust-bundle.pem"),
        &trust_bundle_pem,
    )?;

    let bundle_authority = Arc::clone(&authority);
    let bundle_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let roots = current_roots(&bundle_authority, &extra);
            bundle_tx.send_if_modified(|b| {
                if b.roots_der == roots {
                    return false;
                }
                b.version += 1;
                b.roots_der = roots;
                tracing::info!(
                    version = b.version,
                    roots = b.roots_der.len(),
                    "trust bundle changed"
                );
                true
            });
        }
    });

    let (cert, key) = authority
        .serving_certificate(&config.serving_names, &config.serving_ips)
        .context("issuing the serving certificate")?;
    let service = CaService {
        authority: Arc::clone(&authority),
        registry: Arc::new(registry::Registry::new(
            config.config_dir.clone(),
            &config.trust_domain,
        )),
        auth: Arc::new(auth::Authenticator::Tokens(auth::NodeTokens::new(
            config.node_tokens.clone(),
        ))),
        limiter: Arc::new(limit::RateLimiter::new(config.csr_burst, config.csr_rate)),
        bundle: bundle_rx,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server::serve(service, cert, key, listener, async {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        trust_bundle_pem,
        shutdown: Some(tx),
        task,
        bundle_task,
    })
}
