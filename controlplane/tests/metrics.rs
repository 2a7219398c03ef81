//! The metrics endpoint over HTTP: a control plane on loopback with its metrics listener,
//! subscribers that ACK and NACK, certificates issued and refused, a broken file; each
//! shows in what `GET /metrics` answers.

mod support;

use std::net::SocketAddr;

use api::{
    identity::Identity,
    proto::{
        ca::{CreateCertificateRequest, certificate_service_client::CertificateServiceClient},
        config::Hello,
    },
};
use support::{Folder, Subscriber};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CONFIG: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
spec: {serviceAccount: cart, node: node-1, addresses: [10.244.1.3]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{port: 80}]}
";

/// One HTTP/1.1 request; the status code and the body.
async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The value of the sample `name{labels}` (labels as the text has them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

async fn metrics(addr: SocketAddr) -> String {
    let (code, text) = get(addr, "GET", "/metrics").await;
    assert_eq!(code, 200, "{text}");
    text
}

#[tokio::test]
async fn metrics_tell_subscribers_pushes_acks_nacks_problems_and_certificates() {
    let folder = Folder::new(&["node-1", "node-2"]);
    folder.write("config.yaml", CONFIG);
    let cp = controlplane::start(folder.config(&[("WEFT_CP_METRICS_LISTEN", "127.0.0.1:0")]))
        .await
        .unwrap();
    let addr = cp.metrics_addr.expect("metrics are served");

    let text = metrics(addr).await;
    assert_eq!(
        sample(&text, "weft_controlplane_config_version"),
        Some(cp.hub.version() as f64)
    );
    assert_eq!(
        sample(
            &text,
            "weft_controlplane_config_subscribers{kind=\"agent\"}"
        ),
        None,
        "nobody has subscribed yet"
    );

    // An agent subscribes and ACKs its snapshot; another is refused.
    let mut agent = Subscriber::connect(&cp, &folder.token("node-1"), Hello::default())
        .await
        .unwrap();
    agent.next().await.unwrap();
    let refused = Subscriber::connect(&cp, "not-a-token", Hello::default()).await;
    assert!(refused.is_err());
    support::eventually("the ACK", || {
        cp.hub.subscribers()["node-1"].acked == agent.version
    })
    .await;
    let text = metrics(addr).await;
    for (series, value) in [
        ("weft_controlplane_config_subscribers{kind=\"agent\"}", 1.0),
        ("weft_controlplane_config_pushes_total{kind=\"agent\"}", 1.0),
        ("weft_controlplane_config_acks_total{kind=\"agent\"}", 1.0),
        (
            "weft_controlplane_config_push_ack_seconds_count{kind=\"agent\"}",
            1.0,
        ),
        (
            "weft_controlplane_config_subscriptions_refused_total{reason=\"unknown_token\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    let waited = sample(
        &text,
        "weft_controlplane_config_push_ack_seconds_sum{kind=\"agent\"}",
    )
    .unwrap();
    assert!(waited > 0.0 && waited < 10.0, "{waited}");

    // A change is pushed; the agent refuses it.
    folder.write(
        "more.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {name: cart-2, namespace: shop, labels: {app: cart}}\n\
         spec: {serviceAccount: cart, node: node-1, addresses: [10.244.1.4]}\n",
    );
    let update = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let u = agent.next().await.unwrap();
            if !u.upserts.is_empty() {
                return u;
            }
        }
    })
    .await
    .unwrap();
    agent
        .nack(update.version, "Workload shop/cart-2: not applied")
        .await;
    support::eventually("the NACK", || {
        cp.hub.subscribers()["node-1"].nacked.is_some()
    })
    .await;
    let text = metrics(addr).await;
    assert_eq!(
        sample(
            &text,
            "weft_controlplane_config_nacks_total{kind=\"agent\",reason=\"workload\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "weft_controlplane_config_version"),
        Some(cp.hub.version() as f64)
    );

    // A broken file: its problem is in force until it is fixed.
    folder.write(
        "broken.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
         metadata: {name: bad, namespace: shop}\n\
         spec: {node: node-1, addresses: [10.244.1.300]}\n",
    );
    support::eventually("the problem", || !cp.problems().is_empty()).await;
    let series = format!(
        "weft_controlplane_config_problems{{source=\"{}\"}}",
        folder.path("broken.yaml").display()
    );
    assert_eq!(sample(&metrics(addr).await, &series), Some(1.0));
    std::fs::remove_file(folder.path("broken.yaml")).unwrap();
    support::eventually("the problem gone", || cp.problems().is_empty()).await;
    assert_eq!(sample(&metrics(addr).await, &series), None);

    // Certificates: one issued to node-1 for cart, one refused to node-2.
    let mut ca = CertificateServiceClient::new(support::channel(&cp).await);
    let cart: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
    for node in ["node-1", "node-2"] {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut request = tonic::Request::new(CreateCertificateRequest {
            identity: cart.to_string(),
            csr_der: api::tls::workload_csr(&cart, &key).unwrap(),
            lifetime_seconds: 0,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", folder.token(node)).parse().unwrap(),
        );
        let answer = ca.create_certificate(request).await;
        assert_eq!(answer.is_ok(), node == "node-1", "{answer:?}");
    }
    let text = metrics(addr).await;
    assert_eq!(
        sample(&text, "weft_controlplane_certificates_issued_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "weft_controlplane_certificates_refused_total{reason=\"identity_not_on_node\"}"
        ),
        Some(1.0)
    );

    // The agent leaves.
    drop(agent);
    support::eventually("the agent gone", || {
        !cp.hub.subscribers()["node-1"].connected
    })
    .await;
    assert_eq!(
        sample(
            &metrics(addr).await,
            "weft_controlplane_config_subscribers{kind=\"agent\"}"
        ),
        Some(0.0)
    );

    // The status, and nothing else, is served too.
    let (code, body) = get(addr, "GET", "/debug/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["version"], cp.hub.version());
    assert_eq!(status["subscribers"]["node-1"]["kind"], "agent");
    assert_eq!(get(addr, "GET", "/").await.0, 404);
    assert_eq!(get(addr, "POST", "/metrics").await.0, 405);
    cp.stop().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off_and_a_port_asked_for_must_be_bound() {
    let folder = Folder::new(&["node-1"]);
    folder.write("config.yaml", CONFIG);
    let cp = controlplane::start(folder.config(&[("WEFT_CP_METRICS_LISTEN", "off")]))
        .await
        .unwrap();
    assert_eq!(cp.metrics_addr, None);
    cp.stop().await;

    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = controlplane::start(folder.config(&[("WEFT_CP_METRICS_LISTEN", &addr)]))
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("binding the metrics listener"),
        "{e:#}"
    );
}
