//! The lab as the end-to-end tests use it: `weftctl lab up` with a topology of the
//! test's own, taken down when the test ends (passed or failed), and helpers to run
//! the sample app in pods and to read agents' and waypoints' metrics and logs.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use weftctl::lab::{self, State};

use crate::{require_root, weftctl, weftctl_command, wire};

/// `weft-sample ARGS` in a pod, to run or to spawn.
pub fn sample_command(pod: &str, args: &[&str]) -> Command {
    let mut cmd = weftctl_command(&["lab", "exec", pod, "--", "weft-sample"]);
    cmd.args(args);
    cmd
}

/// Only frontends (and cart's waypoint) may call cart: what tests use to make denials.
pub const CART_CALLERS: &str = "apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-callers, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: [cluster.local/ns/shop/sa/frontend, cluster.local/ns/shop/sa/cart-waypoint]
";

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// The lab, taken down when the test ends, passed or failed.
pub struct Lab {
    pub state: State,
    pub dir: PathBuf,
}

impl Lab {
    /// `lab up` with `topology`, `--agent-env` and `--waypoint-env` settings.
    pub fn up(topology: &str, agent_env: &[&str], waypoint_env: &[&str]) -> Lab {
        Lab::up_with(topology, &[], agent_env, waypoint_env)
    }

    /// [`Lab::up`] with more flags of `lab up` (`--observability`).
    pub fn up_with(
        topology: &str,
        flags: &[&str],
        agent_env: &[&str],
        waypoint_env: &[&str],
    ) -> Lab {
        require_root();
        let dir = std::env::temp_dir().join(crate::unique("lab"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("topology.yaml");
        std::fs::write(&file, topology).unwrap();
        let mut args = vec!["lab", "up", "--topology", file.to_str().unwrap()];
        args.extend(flags);
        for e in agent_env {
            args.extend(["--agent-env", e]);
        }
        for e in waypoint_env {
            args.extend(["--waypoint-env", e]);
        }
        let out = weftctl(&args);
        if !out.status.success() {
            let _ = weftctl(&["lab", "down"]);
            panic!(
                "lab up failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let state = State::load().unwrap().expect("state written");
        Lab { state, dir }
    }

    /// The state again (after `weftctl waypoint …` changed it).
    pub fn reload(&mut self) {
        self.state = State::load().unwrap().expect("state written");
    }

    pub fn pod(&self, key: &str) -> &lab::PodState {
        self.state.pod(key).unwrap()
    }

    pub fn ip(&self, key: &str) -> Ipv4Addr {
        self.pod(key).ip
    }

    pub fn node_address(&self, node: &str) -> Ipv4Addr {
        self.state
            .topology
            .nodes
            .iter()
            .find(|n| n.name == node)
            .unwrap()
            .address
    }

    pub fn agent(&self, node: &str) -> &lab::AgentState {
        self.state.agents.iter().find(|a| a.node == node).unwrap()
    }

    /// Runs `weft-sample` in a pod.
    pub fn sample(&self, pod: &str, args: &[&str]) -> Output {
        sample_command(pod, args).output().expect("weftctl runs")
    }

    /// Runs `weft-sample` in a pod; its JSON output, failing the test if it fails.
    pub fn sample_json(&self, pod: &str, args: &[&str]) -> Value {
        let out = self.sample(pod, args);
        assert!(
            out.status.success(),
            "weft-sample {args:?} in {pod} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Echoes `bytes` from `pod` to `to`; returns the JSON report, or the error text.
    pub fn echo(
        &self,
        pod: &str,
        to: SocketAddr,
        bytes: u64,
        extra: &[&str],
    ) -> Result<Value, String> {
        let (to, bytes) = (to.to_string(), bytes.to_string());
        let mut args = vec!["echo", "--connect", &to, "--bytes", &bytes];
        args.extend_from_slice(extra);
        let out = self.sample(pod, &args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(v)
    }

    pub fn echo_ok(&self, pod: &str, to: SocketAddr, bytes: u64, extra: &[&str]) -> Value {
        let v = self
            .echo(pod, to, bytes, extra)
            .unwrap_or_else(|e| panic!("{pod} → {to}: {e}"));
        assert_eq!(v["received"].as_u64(), Some(bytes), "{pod} → {to}: {v}");
        assert_eq!(v["sha256_sent"], v["sha256_received"], "{pod} → {to}: {v}");
        v
    }

    /// The Prometheus text of a node's agent (port 15020 on the node's address).
    pub fn metrics(&self, node: &str) -> String {
        let addr = SocketAddr::from((self.node_address(node), 15020));
        http_get(&lab::netns_path(&lab::node_netns(node)), addr, "/metrics")
    }

    /// The lab CA's trust bundle, and a certificate and key the CA issues for
    /// `identity`: a test client the mesh takes for one of its own.
    pub fn client_cert(&self, identity: &str) -> (String, (String, String)) {
        let ca = Path::new(lab::RUN_DIR).join("controlplane/state/ca");
        let roots = std::fs::read_to_string(ca.join("trust-bundle.pem")).unwrap();
        let cert = wire::workload_cert(
            &ca.join("root-cert.pem"),
            &ca.join("root-key.pem"),
            identity,
        );
        (roots, cert)
    }

    /// The Prometheus text of a pod's process on 15020 (a waypoint's metrics port).
    pub fn pod_metrics(&self, pod: &str) -> String {
        let p = self.pod(pod);
        http_get(&lab::netns_path(&p.netns), sa(p.ip, 15020), "/metrics")
    }

    pub fn config_version(&self, node: &str) -> u64 {
        let c = api::admin::Client::new(&self.agent(node).admin_socket)
            .get("/v1/config")
            .unwrap()
            .body;
        c["version"].as_u64().unwrap()
    }

    /// The configuration version the waypoint of `pod` runs with.
    pub fn waypoint_version(&self, pod: &str) -> u64 {
        metric(&self.pod_metrics(pod), "weft_waypoint_config_version", &[])
    }

    fn waypoint_pods(&self) -> Vec<String> {
        self.state
            .pods
            .iter()
            .filter(|p| p.pod.waypoint)
            .map(|p| p.pod.key())
            .collect()
    }

    /// Writes a document file into the control plane's folder and waits until every
    /// agent and waypoint has a newer configuration.
    pub fn apply(&self, name: &str, yaml: &str) {
        let nodes: Vec<String> = self.state.agents.iter().map(|a| a.node.clone()).collect();
        self.apply_to(name, yaml, &nodes);
    }

    /// [`Lab::apply`] for documents that only waypoints receive (routes): waits for the
    /// waypoints alone.
    pub fn apply_routes(&self, name: &str, yaml: &str) {
        self.apply_to(name, yaml, &[]);
    }

    /// [`Lab::apply`] waiting for the agents of `nodes` and the waypoints `waypoints`
    /// (pod keys) alone.
    pub fn apply_and_wait(&self, name: &str, yaml: &str, nodes: &[&str], waypoints: &[&str]) {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        self.write_and_wait(name, yaml, &own(nodes), &own(waypoints));
    }

    /// [`Lab::apply`] for documents that only the waypoints `waypoints` (pod keys)
    /// receive, such as a gateway's routes: waits for those alone.
    pub fn apply_to_waypoints(&self, name: &str, yaml: &str, waypoints: &[&str]) {
        let waypoints: Vec<String> = waypoints.iter().map(|w| (*w).to_owned()).collect();
        self.write_and_wait(name, yaml, &[], &waypoints);
    }

    /// [`Lab::apply`] for documents that only the agents of `nodes` receive (the
    /// Workloads of a node): waits for those alone.
    pub fn apply_to_nodes(&self, name: &str, yaml: &str, nodes: &[&str]) {
        let nodes: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
        self.write_and_wait(name, yaml, &nodes, &[]);
    }

    fn apply_to(&self, name: &str, yaml: &str, nodes: &[String]) {
        self.write_and_wait(name, yaml, nodes, &self.waypoint_pods());
    }

    fn write_and_wait(&self, name: &str, yaml: &str, nodes: &[String], waypoints: &[String]) {
        let before: Vec<u64> = nodes.iter().map(|n| self.config_version(n)).collect();
        let before_w: Vec<u64> = waypoints.iter().map(|w| self.waypoint_version(w)).collect();
        let path = Path::new(lab::RUN_DIR)
            .join("controlplane/config")
            .join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        for (node, before) in nodes.iter().zip(before) {
            wire::eventually(Duration::from_secs(10), "the new configuration", || {
                self.config_version(node) > before
            });
        }
        for (w, before) in waypoints.iter().zip(before_w) {
            wire::eventually(
                Duration::from_secs(10),
                "the waypoint's configuration",
                || self.waypoint_version(w) > before,
            );
        }
    }

    /// An answer of the lab's Prometheus HTTP API (`lab up --observability`), asked from
    /// inside its namespace over HTTP/1.0 (so not chunked); `Null` when it is not JSON.
    pub fn prometheus(&self, path: &str) -> Value {
        let o = self
            .state
            .observability
            .as_ref()
            .expect("Prometheus runs (lab up --observability)");
        let (addr, path) = (sa(o.address, lab::observability::PORT), path.to_owned());
        let netns = lab::netns_path(&lab::observability::netns());
        let answer = wire::in_netns(&netns, move || {
            let mut s =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        });
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// An instant query of the lab's Prometheus: its whole answer.
    pub fn prometheus_query(&self, promql: &str) -> Value {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.prometheus(&format!("/api/v1/query?query={encoded}"))
    }

    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(&self.agent(node).log).unwrap()
    }

    pub fn pod_log(&self, pod: &str) -> String {
        std::fs::read_to_string(&self.pod(pod).log).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = weftctl(&["lab", "down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert!(out.status.success(), "{out:?}");
        }
    }
}

/// One HTTP/1.1 GET from inside a namespace; the whole answer.
pub fn http_get(netns: &Path, addr: SocketAddr, path: &str) -> String {
    let path = path.to_owned();
    wire::in_netns(netns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// The sum of a metric's samples whose labels contain every one of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
