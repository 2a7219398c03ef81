//! Weft's waypoint: the optional per-service L7 proxy.
//!
//! It is a workload of its own: it gets its identity's certificate from the control
//! plane's CA, subscribes to the configuration as the waypoint of its Gateway (and
//! keeps serving the last configuration it took while the control plane is away), and
//! takes HBONE tunnels from the agents on 15008 for the Services and workloads bound to
//! it (`inbound`). A tunnel carries HTTP (`http`, `proxy`) or, when it does not, a TCP
//! stream (`tcp`). Requests are routed (`route`, `filters`), authorized (`authorize`)
//! on their normalized form (`normalize`), balanced (`balance`) and sent to endpoints
//! over HBONE with the waypoint's identity (`upstream`); their telemetry (`exchange`,
//! `metrics`, `access`, `trace`, `otlp`) is recorded when their responses end. In
//! gateway mode (`gateway`) it is the mesh's ingress as well: HTTP and HTTPS listeners
//! for clients outside the mesh, routed by the Gateway's HTTPRoutes.

pub mod access;
pub mod arrivals;
pub mod attempt;
pub mod authorize;
pub mod backend;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod config;
pub mod detect;
pub mod downstream;
pub mod exchange;
pub mod fault;
pub mod filters;
pub mod gateway;
pub mod http;
pub mod inbound;
pub mod maglev;
pub mod metrics;
pub mod mirror;
pub mod normalize;
pub mod originate;
pub mod otlp;
pub mod outlier;
pub mod proxy;
pub mod ratelimit;
pub mod replay;
pub mod respond;
pub mod retry;
pub mod route;
pub mod tcp;
pub mod trace;
pub mod upgrade;
pub mod upstream;
pub mod view;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use dataplane::{discovery, identity::CertManager};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::{config::Config, metrics::Metrics, upstream::Upstreams, view::View};

/// What every connection and request of the waypoint shares.
pub struct Waypoint {
    pub settings: Config,
    pub certs: CertManager,
    view: watch::Receiver<Arc<View>>,
    pub upstreams: Arc<Upstreams>,
    pub balancer: balance::Balancer,
    pub breakers: breaker::Breakers,
    /// The whole waypoint's rate limit.
    pub rate_limit: Option<ratelimit::TokenBucket>,
    /// The rules' rate limits.
    pub buckets: ratelimit::Buckets,
    /// One permit per client connection held (`Config::max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<Metrics>,
    pub exporter: Option<otlp::Exporter>,
    /// Turns `true` when the waypoint starts draining.
    pub drain: watch::Receiver<bool>,
}

impl Waypoint {
    /// The configuration in force.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }
}

/// Runs the waypoint until SIGTERM or SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let certs = CertManager::for_control_plane(&config.controlplane, &config.trust_domain)
        .context("setting up certificates")?;
    certs.acquire(&config.identity);
    let waypoint_ref = (config.namespace.clone(), config.name.clone());
    let check = {
        let (ns, name) = waypoint_ref.clone();
        Arc::new(move |c: &discovery::Config| {
            // Built again once taken; here only to refuse what does not build.
            View::new(Arc::new(c.clone()), (&ns, &name)).map(drop)
        })
    };
    let (config_rx, _subscription) = discovery::subscribe(discovery::Subscription {
        channel: certs.channel(),
        token: certs.token().to_owned(),
        node: String::new(),
        waypoint: Some(waypoint_ref.clone()),
        trust_domain: config.trust_domain.clone(),
        backoff_max: config.controlplane.backoff_max,
        check: Some(check),
    });
    let metrics = Arc::new(Metrics::default());
    let empty = View::new(Arc::default(), (&waypoint_ref.0, &waypoint_ref.1))
        .map_err(anyhow::Error::msg)?;
    let (view_tx, view_rx) = watch::channel(Arc::new(empty));
    let view_task = {
        let mut rx = config_rx.clone();
        let (ns, name) = waypoint_ref.clone();
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            loop {
                let c = Arc::clone(&rx.borrow_and_update());
                let version = c.version;
                match View::new(c, (&ns, &name)) {
                    Ok(v) => {
                        let _ = view_tx.send(Arc::new(v));
                        metrics
                            .config_version
                            .set(i64::try_from(version).unwrap_or(i64::MAX));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "configuration not usable; keeping the last one")
                    }
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    };

    let upstreams = Arc::new(Upstreams::new(
        dataplane::hbone::Pool::new(config.hbone.clone(), Some(certs.clone())),
        config.identity.clone(),
        (config.hbone.connect_timeout, config.hbone.pool_idle_timeout),
        config.http.idle_per_endpoint,
    ));
    let mut registry = Registry::default();
    metrics.register(&mut registry, &upstreams.opened);
    let registry = Arc::new(registry);
    let exporter = match &config.tracing {
        Some(t) => Some(
            otlp::Exporter::start(
                &t.endpoint,
                vec![
                    ("service.name", "weft-waypoint".to_owned()),
                    ("k8s.namespace.name", config.namespace.clone()),
                    (
                        "weft.waypoint",
                        format!("{}/{}", config.namespace, config.name),
                    ),
                ],
                Arc::clone(&metrics),
            )
            .with_context(|| format!("the OTLP endpoint {}", t.endpoint))?,
        ),
        None => None,
    };
    let (drain_tx, drain_rx) = watch::channel(false);
    let waypoint = Arc::new(Waypoint {
        certs: certs.clone(),
        view: view_rx,
        upstreams: Arc::clone(&upstreams),
        balancer: balance::Balancer::default(),
        breakers: breaker::Breakers::default(),
        rate_limit: config
            .rate_limit
            .map(|(n, every)| ratelimit::TokenBucket::new(n, every, n)),
        buckets: ratelimit::Buckets::default(),
        connections: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        metrics: Arc::clone(&metrics),
        exporter,
        drain: drain_rx,
        settings: config.clone(),
    });

    let listener = tokio::net::TcpListener::bind(config.hbone_addr)
        .await
        .with_context(|| format!("binding the HBONE listener {}", config.hbone_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "HBONE listening");
    let hbone_task = tokio::spawn(inbound::serve(Arc::clone(&waypoint), listener));
    let mut tasks = vec![view_task];
    if let Some(g) = &config.gateway {
        let https = match &g.https {
            Some((addr, cert, key)) => Some((*addr, Some(gateway::tls(cert, key)?))),
            None => None,
        };
        for (addr, tls) in g.http.map(|a| (a, None)).into_iter().chain(https) {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the gateway listener {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, tls = tls.is_some(), "gateway listening");
            tasks.push(tokio::spawn(gateway::serve(Arc::clone(&waypoint), l, tls)));
        }
    }
    if let Some(addr) = config.metrics_addr {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, "metrics listening");
        let state = Arc::clone(&waypoint);
        tasks.push(tokio::spawn(dataplane::probes::serve_metrics_and(
            l,
            Arc::clone(&registry),
            move |path| match path {
                // The endpoints outlier detection has ejected now.
                "/ejections" => {
                    let now = Instant::now();
                    serde_json::to_string(&state.balancer.outliers.snapshot(now)).ok()
                }
                _ => None,
            },
        )));
    }
    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = config.readiness_addr {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the readiness listener {addr}"))?;
        tasks.push(tokio::spawn(dataplane::probes::serve_readiness(
            l,
            Arc::clone(&ready),
        )));
    }
    {
        // Ready with a certificate and a first configuration.
        let (mut rx, ready, certs, identity) = (
            config_rx.clone(),
            Arc::clone(&ready),
            certs.clone(),
            config.identity.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let configured = rx.wait_for(|c| c.version > 0).await.is_ok();
            let certified = certs
                .ready(&identity, Duration::from_secs(3600))
                .await
                .is_ok();
            if configured && certified {
                ready.store(true, Ordering::Release);
                tracing::info!("certificate and configuration: ready");
            }
        }));
    }
    {
        let upstreams = Arc::clone(&upstreams);
        let waypoint = Arc::clone(&waypoint);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upstreams.sweep();
                waypoint.balancer.sweep();
                waypoint.balancer.forget_tables(&waypoint.view());
                waypoint.breakers.sweep();
                waypoint.buckets.sweep();
            }
        }));
    }
    tracing::info!(
        waypoint = %format_args!("{}/{}", config.namespace, config.name),
        identity = %config.identity,
        "waypoint started"
    );

    dataplane::shutdown::requested()
        .await
        .context("installing the signal handlers")?;
    tracing::info!("shutting down: no new tunnels; draining open ones");
    ready.store(false, Ordering::Release);
    hbone_task.abort();
    let _ = drain_tx.send(true);
    let deadline = Instant::now() + config.drain_timeout;
    while metrics.tunnels_active.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match metrics.tunnels_active.get() {
        0 => tracing::info!("drained"),
        left => tracing::warn!(tunnels = left, "drain deadline reached; closing"),
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
