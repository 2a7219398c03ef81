//! The L4 mesh end to end, on the lab: real control plane and CA, real agents with
//! their eBPF programs, pods in network namespaces wired by the CNI plugins. Traffic
//! between enrolled pods goes through HBONE tunnels; these tests look at it on the
//! wire, through the agents' metrics and logs, and from the applications.
//! Root, one test at a time (they share the lab's fixed names).

use std::{
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    lab::{Lab, http_get, metric, sa, sample_command},
    wire::{self, StreamOutcome, eventually, frame},
};
use weftctl::lab;

/// Two nodes; `shop` and `ops` in the mesh, `legacy` not; a 3-endpoint service.
const TOPOLOGY: &str = "\
underlay: 10.250.0.0/24
serviceSubnet: 10.96.0.0/16
nodes:
  - {name: node-1, podSubnet: 10.244.1.0/24}
  - {name: node-2, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: shop, labels: {weft.dev/mesh: enabled}}
  - {name: ops, labels: {weft.dev/mesh: enabled}}
  - {name: legacy}
pods:
  - {name: frontend-1, namespace: shop, node: node-1, serviceAccount: frontend, labels: {app: frontend}}
  - {name: cart-1, namespace: shop, node: node-1, serviceAccount: cart, labels: {app: cart}}
  - {name: cart-2, namespace: shop, node: node-2, serviceAccount: cart, labels: {app: cart}}
  - {name: cart-3, namespace: shop, node: node-2, serviceAccount: cart, labels: {app: cart}}
  - {name: tools-1, namespace: ops, node: node-1, serviceAccount: tools, labels: {app: tools}}
  - {name: billing-1, namespace: legacy, node: node-1, serviceAccount: billing, labels: {app: billing}}
services:
  - name: cart
    namespace: shop
    vip: 10.96.0.10
    selector: {app: cart}
    ports:
      - {name: http, port: 80, targetPort: 8080}
      - {name: echo, port: 7000, targetPort: 7000}
";

const MARKER: &str = "WEFT-PLAINTEXT-MARKER-5f1c9a";

const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

#[test]
fn tunnels_are_encrypted_carry_the_bytes_and_are_observed() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let underlay = lab::netns_path(&lab::underlay_netns());
    let capture = wire::PacketCapture::start(&underlay, MARKER.as_bytes());

    // Cross-node (node-1 → node-2) and same-node, 64 MiB each, IPv4.
    let size = 64 * 1024 * 1024;
    let text = ["--text", MARKER, "--timeout-secs", "60"];
    let v = lab.echo_ok(
        "shop/frontend-1",
        sa(lab.ip("shop/cart-2"), 7000),
        size,
        &text,
    );
    assert_eq!(v["peer"], "127.0.0.1:15001", "not captured: {v}");
    lab.echo_ok(
        "shop/frontend-1",
        sa(lab.ip("shop/cart-1"), 7000),
        size,
        &text,
    );
    // Through the service address.
    for _ in 0..6 {
        lab.echo_ok(
            "shop/frontend-1",
            sa(Ipv4Addr::new(10, 96, 0, 10), 7000),
            1 << 20,
            &text,
        );
    }
    // A plaintext connection from outside the mesh, as a check that the capture sees
    // payloads at all: its marker must show up.
    lab.echo_ok(
        "legacy/billing-1",
        sa(lab.ip("shop/cart-2"), 7000),
        1 << 20,
        &text,
    );
    let seen = capture.stop();
    // (A capture may drop frames under load; the tunnelled bytes are there in bulk.)
    assert!(
        seen.hbone_payload > size / 4,
        "hardly anything on port 15008 between the nodes: {seen:?}"
    );
    assert!(seen.tls_records > 100, "no TLS records on 15008: {seen:?}");
    assert!(
        !seen.marker_frames.is_empty(),
        "the capture saw no plaintext at all (the check would prove nothing): {seen:?}"
    );
    for (sport, dport) in &seen.marker_frames {
        assert!(
            *sport == 7000 || *dport == 7000,
            "plaintext payload on the wire between {sport} and {dport}"
        );
        assert!(*sport != 15008 && *dport != 15008);
    }

    // Both agents report the connection with both identities.
    let m1 = lab.metrics("node-1");
    let m2 = lab.metrics("node-2");
    let both = [
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/frontend\"",
        "destination_principal=\"spiffe://cluster.local/ns/shop/sa/cart\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let src = [&both[..], &["reporter=\"source\""]].concat();
    let dst = [&both[..], &["reporter=\"destination\""]].concat();
    assert!(
        metric(&m1, "weft_tcp_connections_opened_total", &src) >= 8,
        "{m1}"
    );
    assert!(
        metric(&m1, "weft_tcp_sent_bytes_total", &src) >= 2 * size,
        "{m1}"
    );
    assert!(
        metric(&m1, "weft_tcp_received_bytes_total", &src) >= 2 * size,
        "{m1}"
    );
    assert!(
        metric(&m2, "weft_tcp_connections_opened_total", &dst) >= 1,
        "{m2}"
    );
    assert!(
        metric(&m2, "weft_tcp_sent_bytes_total", &dst) >= size,
        "{m2}"
    );
    assert!(
        metric(
            &m2,
            "weft_tcp_authorization_decisions_total",
            &[&dst[..], &["decision=\"allow\""]].concat()
        ) >= 1,
        "{m2}"
    );
    assert!(
        metric(
            &m2,
            "weft_tcp_connections_opened_total",
            &[
                "connection_security_policy=\"none\"",
                "reporter=\"destination\""
            ]
        ) >= 1,
        "{m2}"
    );
    // Streams share pooled connections: far fewer HBONE connections than streams.
    let pooled = metric(&m1, "weft_agent_hbone_connections_opened_total", &[]);
    assert!(
        (1..=4).contains(&pooled),
        "{pooled} HBONE connections for 8 streams: {m1}"
    );

    // The access log has a line per connection with both identities (written as the
    // connection closes).
    eventually(Duration::from_secs(5), "the access line", || {
        lab.agent_log("node-2")
            .lines()
            .any(|l| l.contains("weft::access") && l.contains(FRONTEND) && l.contains("sent="))
    });
    let log = lab.agent_log("node-2");
    let line = log
        .lines()
        .find(|l| {
            l.contains("weft::access")
                && l.contains(FRONTEND)
                && l.contains("reporter=\"destination\"")
        })
        .unwrap_or_else(|| panic!("no access log line: {log}"));
    assert!(
        line.contains(CART) && line.contains("sent=67108864"),
        "{line}"
    );

    // The application on the other side got the connection: the HTTP endpoint answers
    // through the tunnel.
    let out = lab.sample(
        "shop/frontend-1",
        &[
            "get",
            "--connect",
            &sa(lab.ip("shop/cart-2"), 8080).to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pod"], "cart-2", "{v}");

    // Readiness on 15021.
    let node1 = lab::netns_path(&lab::node_netns("node-1"));
    let ready = http_get(
        &node1,
        sa(lab.node_address("node-1"), 15021),
        "/healthz/ready",
    );
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

fn policy_only_from(namespace: &str) -> String {
    format!(
        "apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: cart-access, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: cart}}}}
  action: ALLOW
  rules:
    - from: [{{source: {{namespaces: [{namespace}]}}}}]
"
    )
}

#[test]
fn authorization_policy_allows_one_namespace_and_revokes_live_connections() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let cart2 = sa(lab.ip("shop/cart-2"), 7000);
    lab.apply("policy", &policy_only_from("shop"));

    lab.echo_ok("shop/frontend-1", cart2, 10_000, &[]);
    let refused = lab.echo("ops/tools-1", cart2, 10_000, &[]);
    assert!(refused.is_err(), "ops was let through: {refused:?}");
    let m1 = lab.metrics("node-1");
    let m2 = lab.metrics("node-2");
    assert!(
        metric(
            &m1,
            "weft_agent_connection_failures_total",
            &["reason=\"hbone_unauthorized\"", "reporter=\"source\""]
        ) >= 1,
        "the client's agent did not see a 401: {m1}"
    );
    let decided = |d: &str, ns: &str| {
        metric(
            &m2,
            "weft_tcp_authorization_decisions_total",
            &[
                &format!("decision=\"{d}\""),
                &format!("source_workload_namespace=\"{ns}\""),
            ],
        )
    };
    assert!(decided("allow", "shop") >= 1, "{m2}");
    assert!(decided("deny", "ops") >= 1, "{m2}");
    eventually(Duration::from_secs(5), "the denial's access line", || {
        lab.agent_log("node-2")
            .contains("policy=no ALLOW policy matched")
    });

    // A live connection from shop, then the policy flips to ops only: it is closed.
    let mut chat = sample_command(
        "shop/frontend-1",
        &["chat", "--connect", &cart2.to_string()],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(chat.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead as _;
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("connected"), "{line}");
    writeln!(stdin, "before").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "before\n");

    lab.apply("policy", &policy_only_from("ops"));
    writeln!(stdin, "after").unwrap();
    line.clear();
    let _ = stdout.read_line(&mut line);
    assert_eq!(line, "", "the revoked connection still echoes");
    drop(stdin);
    let status = chat.wait().unwrap();
    assert!(!status.success());
    let m2 = lab.metrics("node-2");
    assert!(
        metric(
            &m2,
            "weft_tcp_connections_closed_total",
            &["response_flags=\"REVOKED\""]
        ) >= 1,
        "{m2}"
    );
    // New connections follow the new policy at once.
    assert!(lab.echo("shop/frontend-1", cart2, 1000, &[]).is_err());
    lab.echo_ok("ops/tools-1", cart2, 1000, &[]);
}

fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.weft.dev/v1alpha1
kind: PeerAuthentication
metadata: {{name: strict, namespace: shop}}
spec:
  mtls: {{mode: {mode}}}
"
    )
}

#[test]
fn peer_authentication_strict_refuses_plaintext_and_permissive_lets_it_in() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let cart2 = sa(lab.ip("shop/cart-2"), 7000);
    // PERMISSIVE by default: a client outside the mesh reaches the pod, through the
    // agent's inbound capture.
    let v = lab.echo_ok("legacy/billing-1", cart2, 100_000, &[]);
    assert_eq!(v["peer"], cart2.to_string());
    let m2 = lab.metrics("node-2");
    assert!(
        metric(
            &m2,
            "weft_agent_capture_decisions_total",
            &["reason=\"inbound_steered\""]
        ) >= 1,
        "{m2}"
    );

    lab.apply("peer", &peer_authentication("STRICT"));
    let refused = lab.echo("legacy/billing-1", cart2, 100_000, &[]);
    assert!(refused.is_err(), "STRICT let plaintext in: {refused:?}");
    // Mesh clients are not affected.
    lab.echo_ok("shop/frontend-1", cart2, 100_000, &[]);
    let m2 = lab.metrics("node-2");
    assert!(
        metric(
            &m2,
            "weft_agent_connection_failures_total",
            &["reason=\"plaintext_strict\""]
        ) >= 1,
        "{m2}"
    );
    // The agent's own ports cannot be reached from outside the pod.
    for port in [15001, 15006] {
        let r = lab.echo(
            "legacy/billing-1",
            sa(lab.ip("shop/cart-2"), port),
            10,
            &["--timeout-secs", "2"],
        );
        assert!(r.is_err(), "port {port} answered: {r:?}");
    }
    let m2 = lab.metrics("node-2");
    assert!(
        metric(
            &m2,
            "weft_agent_capture_decisions_total",
            &["reason=\"inbound_agent_port\""]
        ) >= 1,
        "{m2}"
    );

    lab.apply("peer", &peer_authentication("PERMISSIVE"));
    lab.echo_ok("legacy/billing-1", cart2, 100_000, &[]);
}

#[test]
fn malformed_hbone_is_rejected_and_the_agent_keeps_serving() {
    let lab = Lab::up(
        TOPOLOGY,
        &[
            "WEFT_HBONE_MAX_STREAMS=4",
            "WEFT_HBONE_MAX_HEADER_LIST_SIZE=8192",
        ],
        &[],
    );
    let (roots, (cert, key)) = lab.client_cert("spiffe://cluster.local/ns/shop/sa/tester");
    let cart2 = lab.ip("shop/cart-2");
    let cart1 = lab.ip("shop/cart-1");
    let hbone = sa(cart2, 15008);
    // The test client runs in legacy/billing-1's namespace (not in the mesh).
    let netns = lab::netns_path(&lab.pod("legacy/billing-1").netns);

    let target = wire::HboneTarget {
        addr: hbone,
        roots: roots.clone(),
        server_identity: CART.to_owned(),
        client: Some((cert.clone(), key.clone())),
    };
    let one = |fields: Vec<(String, String)>, end_stream: bool| {
        wire::one_stream(&netns, &target, fields, end_stream).unwrap()
    };
    let connect = |authority: String| {
        vec![
            (":method".to_owned(), "CONNECT".to_owned()),
            (":authority".to_owned(), authority),
        ]
    };

    // A well-formed CONNECT gets 200: the checks below are not refusing everything.
    assert_eq!(
        one(connect(format!("{cart2}:7000")), false).0,
        Some(StreamOutcome::Ok200)
    );
    // Not CONNECT: 400 (`:status 400` is static-table entry 12, 0x8c).
    let get = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":scheme".to_owned(), "https".to_owned()),
        (":path".to_owned(), "/".to_owned()),
        (":authority".to_owned(), format!("{cart2}:7000")),
    ];
    let bad_request = Some(StreamOutcome::Headers(vec![0x8c]));
    let first = |o: Option<StreamOutcome>| match o {
        Some(StreamOutcome::Headers(h)) => Some(StreamOutcome::Headers(h[..1].to_vec())),
        other => other,
    };
    assert_eq!(first(one(get, true).0), bad_request, "GET");
    // Another pod's address, and the agent's own ports: 400.
    assert_eq!(
        first(one(connect(format!("{cart1}:7000")), false).0),
        bad_request,
        "other pod"
    );
    for port in [15001, 15006, 15008, 15020, 15021] {
        assert_eq!(
            first(one(connect(format!("{cart2}:{port}")), false).0),
            bad_request,
            "port {port}"
        );
    }
    // Oversized headers: refused, not served.
    let mut big = connect(format!("{cart2}:7000"));
    big.push(("x-padding".to_owned(), "a".repeat(20_000)));
    let (outcome, goaway) = one(big, false);
    assert!(
        outcome != Some(StreamOutcome::Ok200),
        "oversized headers served: {outcome:?} {goaway:?}"
    );
    assert!(
        outcome.is_some() || goaway.is_some(),
        "no answer to oversized headers"
    );

    // Too many streams on one connection: the limit is 4; the rest are refused.
    let streams: Vec<u32> = (0..6).map(|i| 1 + 2 * i).collect();
    let outcomes = {
        let (roots, cert, key, streams) =
            (roots.clone(), cert.clone(), key.clone(), streams.clone());
        wire::in_netns(&netns, move || {
            let mut tls =
                wire::tls_connect(hbone, &roots, "cluster.local", CART, Some((&cert, &key)))
                    .unwrap();
            // Learn the server's settings (and ACK them) before opening streams.
            wire::await_settings(&mut tls);
            let mut bytes = Vec::new();
            for s in &streams {
                let f = [
                    (":method", "CONNECT"),
                    (":authority", &format!("{cart2}:7000") as &str),
                ];
                bytes.extend(wire::headers_frames(*s, &wire::header_block(&f), false));
            }
            tls.write_all(&bytes).unwrap();
            tls.flush().unwrap();
            wire::read_outcomes(&mut tls, &streams).0
        })
    };
    let served = outcomes
        .values()
        .filter(|o| **o == StreamOutcome::Ok200)
        .count();
    let refused = outcomes
        .values()
        .filter(|o| **o == StreamOutcome::Reset(frame::REFUSED_STREAM))
        .count();
    assert_eq!((served, refused), (4, 2), "{outcomes:?}");

    // No client certificate, and one from another trust domain: the handshake fails.
    let (evil_ca, evil) = wire::new_ca("evil");
    let (evil_cert, evil_key) = wire::leaf(&evil, "spiffe://evil.local/ns/shop/sa/tester");
    let _ = evil_ca;
    for client in [None, Some((evil_cert.clone(), evil_key.clone()))] {
        let roots = roots.clone();
        let label = if client.is_some() {
            "foreign trust domain"
        } else {
            "no certificate"
        };
        let refused = wire::in_netns(&netns, move || {
            let c = client.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
            match wire::tls_connect(hbone, &roots, "cluster.local", CART, c) {
                Err(_) => true,
                Ok(mut tls) => {
                    let mut buf = [0u8; 64];
                    !matches!(tls.read(&mut buf), Ok(n) if n > 0)
                }
            }
        });
        assert!(refused, "{label}: served");
    }
    let m2 = lab.metrics("node-2");
    for reason in [
        "hbone_not_connect",
        "hbone_foreign_authority",
        "hbone_agent_port",
        "tls_handshake",
    ] {
        assert!(
            metric(
                &m2,
                "weft_agent_connection_failures_total",
                &[&format!("reason=\"{reason}\"")]
            ) >= 1,
            "{reason} not counted: {m2}"
        );
    }
    // And everyone else is still served.
    lab.echo_ok("shop/frontend-1", sa(cart2, 7000), 1 << 20, &[]);
    lab.echo_ok("legacy/billing-1", sa(cart2, 7000), 1 << 20, &[]);
}

#[test]
fn service_connections_spread_over_endpoints_and_leave_a_removed_one() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let vip = "10.96.0.10:80";
    let spread = |count: u32| -> std::collections::BTreeMap<String, u64> {
        let out = lab.sample(
            "shop/frontend-1",
            &["spread", "--connect", vip, "--count", &count.to_string()],
        );
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let counts = spread(1000);
    assert_eq!(counts.values().sum::<u64>(), 1000);
    for pod in ["cart-1", "cart-2", "cart-3"] {
        let n = counts.get(pod).copied().unwrap_or(0);
        // Uniform would be 333; anything this far off is not a spread.
        assert!((200..=470).contains(&n), "{pod}: {n} of 1000: {counts:?}");
    }

    // cart-3 leaves the service (its label changes); it gets nothing new.
    let docs_path = Path::new(lab::RUN_DIR).join("controlplane/config/lab.yaml");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let needle = "    app: cart\n  name: cart-3\n";
    assert!(docs.contains(needle), "{docs}");
    let before: Vec<u64> = ["node-1", "node-2"]
        .iter()
        .map(|n| lab.config_version(n))
        .collect();
    std::fs::write(
        &docs_path,
        docs.replace(needle, "    app: cart-retired\n  name: cart-3\n"),
    )
    .unwrap();
    for (node, before) in ["node-1", "node-2"].iter().zip(before) {
        eventually(Duration::from_secs(10), "the endpoint removal", || {
            lab.config_version(node) > before
        });
    }
    let counts = spread(300);
    assert_eq!(counts.get("cart-3"), None, "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 300);
    assert!(counts.len() == 2, "{counts:?}");
}

#[test]
fn drain_finishes_short_transfers_refuses_new_ones_and_exits_at_the_deadline() {
    let deadline = Duration::from_secs(4);
    let lab = Lab::up(TOPOLOGY, &["WEFT_DRAIN_TIMEOUT=4s"], &[]);
    let cart2 = sa(lab.ip("shop/cart-2"), 7000).to_string();
    let spawn = |bytes: u64, rate: u64| {
        sample_command("shop/frontend-1", &["echo", "--connect", &cart2])
            .args([
                "--bytes",
                &bytes.to_string(),
                "--rate",
                &rate.to_string(),
                "--timeout-secs",
                "30",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // 10 transfers of ~2 s and 10 of ~20 s, all open at once: 20 tunnels.
    let short: Vec<_> = (0..10).map(|_| spawn(400_000, 200_000)).collect();
    let long: Vec<_> = (0..10).map(|_| spawn(4_000_000, 200_000)).collect();
    std::thread::sleep(Duration::from_millis(700));
    let m1 = lab.metrics("node-1");
    let active: u64 = m1
        .lines()
        .find(|l| l.starts_with("weft_agent_outbound_connections_active "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(active, 20, "{m1}");

    let agent = lab.agent("node-1").pid;
    let sigterm = Instant::now();
    // SAFETY: kill(2) with a pid the lab started.
    assert_eq!(unsafe { libc::kill(agent as i32, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while draining.
    let started = Instant::now();
    let new = lab.echo(
        "shop/frontend-1",
        sa(lab.ip("shop/cart-2"), 7000),
        1000,
        &["--timeout-secs", "3"],
    );
    assert!(
        new.is_err(),
        "a new connection was served while draining: {new:?}"
    );
    assert!(
        new.unwrap_err().contains("onnection refused"),
        "not refused"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    for child in short {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a short transfer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["received"], 400_000);
        assert_eq!(v["sha256_sent"], v["sha256_received"]);
    }
    eventually(Duration::from_secs(10), "the agent to exit", || {
        let stat = std::fs::read_to_string(format!("/proc/{agent}/stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
    });
    let exited = sigterm.elapsed();
    assert!(
        exited >= deadline - Duration::from_millis(300)
            && exited < deadline + Duration::from_secs(2),
        "exited {exited:?} after SIGTERM; the deadline is {deadline:?}"
    );
    for child in long {
        let out = child.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "a 20 s transfer outlived the drain deadline"
        );
    }
    let log = lab.agent_log("node-1");
    assert!(log.contains("drain deadline reached"), "{log}");
}

/// Bytes a namespace's loopback device has sent so far.
fn loopback_bytes(netns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["-n", netns, "-s", "-j", "link", "show", "lo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["stats64"]["tx"]["bytes"].as_u64().unwrap()
}

fn acceleration(lab: &Lab, node: &str) -> Value {
    let stats = api::admin::Client::new(&lab.agent(node).admin_socket)
        .get("/v1/stats")
        .unwrap()
        .body;
    let mut v = stats["acceleration"].clone();
    v["decisions"] = stats["decisions"].clone();
    v
}

/// `count` request/response round trips of `size` bytes, same node (frontend-1 →
/// cart-1); the bytes each pod's loopback device carried meanwhile.
fn round_trips_over_loopback(lab: &Lab, count: u32, size: u32) -> (u64, u64) {
    let client = lab.pod("shop/frontend-1").netns.clone();
    let server = lab.pod("shop/cart-1").netns.clone();
    let (client_lo, server_lo) = (loopback_bytes(&client), loopback_bytes(&server));
    let to = sa(lab.ip("shop/cart-1"), 7000).to_string();
    let (count, size) = (count.to_string(), size.to_string());
    let out = lab.sample(
        "shop/frontend-1",
        &["rr", "--connect", &to, "--count", &count, "--size", &size],
    );
    assert!(out.status.success(), "{out:?}");
    (
        loopback_bytes(&client) - client_lo,
        loopback_bytes(&server) - server_lo,
    )
}

#[test]
fn same_node_legs_skip_the_loopback_stack_keep_bytes_in_order_and_leave_the_map() {
    // Off (the default) first: the baseline of what the loopback devices carry.
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let off = acceleration(&lab, "node-1");
    assert_eq!(off["enabled"], false, "{off}");
    let (count, size) = (2000, 512);
    let (client_off, server_off) = round_trips_over_loopback(&lab, count, size);
    assert_eq!(
        acceleration(&lab, "node-1")["decisions"]["local_accelerated"],
        0
    );
    drop(lab);

    let lab = Lab::up(TOPOLOGY, &["WEFT_SOCKMAP=on"], &[]);
    let before = acceleration(&lab, "node-1");
    assert_eq!(before["enabled"], true, "{before}");
    // Request/response on one connection, same node: both legs (client ↔ agent,
    // agent ↔ server) are local, and their bytes go socket to socket, both ways; they
    // no longer cross the loopback devices.
    let (client_on, server_on) = round_trips_over_loopback(&lab, count, size);
    let both_ways = u64::from(2 * count * size);
    assert!(
        client_on + both_ways * 9 / 10 <= client_off
            && server_on + both_ways * 9 / 10 <= server_off,
        "loopback carried {client_on} / {server_on} bytes with the short cut, \
         {client_off} / {server_off} without"
    );
    // Paced small writes (4 KiB), read back in other sizes by the agent and the app,
    // then a half-close: the echo ends only after the server has seen the end of the
    // client's bytes and sent all of its own. The client is an event loop, as the
    // acceleration asks of applications (a blocking reader may see EAGAIN: local.rs).
    lab.echo_ok(
        "shop/frontend-1",
        sa(lab.ip("shop/cart-1"), 7000),
        1 << 20,
        &["--rate", "20000000", "--nonblocking"],
    );
    let after = acceleration(&lab, "node-1");
    let grew = |name: &str| {
        after["decisions"][name].as_u64().unwrap() - before["decisions"][name].as_u64().unwrap()
    };
    assert!(grew("local_accelerated") >= 8, "{after}");
    assert!(grew("local_redirected") >= 4 * u64::from(count), "{after}");

    // A transfer of more than a leg's total budget spends it and goes on over TCP, in
    // order: the echo checks every byte (SHA-256), cross-node and same-node. The echo
    // client reads and writes at once, on a non-blocking socket: a blocking reader
    // beside a bulk writer is what the kernel's caveat is about (agent-ebpf/src/local.rs).
    for to in ["shop/cart-2", "shop/cart-1"] {
        lab.echo_ok(
            "shop/frontend-1",
            sa(lab.ip(to), 7000),
            24 << 20,
            &["--nonblocking", "--timeout-secs", "60"],
        );
    }
    let bulk = acceleration(&lab, "node-1");
    assert!(
        bulk["decisions"]["local_budget_spent"].as_u64().unwrap()
            > after["decisions"]["local_budget_spent"].as_u64().unwrap(),
        "{bulk}"
    );

    // Closed sockets leave the map, on both nodes.
    for node in ["node-1", "node-2"] {
        eventually(Duration::from_secs(10), "an empty acceleration map", || {
            acceleration(&lab, node)["sockets"] == 0
        });
    }
}
