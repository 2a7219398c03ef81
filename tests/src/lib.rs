//! Fixtures for Weft's privileged and end-to-end tests: network namespaces, veth
//! links, cgroups, and real `weft-agent` processes, each removed when dropped — also
//! when the test fails, since `Drop` runs during unwinding.
//!
//! Tests that use these need root. They fail (never skip) without it.

use api::admin::{Client, Response};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub mod calls;
pub mod flood;
pub mod lab;
pub mod waypoint;
pub mod wire;

/// Fails the test unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (eBPF, network namespaces, cgroups); run `cargo xtask test` as root"
    );
}

/// A name that is unique for this test process: `weft-t<pid>-<n>-<suffix>`.
pub fn unique(suffix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("weft-t{}-{n}-{suffix}", std::process::id())
}

/// The directory holding the workspace's built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Path of a workspace binary; fails with advice when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace --bins`, which \
         `cargo xtask test` does)",
        path.display()
    );
    path
}

/// `weftctl ARGS`, as a command (without Rust backtraces in its errors).
pub fn weftctl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("weftctl"));
    cmd.args(args).env("RUST_BACKTRACE", "0");
    cmd
}

/// Runs `weftctl ARGS` to the end.
pub fn weftctl(args: &[&str]) -> Output {
    weftctl_command(args).output().expect("weftctl runs")
}

/// Runs a command to completion and fails the test with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace under `/run/netns`, with loopback up.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(suffix: &str) -> Self {
        let name = unique(suffix);
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Joins two namespaces with a veth pair and gives each end the addresses given
/// (CIDR notation).
pub fn veth(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) {
    // Interface names are limited to 15 bytes.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = std::process::id() % 100_000;
    let (an, bn) = (format!("wv{id}a{n}"), format!("wv{id}b{n}"));
    ip(&[
        "link", "add", &an, "netns", &a.name, "type", "veth", "peer", "name", &bn, "netns", &b.name,
    ]);
    for (ns, ifname, addrs) in [(a, &an, a_addrs), (b, &bn, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname]);
            }
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// The mount point of the cgroup v2 hierarchy.
pub fn cgroup2_root() -> PathBuf {
    api::mounts::cgroup2().expect("no cgroup v2 hierarchy is mounted")
}

/// A cgroup v2 directory; processes started with [`Cgroup::command`] run inside it.
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn create(suffix: &str) -> Self {
        let path = cgroup2_root().join(unique(suffix));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Cgroup { path }
    }

    /// A command that joins this cgroup, then the network namespace `netns`, then runs
    /// `program args…` — in that order, because entering the namespace with
    /// `ip netns exec` would hide the cgroup v2 mount.
    pub fn command(&self, netns: &Netns, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec nsenter --net=\"$@\"")
            .arg("weft-in-pod")
            .arg(&self.path)
            .arg(netns.path())
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Processes that are still inside are killed first; rmdir needs it empty.
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn spawn(cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        Process { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `weft-agent` with its own node name, cgroup, bpffs folder and state.
#[derive(Debug)]
pub struct Agent {
    pub node: String,
    pub cgroup: PathBuf,
    pub state_dir: PathBuf,
    pub env: Vec<(String, String)>,
    process: Option<Process>,
}

impl Agent {
    /// Starts an agent attached to `cgroup`, with extra `WEFT_*` settings.
    pub fn start(cgroup: &Cgroup, extra_env: &[(&str, &str)]) -> Self {
        let node = unique("node");
        let state_dir = std::env::temp_dir().join(&node);
        let mut env = vec![
            ("WEFT_NODE_NAME".to_owned(), node.clone()),
            ("WEFT_CGROUP".to_owned(), cgroup.path.display().to_string()),
            ("WEFT_STATE_DIR".to_owned(), state_dir.display().to_string()),
            ("WEFT_METRICS_ADDR".to_owned(), "off".to_owned()),
            ("WEFT_LOG".to_owned(), "info".to_owned()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut agent = Agent {
            node,
            cgroup: cgroup.path.clone(),
            state_dir,
            env,
            process: None,
        };
        agent.restart();
        agent
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.state_dir.join("admin.sock")
    }

    /// The agent's log (standard error of every run), beside its state folder.
    pub fn log_path(&self) -> PathBuf {
        self.state_dir.with_extension("log")
    }

    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf/weft").join(&self.node)
    }

    /// Starts the agent process (again) and waits until its admin API answers.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("agent log file");
        let mut cmd = Command::new(binary("weft-agent"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        self.process = Some(Process::spawn(&mut cmd));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.admin().get("/v1/stats")
                && r.status == 200
            {
                return;
            }
            let p = self.process.as_mut().expect("started above");
            if let Ok(Some(status)) = p.child.try_wait() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("weft-agent exited during start ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "weft-agent did not answer on {} within 20 s",
                self.admin_socket().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the agent without letting it clean up (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// A client of this agent's admin API.
    pub fn admin(&self) -> Client {
        Client::new(self.admin_socket())
    }

    pub fn get(&self, path: &str) -> Response {
        self.admin().get(path).expect("admin API answers")
    }

    pub fn post_json(&self, path: &str, body: &str) -> Response {
        self.admin()
            .post_json(path, body)
            .expect("admin API answers")
    }

    pub fn enroll(&self, netns: &Path) -> Response {
        self.admin().enroll(netns, None).expect("admin API answers")
    }

    pub fn unenroll(&self, netns: &Path) -> Response {
        self.admin().unenroll(netns).expect("admin API answers")
    }

    pub fn stats(&self) -> serde_json::Value {
        let r = self.get("/v1/stats");
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    /// A kernel decision counter by reason (`redirected`, `not_enrolled`, …).
    pub fn decision(&self, reason: &str) -> u64 {
        self.stats()["decisions"][reason]
            .as_u64()
            .unwrap_or_else(|| panic!("no decision counter {reason}"))
    }

    pub fn accepted(&self) -> u64 {
        self.stats()["outbound"]["accepted"]
            .as_u64()
            .expect("accepted counter")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            eprintln!("---- weft-agent log ({}) ----\n{log}", self.node);
        }
        let _ = std::fs::remove_file(self.log_path());
        // Unpinning the links detaches the programs; the shared folder goes when empty.
        let _ = std::fs::remove_dir_all(self.pin_dir());
        if let Some(parent) = self.pin_dir().parent() {
            let _ = std::fs::remove_dir(parent);
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// The configuration of an in-process control plane whose state, configuration folder
/// (`config/`) and node tokens (`tokens.yaml`) live under `root`, listening on `listen`
/// with its webhook on an ephemeral loopback port; `extra` adds or overrides variables.
pub fn control_plane_config(
    root: &Path,
    listen: &str,
    extra: &[(&str, String)],
) -> controlplane::config::Config {
    let mut env: std::collections::HashMap<String, String> = [
        (
            "WEFT_CP_STATE_DIR",
            root.join("state").display().to_string(),
        ),
        (
            "WEFT_CP_CONFIG_DIR",
            root.join("config").display().to_string(),
        ),
        (
            "WEFT_CP_NODE_TOKENS",
            root.join("tokens.yaml").display().to_string(),
        ),
        ("WEFT_CP_LISTEN", listen.to_owned()),
        ("WEFT_CP_WEBHOOK_LISTEN", "127.0.0.1:0".to_owned()),
        ("WEFT_CP_METRICS_LISTEN", "127.0.0.1:0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    controlplane::config::Config::from_source(&env).expect("a valid test configuration")
}
