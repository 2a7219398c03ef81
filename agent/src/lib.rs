//! Weft's node agent.
//!
//! It loads the capture programs (`ebpf`), keeps the set of enrolled pod namespaces
//! (`enroll`), opens listeners inside each (`netns`), proxies captured connections
//! (`outbound`) and answers a local admin API (`admin`). `run` ties them together.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod access;
pub mod admin;
pub mod config;
pub mod dns;
pub mod ebpf;
pub mod enroll;
pub mod handoff;
pub mod inbound;
pub mod mesh;
pub mod metrics;
pub mod netns;
pub mod outbound;
pub mod pods;
pub mod preflight;
pub mod proxy_config;
pub mod upgrade;
pub mod view;

// The parts the agent shares with the waypoint.
pub use dataplane::{copy, discovery, hbone, identity, policy};

use std::{net::SocketAddr, os::fd::AsFd as _, sync::Arc, time::Instant};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::{
    config::Config,
    ebpf::Capture,
    enroll::Enrollments,
    handoff::{Inherited, Key},
    metrics::Metrics,
    upgrade::Pausable,
};

/// Runs the agent until SIGTERM or SIGINT, or until a successor took over its
/// listeners (`upgrade.rs`), then drains.
pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    // A running agent hands its listeners over before this one opens anything.
    let handoff_path = config.state_dir.join(handoff::SOCKET);
    let (predecessor, inherited) = upgrade::take_over(&handoff_path).await;
    let capture = Arc::new(
        Capture::load(
            &config.bpffs,
            &config.pin_dir(),
            config.cgroup.as_deref(),
            config.sockmap,
        )
        .context("setting up eBPF capture")?,
    );
    capture
        .set_excluded_ports(&config.excluded_ports)
        .context("writing the excluded ports")?;

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry, Arc::clone(&capture));
    metrics.register_traffic(&mut registry);
    let dns_metrics = Arc::new(dns::server::Metrics::default());
    if config.dns.is_some() {
        registry.register(
            "weft_agent_dns_queries",
            "DNS messages from enrolled pods, by how they were answered",
            dns_metrics.queries.clone(),
        );
    }
    let registry = Arc::new(registry);

    let certs = match &config.controlplane {
        Some(cp) => {
            let manager = identity::CertManager::for_control_plane(cp, &config.trust_domain)
                .context("setting up certificates")?;
            tracing::info!(controlplane = %cp.address, "certificates from the control plane");
            Some(manager)
        }
        None => {
            tracing::info!("no control plane configured: workloads get no certificates");
            None
        }
    };
    let config_rx = match (&certs, &config.controlplane) {
        (Some(certs), Some(cp)) => {
            let (rx, _task) = discovery::subscribe(discovery::Subscription {
                channel: certs.channel(),
                token: certs.token().to_owned(),
                node: String::new(),
                waypoint: None,
                trust_domain: config.trust_domain.clone(),
                backoff_max: cp.backoff_max,
                check: None,
            });
            Some(rx)
        }
        _ => None,
    };
    let (view_tx, view_rx) = watch::channel(Arc::new(view::View::default()));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mesh = Arc::new(mesh::Mesh {
        settings: config.hbone.clone(),
        metrics: Arc::clone(&metrics),
        pool: hbone::Pool::new(config.hbone.clone(), certs.clone()),
        certs: certs.clone(),
        view: view_rx,
        tracker: mesh::Tracker::default(),
        drain: drain_rx,
        local: mesh::LocalPods::default(),
        open: mesh::OpenConnections::default(),
        same_node_fast_path: config.same_node_fast_path,
        client_address: config.client_address,
        client_legs: capture.client_legs(),
    });
    // Each configuration becomes the data path's view; connections it denies close.
    let view_task = config_rx.clone().map(|mut rx| {
        let mesh = Arc::clone(&mesh);
        tokio::spawn(async move {
            loop {
                let config = Arc::clone(&rx.borrow_and_update());
                let _ = view_tx.send(Arc::new(view::View::new(Arc::clone(&config))));
                if tracing::enabled!(target: "weft::config", tracing::Level::DEBUG) {
                    tracing::debug!(
                        target: "weft::config",
                        version = config.version,
                        authorization = %view::authorization_summary(&config),
                        "configuration in use"
                    );
                }
                let revoked = mesh.tracker.revoke(&config);
                if revoked > 0 {
                    tracing::info!(
                        revoked,
                        version = config.version,
                        "closed connections the new policies deny"
                    );
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    });
    let sweep_task = {
        let mesh = Arc::clone(&mesh);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                mesh.pool.sweep();
            }
        })
    };
    let resolver = config.dns.clone().map(|settings| {
        Arc::new(dns::Resolver::new(
            settings,
            Arc::clone(&mesh),
            Arc::clone(&capture),
            Arc::clone(&dns_metrics),
        ))
    });
    let outbound = Arc::new(outbound::Outbound::new(
        Arc::clone(&capture),
        Arc::clone(&mesh),
        resolver.clone(),
    ));
    let enrollments = Arc::new(Enrollments::new(
        Arc::clone(&capture),
        outbound,
        Arc::clone(&mesh),
        &config.state_dir,
        &config.trust_domain,
        resolver,
        Arc::clone(&inherited),
    ));
    enrollments.restore().await;

    // With a control plane the agent knows which pods are in the mesh: it answers the
    // CNI plugin and follows namespace labels.
    let pods = config_rx.as_ref().map(|rx| {
        let admin_dir = config
            .admin_socket
            .parent()
            .unwrap_or(&config.state_dir)
            .to_owned();
        Arc::new(pods::Pods::new(
            Arc::clone(&enrollments),
            rx.clone(),
            &config.state_dir,
            &admin_dir,
            config.cni_wait,
        ))
    });
    let pods_task = pods
        .clone()
        .map(|p| Pausable::start(move || tokio::spawn(Arc::clone(&p).run())));

    let admin_listener = match inherited.take(&Key::unix(&config.admin_socket)) {
        Some(fd) => std::os::unix::net::UnixListener::from(fd),
        None => admin::bind(&config.admin_socket).with_context(|| {
            format!("binding the admin socket {}", config.admin_socket.display())
        })?,
    };
    let mut own = vec![(
        Key::unix(&config.admin_socket),
        admin_listener.as_fd().try_clone_to_owned()?,
    )];
    let admin = Arc::new(admin::Admin {
        enrollments: Arc::clone(&enrollments),
        capture: Arc::clone(&capture),
        metrics: Arc::clone(&metrics),
        registry: Arc::clone(&registry),
        config: config_rx.clone(),
        pods,
    });
    let admin_task = Pausable::start(move || match admin_listener.try_clone() {
        Ok(l) => match tokio::net::UnixListener::from_std(l) {
            Ok(l) => tokio::spawn(Arc::clone(&admin).serve(l)),
            Err(e) => {
                tracing::error!(error = %e, "admin socket unusable");
                tokio::spawn(async {})
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "admin socket unusable");
            tokio::spawn(async {})
        }
    });

    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let listener = tcp_listener(&inherited, addr, &mut own)
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            // Metrics, and what the agent holds for each of its pods (`weftctl
            // proxy-config` reaches it through the API server's pod proxy).
            let (rx, enrollments) = (config_rx.clone(), Arc::clone(&enrollments));
            let pods = move |path: &str| {
                let (ns, name) = proxy_config::pod_path(path)?;
                let pod = proxy_config::pod_config(&rx.as_ref()?.borrow(), &enrollments, ns, name)?;
                serde_json::to_string(&pod).ok()
            };
            Some(tokio::spawn(dataplane::probes::serve_metrics_and(
                listener,
                Arc::clone(&registry),
                pods,
            )))
        }
        None => None,
    };

    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readiness_task = match config.readiness_addr {
        Some(addr) => {
            let listener = tcp_listener(&inherited, addr, &mut own)
                .await
                .with_context(|| format!("binding the readiness listener {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "readiness listening");
            Some(tokio::spawn(dataplane::probes::serve_readiness(
                listener,
                Arc::clone(&ready),
            )))
        }
        None => None,
    };
    // Ready once the programs are attached, enrollments are back and, with a control
    // plane, the first configuration has arrived.
    if let Some(rx) = &config_rx {
        let mut rx = rx.clone();
        let ready = Arc::clone(&ready);
        tokio::spawn(async move {
            if rx.wait_for(|c| c.version > 0).await.is_ok() {
                ready.store(true, std::sync::atomic::Ordering::Release);
                tracing::info!("configuration received: ready");
            }
        });
    } else {
        ready.store(true, std::sync::atomic::Ordering::Release);
    }

    // The next agent takes over through this socket; the previous one drains once
    // this one serves.
    let handoff_listener = match inherited.take(&Key::unix(&handoff_path)) {
        Some(fd) => socket2::Socket::from(fd),
        None => handoff::listen(&handoff_path)
            .with_context(|| format!("binding {}", handoff_path.display()))?,
    };
    own.push((
        Key::unix(&handoff_path),
        handoff_listener.as_fd().try_clone_to_owned()?,
    ));
    for key in inherited.close_rest() {
        tracing::info!(?key, "closed a listener nothing here took (its pod left)");
    }
    if let Some(conn) = predecessor {
        tokio::spawn(upgrade::ready(conn, Arc::clone(&mesh)));
    }
    let handed_over = Arc::new(tokio::sync::Notify::new());
    let mut paused = vec![Arc::clone(&admin_task)];
    paused.extend(pods_task.clone());
    upgrade::serve(
        handoff_listener,
        upgrade::Giver {
            enrollments: Arc::clone(&enrollments),
            own,
            paused,
            handed_over: Arc::clone(&handed_over),
        },
    )
    .context("starting the handoff thread")?;

    tracing::info!(
        node = %config.node_name,
        cgroup = %capture.cgroup().display(),
        admin = %config.admin_socket.display(),
        "agent ready"
    );

    let upgraded = tokio::select! {
        r = dataplane::shutdown::requested() => {
            r.context("installing the signal handlers")?;
            false
        }
        () = handed_over.notified() => true,
    };
    tracing::info!(
        upgraded,
        "shutting down: no new connections; draining open ones"
    );
    ready.store(false, std::sync::atomic::Ordering::Release);
    admin_task.pause();
    if let Some(task) = &pods_task {
        task.pause();
    }
    if upgraded {
        // The successor serves these now.
        for task in [&metrics_task, &readiness_task].into_iter().flatten() {
            task.abort();
        }
    }
    enrollments.stop_accepting().await;
    let _ = drain_tx.send(true);
    let active = || {
        metrics.outbound.active.get()
            + metrics.traffic.inbound_active.get()
            + mesh.open.count() as i64
    };
    let deadline = Instant::now() + config.drain_timeout;
    while active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left = active();
    if left > 0 {
        tracing::warn!(connections = left, "drain deadline reached; closing");
    } else {
        tracing::info!("drained");
    }
    for task in [metrics_task, readiness_task, view_task, Some(sweep_task)]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    if !upgraded {
        let _ = std::fs::remove_file(&config.admin_socket);
    }
    Ok(())
}

/// A TCP listener of the agent's own on `addr`: the previous agent's, or bound anew;
/// a duplicate goes into `own` for the next agent.
async fn tcp_listener(
    inherited: &Inherited,
    addr: SocketAddr,
    own: &mut Vec<(Key, std::os::fd::OwnedFd)>,
) -> std::io::Result<tokio::net::TcpListener> {
    let key = Key::tcp(0, addr);
    let listener = match inherited.take(&key) {
        Some(fd) => {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)?
        }
        None => tokio::net::TcpListener::bind(addr).await?,
    };
    own.push((key, listener.as_fd().try_clone_to_owned()?));
    Ok(listener)
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
