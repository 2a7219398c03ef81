//! Enrollment of pod network namespaces with this agent.
//!
//! Enrolling a namespace opens the outbound listeners inside it and then adds its
//! cookie to the kernel's enrolled map, in that order, so no connection is redirected
//! before something listens. Unenrolling removes the cookie first and then closes the
//! listeners; connections already being proxied run on until they close.
//!
//! The set of enrolled paths is kept in a state file so that a restarted agent
//! enrolls them again and the enrolled map never names a namespace nobody serves.
//! While a successor takes over (`upgrade.rs`), enrollments are frozen: the
//! successor's restore reads the state file, and takes the listeners given to it.

mod listen;

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use api::{
    admin::{Enrollment, WorkloadRef},
    identity::Identity,
};
use tokio::{sync::Mutex, task::JoinHandle};

use crate::{
    ebpf::{self, Capture},
    handoff::{Inherited, Key},
    identity::CertManager,
    mesh::{Mesh, Pod},
    metrics::Metrics,
    netns::{self, Netns, NetnsId},
    outbound::Outbound,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is already enrolled (as {existing})")]
    AlreadyEnrolled { path: PathBuf, existing: PathBuf },
    #[error("{path} is not enrolled")]
    NotEnrolled { path: PathBuf },
    #[error("workload: {detail}")]
    InvalidWorkload { detail: String },
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("listening on {addr} in {path} failed: {source}")]
    Listen {
        path: PathBuf,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Capture(#[from] ebpf::Error),
    #[error("a new agent is taking over from this one; try again")]
    HandingOver,
    #[error("writing the enrollment state {path} failed: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::AlreadyEnrolled { .. } => "already_enrolled",
            Error::NotEnrolled { .. } => "not_enrolled",
            Error::InvalidWorkload { .. } => "invalid_workload",
            Error::Netns(e) => e.reason(),
            Error::Listen { .. } => "listen",
            Error::Capture(e) => e.reason(),
            Error::HandingOver => "handing_over",
            Error::State { .. } => "state",
        }
    }
}

struct Enrolled {
    netns: Arc<Netns>,
    listeners: Vec<SocketAddr>,
    /// A duplicate of each listening socket, for a successor (`handoff.rs`).
    sockets: Vec<(Key, OwnedFd)>,
    accept_tasks: Vec<JoinHandle<()>>,
    workload: Option<WorkloadRef>,
    identity: Option<Identity>,
    /// Where the identity's certificate is managed; released when this entry goes.
    certs: Option<CertManager>,
    /// The inbound `sk_lookup` link (pinned) and the addresses steered by it.
    inbound: Option<(aya::programs::links::FdLink, Vec<IpAddr>)>,
}

impl Enrolled {
    fn report(&self) -> Enrollment {
        let certificate = match (&self.certs, &self.identity) {
            (Some(certs), Some(id)) => Some(certificate_state(certs, id).to_owned()),
            _ => None,
        };
        Enrollment {
            netns: self.netns.path().to_owned(),
            cookie: self.netns.cookie(),
            listeners: self.listeners.clone(),
            identity: self.identity.as_ref().map(ToString::to_string),
            certificate,
        }
    }
}

/// `ready`, `pending` or `expired`.
pub fn certificate_state(certs: &CertManager, id: &Identity) -> &'static str {
    match certs.current(id) {
        Ok(_) => "ready",
        Err(crate::identity::Error::Expired { .. }) => "expired",
        Err(_) => "pending",
    }
}

impl Drop for Enrolled {
    fn drop(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        if let (Some(certs), Some(id)) = (&self.certs, &self.identity) {
            certs.release(id);
        }
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    enrollments: Vec<StateEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StateEntry {
    netns: PathBuf,
    #[serde(default)]
    workload: Option<WorkloadRef>,
}

pub struct Enrollments {
    certs: Option<CertManager>,
    trust_domain: String,
    capture: Arc<Capture>,
    outbound: Arc<Outbound>,
    mesh: Arc<Mesh>,
    metrics: Arc<Metrics>,
    /// The resolver pods' DNS goes to; `None`: pods keep their own DNS.
    dns: Option<Arc<crate::dns::Resolver>>,
    state_file: PathBuf,
    /// Listeners the previous agent handed over, taken by the enrollments it had.
    inherited: Arc<Inherited>,
    /// Set while a successor takes over: nothing is enrolled or unenrolled.
    frozen: AtomicBool,
    enrolled: Mutex<BTreeMap<NetnsId, Enrolled>>,
    /// What is enrolled, by workload, as of the last change: for readers that cannot
    /// wait on the lock (the metrics listener's pod view).
    snapshot: std::sync::RwLock<Vec<(WorkloadRef, Enrollment)>>,
}

impl Enrollments {
    pub fn new(
        capture: Arc<Capture>,
        outbound: Arc<Outbound>,
        mesh: Arc<Mesh>,
        state_dir: &Path,
        trust_domain: &str,
        dns: Option<Arc<crate::dns::Resolver>>,
        inherited: Arc<Inherited>,
    ) -> Self {
        Enrollments {
            dns,
            inherited,
            frozen: AtomicBool::new(false),
            certs: mesh.certs.clone(),
            trust_domain: trust_domain.to_owned(),
            capture,
            outbound,
            metrics: Arc::clone(&mesh.metrics),
            mesh,
            state_file: state_dir.join("enrollments.json"),
            enrolled: Mutex::new(BTreeMap::new()),
            snapshot: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Enrolls again what the state file lists (a restart), and removes from the
    /// kernel's enrolled map every namespace that is not served any more.
    pub async fn restore(&self) {
        let state: State = match std::fs::read(&self.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.state_file.display(), error = %e, "ignoring unreadable enrollment state");
                State::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                tracing::warn!(file = %self.state_file.display(), error = %e, "ignoring unreadable enrollment state");
                State::default()
            }
        };
        for StateEntry {
            netns: path,
            workload,
        } in state.enrollments
        {
            match self.enroll(&path, workload).await {
                Ok(e) => {
                    tracing::info!(netns = %path.display(), cookie = e.cookie, "enrollment restored")
                }
                Err(e) => {
                    tracing::warn!(netns = %path.display(), error = %e, "enrollment not restored")
                }
            }
        }
        let served: Vec<u64> = self
            .enrolled
            .lock()
            .await
            .values()
            .map(|e| e.netns.cookie())
            .collect();
        for cookie in self.capture.enrolled_cookies() {
            if served.contains(&cookie) {
                continue;
            }
            if let Err(e) = self.capture.unenroll(cookie) {
                tracing::warn!(cookie, error = %e, "removing a stale enrollment failed");
            }
        }
        // Inbound links and addresses of namespaces nobody serves any more.
        for cookie in self.capture.inbound_link_cookies() {
            if !served.contains(&cookie)
                && let Err(e) = self.capture.detach_inbound(cookie)
            {
                tracing::warn!(cookie, error = %e, "removing a stale inbound link failed");
            }
        }
        let steered: Vec<IpAddr> = self
            .enrolled
            .lock()
            .await
            .values()
            .flat_map(|e| e.inbound.iter().flat_map(|(_, a)| a.iter().copied()))
            .collect();
        for addr in self.capture.inbound_addrs() {
            if !steered.contains(&addr)
                && let Err(e) = self.capture.unsteer_inbound(addr)
            {
                tracing::warn!(%addr, error = %e, "removing a stale inbound address failed");
            }
        }
        if let Err(e) = self.save(&*self.enrolled.lock().await) {
            tracing::warn!(error = %e, "saving enrollment state failed");
        }
    }

    pub async fn enroll(
        &self,
        path: &Path,
        workload: Option<WorkloadRef>,
    ) -> Result<Enrollment, Error> {
        let identity = workload
            .as_ref()
            .map(|w| Identity::new(&self.trust_domain, &w.namespace, &w.service_account))
            .transpose()
            .map_err(|e| Error::InvalidWorkload {
                detail: e.to_string(),
            })?;
        let (file, id) = netns::open(path)?;
        let mut enrolled = self.enrolled.lock().await;
        if self.frozen.load(Ordering::Acquire) {
            return Err(Error::HandingOver);
        }
        if let Some(existing) = enrolled.get(&id) {
            return Err(Error::AlreadyEnrolled {
                path: path.to_owned(),
                existing: existing.netns.path().to_owned(),
            });
        }
        let netns = Arc::new(Netns::enter(path).await?);
        // The certificate is fetched from now on, before the first connection needs it.
        let certs = match (&self.certs, &identity) {
            (Some(certs), Some(id)) => {
                certs.acquire(id);
                Some(certs.clone())
            }
            _ => None,
        };
        let addresses = netns.addresses().await?;
        let inbound = identity.is_some() && self.mesh.certs.is_some();
        let client_address = inbound
            && self.mesh.client_address
            && {
                match netns.install_client_address().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(netns = %path.display(), error = %e, "the application will see the pod's own address as its peer");
                        false
                    }
                }
            };
        let pod = Arc::new(Pod {
            netns: Arc::clone(&netns),
            workload: workload.clone(),
            identity: identity.clone(),
            addresses: addresses.clone(),
            client_address,
        });
        let mut entry = Enrolled {
            netns: Arc::clone(&netns),
            listeners: Vec::new(),
            sockets: Vec::new(),
            accept_tasks: Vec::new(),
            workload,
            identity,
            certs,
            inbound: None,
        };
        let outbound = Arc::clone(&self.outbound);
        let pod_ = Arc::clone(&pod);
        let inherited = &*self.inherited;
        entry
            .listen_pair(agent_common::OUTBOUND_PORT, true, inherited, move |l| {
                tokio::spawn(Arc::clone(&outbound).serve(Arc::clone(&pod_), l))
            })
            .await?;
        // With an identity the pod is in the mesh both ways: HBONE in, and plaintext
        // in steered to the agent.
        if inbound {
            let (mesh, pod_) = (Arc::clone(&self.mesh), Arc::clone(&pod));
            entry
                .listen_pair(agent_common::HBONE_PORT, false, inherited, move |l| {
                    tokio::spawn(crate::inbound::serve_hbone(
                        Arc::clone(&mesh),
                        Arc::clone(&pod_),
                        l,
                    ))
                })
                .await?;
            let (mesh, pod_) = (Arc::clone(&self.mesh), Arc::clone(&pod));
            let plaintext = entry
                .listen_pair(
                    agent_common::INBOUND_PLAINTEXT_PORT,
                    true,
                    inherited,
                    move |l| {
                        tokio::spawn(crate::inbound::serve_plaintext(
                            Arc::clone(&mesh),
                            Arc::clone(&pod_),
                            l,
                        ))
                    },
                )
                .await?;
            let (link, attachment) = self.capture.attach_inbound(netns.cookie(), &file)?;
            let mut steered = Vec::new();
            for addr in &addresses {
                let Some(fd) = plaintext
                    .iter()
                    .find(|(a, _)| a.is_ipv4() == addr.is_ipv4())
                else {
                    continue;
                };
                self.capture.steer_inbound(*addr, &fd.1)?;
                steered.push(*addr);
            }
            tracing::info!(netns = %path.display(), ?attachment, addresses = ?steered, "inbound capture ready");
            self.mesh.local.insert(&pod, &steered);
            entry.inbound = Some((link, steered));
        }
        let dns = match &self.dns {
            Some(resolver) => {
                let namespace = entry
                    .workload
                    .as_ref()
                    .map_or_else(|| "default".to_owned(), |w| w.namespace.clone());
                entry.resolve(resolver, &namespace, inherited).await?
            }
            None => false,
        };
        self.capture.enroll(netns.cookie(), dns)?;
        let report = entry.report();
        enrolled.insert(id, entry);
        self.metrics.enrolled_namespaces.set(enrolled.len() as i64);
        if let Err(e) = self.save(&enrolled) {
            // Keep the kernel and the registry in step: undo.
            let _ = self.capture.unenroll(netns.cookie());
            enrolled.remove(&id);
            self.publish(&enrolled);
            self.metrics.enrolled_namespaces.set(enrolled.len() as i64);
            return Err(e);
        }
        tracing::info!(netns = %path.display(), cookie = report.cookie, "enrolled");
        Ok(report)
    }

    pub async fn unenroll(&self, path: &Path) -> Result<Enrollment, Error> {
        let mut enrolled = self.enrolled.lock().await;
        if self.frozen.load(Ordering::Acquire) {
            return Err(Error::HandingOver);
        }
        // The path may be gone already (a deleted pod); then match it by name.
        let id = match netns::open(path) {
            Ok((_, id)) if enrolled.contains_key(&id) => Some(id),
            _ => enrolled
                .iter()
                .find(|(_, e)| e.netns.path() == path)
                .map(|(id, _)| *id),
        };
        let Some(id) = id else {
            return Err(Error::NotEnrolled {
                path: path.to_owned(),
            });
        };
        let cookie = enrolled[&id].netns.cookie();
        self.capture.unenroll(cookie)?;
        if let Some((_, addrs)) = &enrolled[&id].inbound {
            for addr in addrs {
                self.capture.unsteer_inbound(*addr)?;
            }
            self.capture.detach_inbound(cookie)?;
        }
        let entry = enrolled.remove(&id).expect("present: looked up above");
        if let Some((_, addrs)) = &entry.inbound {
            self.mesh.local.remove(addrs);
            if self.mesh.client_address
                && let Err(e) = entry.netns.remove_client_address().await
            {
                tracing::warn!(netns = %path.display(), error = %e, "removing the client-address routing failed");
            }
        }
        let report = entry.report();
        drop(entry);
        self.metrics.enrolled_namespaces.set(enrolled.len() as i64);
        self.save(&enrolled)?;
        tracing::info!(netns = %path.display(), cookie, "unenrolled");
        Ok(report)
    }

    /// The identities whose certificates are held now (empty without a control plane).
    pub fn managed_identities(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .certs
            .iter()
            .flat_map(|c| c.managed())
            .map(|id| id.to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The enrollment of the namespace at `path` (by the namespace itself, else by the
    /// path it was enrolled under, when that is gone).
    pub async fn find(&self, path: &Path) -> Option<Enrollment> {
        let enrolled = self.enrolled.lock().await;
        let by_id = netns::open(path).ok().and_then(|(_, id)| enrolled.get(&id));
        by_id
            .or_else(|| enrolled.values().find(|e| e.netns.path() == path))
            .map(Enrolled::report)
    }

    /// The workload of each enrollment that named one, with its namespace's path.
    pub fn workloads(&self) -> Vec<(PathBuf, WorkloadRef)> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        snapshot
            .iter()
            .map(|(w, e)| (e.netns.clone(), w.clone()))
            .collect()
    }

    pub async fn list(&self) -> Vec<Enrollment> {
        self.enrolled
            .lock()
            .await
            .values()
            .map(Enrolled::report)
            .collect()
    }

    /// Stops accepting everywhere (drain) and closes this agent's listeners: new
    /// connections are refused, unless a successor holds them now. Enrollments stay
    /// in the kernel map and the state file, so the next agent picks them up.
    pub async fn stop_accepting(&self) {
        for entry in self.enrolled.lock().await.values_mut() {
            for task in &entry.accept_tasks {
                task.abort();
            }
            entry.sockets.clear();
        }
    }

    /// Freezes the enrollments for a successor and gives it a duplicate of every
    /// listening socket. Blocks: for the handoff thread, outside the runtime.
    pub fn freeze_and_give(&self) -> Vec<(Key, OwnedFd)> {
        let enrolled = self.enrolled.blocking_lock();
        self.frozen.store(true, Ordering::Release);
        let mut out = Vec::new();
        for entry in enrolled.values() {
            for (key, fd) in &entry.sockets {
                match fd.try_clone() {
                    Ok(dup) => out.push((key.clone(), dup)),
                    Err(e) => tracing::warn!(?key, error = %e, "duplicating a listener failed"),
                }
            }
        }
        out
    }

    /// The successor did not take over: enrollments change again.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::Release);
    }

    /// The enrollment of the workload `namespace/name`, as of the last change (its
    /// certificate's state as of now).
    pub fn of_workload(&self, namespace: &str, name: &str) -> Option<Enrollment> {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let (_, e) = snapshot
            .iter()
            .find(|(w, _)| w.namespace == namespace && w.name == name)?;
        let mut e = e.clone();
        if let (Some(certs), Some(id)) = (&self.certs, &e.identity)
            && let Ok(id) = id.parse::<Identity>()
        {
            e.certificate = Some(certificate_state(certs, &id).to_owned());
        }
        Some(e)
    }

    /// Where certificates are managed (none without a control plane).
    pub fn certs(&self) -> Option<&CertManager> {
        self.certs.as_ref()
    }

    /// Makes the snapshot what `enrolled` is.
    fn publish(&self, enrolled: &BTreeMap<NetnsId, Enrolled>) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = enrolled
            .values()
            .filter_map(|e| Some((e.workload.clone()?, e.report())))
            .collect();
    }

    fn save(&self, enrolled: &BTreeMap<NetnsId, Enrolled>) -> Result<(), Error> {
        self.publish(enrolled);
        let state = State {
            enrollments: enrolled
                .values()
                .map(|e| StateEntry {
                    netns: e.netns.path().to_owned(),
                    workload: e.workload.clone(),
                })
                .collect(),
        };
        let err = |source| Error::State {
            path: self.state_file.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| err(io::Error::other(e)))?;
        let tmp = self.state_file.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(err)?;
        std::fs::rename(&tmp, &self.state_file).map_err(err)
    }
}
