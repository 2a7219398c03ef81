//! Weft's node agent.
//!
//! It loads the capture programs (`ebpf`), keeps the set of enrolled pod namespaces
//! (`enroll`), opens listeners inside each (`netns`), proxies captured connections
//! (`outbound`) and answers a local admin API (`admin`). `run` ties them together.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod config;
pub mod discovery;
pub mod ebpf;
pub mod enroll;
pub mod identity;
pub mod metrics;
pub mod netns;
pub mod outbound;

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use prometheus_client::registry::Registry;

use crate::{config::Config, ebpf::Capture, enroll::Enrollments, metrics::Metrics};

/// Runs the agent until SIGTERM or SIGINT, then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let capture = Arc::new(
        Capture::load(&config.bpffs, &config.pin_dir(), config.cgroup.as_deref())
            .context("setting up eBPF capture")?,
    );
    capture
        .set_excluded_ports(&config.excluded_ports)
        .context("writing the excluded ports")?;

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry, Arc::clone(&capture));
    let registry = Arc::new(registry);

    let outbound = Arc::new(outbound::Outbound::new(
        Arc::clone(&capture),
        Arc::clone(&metrics),
        config.connect_timeout,
    ));
    let certs = match &config.controlplane {
        Some(cp) => Some(cert_manager(cp, &config.trust_domain)?),
        None => {
            tracing::info!("no control plane configured: workloads get no certificates");
            None
        }
    };
    let config_rx = match (&certs, &config.controlplane) {
        (Some(certs), Some(cp)) => {
            let (rx, _task) = discovery::subscribe(
                certs.channel(),
                certs.token().to_owned(),
                String::new(),
                config.trust_domain.clone(),
                cp.backoff_max,
            );
            Some(rx)
        }
        _ => None,
    };
    let enrollments = Arc::new(Enrollments::new(
        Arc::clone(&capture),
        outbound,
        Arc::clone(&metrics),
        &config.state_dir,
        certs,
        &config.trust_domain,
    ));
    enrollments.restore().await;

    let admin_listener = admin::bind(&config.admin_socket)
        .with_context(|| format!("binding the admin socket {}", config.admin_socket.display()))?;
    let admin = Arc::new(admin::Admin {
        enrollments: Arc::clone(&enrollments),
        capture: Arc::clone(&capture),
        metrics: Arc::clone(&metrics),
        registry: Arc::clone(&registry),
        config: config_rx,
    });
    let admin_task = tokio::spawn(admin.serve(admin_listener));

    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            Some(tokio::spawn(admin::serve_metrics(
                listener,
                Arc::clone(&registry),
            )))
        }
        None => None,
    };

    tracing::info!(
        node = %config.node_name,
        cgroup = %capture.cgroup().display(),
        admin = %config.admin_socket.display(),
        "agent ready"
    );

    shutdown_signal().await?;
    tracing::info!("shutting down: no new connections; draining open ones");
    admin_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    enrollments.stop_accepting().await;
    let deadline = Instant::now() + config.drain_timeout;
    while metrics.outbound.active.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = metrics.outbound.active.get();
    if left > 0 {
        tracing::warn!(connections = left, "drain deadline reached; closing");
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    Ok(())
}

fn cert_manager(
    cp: &config::ControlPlane,
    trust_domain: &str,
) -> anyhow::Result<identity::CertManager> {
    let ca_pem = std::fs::read_to_string(&cp.ca_file)
        .with_context(|| format!("reading {}", cp.ca_file.display()))?;
    let token = std::fs::read_to_string(&cp.token_file)
        .with_context(|| format!("reading {}", cp.token_file.display()))?
        .trim()
        .to_owned();
    let manager = identity::CertManager::new(identity::CaSettings {
        address: cp.address.clone(),
        server_name: cp.server_name.clone(),
        ca_pem,
        token,
        trust_domain: trust_domain.to_owned(),
        lifetime: cp.cert_lifetime,
        backoff_initial: std::time::Duration::from_millis(500),
        backoff_max: cp.backoff_max,
    })?;
    tracing::info!(controlplane = %cp.address, "certificates from the control plane");
    Ok(manager)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Removes everything the agent of this node pinned (which detaches its programs) and
/// its state. Safe to run when nothing is there.
pub fn uninstall(config: &Config) -> anyhow::Result<()> {
    for dir in [config.pin_dir(), config.state_dir.clone()] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(path = %dir.display(), "removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
    Ok(())
}
