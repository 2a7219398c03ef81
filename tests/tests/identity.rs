//! Identity end to end, in one process on loopback: a real control plane (CA, gRPC over
//! TLS) and the agent's certificate manager, with real TLS connections between
//! workloads. No root needed.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use agent::identity::{CaSettings, CertManager};
use api::{
    identity::Identity,
    proto::ca::{CreateCertificateRequest, certificate_service_client::CertificateServiceClient},
    tls::{PeerRole, TrustBundle},
};
use controlplane::config::Config;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const NODE: &str = "node-1";
const OTHER_NODE: &str = "node-2";

fn cart() -> Identity {
    "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap()
}
fn frontend() -> Identity {
    "spiffe://cluster.local/ns/shop/sa/frontend"
        .parse()
        .unwrap()
}
fn billing() -> Identity {
    "spiffe://cluster.local/ns/legacy/sa/billing"
        .parse()
        .unwrap()
}

/// A control plane's folders: state (CA), configuration (workloads) and node tokens.
struct Dirs {
    root: PathBuf,
    tokens: [(String, String); 2],
}

impl Dirs {
    fn new() -> Self {
        let root = std::env::temp_dir().join(tests::unique("cp"));
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::write(
            root.join("config/workloads.yaml"),
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: cart-1, namespace: shop}\n\
             spec: {serviceAccount: cart, node: node-1, addresses: [10.0.0.1]}\n---\n\
             apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: frontend-1, namespace: shop}\n\
             spec: {serviceAccount: frontend, node: node-1, addresses: [10.0.0.2]}\n---\n\
             apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: billing-1, namespace: legacy}\n\
             spec: {serviceAccount: billing, node: node-2, addresses: [10.0.0.3]}\n",
        )
        .unwrap();
        let tokens = [
            (NODE.to_owned(), controlplane::auth::new_token()),
            (OTHER_NODE.to_owned(), controlplane::auth::new_token()),
        ];
        std::fs::write(
            root.join("tokens.yaml"),
            tokens
                .iter()
                .map(|(n, t)| format!("{n}: {t}\n"))
                .collect::<String>(),
        )
        .unwrap();
        Dirs { root, tokens }
    }

    fn config(&self, listen: &str, extra: &[(&str, String)]) -> Config {
        tests::control_plane_config(&self.root, listen, extra)
    }

    fn token(&self, node: &str) -> String {
        self.tokens
            .iter()
            .find(|(n, _)| n == node)
            .unwrap()
            .1
            .clone()
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn manager(
    cp: &controlplane::Running,
    dirs: &Dirs,
    lifetime: Option<Duration>,
    backoff_max: Duration,
) -> CertManager {
    CertManager::new(CaSettings {
        address: cp.addr.to_string(),
        server_name: "weft-controlplane".to_owned(),
        ca_pem: cp.trust_bundle_pem.clone(),
        token: dirs.token(NODE),
        trust_domain: "cluster.local".to_owned(),
        lifetime,
        backoff_initial: Duration::from_millis(500),
        backoff_max,
    })
    .unwrap()
}

async fn raw_client(
    cp: &controlplane::Running,
) -> CertificateServiceClient<tonic::transport::Channel> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            &cp.trust_bundle_pem,
        ))
        .domain_name("weft-controlplane");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", cp.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    CertificateServiceClient::new(channel)
}

fn p256() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

async fn ask(
    client: &mut CertificateServiceClient<tonic::transport::Channel>,
    token: &str,
    identity: &str,
    csr: Vec<u8>,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut req = tonic::Request::new(CreateCertificateRequest {
        identity: identity.to_owned(),
        csr_der: csr,
        lifetime_seconds: 0,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client
        .create_certificate(req)
        .await
        .map(|r| r.into_inner().cert_chain_der)
}

#[tokio::test]
async fn agent_gets_a_certificate_whose_key_never_left_it() {
    let dirs = Dirs::new();
    let cp = controlplane::start(dirs.config("127.0.0.1:0", &[]))
        .await
        .unwrap();
    let m = manager(&cp, &dirs, None, Duration::from_secs(4));
    m.acquire(&cart());
    let issued = m.ready(&cart(), Duration::from_secs(10)).await.unwrap();

    let roots: Vec<CertificateDer<'static>> = {
        use rustls_pki_types::pem::PemObject as _;
        CertificateDer::pem_slice_iter(cp.trust_bundle_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let bundle = TrustBundle::new("cluster.local", roots).unwrap();
    let id = bundle
        .verify_peer(
            &issued.chain,
            PeerRole::Client,
            Some(&cart()),
            UnixTime::now(),
        )
        .unwrap();
    assert_eq!(id, cart());

    // The leaf carries the agent's public key; the request format has no room for a
    // private key, and the request the CA gets holds only the CSR: check that the
    // agent's private key bytes are nowhere in a request made the agent's way.
    use x509_parser::prelude::FromDer as _;
    let (_, leaf) =
        x509_parser::certificate::X509Certificate::from_der(issued.chain[0].as_ref()).unwrap();
    let key = rcgen::KeyPair::try_from(issued.key_der()).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let csr = api::tls::workload_csr(&cart(), &key).unwrap();
    let wire = prost::Message::encode_to_vec(&CreateCertificateRequest {
        identity: cart().to_string(),
        csr_der: csr,
        lifetime_seconds: 0,
    });
    // The private scalar: in the PKCS#8 ECPrivateKey, after `version 1` (02 01 01) and
    // the OCTET STRING header of 32 bytes (04 20).
    let der = issued.key_der();
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("an EC private key")
        + 5;
    let secret = &der[at..at + 32];
    assert!(
        !wire.windows(32).any(|w| w == secret),
        "private key bytes in the request"
    );

    // Dropped with its last user.
    m.release(&cart());
    assert!(matches!(
        m.current(&cart()),
        Err(agent::identity::Error::Unknown { .. })
    ));
    cp.stop().await;
}

#[tokio::test]
async fn refusals_name_their_reason() {
    let dirs = Dirs::new();
    let cp = controlplane::start(dirs.config(
        "127.0.0.1:0",
        &[
            ("WEFT_CSR_BURST", "20".into()),
            ("WEFT_CSR_RATE", "1".into()),
        ],
    ))
    .await
    .unwrap();
    let mut c = raw_client(&cp).await;
    let key = p256();
    let good = api::tls::workload_csr(&cart(), &key).unwrap();
    let token = dirs.token(NODE);

    let expect = |r: Result<Vec<Vec<u8>>, tonic::Status>, code: tonic::Code, reason: &str| {
        let s = r.expect_err(reason);
        assert_eq!(s.code(), code, "{s:?}");
        assert!(
            s.message().starts_with(reason),
            "{:?} does not start with {reason}",
            s.message()
        );
    };
    expect(
        ask(
            &mut c,
            &controlplane::auth::new_token(),
            &cart().to_string(),
            good.clone(),
        )
        .await,
        tonic::Code::Unauthenticated,
        "unknown_token",
    );
    expect(
        ask(&mut c, "", &cart().to_string(), good.clone()).await,
        tonic::Code::Unauthenticated,
        "missing_token",
    );
    // billing runs on node-2: node-1's agent may not have its certificate.
    let billing_csr = api::tls::workload_csr(&billing(), &key).unwrap();
    expect(
        ask(&mut c, &token, &billing().to_string(), billing_csr.clone()).await,
        tonic::Code::PermissionDenied,
        "identity_not_on_node",
    );
    // … but node-2's may.
    assert!(
        ask(
            &mut c,
            &dirs.token(OTHER_NODE),
            &billing().to_string(),
            billing_csr
        )
        .await
        .is_ok()
    );
    expect(
        ask(&mut c, &token, &cart().to_string(), b"garbage".to_vec()).await,
        tonic::Code::InvalidArgument,
        "malformed_csr",
    );
    expect(
        ask(&mut c, &token, &cart().to_string(), vec![0x30; 64 * 1024]).await,
        tonic::Code::InvalidArgument,
        "csr_too_large",
    );
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(cart().to_string().try_into().unwrap())];
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    expect(
        ask(
            &mut c,
            &token,
            &cart().to_string(),
            params.serialize_request(&key).unwrap().der().to_vec(),
        )
        .await,
        tonic::Code::InvalidArgument,
        "csr_requests_ca",
    );
    params.is_ca = rcgen::IsCa::NoCa;
    params
        .subject_alt_names
        .push(rcgen::SanType::DnsName("admin.example".try_into().unwrap()));
    expect(
        ask(
            &mut c,
            &token,
            &cart().to_string(),
            params.serialize_request(&key).unwrap().der().to_vec(),
        )
        .await,
        tonic::Code::InvalidArgument,
        "csr_extra_san",
    );
    expect(
        ask(
            &mut c,
            &token,
            "spiffe://other.domain/ns/shop/sa/cart",
            good.clone(),
        )
        .await,
        tonic::Code::InvalidArgument,
        "foreign_trust_domain",
    );
    expect(
        ask(&mut c, &token, "https://cart", good.clone()).await,
        tonic::Code::InvalidArgument,
        "invalid_identity",
    );

    // A flood: the burst (20, of which the requests above used 8) then refusals.
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..40 {
        match ask(&mut c, &token, &cart().to_string(), good.clone()).await {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                assert!(s.message().starts_with("rate_limited"), "{s:?}");
                limited += 1;
            }
        }
    }
    assert!((12..=14).contains(&ok), "{ok} succeeded");
    assert_eq!(ok + limited, 40);
    // The other node is not affected by node-1's flood.
    let billing_csr = api::tls::workload_csr(&billing(), &key).unwrap();
    assert!(
        ask(
            &mut c,
            &dirs.token(OTHER_NODE),
            &billing().to_string(),
            billing_csr
        )
        .await
        .is_ok()
    );
    cp.stop().await;
}

/// Serves an echo over TLS with `server`'s identity until the task is dropped.
async fn tls_echo_server(
    m: CertManager,
    server: Identity,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(m.server_config(&server));
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

async fn connect(
    m: &CertManager,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(m.client_config(&frontend(), &cart()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("cart").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test]
async fn connections_outlive_five_rotations_and_new_ones_use_the_new_certificate() {
    let dirs = Dirs::new();
    let cp = controlplane::start(dirs.config("127.0.0.1:0", &[]))
        .await
        .unwrap();
    let m = manager(
        &cp,
        &dirs,
        Some(Duration::from_secs(10)),
        Duration::from_secs(4),
    );
    m.acquire(&cart());
    m.acquire(&frontend());
    m.ready(&cart(), Duration::from_secs(10)).await.unwrap();
    m.ready(&frontend(), Duration::from_secs(10)).await.unwrap();
    let (addr, server) = tls_echo_server(m.clone(), cart()).await;

    let mut long = connect(&m, addr).await;
    let mut seen = vec![m.current(&cart()).unwrap().chain[0].clone()];
    let start = Instant::now();
    let mut round = 0u32;
    while start.elapsed() < Duration::from_secs(40) && seen.len() < 6 {
        round += 1;
        let ping = format!("ping {round}");
        long.write_all(ping.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; ping.len()];
        long.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, ping.as_bytes());

        let now = m.current(&cart()).unwrap().chain[0].clone();
        if *seen.last().unwrap() != now {
            seen.push(now.clone());
            // A new connection presents the new certificate.
            let fresh = connect(&m, addr).await;
            let presented = fresh.get_ref().1.peer_certificates().unwrap()[0].clone();
            assert_eq!(presented, now, "a new connection got an old certificate");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.len() >= 6,
        "only {} rotations in {:?}",
        seen.len() - 1,
        start.elapsed()
    );
    // The first connection still works after all of them.
    long.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    long.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    server.abort();
    cp.stop().await;
}

#[tokio::test]
async fn control_plane_outage_keeps_certificates_backs_off_and_recovers() {
    let dirs = Dirs::new();
    let cp = controlplane::start(dirs.config("127.0.0.1:0", &[]))
        .await
        .unwrap();
    let addr = cp.addr;
    let root_before = cp.trust_bundle_pem.clone();
    let m = manager(
        &cp,
        &dirs,
        Some(Duration::from_secs(8)),
        Duration::from_secs(2),
    );
    m.acquire(&cart());
    let first = m.ready(&cart(), Duration::from_secs(10)).await.unwrap();
    cp.stop().await;

    // While the certificate is valid it keeps serving.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = m.current(&cart()).unwrap();
    assert_eq!(still.chain[0], first.chain[0]);
    // After expiry: fail closed.
    let until_expiry = first
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(until_expiry + Duration::from_millis(1500)).await;
    let e = m.current(&cart()).unwrap_err();
    assert_eq!(e.reason(), "certificate_expired");

    // The retries were spaced by the backoff: 0.5 s doubling, capped at 2 s.
    let attempts = m.attempts(&cart());
    let gaps: Vec<f64> = attempts
        .windows(2)
        .skip(1) // the first gap is the renewal wait, not a retry
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(gaps.len() >= 3, "{gaps:?}");
    for (i, g) in gaps.iter().enumerate() {
        let want = (0.5 * 2f64.powi(i as i32)).min(2.0);
        assert!(
            *g >= want * 0.9,
            "retry {i} after {g:.2} s, expected about {want} s: {gaps:?}"
        );
    }
    assert!(attempts.len() < 20, "too many attempts: {}", attempts.len());

    // The control plane comes back on the same address with the same state.
    let cp = controlplane::start(dirs.config(&addr.to_string(), &[]))
        .await
        .unwrap();
    assert_eq!(
        cp.trust_bundle_pem, root_before,
        "the root changed across a restart"
    );
    let renewed = m.ready(&cart(), Duration::from_secs(10)).await.unwrap();
    assert_ne!(renewed.chain[0], first.chain[0]);
    cp.stop().await;
}

#[tokio::test]
async fn trust_bundle_changes_reach_the_agent_without_a_restart() {
    let dirs = Dirs::new();
    let cp = controlplane::start(dirs.config("127.0.0.1:0", &[]))
        .await
        .unwrap();
    let m = manager(&cp, &dirs, None, Duration::from_secs(2));
    let mut version = m.bundle_version();
    tokio::time::timeout(Duration::from_secs(10), version.wait_for(|v| *v >= 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.bundle().get().roots().len(), 1);
    // An operator adds a second root (a rotation under way).
    let extra = controlplane::ca::generate_root("cluster.local").unwrap();
    std::fs::write(dirs.root.join("state/ca/extra-roots.pem"), &extra.cert).unwrap();
    tokio::time::timeout(Duration::from_secs(10), version.wait_for(|v| *v >= 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.bundle().get().roots().len(), 2);
    cp.stop().await;
}

#[tokio::test]
async fn plugged_intermediate_ca_issues_chains_that_include_it() {
    let dirs = Dirs::new();
    let root_key = p256();
    let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let inter_key = p256();
    let mut inter_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    inter_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    inter_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
    let files = dirs.root.join("pki");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("ca.pem"), inter.pem()).unwrap();
    std::fs::write(files.join("ca-key.pem"), inter_key.serialize_pem()).unwrap();
    std::fs::write(files.join("root.pem"), root.pem()).unwrap();
    let path = |f: &str| files.join(f).display().to_string();
    let cp = controlplane::start(dirs.config(
        "127.0.0.1:0",
        &[
            ("WEFT_CA_CERT", path("ca.pem")),
            ("WEFT_CA_KEY", path("ca-key.pem")),
            ("WEFT_CA_ROOT", path("root.pem")),
        ],
    ))
    .await
    .unwrap();
    let m = manager(&cp, &dirs, None, Duration::from_secs(2));
    m.acquire(&cart());
    let issued = m.ready(&cart(), Duration::from_secs(10)).await.unwrap();
    assert_eq!(issued.chain.len(), 2);
    assert_eq!(&issued.chain[1], inter.der());
    let bundle = TrustBundle::new("cluster.local", vec![root.der().clone()]).unwrap();
    bundle
        .verify_peer(
            &issued.chain,
            PeerRole::Server,
            Some(&cart()),
            UnixTime::now(),
        )
        .unwrap();
    cp.stop().await;
}
