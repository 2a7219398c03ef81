//! The mesh while its agents restart, on the lab: upgrades in place (a new agent takes
//! the listeners of the running one over SCM_RIGHTS; the old one drains) and crashes
//! (SIGKILL, then a fresh start, as the kubelet restarts a container). Two pods call
//! across nodes every 5 ms throughout, into STRICT pods; a capture on the underlay
//! looks for their message in plaintext. Root, one test at a time (the lab's names).

use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{
    calls::{Callers, PAIRS, STRICT, TOPOLOGY, count},
    lab::{Lab, sa},
    wire,
};
use weftctl::lab;

/// What each call sends; never on the underlay in plaintext.
const MARKER: &str = "WEFT-UPGRADE-MARKER-0b7e44";

fn replace(command: &str, node: &str) -> Value {
    let out = tests::weftctl(&["lab", command, node]);
    assert!(
        out.status.success(),
        "lab {command} {node}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn strict_lab() -> (Lab, wire::PacketCapture) {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    lab.apply("strict", STRICT);
    // The mesh carries the calls before anything restarts.
    for (from, to) in [
        ("shop/caller-1", "shop/server-2"),
        ("shop/caller-2", "shop/server-1"),
    ] {
        let v = lab.echo_ok(from, sa(lab.ip(to), 7000), 1000, &[]);
        assert_eq!(v["peer"], "127.0.0.1:15001", "not captured: {v}");
    }
    let underlay = lab::netns_path(&lab::underlay_netns());
    let capture = wire::PacketCapture::start(&underlay, MARKER.as_bytes());
    (lab, capture)
}

fn assert_no_leak(capture: wire::PacketCapture) {
    let seen = capture.stop();
    assert!(
        seen.marker_frames.is_empty(),
        "the calls' message crossed the underlay in plaintext: {:?}",
        seen.marker_frames
    );
    assert!(seen.tls_records > 0, "no tunnel traffic was seen: {seen:?}");
}

#[test]
fn ten_agent_upgrades_on_both_nodes_fail_no_call_and_leak_nothing() {
    let (mut lab, capture) = strict_lab();
    let callers = Callers::start(&lab, &PAIRS, 5, MARKER);
    let mut serving = Vec::new();
    let mut drained = Vec::new();
    for round in 0..10 {
        for node in ["node-1", "node-2"] {
            let before = lab.agent(node).pid;
            let r = replace("upgrade-agent", node);
            assert_eq!(count(&r, "oldPid"), u64::from(before), "round {round}: {r}");
            assert_ne!(r["newPid"], r["oldPid"], "round {round}: {r}");
            lab.reload();
            assert_eq!(u64::from(lab.agent(node).pid), count(&r, "newPid"));
            serving.push(count(&r, "servingMs"));
            drained.push(count(&r, "oldGoneMs"));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let results = callers.stop();
    assert_no_leak(capture);
    for (from, v) in &results {
        eprintln!("calls from {from} across 20 upgrades: {v}");
        let calls = count(v, "calls");
        assert!(
            calls >= 500,
            "too few calls from {from} to mean anything: {v}"
        );
        assert_eq!(count(v, "ok"), calls, "calls from {from} failed: {v}");
    }
    serving.sort_unstable();
    drained.sort_unstable();
    eprintln!(
        "upgrade: new agent serving after p50 {} ms (max {}), old one gone after p50 {} ms (max {})",
        serving[serving.len() / 2],
        serving[serving.len() - 1],
        drained[drained.len() / 2],
        drained[drained.len() - 1]
    );
    // Each upgrade went through the handoff, not a fresh bind.
    for node in ["node-1", "node-2"] {
        let log = lab.agent_log(node);
        assert_eq!(
            log.matches("took over the listeners of the running agent")
                .count(),
            10,
            "{node}"
        );
        assert_eq!(
            log.matches("the new agent serves: no longer accepting")
                .count(),
            10,
            "{node}"
        );
    }
}

#[test]
fn agent_crashes_refuse_new_connects_and_never_leak() {
    let (lab, capture) = strict_lab();
    let callers = Callers::start(&lab, &PAIRS, 5, MARKER);
    let started = Instant::now();
    let mut back = Vec::new();
    for round in 0..10 {
        let node = if round % 2 == 0 { "node-1" } else { "node-2" };
        let r = replace("kill-agent", node);
        back.push(count(&r, "servingMs"));
        // Calls go on between the crashes.
        std::thread::sleep(Duration::from_millis(300));
    }
    let results = callers.stop();
    assert_no_leak(capture);
    back.sort_unstable();
    eprintln!(
        "crash: {:.1} s for 10 kills; agent serving again after p50 {} ms (max {})",
        started.elapsed().as_secs_f64(),
        back[back.len() / 2],
        back[back.len() - 1]
    );
    for (from, v) in &results {
        eprintln!("calls from {from} across 10 crashes: {v}");
        let calls = count(v, "calls");
        assert!(calls >= 500, "too few calls from {from}: {v}");
        // A call fails only by a refused connect (its own node's agent was down:
        // nothing was sent), or when the kill caught it: under way through the dying
        // agent, or just connected into its listener's queue as the kernel closed it.
        // A caller makes one call at a time, so that is at most two per crash; a peer
        // agent that is down makes the tunnel wait, not fail.
        assert_eq!(
            count(v, "ok") + count(v, "refused") + count(v, "cut"),
            calls,
            "calls from {from} failed otherwise: {v}"
        );
        assert!(
            count(v, "cut") <= 2 * 10,
            "more calls cut than the crashes explain: {v}"
        );
        assert!(count(v, "ok") > 0, "{v}");
    }
}
