//! The mesh through faults and churn of its own parts, on the lab: the control plane
//! down for a long while, certificates rotating every few seconds, a policy revoked
//! under a live connection. Steady calls run throughout (a new connection every
//! 20 ms, each across both nodes, into STRICT pods). Root, one test at a time.
//!
//! Durations are parameters, for a longer run by hand:
//! `WEFT_TEST_OUTAGE_SECS` (600) and `WEFT_TEST_ROTATIONS` (20).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use tests::{
    calls::{Callers, PAIRS, STRICT, TOPOLOGY, count},
    lab::{Lab, sa},
    wire,
};
use weftctl::lab;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// A connection from inside `pod`'s namespace to `to`, opened by this process: the
/// agents capture by namespace, whatever the process.
fn connect_from(lab: &Lab, pod: &str, to: SocketAddr) -> TcpStream {
    let netns = lab::netns_path(&lab.pod(pod).netns);
    let s = wire::in_netns(&netns, move || TcpStream::connect(to).expect("connects"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// One round trip on a long-lived connection.
fn echo(s: &mut TcpStream, text: &str) -> std::io::Result<()> {
    s.write_all(text.as_bytes())?;
    let mut back = vec![0u8; text.len()];
    s.read_exact(&mut back)?;
    assert_eq!(back, text.as_bytes());
    Ok(())
}

fn assert_all_ok(results: &[(String, serde_json::Value)], what: &str) {
    for (from, v) in results {
        eprintln!("calls from {from} {what}: {v}");
        let calls = count(v, "calls");
        assert!(calls >= 100, "too few calls from {from}: {v}");
        assert_eq!(
            count(v, "ok"),
            calls,
            "calls from {from} failed {what}: {v}"
        );
    }
}

fn strict_lab(flags: &[&str]) -> Lab {
    let lab = Lab::up_with(TOPOLOGY, flags, &[], &[]);
    lab.apply("strict", STRICT);
    lab
}

#[test]
fn with_the_control_plane_down_known_paths_keep_working_and_agents_resync_after() {
    let outage = Duration::from_secs(setting("WEFT_TEST_OUTAGE_SECS", 600));
    let mut lab = strict_lab(&[]);
    let server2 = sa(lab.ip("shop/server-2"), 7000);
    let mut long = connect_from(&lab, "shop/caller-1", server2);
    echo(&mut long, "before").unwrap();
    let pids: Vec<u32> = ["node-1", "node-2"].map(|n| lab.agent(n).pid).to_vec();
    let versions: Vec<u64> = ["node-1", "node-2"].map(|n| lab.config_version(n)).to_vec();
    let callers = Callers::start(&lab, &PAIRS, 20, "weft-outage");

    let out = tests::weftctl(&["lab", "stop-controlplane"]);
    assert!(out.status.success(), "{out:?}");
    let down = Instant::now();
    while down.elapsed() < outage {
        std::thread::sleep(Duration::from_secs(5).min(outage));
        // The open connection and new ones between known workloads: the callers.
        echo(&mut long, "during").unwrap();
    }
    let out = tests::weftctl(&["lab", "start-controlplane"]);
    assert!(out.status.success(), "{out:?}");
    // The agents resync on their own: a newer configuration, the same processes.
    for (i, node) in ["node-1", "node-2"].into_iter().enumerate() {
        wire::eventually(Duration::from_secs(30), "the agents' resync", || {
            lab.config_version(node) > versions[i]
        });
    }
    lab.reload();
    for (i, node) in ["node-1", "node-2"].into_iter().enumerate() {
        assert_eq!(
            lab.agent(node).pid,
            pids[i],
            "the agent of {node} restarted"
        );
    }
    // And they follow changes again.
    lab.apply(
        "after",
        &STRICT.replace("name: strict", "name: strict-again"),
    );
    let results = callers.stop();
    echo(&mut long, "after").unwrap();
    eprintln!("control plane down for {:?}", outage);
    assert_all_ok(&results, "across the outage");
}

#[test]
fn certificates_rotating_every_few_seconds_fail_no_call_and_keep_old_connections() {
    let rotations = setting("WEFT_TEST_ROTATIONS", 20);
    let lab = strict_lab(&["--controlplane-env", "WEFT_CERT_LIFETIME=30s"]);
    let server2 = sa(lab.ip("shop/server-2"), 7000);
    let mut long = connect_from(&lab, "shop/caller-1", server2);
    echo(&mut long, "before").unwrap();
    let callers = Callers::start(&lab, &PAIRS, 20, "weft-rotation");
    let issued = |node: &str, identity: &str| {
        lab.agent_log(node)
            .lines()
            .filter(|l| l.contains("certificate issued") && l.contains(identity))
            .count() as u64
    };
    let started = Instant::now();
    let caller = "spiffe://cluster.local/ns/shop/sa/caller";
    let server = "spiffe://cluster.local/ns/shop/sa/server";
    let pairs = [
        ("node-1", caller),
        ("node-1", server),
        ("node-2", caller),
        ("node-2", server),
    ];
    let first = pairs.map(|(n, id)| issued(n, id));
    // 30 s certificates are renewed at about half their life.
    wire::eventually(
        Duration::from_secs(20 * rotations + 60),
        "the rotations",
        || {
            pairs
                .iter()
                .zip(first)
                .all(|((n, id), first)| issued(n, id) >= first + rotations)
        },
    );
    let elapsed = started.elapsed();
    let results = callers.stop();
    // The connection opened before the first rotation still works, its certificates
    // long expired: TLS checked them once, at its handshake.
    echo(&mut long, "after").unwrap();
    eprintln!(
        "{rotations} rotations of each identity on each node in {:.0} s",
        elapsed.as_secs_f64()
    );
    assert_all_ok(&results, &format!("across {rotations} rotations"));
}

/// Only `shop/server`'s own identity may call it: the callers are denied.
const DENY_CALLERS: &str = "apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: only-servers, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: [cluster.local/ns/shop/sa/server]
";

#[test]
fn revoking_a_policy_closes_live_tunnels_within_a_second() {
    let lab = strict_lab(&[]);
    let mut rounds = Vec::new();
    for (round, (from, to)) in PAIRS.iter().enumerate() {
        let mut live = connect_from(&lab, from, sa(lab.ip(to), 7000));
        echo(&mut live, "allowed").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut reader = live.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let r = reader.read(&mut byte);
            let _ = tx.send((Instant::now(), r.map_err(|e| e.kind())));
        });
        let written = Instant::now();
        lab.apply(&format!("deny-{round}"), DENY_CALLERS);
        let (closed, read) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the connection was closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let took = closed.duration_since(written);
        rounds.push(took);
        // Allowed again for the next round.
        let before = ["node-1", "node-2"].map(|n| lab.config_version(n));
        std::fs::remove_file(
            std::path::Path::new(lab::RUN_DIR)
                .join("controlplane/config")
                .join(format!("deny-{round}.yaml")),
        )
        .unwrap();
        for (node, before) in ["node-1", "node-2"].into_iter().zip(before) {
            wire::eventually(Duration::from_secs(10), "the policy's removal", || {
                lab.config_version(node) > before
            });
        }
    }
    eprintln!("revocation closed the live tunnel after {rounds:?}");
    for took in rounds {
        assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    }
}
