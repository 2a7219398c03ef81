//! Steady traffic while a test breaks something: `weft-sample calls` in pods, a call
//! on a new connection every few milliseconds, each outcome counted by kind; and the
//! topology the tests that run them share.

use std::{
    io::Write as _,
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::lab::{Lab, sa, sample_command};

/// Two nodes, `shop` in the mesh: a caller and a server on each node, the servers
/// behind the Service `server` (so each agent knows the other node's server).
pub const TOPOLOGY: &str = "\
underlay: 10.250.0.0/24
serviceSubnet: 10.96.0.0/16
nodes:
  - {name: node-1, podSubnet: 10.244.1.0/24}
  - {name: node-2, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: shop, labels: {weft.dev/mesh: enabled}}
pods:
  - {name: caller-1, namespace: shop, node: node-1, serviceAccount: caller, labels: {app: caller}}
  - {name: caller-2, namespace: shop, node: node-2, serviceAccount: caller, labels: {app: caller}}
  - {name: server-1, namespace: shop, node: node-1, serviceAccount: server, labels: {app: server}}
  - {name: server-2, namespace: shop, node: node-2, serviceAccount: server, labels: {app: server}}
services:
  - name: server
    namespace: shop
    vip: 10.96.0.20
    selector: {app: server}
    ports:
      - {name: echo, port: 7000, targetPort: 7000}
";

/// `shop` accepts mutual TLS only.
pub const STRICT: &str = "apiVersion: security.weft.dev/v1alpha1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
";

/// From caller-1 (node-1) to server-2 and from caller-2 (node-2) to server-1: each
/// call crosses both agents.
pub const PAIRS: [(&str, &str); 2] = [
    ("shop/caller-1", "shop/server-2"),
    ("shop/caller-2", "shop/server-1"),
];

/// Callers running until [`Callers::stop`] (or killed when dropped).
pub struct Callers {
    children: Vec<(String, Child)>,
}

impl Callers {
    /// One caller per `(from pod, to pod)`, to the echo port (7000) of `to`, sending
    /// `text` every `interval_ms`.
    pub fn start(lab: &Lab, pairs: &[(&str, &str)], interval_ms: u64, text: &str) -> Callers {
        let mut children = Vec::new();
        for (from, to) in pairs {
            let to = sa(lab.ip(to), 7000).to_string();
            let interval = interval_ms.to_string();
            let child = sample_command(
                from,
                &[
                    "calls",
                    "--connect",
                    &to,
                    "--interval-ms",
                    &interval,
                    "--text",
                    text,
                ],
            )
            .args(["--max-secs", "3600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weftctl runs");
            children.push(((*from).to_owned(), child));
        }
        // Each calls before the test breaks anything.
        std::thread::sleep(Duration::from_millis(500));
        Callers { children }
    }

    /// Stops them; each one's counts, by the pod it called from.
    pub fn stop(mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (from, mut child) in self.children.drain(..) {
            let _ = child.stdin.take().expect("piped").write_all(b"stop\n");
            let done = child.wait_with_output().expect("calls ends");
            assert!(
                done.status.success(),
                "calls from {from} failed: {}",
                String::from_utf8_lossy(&done.stderr)
            );
            let v: Value = serde_json::from_slice(&done.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&done.stdout)));
            out.push((from, v));
        }
        out
    }
}

impl Drop for Callers {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A counter of a `calls` report.
pub fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}
