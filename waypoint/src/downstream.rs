//! A tunnel's client and what it opened the tunnel for: who asks (for policies), the
//! source half of every metric label set the tunnel's requests and streams get, and
//! its requests in flight (for the idle timeout and the header deadline).

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::identity::Identity;
use dataplane::{
    policy,
    telemetry::{ConnectionLabels, Reporter},
};

use tokio::time::Instant;

use crate::view::{Target, View};

#[derive(Debug)]
pub struct Downstream {
    pub client: Identity,
    /// The client's workload (`namespace/name`), as its agent says in the CONNECT's
    /// baggage; for telemetry only, and only in the client identity's namespace.
    client_workload: Option<String>,
    /// The client's address (its pod's).
    pub peer: SocketAddr,
    pub target: Target,
    /// The tunnel's authority: the address the client asked for.
    pub authority: SocketAddr,
    pub activity: Activity,
    /// How the client reached the waypoint: `mutual_tls` (HBONE), or `none` for a
    /// gateway's clients from outside the mesh.
    pub security: &'static str,
}

impl Downstream {
    /// A tunnel from `client` at `peer` to `target`, asked for as `authority`, with the
    /// headers of its CONNECT request.
    pub fn new(
        client: Identity,
        peer: SocketAddr,
        (target, authority): (Target, SocketAddr),
        connect: &http::HeaderMap,
    ) -> Self {
        let client_workload = dataplane::hbone::baggage::get(connect, "weft.source.workload")
            .filter(|w| {
                w.split_once('/')
                    .is_some_and(|(ns, _)| ns == client.namespace())
            })
            .map(str::to_owned);
        Downstream {
            client,
            client_workload,
            peer,
            target,
            authority,
            activity: Activity::new(),
            security: "mutual_tls",
        }
    }

    /// A client from outside the mesh on a gateway listener at `local`. Into the mesh
    /// the gateway is the client: its identity is the one policies see and endpoints
    /// are reached with, and it is the source workload of the metrics.
    pub fn gateway(gateway: (&Identity, &str, &str), peer: SocketAddr, local: SocketAddr) -> Self {
        let (identity, namespace, name) = gateway;
        Downstream {
            client: identity.clone(),
            client_workload: Some(format!("{namespace}/{name}")),
            peer,
            target: Target::Gateway {
                key: ("Gateway".to_owned(), namespace.to_owned(), name.to_owned()),
                port: local.port(),
            },
            authority: local,
            activity: Activity::new(),
            security: "none",
        }
    }

    /// The client as policies see it.
    pub fn source(&self) -> policy::Source<'_> {
        policy::Source {
            identity: Some(&self.client),
            ip: self.peer.ip(),
        }
    }

    /// `(namespace, name)` of the client's workload, when known.
    pub fn client_workload(&self) -> Option<(&str, &str)> {
        self.client_workload.as_deref()?.split_once('/')
    }

    /// The labels of what this tunnel carries, with its source filled in: the
    /// client's principal and namespace, and its workload by the baggage, else by
    /// its address.
    pub fn labels(&self, view: &View) -> ConnectionLabels {
        let mut labels = ConnectionLabels {
            reporter: Reporter::Waypoint,
            source_workload_namespace: self.client.namespace().to_owned(),
            source_principal: self.client.to_string(),
            connection_security_policy: self.security,
            ..ConnectionLabels::default()
        };
        if let Some((_, name)) = self
            .client_workload()
            .or_else(|| view.workload_at(self.peer.ip()))
        {
            labels.source_workload = name.to_owned();
        }
        labels
    }
}

/// A tunnel's requests in flight (until their response bodies end), and since when it
/// has had none (on tokio's clock, which tests can pause): what its idle timeout
/// goes by.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    since: Mutex<Instant>,
    /// When the header section being awaited began: the connection's start, then the
    /// first byte that came while no request was in flight; `None` while a request is
    /// in flight or the connection waits idle for its next one.
    head_since: Mutex<Option<Instant>>,
    head_started: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Activity {
            active: AtomicUsize::new(0),
            since: Mutex::new(now),
            head_since: Mutex::new(Some(now)),
            head_started: tokio::sync::Notify::new(),
        }
    }

    /// A request's header section is in: it runs.
    /// (The request count changes under the `head_since` lock, so that a byte that
    /// arrives as a request starts never opens a deadline over it.)
    pub fn started(&self) {
        let mut head = self.head_since.lock().unwrap_or_else(|p| p.into_inner());
        *head = None;
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    pub fn ended(&self) {
        let mut head = self.head_since.lock().unwrap_or_else(|p| p.into_inner());
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Answered: the connection waits for its next request, idle.
            *head = None;
        }
    }

    /// Bytes came from the client. With no request in flight they begin the next
    /// request's header section, and its deadline.
    pub fn bytes_arrived(&self) {
        let mut head = self.head_since.lock().unwrap_or_else(|p| p.into_inner());
        if self.active.load(Ordering::Acquire) > 0 {
            return;
        }
        if head.is_none() {
            *head = Some(Instant::now());
            self.head_started.notify_waiters();
        }
    }

    /// Returns once a header section has been coming for longer than `timeout`. An idle
    /// connection (its last answer sent, nothing new) has no such deadline: the idle
    /// timeout is for it.
    pub async fn head_overdue(&self, timeout: Duration) {
        loop {
            let started = self.head_started.notified();
            let since = *self.head_since.lock().unwrap_or_else(|p| p.into_inner());
            match since {
                None => started.await,
                Some(t) => {
                    let wait = timeout.saturating_sub(t.elapsed());
                    if wait.is_zero() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Returns once the connection has had no request in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let wait = if self.active.load(Ordering::Acquire) > 0 {
                timeout
            } else {
                let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
                timeout.saturating_sub(since.elapsed())
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_requests_for_the_whole_timeout() {
        let idle = Arc::new(Activity::new());
        idle.started();
        let t = Duration::from_secs(10);
        let done = {
            let idle = Arc::clone(&idle);
            tokio::spawn(async move {
                let start = Instant::now();
                idle.idle_for(t).await;
                start.elapsed()
            })
        };
        // A request in flight for 25 s, then idle: 10 s more.
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(!done.is_finished());
        idle.ended();
        let took = done.await.unwrap();
        assert!(
            took >= Duration::from_secs(35) && took < Duration::from_secs(41),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_deadline_runs_from_the_start_or_a_first_byte_never_while_idle() {
        let a = Arc::new(Activity::new());
        let t = Duration::from_secs(2);
        let overdue = |a: &Arc<Activity>| {
            let a = Arc::clone(a);
            tokio::spawn(async move {
                let start = Instant::now();
                a.head_overdue(t).await;
                start.elapsed()
            })
        };
        // The first request must come within the timeout of the connection's start.
        assert_eq!(overdue(&a).await.unwrap(), t);

        // A request in flight, then answered: idle, with no deadline however long.
        a.started();
        let idle = overdue(&a);
        a.bytes_arrived(); // its body
        tokio::time::sleep(Duration::from_secs(5)).await;
        a.ended();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!idle.is_finished());

        // The next request's first byte starts the deadline.
        a.bytes_arrived();
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.bytes_arrived(); // more of the same header section: no new start
        let took = idle.await.unwrap();
        assert_eq!(took, Duration::from_secs(65) + t);

        // A header section that completes in time clears it.
        let a = Arc::new(Activity::new());
        let waiting = overdue(&a);
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.started();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiting.is_finished());
    }
}
