//! Policy churn: an AuthorizationPolicy flips between ALLOW and DENY of the callers at
//! 100 Hz for 10 s while they call across both nodes every 5 ms. Each agent logs every
//! configuration it takes into use with its authorization policies (`weft::config`),
//! and every admission with the version it was decided with (`weft::access`); no
//! admission may have used a version that denies the callers, and the agents' memory
//! stays flat. Root, on the lab.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use tests::{
    calls::{Callers, PAIRS, TOPOLOGY, count},
    lab::Lab,
    wire,
};
use weftctl::lab;

const FLIPS_PER_SEC: u64 = 100;
const SECONDS: u64 = 10;

fn flip(action: &str) -> String {
    format!(
        "apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: flip, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  action: {action}
  rules:
    - from:
        - source:
            principals: [cluster.local/ns/shop/sa/caller]
"
    )
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The value of `key=` in a log line (unquoted or quoted).
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split(' ').next()?,
    })
}

/// Writes the flip document so that the control plane never reads half a file.
fn write_atomically(dir: &Path, yaml: &str) {
    let tmp = dir.join(".flip.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join("flip.yaml")).unwrap();
}

#[test]
fn policy_flips_at_100_hz_never_admit_under_a_deny_version() {
    let lab = Lab::up_with(
        TOPOLOGY,
        &[
            "--controlplane-env",
            "WEFT_CP_POLL=2ms",
            "--controlplane-env",
            "WEFT_CP_SETTLE=1ms",
        ],
        &["WEFT_LOG=info,weft::config=debug"],
        &[],
    );
    let dir = Path::new(lab::RUN_DIR).join("controlplane/config");
    lab.apply("flip", &flip("ALLOW"));
    let nodes = ["node-1", "node-2"];
    let rss_before: Vec<u64> = nodes.map(|n| rss_kib(lab.agent(n).pid)).to_vec();
    let versions_before: Vec<u64> = nodes.map(|n| lab.config_version(n)).to_vec();

    let callers = Callers::start(&lab, &PAIRS, 5, "weft-flip");
    let start = Instant::now();
    let total = FLIPS_PER_SEC * SECONDS;
    for i in 0..total {
        let due = start + Duration::from_secs(i) / FLIPS_PER_SEC as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        write_atomically(&dir, &flip(if i % 2 == 0 { "DENY" } else { "ALLOW" }));
    }
    let flipping = start.elapsed();
    // The last flip (ALLOW) reaches both agents, then the callers stop.
    let last: Vec<u64> = nodes.map(|n| lab.config_version(n)).to_vec();
    std::thread::sleep(Duration::from_millis(300));
    for (node, last) in nodes.into_iter().zip(&last) {
        wire::eventually(Duration::from_secs(10), "the last flip", || {
            lab.config_version(node) >= *last
        });
    }
    let results = callers.stop();
    let rss_after: Vec<u64> = nodes.map(|n| rss_kib(lab.agent(n).pid)).to_vec();

    let mut allowed_total = 0u64;
    let mut denied_total = 0u64;
    for (i, node) in nodes.into_iter().enumerate() {
        let log = lab.agent_log(node);
        // Version → whether it denies the callers, as the agent took it into use.
        let mut denies: BTreeMap<u64, bool> = BTreeMap::new();
        for line in log.lines().filter(|l| l.contains("configuration in use")) {
            let version: u64 = field(line, "version").unwrap().parse().unwrap();
            let policies = field(line, "authorization").unwrap_or("");
            denies.insert(version, policies.contains("shop/flip=DENY"));
        }
        let during = denies.keys().filter(|v| **v > versions_before[i]).count();
        let (mut allowed, mut denied) = (0u64, 0u64);
        for line in log.lines().filter(|l| {
            l.contains("weft::access")
                && l.contains("reporter=\"destination\"")
                && l.contains("src_identity=spiffe://cluster.local/ns/shop/sa/caller")
        }) {
            let version: u64 = field(line, "version")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no version: {line}"));
            let deny_version = *denies.get(&version).unwrap_or_else(|| {
                panic!("{node} decided with version {version}, never in use: {line}")
            });
            match field(line, "decision") {
                Some("allow") => {
                    assert!(
                        !deny_version,
                        "{node} admitted a connection under deny version {version}: {line}"
                    );
                    allowed += 1;
                }
                Some("deny") => {
                    assert!(
                        deny_version,
                        "{node} denied under allow version {version}: {line}"
                    );
                    denied += 1;
                }
                other => panic!("decision {other:?}: {line}"),
            }
        }
        eprintln!(
            "{node}: {during} configurations in use during {:.1} s of flips; \
             {allowed} admissions, {denied} denials; RSS {} → {} KiB",
            flipping.as_secs_f64(),
            rss_before[i],
            rss_after[i]
        );
        // The agent followed the flips closely (the control plane coalesces what comes
        // within one look at the folder; the agent, what comes within one view).
        assert!(during as u64 >= total / 2, "{node} saw {during} versions");
        // Memory stays flat: the views of a thousand versions are not kept.
        assert!(
            rss_after[i] <= rss_before[i] + 16 * 1024,
            "{node}'s RSS grew from {} to {} KiB",
            rss_before[i],
            rss_after[i]
        );
        allowed_total += allowed;
        denied_total += denied;
    }
    // Both kinds of versions decided connections.
    assert!(
        allowed_total > 0 && denied_total > 0,
        "{allowed_total} / {denied_total}"
    );
    for (from, v) in &results {
        eprintln!("calls from {from} during the flips: {v}");
        assert!(count(v, "calls") >= 500, "{from}: {v}");
        assert!(count(v, "ok") > 0, "{from}: {v}");
    }
}
