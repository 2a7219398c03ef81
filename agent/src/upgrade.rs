//! A hitless upgrade, both sides of it (the sockets travel as `handoff.rs` says).
//!
//! The running agent, when a successor connects: pauses its admin API and the CNI
//! reconciliation, freezes the enrollments and gives every listening socket it has.
//! When the successor says `ready`, it stops accepting and drains its open
//! connections, as on SIGTERM; if the successor goes away first, it carries on.
//!
//! The successor: takes the sockets before it opens anything, restores the
//! enrollments with them, and says `ready` once its configuration is here and the
//! certificates of its pods are issued, so that no connection it takes waits on them.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use socket2::Socket;
use tokio::{runtime::Handle, sync::Notify, task::JoinHandle};

use crate::{
    enroll::Enrollments,
    handoff::{Conn, Inherited, Key},
    mesh::Mesh,
};

/// How long each side waits for the other's next message. The successor's `ready`
/// waits on the control plane (configuration, certificates).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the successor waits for each certificate before it says `ready` anyway.
const CERTIFICATE_WAIT: Duration = Duration::from_secs(20);

/// A task stopped while a successor takes over, and started again if it does not.
pub struct Pausable {
    runtime: Handle,
    start: Box<dyn Fn() -> JoinHandle<()> + Send + Sync>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Pausable {
    /// Starts the task now; call from within the runtime.
    pub fn start(start: impl Fn() -> JoinHandle<()> + Send + Sync + 'static) -> Arc<Pausable> {
        let p = Pausable {
            runtime: Handle::current(),
            start: Box::new(start),
            task: Mutex::new(None),
        };
        p.resume();
        Arc::new(p)
    }

    pub fn pause(&self) {
        if let Some(task) = self.lock().take() {
            task.abort();
        }
    }

    pub fn resume(&self) {
        let _runtime = self.runtime.enter();
        let mut task = self.lock();
        if task.is_none() {
            *task = Some((self.start)());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the running agent gives a successor.
pub struct Giver {
    pub enrollments: Arc<Enrollments>,
    /// The agent's own listeners: the admin socket, metrics, readiness, and the
    /// handoff socket itself.
    pub own: Vec<(Key, OwnedFd)>,
    /// Stopped during the exchange: what could change the enrollments.
    pub paused: Vec<Arc<Pausable>>,
    /// Notified once a successor serves.
    pub handed_over: Arc<Notify>,
}

/// Waits for successors on `listener`, on a thread of its own, until one takes over.
pub fn serve(listener: Socket, giver: Giver) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("weft-handoff".into())
        .spawn(move || {
            loop {
                let conn = match Conn::accept(&listener, EXCHANGE_TIMEOUT) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "handoff accept failed");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                if give(&conn, &giver) {
                    giver.handed_over.notify_one();
                    return;
                }
            }
        })
        .map(drop)
}

/// One exchange; `true` when the successor took over.
fn give(conn: &Conn, giver: &Giver) -> bool {
    tracing::info!("a new agent asks for the listeners: handing them over");
    for p in &giver.paused {
        p.pause();
    }
    let mut sockets = giver.enrollments.freeze_and_give();
    for (key, fd) in &giver.own {
        match fd.try_clone() {
            Ok(dup) => sockets.push((key.clone(), dup)),
            Err(e) => tracing::warn!(?key, error = %e, "duplicating a listener failed"),
        }
    }
    let count = sockets.len();
    let sent = conn.give(&sockets);
    // The descriptors in flight are the kernel's now; these duplicates can go.
    drop(sockets);
    let outcome = sent.and_then(|()| conn.wait_ready());
    match outcome {
        Ok(true) => {
            tracing::info!(
                sockets = count,
                "the new agent serves: no longer accepting, draining"
            );
            true
        }
        Ok(false) => {
            tracing::warn!("the new agent went away before it served; carrying on");
            resume(giver);
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "handing over failed; carrying on");
            resume(giver);
            false
        }
    }
}

fn resume(giver: &Giver) {
    giver.enrollments.thaw();
    for p in &giver.paused {
        p.resume();
    }
}

/// The successor's side: the sockets of the agent running now, if one runs, and the
/// connection to say `ready` on.
pub async fn take_over(path: &Path) -> (Option<Conn>, Arc<Inherited>) {
    let path: PathBuf = path.to_owned();
    let taken = tokio::task::spawn_blocking(move || {
        let Some(conn) = Conn::connect(&path, EXCHANGE_TIMEOUT)? else {
            return Ok(None);
        };
        let sockets = conn.receive()?;
        Ok::<_, std::io::Error>(Some((conn, sockets)))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match taken {
        Ok(Some((conn, sockets))) => {
            tracing::info!(
                sockets = sockets.len(),
                "took over the listeners of the running agent"
            );
            (Some(conn), Arc::new(sockets))
        }
        Ok(None) => (None, Arc::default()),
        Err(e) => {
            // The running agent resumes when the exchange breaks; this one binds anew
            // (and fails to where the other still listens).
            tracing::warn!(error = %e, "taking over from the running agent failed");
            (None, Arc::default())
        }
    }
}

/// Says `ready` to the previous agent once this one can serve what it took.
pub async fn ready(conn: Conn, mesh: Arc<Mesh>) {
    mesh.configured().await;
    if let Some(certs) = &mesh.certs {
        for id in certs.managed() {
            if let Err(e) = certs.ready(&id, CERTIFICATE_WAIT).await {
                tracing::warn!(identity = %id, error = %e, "no certificate yet; serving anyway");
            }
        }
    }
    let said = tokio::task::spawn_blocking(move || conn.ready())
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match said {
        Ok(()) => tracing::info!("serving; the previous agent drains"),
        Err(e) => {
            tracing::error!(error = %e, "the previous agent did not hear `ready`; both serve")
        }
    }
}
