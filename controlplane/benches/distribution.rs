//! Configuration distribution at scale, on loopback in one process: a control plane
//! following a folder of 10,000 workloads on 1,000 nodes, and 1,000 subscribers (one
//! per node, over 20 TLS connections). Each round changes one Service (which every
//! agent receives) and measures the time from the file write to the last subscriber's
//! ACK (and, apart, from the new version being published to that ACK); it reports
//! p50/p99 over the rounds, the bytes pushed per change, and the process's memory.
//! Bounded: a fixed number of rounds, each with a deadline.
//!
//! `cargo bench -p controlplane --bench distribution [-- --nodes N --rounds R]`

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use api::proto::config::{
    Ack, Hello, SubscribeRequest, config_service_client::ConfigServiceClient,
    subscribe_request::Request as Msg,
};
use prost::Message as _;

const WORKLOADS_PER_NODE: usize = 10;
const SERVICES: usize = 100;
const CONNECTIONS: usize = 20;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn service(i: usize, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\n\
         spec: {{clusterIP: 10.96.{}.{}, selector: {{app: app-{i}}}, ports: [{{port: {port}, targetPort: 8080}}]}}\n---\n",
        i / 250,
        i % 250 + 1
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes = arg("--nodes", 1000);
    let rounds = arg("--rounds", 20);
    let root = std::env::temp_dir().join(format!("weft-bench-dist-{}", std::process::id()));
    let config_dir = root.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();

    let mut tokens = String::new();
    let mut token_list = Vec::new();
    for n in 0..nodes {
        let t = format!("token-{n:05}-{}", controlplane::auth::new_token());
        tokens.push_str(&format!("node-{n}: {t}\n"));
        token_list.push(t);
    }
    std::fs::write(root.join("tokens.yaml"), tokens).unwrap();
    let mut workloads = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench, labels: {weft.dev/mesh: enabled}}\n---\n",
    );
    for n in 0..nodes {
        for w in 0..WORKLOADS_PER_NODE {
            let i = n * WORKLOADS_PER_NODE + w;
            workloads.push_str(&format!(
                "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
                 metadata: {{name: w-{i}, namespace: bench, labels: {{app: app-{}}}}}\n\
                 spec: {{serviceAccount: sa-{}, node: node-{n}, addresses: [10.{}.{}.{}]}}\n---\n",
                i % SERVICES,
                i % 50,
                100 + i / 65_536,
                (i / 256) % 256,
                i % 256
            ));
        }
    }
    std::fs::write(config_dir.join("workloads.yaml"), workloads).unwrap();
    let services: String = (0..SERVICES).map(|i| service(i, 80)).collect();
    std::fs::write(config_dir.join("services.yaml"), &services).unwrap();

    let rss_before = rss_kib();
    let env: std::collections::HashMap<String, String> = [
        (
            "WEFT_CP_STATE_DIR",
            root.join("state").display().to_string(),
        ),
        ("WEFT_CP_CONFIG_DIR", config_dir.display().to_string()),
        (
            "WEFT_CP_NODE_TOKENS",
            root.join("tokens.yaml").display().to_string(),
        ),
        ("WEFT_CP_LISTEN", "127.0.0.1:0".to_owned()),
        ("WEFT_CP_WEBHOOK_LISTEN", "off".to_owned()),
        ("WEFT_CP_METRICS_LISTEN", "off".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let load_start = Instant::now();
    let cp = controlplane::start(controlplane::config::Config::from_source(&env).unwrap())
        .await
        .unwrap();
    let load = load_start.elapsed();
    let rss_cp = rss_kib();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            &cp.trust_bundle_pem,
        ))
        .domain_name("weft-controlplane");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            tonic::transport::Channel::from_shared(format!("https://{}", cp.addr))
                .unwrap()
                .tls_config(tls.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let bytes = Arc::new(AtomicU64::new(0));
    let connect_start = Instant::now();
    for (n, token) in token_list.iter().enumerate() {
        let channel = channels[n % CONNECTIONS].clone();
        let token = token.clone();
        let bytes = Arc::clone(&bytes);
        tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(SubscribeRequest {
                request: Some(Msg::Hello(Hello {
                    node: String::new(),
                    resume_from: 0,
                    waypoint: None,
                })),
            })
            .await
            .unwrap();
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let mut updates = ConfigServiceClient::new(channel)
                .subscribe(req)
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(u)) = updates.message().await {
                bytes.fetch_add(u.encoded_len() as u64, Ordering::Relaxed);
                if tx
                    .send(SubscribeRequest {
                        request: Some(Msg::Ack(Ack { version: u.version })),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    let all_acked = |version: u64| {
        let subs = cp.hub.subscribers();
        subs.len() == nodes && subs.values().all(|s| s.acked >= version)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_acked(cp.hub.version()) {
        assert!(
            Instant::now() < deadline,
            "subscribers did not all get the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect = connect_start.elapsed();
    let snapshot_bytes = bytes.swap(0, Ordering::Relaxed);
    let rss_all = rss_kib();

    let mut latencies = Vec::new();
    // From the new version being in the hub to the last ACK: the distribution's part,
    // without the folder's poll and settle or the reading and validation.
    let mut fan_out = Vec::new();
    let mut pushed = Vec::new();
    for round in 0..rounds {
        let before = cp.hub.version();
        bytes.store(0, Ordering::Relaxed);
        let text: String = (0..SERVICES)
            .map(|i| service(i, if i == 0 { 1000 + round as u16 } else { 80 }))
            .collect();
        let start = Instant::now();
        std::fs::write(config_dir.join("services.yaml"), text).unwrap();
        let deadline = start + Duration::from_secs(30);
        let mut published = None;
        loop {
            let v = cp.hub.version();
            if v > before && published.is_none() {
                published = Some(Instant::now());
            }
            if v > before && all_acked(v) {
                fan_out.push(published.map_or(Duration::ZERO, |p| p.elapsed()));
                break;
            }
            assert!(Instant::now() < deadline, "round {round} did not converge");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(start.elapsed());
        pushed.push(bytes.load(Ordering::Relaxed));
    }
    latencies.sort();
    fan_out.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let fan_out_pct = |p: f64| fan_out[((fan_out.len() - 1) as f64 * p).round() as usize];
    pushed.sort();
    println!("nodes/subscribers        {nodes}");
    println!("workloads                {}", nodes * WORKLOADS_PER_NODE);
    println!("services                 {SERVICES}");
    println!("initial load             {load:?}");
    println!("all snapshots ACKed in   {connect:?} ({snapshot_bytes} bytes)");
    println!("change → last ACK p50    {:?}", pct(0.5));
    println!("change → last ACK p99    {:?}", pct(0.99));
    println!(
        "change → last ACK max    {:?}",
        latencies[latencies.len() - 1]
    );
    println!(
        "published → last ACK     p50 {:?}, p99 {:?}",
        fan_out_pct(0.5),
        fan_out_pct(0.99)
    );
    println!(
        "bytes pushed per change  {} (median over {rounds} rounds)",
        pushed[pushed.len() / 2]
    );
    println!(
        "RSS: before {rss_before} KiB, control plane loaded {rss_cp} KiB, with {nodes} subscribers {rss_all} KiB (one process)"
    );
    cp.stop().await;
    let _ = std::fs::remove_dir_all(&root);
    let _: PathBuf = root;
}
