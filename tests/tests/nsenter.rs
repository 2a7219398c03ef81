//! Capture holds for an enrolled pod's network namespace whatever the cgroup of the
//! process: the agents attach at the cgroup root and choose by namespace cookie, so a
//! process that enters a pod's namespace from the host (`ip netns exec`, outside every
//! pod's and node's cgroup) is captured, tunnelled and counted like the pod's own.
//! Root, on the lab.

use std::process::Command;

use serde_json::Value;
use tests::{
    calls::{STRICT, TOPOLOGY},
    lab::{Lab, metric, sa},
    wire,
};
use weftctl::lab;

const MARKER: &str = "WEFT-NSENTER-MARKER-93d1";

/// This process's cgroup v2 path, from /proc/self/cgroup (the `0::` line).
fn own_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line")
        .to_owned()
}

fn redirected(lab: &Lab, node: &str) -> u64 {
    metric(
        &lab.metrics(node),
        "weft_agent_capture_decisions_total",
        &["reason=\"redirected\""],
    )
}

#[test]
fn a_process_that_enters_a_pod_namespace_from_the_host_is_captured() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    lab.apply("strict", STRICT);
    // Outside the lab's cgroups altogether: no pod's, no node's.
    let cgroup = own_cgroup();
    assert!(
        !cgroup.contains(lab::PREFIX),
        "the test runs inside the lab's cgroups: {cgroup}"
    );
    let before = redirected(&lab, "node-1");
    let capture =
        wire::PacketCapture::start(&lab::netns_path(&lab::underlay_netns()), MARKER.as_bytes());
    let server = sa(lab.ip("shop/server-2"), 7000).to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.pod("shop/caller-1").netns])
        .arg(tests::binary("weft-sample"))
        .args([
            "echo",
            "--connect",
            &server,
            "--bytes",
            "200000",
            "--text",
            MARKER,
        ])
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip netns exec … echo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Captured by node-1's agent, and through to the STRICT server (which refuses
    // plaintext): the tunnel carried it.
    assert_eq!(v["peer"], "127.0.0.1:15001", "not captured: {v}");
    assert_eq!(v["received"], 200_000, "{v}");
    assert_eq!(v["sha256_received"], v["sha256_sent"], "{v}");
    let seen = capture.stop();
    assert!(
        seen.marker_frames.is_empty(),
        "plaintext on the underlay: {:?}",
        seen.marker_frames
    );
    assert!(seen.tls_records > 0, "no tunnel seen: {seen:?}");
    assert_eq!(
        redirected(&lab, "node-1"),
        before + 1,
        "counted once, on node-1"
    );
    // node-2's agent saw it arrive with the pod's identity, over mutual TLS.
    let log = lab.agent_log("node-2");
    assert!(
        log.lines().any(|l| l.contains("reporter=\"destination\"")
            && l.contains("src_identity=spiffe://cluster.local/ns/shop/sa/caller ")
            && l.contains("security=\"mutual_tls\"")
            && l.contains("received=200000")),
        "{log}"
    );
}
