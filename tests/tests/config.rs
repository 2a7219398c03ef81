//! Configuration distribution end to end in local mode, in one process on loopback: a
//! real control plane following a folder, and the agent's real subscription.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use agent::{
    discovery::{self, Config},
    identity::{CaSettings, CertManager},
};
use tokio::sync::watch;

const NS: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {weft.dev/mesh: enabled}}\n";

fn workload(name: &str, node: &str, addr: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {{name: {name}, namespace: shop, labels: {{app: cart}}}}\n\
         spec: {{serviceAccount: cart, node: {node}, addresses: [{addr}]}}\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\n\
                       spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{port: 80, targetPort: 8080}]}\n";

struct Folder {
    root: PathBuf,
    token: String,
}

impl Folder {
    fn new() -> Self {
        let root = std::env::temp_dir().join(tests::unique("cfg"));
        std::fs::create_dir_all(root.join("config")).unwrap();
        let token = controlplane::auth::new_token();
        std::fs::write(root.join("tokens.yaml"), format!("node-1: {token}\n")).unwrap();
        Folder { root, token }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.root.join("config").join(file), text).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.root.join("config").join(file)).unwrap();
    }

    fn config(&self, listen: &str) -> controlplane::config::Config {
        tests::control_plane_config(&self.root, listen, &[])
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn names(keys: impl Iterator<Item = (String, String, String)>) -> BTreeSet<String> {
    keys.map(|(_, ns, n)| format!("{ns}/{n}")).collect()
}

fn workloads(c: &Config) -> BTreeSet<String> {
    names(c.workloads.keys().cloned())
}

/// Waits until the subscriber's configuration satisfies `f` (at most 10 s).
async fn until(
    rx: &mut watch::Receiver<Arc<Config>>,
    what: &str,
    f: impl Fn(&Config) -> bool,
) -> Arc<Config> {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        Arc::clone(&rx.wait_for(|c| f(c)).await.unwrap())
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", rx.borrow()))
}

async fn acked(cp: &controlplane::Running, version: u64) -> Duration {
    let start = Instant::now();
    while cp
        .hub
        .subscribers()
        .get("node-1")
        .is_none_or(|s| s.acked < version)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no ACK for {version}: {:?}",
            cp.hub.subscribers()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn folder_changes_reach_the_agent_and_bad_files_change_nothing() {
    let folder = Folder::new();
    folder.write("ns.yaml", NS);
    folder.write("svc.yaml", SERVICE);
    folder.write(
        "workloads.yaml",
        &format!(
            "{}---\n{}",
            workload("cart-1", "node-1", "10.244.1.3"),
            workload("cart-9", "node-2", "10.244.2.9")
        ),
    );
    let cp = controlplane::start(folder.config("127.0.0.1:0"))
        .await
        .unwrap();
    let addr = cp.addr;
    assert!(cp.problems().is_empty(), "{:?}", cp.problems());
    let certs = CertManager::new(CaSettings {
        address: cp.addr.to_string(),
        server_name: "weft-controlplane".into(),
        ca_pem: cp.trust_bundle_pem.clone(),
        token: folder.token.clone(),
        trust_domain: "cluster.local".into(),
        lifetime: None,
        backoff_initial: Duration::from_millis(500),
        backoff_max: Duration::from_secs(2),
    })
    .unwrap();
    let (mut rx, task) = discovery::subscribe(discovery::Subscription {
        channel: certs.channel(),
        token: folder.token.clone(),
        node: String::new(),
        waypoint: None,
        trust_domain: "cluster.local".into(),
        backoff_max: Duration::from_secs(2),
        check: None,
    });

    // The snapshot: this node's workloads only, every service.
    let c = until(&mut rx, "the snapshot", |c| c.version > 0).await;
    assert_eq!(workloads(&c), BTreeSet::from(["shop/cart-1".to_owned()]));
    assert_eq!(
        names(c.services.keys().cloned()),
        BTreeSet::from(["shop/cart".to_owned()])
    );
    let svc = c.services.values().next().unwrap();
    assert_eq!(svc.endpoints.len(), 2, "endpoints on both nodes");
    acked(&cp, c.version).await;

    // A new file: the agent receives the workload.
    let t0 = Instant::now();
    folder.write("extra.yaml", &workload("cart-2", "node-1", "10.244.1.4"));
    let c = until(&mut rx, "cart-2", |c| workloads(c).contains("shop/cart-2")).await;
    acked(&cp, c.version).await;
    eprintln!("file change → ACK: {:?}", t0.elapsed());

    // Removed: the agent sees the removal.
    folder.remove("extra.yaml");
    let c = until(&mut rx, "cart-2's removal", |c| {
        !workloads(c).contains("shop/cart-2")
    })
    .await;
    let good_version = c.version;

    // A broken file changes nothing and names its field.
    folder.write(
        "workloads.yaml",
        &format!(
            "{}---\n{}",
            workload("cart-1", "node-1", "10.244.1.300"),
            workload("cart-9", "node-2", "10.244.2.9")
        ),
    );
    let start = Instant::now();
    while cp.problems().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the broken file was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let problems = cp.problems();
    assert_eq!(problems[0].path, "spec.addresses[0]", "{problems:?}");
    // … and it is visible in the status file, next to the version in force.
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.root.join("state/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        status["problems"][0]["path"], "spec.addresses[0]",
        "{status}"
    );
    assert_eq!(status["version"], good_version, "{status}");
    assert!(problems[0].origin.source.ends_with("workloads.yaml"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = rx.borrow().clone();
    assert_eq!(c.version, good_version, "a bad file must not be pushed");
    let cart1 = &c.workloads[&("Workload".into(), "shop".into(), "cart-1".into())];
    assert_eq!(
        cart1.addresses,
        vec!["10.244.1.3".parse::<std::net::IpAddr>().unwrap()]
    );

    // A burst of edits becomes few pushes.
    let before = rx.borrow().updates;
    for i in 0..10 {
        folder.write(
            &format!("burst-{i}.yaml"),
            &workload(
                &format!("b-{i}"),
                "node-1",
                &format!("10.244.1.{}", 100 + i),
            ),
        );
    }
    let c = until(&mut rx, "the burst", |c| {
        (0..10).all(|i| workloads(c).contains(&format!("shop/b-{i}")))
    })
    .await;
    assert!(
        c.updates - before <= 2,
        "{} pushes for one burst",
        c.updates - before
    );

    // The control plane restarts; the subscriber reconnects and converges.
    let expected = workloads(&c);
    cp.stop().await;
    let cp = controlplane::start(folder.config(&addr.to_string()))
        .await
        .unwrap();
    let new_version = cp.hub.version();
    let c = until(&mut rx, "convergence after the restart", |c| {
        c.version >= new_version
    })
    .await;
    assert_eq!(workloads(&c), expected);
    acked(&cp, c.version).await;
    assert!(cp.hub.subscribers()["node-1"].connected);

    task.abort();
    cp.stop().await;
}

/// POSTs an AdmissionReview to the webhook over TLS (verifying its certificate against
/// the CA root) and returns the review that comes back.
async fn admit(cp: &controlplane::Running, object: serde_json::Value) -> serde_json::Value {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cp.trust_bundle_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(cp.webhook_addr.unwrap())
        .await
        .unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("weft-controlplane").unwrap(), tcp)
        .await
        .unwrap();
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1",
            "kind": {"group": "weft.dev", "version": "v1alpha1", "kind": "Workload"},
            "resource": {"group": "weft.dev", "version": "v1alpha1", "resource": "workloads"},
            "operation": "CREATE",
            "userInfo": {},
            "object": object,
        },
    }))
    .unwrap();
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: weft-controlplane\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8(answer).unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn the_admission_webhook_applies_the_same_validation() {
    let folder = Folder::new();
    folder.write("ns.yaml", NS);
    let cp = controlplane::start(folder.config("127.0.0.1:0"))
        .await
        .unwrap();
    let good: serde_json::Value = serde_json::json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "vm-1", "namespace": "shop"},
        "spec": {"node": "node-1", "addresses": ["10.0.0.5"]},
    });
    let out = admit(&cp, good.clone()).await;
    assert_eq!(out["response"]["allowed"], true, "{out}");
    let mut bad = good;
    bad["spec"]["addresses"][0] = "10.0.0.500".into();
    bad["metadata"]["namespace"] = "nowhere".into();
    let out = admit(&cp, bad).await;
    assert_eq!(out["response"]["allowed"], false, "{out}");
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.addresses[0]: "), "{message}");
    assert!(
        message.contains("metadata.namespace: namespace \"nowhere\" is not declared"),
        "{message}"
    );
    cp.stop().await;
}
