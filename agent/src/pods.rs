//! The pods of this node as the container runtime announces them through the Weft CNI
//! plugin, and their place in the mesh.
//!
//! On ADD the agent decides from the control plane's configuration: the namespace's
//! `weft.dev/mesh` label and the pod's own Workload (its service account, its opt-out).
//! A pod of an enrolled namespace is enrolled before ADD returns, so the runtime starts
//! its containers only once capture is in place. While the answer cannot be known (no
//! configuration yet, or the pod's Workload has not reached this agent) ADD waits up to
//! a deadline and then fails as "try again later", and the runtime retries.
//!
//! Every pod announced is recorded (`pods.json`), in the mesh or not, so that a change
//! of its namespace's label later enrolls or unenrolls it. Pods that ran before the
//! plugin was installed are found by address (see [`found`]). What the agent last knew
//! of each namespace is written next to its admin socket for the plugin, which decides
//! from it when the agent does not answer.

pub mod found;

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use api::admin::{CniAnswer, CniRequest, NamespaceRecord, WorkloadRef};
use tokio::sync::{Mutex, watch};

use crate::{
    discovery::Config,
    enroll::{self, Enrollments},
};

/// How long ADD waits for the configuration to say what a pod is.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Malformed(String),
    /// The answer cannot be known yet; the runtime should retry.
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error(transparent)]
    Enroll(#[from] enroll::Error),
    #[error("writing {path} failed: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::NotReady(_) => "not_ready",
            Error::Inconsistent(_) => "inconsistent",
            Error::Enroll(e) => e.reason(),
            Error::State { .. } => "state",
        }
    }
}

/// A pod the runtime announced, or one found by its address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    netns: PathBuf,
    namespace: String,
    pod: String,
    /// Found in /proc rather than announced: no DEL will come, so it is forgotten when
    /// its Workload goes.
    #[serde(default)]
    found: bool,
}

/// What the configuration says of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Mesh(WorkloadRef),
    Outside(String),
    Unknown(String),
}

/// Decides from `config` whether the pod `namespace/pod` belongs in the mesh.
pub fn decide(config: &Config, namespace: &str, pod: &str) -> Want {
    if config.version == 0 {
        return Want::Unknown("the agent has no configuration from the control plane yet".into());
    }
    if config.namespaces.get(namespace) != Some(&true) {
        return Want::Outside(format!("namespace {namespace} is not in the mesh"));
    }
    let key = ("Workload".to_owned(), namespace.to_owned(), pod.to_owned());
    match config.workloads.get(&key) {
        None => Want::Unknown(format!(
            "pod {namespace}/{pod} has not reached this node's agent from the control plane yet"
        )),
        Some(w) if !w.enrolled => Want::Outside(format!(
            "pod {namespace}/{pod} opts out of the mesh (weft.dev/mesh: disabled)"
        )),
        Some(w) => Want::Mesh(WorkloadRef {
            namespace: namespace.to_owned(),
            name: pod.to_owned(),
            service_account: w.identity.service_account().to_owned(),
        }),
    }
}

pub struct Pods {
    enrollments: Arc<Enrollments>,
    config: watch::Receiver<Arc<Config>>,
    wait: Duration,
    records_file: PathBuf,
    namespaces_file: PathBuf,
    /// By container id (`found:<namespace>/<pod>` for found pods). ADD, DEL and the
    /// reconciliation hold it while they change enrollments.
    records: Mutex<BTreeMap<String, Record>>,
    /// What `namespaces_file` says now (written again only when that changes).
    written: std::sync::Mutex<Option<BTreeMap<String, bool>>>,
}

impl Pods {
    /// `state_dir` holds the records; `admin_dir` (the admin socket's folder) the
    /// namespaces for the plugin.
    pub fn new(
        enrollments: Arc<Enrollments>,
        config: watch::Receiver<Arc<Config>>,
        state_dir: &Path,
        admin_dir: &Path,
        wait: Duration,
    ) -> Self {
        let records_file = state_dir.join("pods.json");
        let records = match std::fs::read(&records_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %records_file.display(), error = %e, "ignoring unreadable pod records");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Pods {
            enrollments,
            config,
            wait,
            records_file,
            namespaces_file: admin_dir.join(api::admin::NAMESPACE_RECORD),
            records: Mutex::new(records),
            written: std::sync::Mutex::new(None),
        }
    }

    /// CNI ADD: records the pod and enrolls it when it belongs in the mesh.
    pub async fn add(&self, req: CniRequest) -> Result<CniAnswer, Error> {
        if req.container_id.is_empty() {
            return Err(Error::Malformed("containerId is empty".into()));
        }
        if !req.netns.is_absolute() {
            return Err(Error::Malformed(format!(
                "netns {:?} is not an absolute path",
                req.netns
            )));
        }
        let (Some(namespace), Some(pod)) = (req.namespace.clone(), req.pod.clone()) else {
            return Ok(answer(
                false,
                "the runtime did not name the pod (K8S_POD_NAMESPACE, K8S_POD_NAME)".into(),
                None,
            ));
        };
        let want = self.wait_for_answer(&namespace, &pod).await;
        if let Want::Unknown(reason) = want {
            return Err(Error::NotReady(reason));
        }
        let mut records = self.records.lock().await;
        let record = Record {
            netns: req.netns.clone(),
            namespace,
            pod,
            found: false,
        };
        let answer = self.apply(&record, want).await?;
        records.insert(req.container_id, record);
        self.save(&records)?;
        Ok(answer)
    }

    /// CNI DEL: unenrolls the pod and forgets it. Nothing to do is no error.
    pub async fn del(&self, req: CniRequest) -> Result<CniAnswer, Error> {
        let mut records = self.records.lock().await;
        let netns = match records.remove(&req.container_id) {
            Some(r) => Some(r.netns),
            None => (!req.netns.as_os_str().is_empty()).then(|| req.netns.clone()),
        };
        let mut enrolled = false;
        if let Some(netns) = netns {
            match self.enrollments.unenroll(&netns).await {
                Ok(_) => enrolled = true,
                Err(enroll::Error::NotEnrolled { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.save(&records)?;
        let reason = if enrolled {
            "unenrolled"
        } else {
            "was not in the mesh"
        };
        Ok(answer(false, reason.into(), None))
    }

    /// CNI CHECK: the pod is known and enrolled exactly when the configuration says so.
    pub async fn check(&self, req: CniRequest) -> Result<CniAnswer, Error> {
        let records = self.records.lock().await;
        let Some(record) = records.get(&req.container_id) else {
            return Err(Error::Inconsistent(format!(
                "the agent has no record of container {}",
                req.container_id
            )));
        };
        let enrollment = self.enrollments.find(&record.netns).await;
        let config = Arc::clone(&self.config.borrow());
        match (decide(&config, &record.namespace, &record.pod), enrollment) {
            (Want::Unknown(reason), _) => Err(Error::NotReady(reason)),
            (Want::Mesh(_), Some(e)) => Ok(answer(true, "enrolled".into(), Some(e))),
            (Want::Mesh(_), None) => Err(Error::Inconsistent(format!(
                "pod {}/{} belongs in the mesh but {} is not enrolled",
                record.namespace,
                record.pod,
                record.netns.display()
            ))),
            (Want::Outside(reason), None) => Ok(answer(false, reason, None)),
            (Want::Outside(reason), Some(_)) => Err(Error::Inconsistent(format!(
                "{reason}, but {} is enrolled",
                record.netns.display()
            ))),
        }
    }

    /// Follows the configuration: writes what it says of namespaces for the plugin and
    /// brings every recorded pod in or out of the mesh as its labels say.
    pub async fn run(self: Arc<Self>) {
        let mut rx = self.config.clone();
        loop {
            let config = Arc::clone(&rx.borrow_and_update());
            if config.version > 0 {
                self.write_namespaces(&config);
                self.reconcile(&config).await;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }

    /// One pass of [`Pods::run`].
    pub async fn reconcile(&self, config: &Config) {
        let mut records = self.records.lock().await;
        let mut gone = Vec::new();
        for (id, record) in records.iter() {
            // A namespace that is gone (a pod whose DEL never came: the node went down
            // with it) leaves nothing to do but forget it.
            if crate::netns::open(&record.netns).is_err() {
                if let Err(e) = self.enrollments.unenroll(&record.netns).await
                    && !matches!(e, enroll::Error::NotEnrolled { .. })
                {
                    tracing::warn!(netns = %record.netns.display(), error = %e, "unenrolling a namespace that is gone failed");
                }
                gone.push(id.clone());
                continue;
            }
            let mut want = decide(config, &record.namespace, &record.pod);
            if record.found {
                // No DEL comes for a found pod: it leaves with its Workload.
                if let Want::Unknown(reason) = want {
                    want = Want::Outside(reason);
                }
                if matches!(want, Want::Outside(_)) {
                    gone.push(id.clone());
                }
            }
            if let Err(e) = self.apply(record, want).await {
                tracing::warn!(pod = %format!("{}/{}", record.namespace, record.pod), error = %e, "bringing a pod in line with its labels failed");
            }
        }
        for id in gone {
            records.remove(&id);
        }
        for (id, record) in found::unannounced(config, &records, &self.enrollments).await {
            match self
                .apply(&record, decide(config, &record.namespace, &record.pod))
                .await
            {
                Ok(_) => {
                    records.insert(id, record);
                }
                Err(e) => {
                    tracing::warn!(netns = %record.netns.display(), error = %e, "enrolling a pod found by its address failed")
                }
            }
        }
        if let Err(e) = self.save(&records) {
            tracing::warn!(error = %e, "saving pod records failed");
        }
    }

    /// Waits until the configuration can say what the pod is, or the deadline.
    async fn wait_for_answer(&self, namespace: &str, pod: &str) -> Want {
        let mut rx = self.config.clone();
        let known = tokio::time::timeout(
            self.wait,
            rx.wait_for(|c| !matches!(decide(c, namespace, pod), Want::Unknown(_))),
        )
        .await;
        match known {
            Ok(Ok(config)) => decide(&config, namespace, pod),
            _ => decide(&self.config.borrow(), namespace, pod),
        }
    }

    /// Makes the pod's enrollment what `want` says (an Unknown changes nothing).
    async fn apply(&self, record: &Record, want: Want) -> Result<CniAnswer, Error> {
        let current = self.enrollments.find(&record.netns).await;
        match want {
            Want::Unknown(reason) => Ok(answer(current.is_some(), reason, current)),
            Want::Mesh(workload) => {
                if let Some(e) = current {
                    return Ok(answer(true, "enrolled".into(), Some(e)));
                }
                let e = self
                    .enrollments
                    .enroll(&record.netns, Some(workload))
                    .await?;
                tracing::info!(pod = %format!("{}/{}", record.namespace, record.pod), netns = %record.netns.display(), "pod enrolled");
                let reason = format!("enrolled as {}", e.identity.as_deref().unwrap_or("-"));
                Ok(answer(true, reason, Some(e)))
            }
            Want::Outside(reason) => {
                if current.is_some() {
                    self.enrollments.unenroll(&record.netns).await?;
                    tracing::info!(pod = %format!("{}/{}", record.namespace, record.pod), %reason, "pod unenrolled");
                }
                Ok(answer(false, reason, None))
            }
        }
    }

    fn write_namespaces(&self, config: &Config) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.as_ref() == Some(&config.namespaces) {
            return;
        }
        let record = NamespaceRecord {
            version: config.version,
            namespaces: config.namespaces.clone(),
        };
        match write_atomic(&self.namespaces_file, &record) {
            Ok(()) => *written = Some(record.namespaces),
            Err(e) => {
                tracing::warn!(file = %self.namespaces_file.display(), error = %e, "writing the namespace record failed")
            }
        }
    }

    fn save(&self, records: &BTreeMap<String, Record>) -> Result<(), Error> {
        write_atomic(&self.records_file, records).map_err(|source| Error::State {
            path: self.records_file.clone(),
            source,
        })
    }
}

fn answer(enrolled: bool, reason: String, enrollment: Option<api::admin::Enrollment>) -> CniAnswer {
    CniAnswer {
        enrolled,
        reason,
        enrollment,
    }
}

/// Writes JSON whole or not at all.
fn write_atomic(path: &Path, value: &impl serde::Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
