//! Weft's control plane: the certificate authority (`ca`), node authentication
//! (`auth`), the configuration sources (`source`: a local folder; `kubernetes`: the API
//! server's watches), the registry of workloads, their nodes and the waypoints
//! (`registry`), rate limiting (`limit`), distribution to agents and waypoints
//! (`distribution`), the gRPC server (`server`) and metrics (`metrics`, 15014). `start`
//! ties them together, in the mode the configuration names (`config::Mode`).
#![forbid(unsafe_code)]

pub mod auth;
pub mod ca;
pub mod config;
pub mod distribution;
pub mod endpoints;
pub mod graph;
#[cfg(test)]
mod kube_mock;
pub mod kubernetes;
pub mod limit;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod resources;
pub mod server;
pub mod source;
pub mod subscriber;
pub mod validate;
pub mod webhook;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};

use crate::{
    ca::Authority,
    config::{Config, Mode},
    model::{Document, Problem},
    server::{Bundle, CaService},
};

/// A running control plane.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// The configuration in force and its subscribers.
    pub hub: Arc<distribution::Hub>,
    /// Where the admission webhook listens, when it does.
    pub webhook_addr: Option<SocketAddr>,
    /// Where metrics are served, when they are.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<metrics::Metrics>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    problems: Arc<std::sync::Mutex<Vec<model::Problem>>>,
    in_force: Arc<std::sync::RwLock<Vec<Document>>>,
    webhook_task: Option<tokio::task::JoinHandle<()>>,
    /// The roots agents must trust, PEM (also written to `<state>/ca/trust-bundle.pem`).
    pub trust_bundle_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    bundle_task: tokio::task::JoinHandle<()>,
    source_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The problems of configuration files (or Kubernetes objects) that are not in
    /// force.
    pub fn problems(&self) -> Vec<model::Problem> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The documents in force.
    pub fn documents(&self) -> Vec<Document> {
        self.in_force
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        self.hub.close();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.bundle_task.abort();
        self.source_task.abort();
        if let Some(t) = &self.webhook_task {
            t.abort();
        }
        if let Some(t) = &self.metrics_task {
            t.abort();
        }
        // Graceful, but not forever: streams that do not end in time are cut.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

/// The mode with what it needs at run time.
enum Runtime {
    Local(config::Local),
    /// With the API server's client.
    Kubernetes(Box<config::Kubernetes>, kube::Client),
}

async fn load_authority(config: &Config, runtime: &Runtime) -> anyhow::Result<Authority> {
    let settings = ca::Settings {
        trust_domain: config.trust_domain.clone(),
        default_lifetime: config.cert_lifetime,
        max_lifetime: config.cert_max_lifetime,
    };
    if let Some(p) = &config.plugged_ca {
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
        return Ok(authority);
    }
    match runtime {
        Runtime::Kubernetes(k, client) => {
            let (authority, created) = ca::kubernetes::load_or_create(
                client.clone(),
                &k.namespace,
                &k.ca_secret,
                settings,
            )
            .await
            .with_context(|| {
                format!(
                    "loading the root CA from the Secret {}/{}",
                    k.namespace, k.ca_secret
                )
            })?;
            tracing::info!(secret = %format!("{}/{}", k.namespace, k.ca_secret), created, "using Weft's own root CA");
            Ok(authority)
        }
        Runtime::Local(_) => {
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

/// Loads the CA, reads the configuration, binds the listeners and starts serving. In
/// Kubernetes mode the API server is found in the cluster or through a kubeconfig, and
/// serving starts once every watched kind has been listed.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let runtime = match &config.mode {
        Mode::Local(local) => Runtime::Local(local.clone()),
        Mode::Kubernetes(k) => {
            let client = kube::Client::try_default().await.context(
                "connecting to the Kubernetes API server (in a pod, or through a kubeconfig); \
                 for local mode set WEFT_CP_CONFIG_DIR",
            )?;
            Runtime::Kubernetes(Box::new(k.clone()), client)
        }
    };
    launch(config, runtime, kubernetes::watch::Settings::default()).await
}

async fn launch(
    config: Config,
    runtime: Runtime,
    watch_settings: kubernetes::watch::Settings,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(config.state_dir.join("ca"))
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    // Bound before anything is started, so that a start that fails here leaves nothing
    // running.
    let metrics_listener = bind_metrics(config.metrics_listen).await?;
    let authority = Arc::new(load_authority(&config, &runtime).await?);
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
    let auth = Arc::new(match &runtime {
        Runtime::Kubernetes(k, client) => {
            auth::Authenticator::Kubernetes(auth::TokenReviewer::new(
                client.clone(),
                &k.agent_namespace,
                &k.agent_service_account,
                k.token_audiences.clone(),
            ))
        }
        Runtime::Local(local) => {
            auth::Authenticator::Tokens(auth::NodeTokens::new(local.node_tokens.clone()))
        }
    });
    let registry = Arc::new(registry::Registry::default());
    let hub = Arc::new(distribution::Hub::new());
    let problems = Arc::new(std::sync::Mutex::new(Vec::new()));
    let in_force = Arc::new(std::sync::RwLock::new(Vec::new()));
    let metrics = Arc::new(metrics::Metrics::default());
    let sinks = Sinks {
        metrics: Arc::clone(&metrics),
        status_file: config.state_dir.join("status.json"),
        trust_domain: config.trust_domain.clone(),
        hub: Arc::clone(&hub),
        registry: Arc::clone(&registry),
        problems: Arc::clone(&problems),
        in_force: Arc::clone(&in_force),
    };
    // The first read happens before serving, so the first request finds it.
    let source_task = match &runtime {
        Runtime::Local(local) => {
            let mut source = source::LocalSource::new(
                local.config_dir.clone(),
                Some(config.state_dir.join("last-good-config")),
            );
            let docs = source.reload();
            sinks.put_in_force(docs, source.problems());
            tokio::spawn(follow_folder(source, (local.poll, local.settle), sinks))
        }
        Runtime::Kubernetes(k, client) => {
            let mut watches = kubernetes::watch::Watches::start(client, &watch_settings);
            watches.synced().await;
            let mut source = kubernetes::source::KubernetesSource::default();
            let cluster = watches.snapshot();
            let docs = source.reload(&cluster);
            sinks.put_in_force(docs, source.problems());
            let roots_pem: String = authority.roots().iter().map(ca::pem_of).collect();
            // Only the leader among the replicas writes to the cluster.
            let (leading_tx, leading) = tokio::sync::watch::channel(false);
            tokio::spawn(kubernetes::leader::run(
                client.clone(),
                kubernetes::leader::Settings::new(&k.namespace, &k.identity),
                leading_tx,
            ));
            tokio::spawn(kubernetes::publish::keep_trying(
                client.clone(),
                k.namespace.clone(),
                roots_pem.clone(),
                leading.clone(),
            ));
            // The waypoint controller follows the same snapshots.
            let (gateways_tx, gateways_rx) = tokio::sync::watch::channel(cluster.gateways);
            let settings = kubernetes::waypoints::Settings {
                image: k.waypoint_image.clone(),
                controlplane: k.address.clone(),
                trust_domain: config.trust_domain.clone(),
                roots_pem,
                token_audience: k.token_audiences.first().cloned().unwrap_or_default(),
            };
            tokio::spawn(kubernetes::waypoints::run(
                client.clone(),
                settings,
                gateways_rx,
                leading,
            ));
            tokio::spawn(kubernetes::source::follow(
                watches,
                source,
                SETTLE,
                move |docs, problems, cluster| {
                    sinks.put_in_force(docs, problems);
                    gateways_tx.send_replace(cluster.gateways.clone());
                },
            ))
        }
    };
    let service = CaService {
        authority: Arc::clone(&authority),
        registry,
        auth: Arc::clone(&auth),
        limiter: Arc::new(limit::RateLimiter::new(config.csr_burst, config.csr_rate)),
        bundle: bundle_rx,
        metrics: Arc::clone(&metrics),
    };
    let (metrics_addr, metrics_task) = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "metrics listening");
            let registry = Arc::new(metrics::Metrics::registry(&metrics));
            let (hub, problems) = (Arc::clone(&hub), Arc::clone(&problems));
            let graph = Arc::new(graph::Source {
                hub: Arc::clone(&hub),
                prometheus: config.prometheus.clone(),
            });
            let status: endpoints::StatusFn = Arc::new(move || {
                let problems = problems.lock().unwrap_or_else(|p| p.into_inner()).clone();
                status_json(&hub, &problems)
            });
            (
                Some(addr),
                Some(tokio::spawn(endpoints::serve(
                    listener, registry, status, graph,
                ))),
            )
        }
        None => (None, None),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (webhook_addr, webhook_task) = match config.webhook_listen {
        Some(listen) => {
            let tls = webhook_tls(&cert, &key)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the webhook listener {listen}"))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "admission webhook listening");
            (
                Some(addr),
                Some(tokio::spawn(webhook::serve(
                    listener,
                    tls,
                    Arc::clone(&in_force),
                ))),
            )
        }
        None => (None, None),
    };
    let (tx, rx) = oneshot::channel();
    let distribution = distribution::Distribution {
        hub: Arc::clone(&hub),
        auth,
        registry: Arc::clone(&service.registry),
        metrics: Arc::clone(&metrics),
    };
    let task = tokio::spawn(server::serve(
        service,
        distribution,
        cert,
        key,
        listener,
        async {
            let _ = rx.await;
        },
    ));
    Ok(Running {
        addr,
        hub,
        webhook_addr,
        metrics_addr,
        metrics,
        metrics_task,
        problems,
        in_force,
        webhook_task,
        trust_bundle_pem,
        shutdown: Some(tx),
        task,
        bundle_task,
        source_task,
    })
}

/// Binds the metrics listener the configuration asks for. The default port is best
/// effort (see [`config::MetricsListen`]).
async fn bind_metrics(
    listen: config::MetricsListen,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match listen {
        config::MetricsListen::Off => Ok(None),
        config::MetricsListen::Given(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("binding the metrics listener {addr}")),
        config::MetricsListen::Default(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                tracing::warn!(
                    %addr,
                    error = %e,
                    "metrics are not served: the default port cannot be bound (set {} to another address, or to off)",
                    config::METRICS_LISTEN
                );
                Ok(None)
            }
        },
    }
}

/// How long a burst of changes to Kubernetes objects may settle before it is read:
/// changes that come together become one push (local mode: `config::Local::settle`).
const SETTLE: Duration = Duration::from_millis(150);

/// What the control plane reports about its configuration: the version in force, the
/// problems of files that are not in force, and its subscribers (agents by node,
/// waypoints by `namespace/name`). Served on the metrics port (`GET /debug/status`) and
/// written to `<state>/status.json` at each change.
pub fn status_json(hub: &distribution::Hub, problems: &[model::Problem]) -> serde_json::Value {
    serde_json::json!({
        "version": hub.version(),
        "problems": problems.iter().map(|p| serde_json::json!({
            "source": p.origin.source,
            "document": p.origin.index,
            "object": p.object,
            "path": p.path,
            "reason": p.reason,
            "text": p.to_string(),
        })).collect::<Vec<_>>(),
        "subscribers": hub.subscribers().into_iter().map(|(name, s)| (name, serde_json::json!({
            "kind": s.kind.as_str(),
            "connected": s.connected,
            "sent": s.sent,
            "acked": s.acked,
            "nacked": s.nacked.map(|(v, r)| serde_json::json!({"version": v, "reason": r})),
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Where an accepted configuration goes.
struct Sinks {
    metrics: Arc<metrics::Metrics>,
    status_file: std::path::PathBuf,
    trust_domain: String,
    hub: Arc<distribution::Hub>,
    registry: Arc<registry::Registry>,
    problems: Arc<std::sync::Mutex<Vec<model::Problem>>>,
    in_force: Arc<std::sync::RwLock<Vec<model::Document>>>,
}

impl Sinks {
    /// Puts the good part of a source in force and records the problems of the rest.
    fn put_in_force(&self, docs: Vec<Document>, problems: &[Problem]) {
        self.registry.update(&docs, &self.trust_domain);
        if let Some(version) = self
            .hub
            .publish(resources::translate(&docs, &self.trust_domain))
        {
            tracing::info!(version, documents = docs.len(), "configuration published");
        }
        let d = &self.metrics.distribution;
        d.version
            .set(i64::try_from(self.hub.version()).unwrap_or(i64::MAX));
        d.set_problems(problems);
        *self.problems.lock().unwrap_or_else(|p| p.into_inner()) = problems.to_vec();
        *self.in_force.write().unwrap_or_else(|p| p.into_inner()) = docs;
        let status = status_json(&self.hub, problems);
        if let Err(e) = std::fs::write(&self.status_file, status.to_string()) {
            tracing::warn!(file = %self.status_file.display(), error = %e, "cannot write the status");
        }
    }
}

/// Follows the local configuration folder: after each change (once a burst of changes
/// has settled) the good part of it is put in force.
async fn follow_folder(
    mut source: source::LocalSource,
    (poll, settle): (Duration, Duration),
    sinks: Sinks,
) {
    loop {
        while !source.changed() {
            tokio::time::sleep(poll).await;
        }
        tokio::time::sleep(settle).await;
        let docs = source.reload();
        sinks.put_in_force(docs, source.problems());
    }
}

fn webhook_tls(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}
