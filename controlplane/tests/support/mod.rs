//! What the control plane's integration tests share: a control plane following a folder
//! of its own on loopback, node tokens, and a subscriber that speaks the configuration
//! protocol as an agent or as a waypoint and keeps what it was sent.
#![allow(dead_code, reason = "each test binary uses a part of it")]

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use api::proto::config::{
    Ack, ConfigUpdate, Hello, Nack, Resource, SubscribeRequest, WaypointRef,
    config_service_client::ConfigServiceClient, subscribe_request::Request as Msg,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A control plane's folders: state, configuration (`config/`) and node tokens.
pub struct Folder {
    pub root: PathBuf,
    /// Node name → its bootstrap token.
    pub tokens: BTreeMap<String, String>,
}

impl Folder {
    pub fn new(nodes: &[&str]) -> Self {
        let root = std::env::temp_dir().join(format!(
            "weft-cp-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(root.join("config")).unwrap();
        let tokens: BTreeMap<String, String> = nodes
            .iter()
            .map(|n| ((*n).to_owned(), controlplane::auth::new_token()))
            .collect();
        let text: String = tokens.iter().map(|(n, t)| format!("{n}: {t}\n")).collect();
        std::fs::write(root.join("tokens.yaml"), text).unwrap();
        Folder { root, tokens }
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.root.join("config").join(file), text).unwrap();
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join("config").join(file)
    }

    pub fn token(&self, node: &str) -> String {
        self.tokens[node].clone()
    }

    /// The configuration of a control plane on loopback; `extra` adds or overrides
    /// variables. The webhook is off, and so are metrics unless asked for.
    pub fn config(&self, extra: &[(&str, &str)]) -> controlplane::config::Config {
        let mut env: std::collections::HashMap<String, String> = [
            (
                "WEFT_CP_STATE_DIR",
                self.root.join("state").display().to_string(),
            ),
            (
                "WEFT_CP_CONFIG_DIR",
                self.root.join("config").display().to_string(),
            ),
            (
                "WEFT_CP_NODE_TOKENS",
                self.root.join("tokens.yaml").display().to_string(),
            ),
            ("WEFT_CP_LISTEN", "127.0.0.1:0".to_owned()),
            ("WEFT_CP_WEBHOOK_LISTEN", "off".to_owned()),
            ("WEFT_CP_METRICS_LISTEN", "off".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        controlplane::config::Config::from_source(&env).expect("a valid test configuration")
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A TLS channel to the control plane's gRPC port.
pub async fn channel(cp: &controlplane::Running) -> tonic::transport::Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            &cp.trust_bundle_pem,
        ))
        .domain_name("weft-controlplane");
    tonic::transport::Channel::from_shared(format!("https://{}", cp.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `namespace/name` of a waypoint.
pub fn waypoint(namespace: &str, name: &str) -> Option<WaypointRef> {
    Some(WaypointRef {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// A subscription, and the resources it holds after applying every update it got.
pub struct Subscriber {
    requests: mpsc::Sender<SubscribeRequest>,
    updates: tonic::Streaming<ConfigUpdate>,
    /// `Kind namespace/name` → the resource.
    pub resources: BTreeMap<String, Resource>,
    pub version: u64,
    /// Every update received, in order.
    pub received: Vec<ConfigUpdate>,
}

impl Subscriber {
    /// Subscribes with `token`; `hello` says who the subscriber is and what it has.
    pub async fn connect(
        cp: &controlplane::Running,
        token: &str,
        hello: Hello,
    ) -> Result<Self, tonic::Status> {
        let (requests, rx) = mpsc::channel(8);
        requests
            .send(SubscribeRequest {
                request: Some(Msg::Hello(hello)),
            })
            .await
            .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let updates = ConfigServiceClient::new(channel(cp).await)
            .subscribe(request)
            .await?
            .into_inner();
        Ok(Subscriber {
            requests,
            updates,
            resources: BTreeMap::new(),
            version: 0,
            received: Vec::new(),
        })
    }

    /// Receives the next update (at most 10 s), applies it and ACKs it.
    pub async fn next(&mut self) -> Result<ConfigUpdate, tonic::Status> {
        let update = tokio::time::timeout(Duration::from_secs(10), self.updates.message())
            .await
            .expect("an update within 10 s")?
            .expect("the stream goes on");
        if update.snapshot {
            self.resources.clear();
        }
        for k in &update.removals {
            self.resources
                .remove(&format!("{} {}/{}", k.kind, k.namespace, k.name));
        }
        for r in &update.upserts {
            let k = r.key.as_ref().expect("every resource has its key");
            self.resources
                .insert(format!("{} {}/{}", k.kind, k.namespace, k.name), r.clone());
        }
        self.version = update.version;
        self.received.push(update.clone());
        self.ack(update.version).await;
        Ok(update)
    }

    /// Receives updates until `f` holds of what the subscriber has.
    pub async fn until(&mut self, what: &str, f: impl Fn(&Subscriber) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.next()
                .await
                .unwrap_or_else(|s| panic!("waiting for {what}: {s:?}"));
        }
    }

    pub async fn ack(&self, version: u64) {
        let _ = self
            .requests
            .send(SubscribeRequest {
                request: Some(Msg::Ack(Ack { version })),
            })
            .await;
    }

    pub async fn nack(&self, version: u64, reason: &str) {
        let _ = self
            .requests
            .send(SubscribeRequest {
                request: Some(Msg::Nack(Nack {
                    version,
                    reason: reason.into(),
                })),
            })
            .await;
    }

    /// The keys held, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.resources.keys().cloned().collect()
    }

    /// The keys held of one kind.
    pub fn of_kind(&self, kind: &str) -> Vec<String> {
        self.resources
            .keys()
            .filter(|k| k.split(' ').next() == Some(kind))
            .cloned()
            .collect()
    }
}

/// Waits (at most 10 s) until `f` holds of the control plane.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
