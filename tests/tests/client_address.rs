//! The destination application sees the original client's address as the peer of a
//! connection that came through the mesh — across nodes both ways, on the same node,
//! and for a plaintext client outside the mesh steered in by the agent — while the
//! bytes arrive intact and the pods' own connections are unaffected; and a leg the
//! kernel's programs fail to let through is refused by the agent, not looped. Root, on
//! the lab.

use std::{process::Command, time::Duration};

use agent::netns::client_address::{self, TABLE};
use serde_json::Value;
use tests::lab::{Lab, metric, sa};
use weftctl::lab;

/// The calls topology plus a pod outside the mesh.
const TOPOLOGY: &str = "\
underlay: 10.250.0.0/24
serviceSubnet: 10.96.0.0/16
nodes:
  - {name: node-1, podSubnet: 10.244.1.0/24}
  - {name: node-2, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: shop, labels: {weft.dev/mesh: enabled}}
  - {name: legacy}
pods:
  - {name: caller-1, namespace: shop, node: node-1, serviceAccount: caller, labels: {app: caller}}
  - {name: caller-2, namespace: shop, node: node-2, serviceAccount: caller, labels: {app: caller}}
  - {name: server-1, namespace: shop, node: node-1, serviceAccount: server, labels: {app: server}}
  - {name: server-2, namespace: shop, node: node-2, serviceAccount: server, labels: {app: server}}
  - {name: old-1, namespace: legacy, node: node-1, serviceAccount: old, labels: {app: old}}
";

/// The peer address the HTTP endpoint of `to` saw for a GET from `from`.
fn seen_by(lab: &Lab, from: &str, to: &str) -> String {
    let target = sa(lab.ip(to), lab::HTTP_PORT).to_string();
    let v: Value = lab.sample_json(from, &["get", "--connect", &target]);
    assert_eq!(v["pod"], to.split('/').nth(1).unwrap(), "{v}");
    v["client"].as_str().expect("client").to_owned()
}

/// The IP of a peer address as the application printed it (a dual-stack listener
/// shows IPv4 peers mapped).
fn ip_of(peer: &str) -> String {
    let addr: std::net::SocketAddr = peer.parse().unwrap();
    addr.ip().to_canonical().to_string()
}

/// `ip <args>` inside the pod's namespace.
fn ip_in(lab: &Lab, pod: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.pod(pod).netns, "ip"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn applications_see_the_original_client_address() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let m1 = lab.metrics("node-1");
    let fast_before = metric(
        &m1,
        "weft_tcp_connections_opened_total",
        &["reporter=\"destination\""],
    );

    // Across nodes, both ways, through HBONE; and on node-1 between two of its pods
    // (the same-node fast path, inside the agent).
    for (from, to) in [
        ("shop/caller-1", "shop/server-2"),
        ("shop/caller-2", "shop/server-1"),
        ("shop/caller-1", "shop/server-1"),
    ] {
        let peer = seen_by(&lab, from, to);
        assert_eq!(
            ip_of(&peer),
            lab.ip(from).to_string(),
            "{from} → {to}: {peer}"
        );
    }
    // The destination side admitted them (they were tunnelled, not bypassed).
    let m1 = lab.metrics("node-1");
    assert!(
        metric(
            &m1,
            "weft_tcp_connections_opened_total",
            &["reporter=\"destination\""]
        ) >= fast_before + 2,
        "{m1}"
    );

    // A client outside the mesh, steered to the agent's inbound plaintext listener.
    let peer = seen_by(&lab, "legacy/old-1", "shop/server-2");
    assert_eq!(ip_of(&peer), lab.ip("legacy/old-1").to_string(), "{peer}");

    // The bytes of a long transfer arrive in both directions over a leg that leaves
    // from the client's address (the echo compares SHA-256 of each way).
    lab.echo_ok(
        "shop/caller-1",
        sa(lab.ip("shop/server-2"), 7000),
        16 << 20,
        &[],
    );
    lab.echo_ok(
        "shop/caller-1",
        sa(lab.ip("shop/server-1"), 7000),
        16 << 20,
        &[],
    );

    // The server pod's own calls, including back to its client, still work.
    let peer = seen_by(&lab, "shop/server-2", "shop/caller-1");
    assert_eq!(ip_of(&peer), lab.ip("shop/server-2").to_string(), "{peer}");

    // The routing that brings the application's answers back: a rule on the mark,
    // a table with one local route, in each enrolled pod and in no other.
    let rule = format!(
        "fwmark {:#x} lookup {TABLE}",
        client_address::CLIENT_ADDRESS_MARK
    );
    for pod in ["shop/server-1", "shop/server-2", "shop/caller-1"] {
        let rules = ip_in(&lab, pod, &["-4", "rule"]);
        assert!(rules.contains(&rule), "{pod}: {rules}");
        let table = ip_in(
            &lab,
            pod,
            &["-4", "route", "show", "table", &TABLE.to_string()],
        );
        assert!(table.contains("local default dev lo"), "{pod}: {table}");
    }
    let rules = ip_in(&lab, "legacy/old-1", &["-4", "rule"]);
    assert!(!rules.contains(&rule), "{rules}");

    // Unenrolled, a pod loses the rule and its application sees the agent no more.
    let agent = lab.agent("node-2");
    let netns = lab.pod("shop/server-2").netns.clone();
    let path = lab::netns_path(&netns);
    let body = serde_json::json!({ "netns": path }).to_string();
    let answer = api::admin::Client::new(&agent.admin_socket)
        .post_json("/v1/unenroll", &body)
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let rules = ip_in(&lab, "shop/server-2", &["-4", "rule"]);
    assert!(!rules.contains(&rule), "{rules}");
    let table = ip_in(
        &lab,
        "shop/server-2",
        &["-4", "route", "show", "table", &TABLE.to_string()],
    );
    assert!(table.trim().is_empty(), "{table}");
}

/// The pinned `CLIENT_LEGS` of a lab node's agent.
fn client_legs_pin(node: &str) -> std::path::PathBuf {
    let dir = std::fs::read_dir("/sys/fs/bpf/weft")
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(node))
        .unwrap_or_else(|| panic!("no pins of {node}"))
        .path();
    dir.join("maps").join(agent_common::maps::CLIENT_LEGS)
}

#[test]
fn a_leg_captured_back_to_its_agent_is_refused_not_carried_again() {
    let mut lab = Lab::up(TOPOLOGY, &[], &[]);
    let to = sa(lab.ip("shop/server-2"), 7000);
    lab.echo_ok("shop/caller-1", to, 1000, &[]);

    // An upgrade whose agent cannot find the pinned map makes one afresh, which the
    // adopted inbound capture never reads: the agent's legs from the client's address
    // are captured back into its own plaintext listener.
    let pin = client_legs_pin("node-2");
    std::fs::remove_file(&pin).unwrap();
    let out = tests::weftctl(&["lab", "upgrade-agent", "node-2"]);
    assert!(out.status.success(), "{out:?}");
    lab.reload();
    assert!(pin.exists(), "the new agent pinned no CLIENT_LEGS");

    for _ in 0..5 {
        // The client's tunnel ends at once: an error, or an end before the echo.
        let r = lab.echo("shop/caller-1", to, 1000, &["--timeout-secs", "3"]);
        let echoed = r
            .as_ref()
            .is_ok_and(|v| v["received"].as_u64() == Some(1000));
        assert!(
            !echoed,
            "the call went through a map sk_lookup never reads: {r:?}"
        );
    }
    // Each came back once and was refused; nothing was carried again. (The agent
    // writes its log from a thread of its own: the last line may come a moment later.)
    let refusals = || {
        lab.agent_log("node-2")
            .matches("came back to its own listener")
            .count()
    };
    tests::wire::eventually(Duration::from_secs(5), "a refusal per call", || {
        refusals() >= 5
    });
    let refused = refusals();
    assert!(refused <= 10, "{refused} refusals for 5 calls");
    let pid = lab.agent("node-2").pid;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(fds < 200, "the agent holds {fds} descriptors");
}
