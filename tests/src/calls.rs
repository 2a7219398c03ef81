//! Steady traffic while a test breaks something: `weft-sample calls` in pods, a call
//! on a new connection every few milliseconds, each outcome counted by kind.

use std::{
    io::Write as _,
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::lab::{Lab, sa, sample_command};

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
