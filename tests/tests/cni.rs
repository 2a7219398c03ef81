//! `weft-cni` for real: chained after `bridge` + `host-local` on a lab node, called as a
//! container runtime calls it, against the node's running agent. ADD enrolls a pod of a
//! mesh namespace before it returns and passes the previous result on untouched; CHECK
//! and DEL do what the spec says; bad input is refused with the spec's codes and
//! changes nothing; with the agent down, pods of mesh namespaces are refused (fail
//! closed) and the others go on. Namespace labels that change at run time bring running
//! pods in and out, also pods that were never announced to the plugin.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use tests::{Process, bin_dir, binary, lab::Lab, weftctl, wire};
use weftctl::lab::{self, cni};

const NODE: &str = "node-1";

fn run_dir() -> PathBuf {
    PathBuf::from(lab::RUN_DIR)
}

fn plugin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from(cni::PLUGIN_DIR), bin_dir()]
}

/// node-1's pod network, with Weft's plugin asking its agent or without it.
fn network(lab: &Lab, with_weft: bool) -> Value {
    let socket = lab.agent(NODE).admin_socket.clone();
    cni::pod_network(
        "10.244.1.0/24",
        "10.244.1.1".parse().unwrap(),
        &run_dir().join("cni").join(NODE),
        with_weft.then_some(socket.as_path()),
    )
}

/// A container on node-1: its namespace attached by the runtime's ADD, detached (DEL)
/// and removed when dropped. Named like lab pods, so that `lab down` removes it too.
struct Container {
    netns: String,
    /// The namespace of a process instead of a named one.
    of_process: Option<PathBuf>,
    namespace: String,
    name: String,
    conflist: Value,
    result: Option<Value>,
}

impl Container {
    fn new(namespace: &str, name: &str, conflist: Value) -> Container {
        let netns = format!("{}-pod-{namespace}.{name}", lab::PREFIX);
        let status = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {netns}");
        Container {
            netns,
            of_process: None,
            namespace: namespace.into(),
            name: name.into(),
            conflist,
            result: None,
        }
    }

    /// A container whose namespace no runtime named: that of `process`.
    fn of_process(namespace: &str, name: &str, conflist: Value, process: &Process) -> Container {
        Container {
            netns: format!("{}-pod-{namespace}.{name}", lab::PREFIX),
            of_process: Some(format!("/proc/{}/ns/net", process.pid()).into()),
            namespace: namespace.into(),
            name: name.into(),
            conflist,
            result: None,
        }
    }

    fn path(&self) -> PathBuf {
        self.of_process
            .clone()
            .unwrap_or_else(|| lab::netns_path(&self.netns))
    }

    fn with<T>(&self, f: impl FnOnce(&cni::Attachment<'_>) -> T) -> T {
        self.on("eth0", f)
    }

    fn on<T>(&self, ifname: &str, f: impl FnOnce(&cni::Attachment<'_>) -> T) -> T {
        let (pod, node) = (self.path(), lab::netns_path(&lab::node_netns(NODE)));
        let dirs = plugin_dirs();
        let at = cni::Attachment {
            container_id: &self.netns,
            netns: &pod,
            ifname,
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                self.namespace, self.name
            ),
            runtime_netns: &node,
            plugin_dirs: &dirs,
        };
        f(&at)
    }

    /// ADD of loopback, then of the pod network, as a runtime attaches a pod.
    fn add(&mut self) -> Result<Value, cni::Error> {
        self.on("lo", |at| cni::add(&cni::loopback(), at))?;
        let r = self.with(|at| cni::add(&self.conflist, at))?;
        self.result = Some(r.clone());
        Ok(r)
    }

    fn check(&self) -> Result<(), cni::Error> {
        self.with(|at| cni::check(&self.conflist, at, self.result.as_ref().unwrap()))
    }

    fn del(&mut self) -> Result<(), cni::Error> {
        let r = self.with(|at| cni::del(&self.conflist, at, self.result.as_ref()));
        self.result = None;
        r
    }

    fn ip(&self) -> String {
        cni::first_ipv4(self.result.as_ref().unwrap())
            .unwrap()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // As a runtime does, also after a failed ADD: the plugins release what they hold.
        let _ = self.del();
        if self.of_process.is_none() && lab::netns_path(&self.netns).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
        }
    }
}

/// One call of `weft-cni` itself, as a runtime makes it: exit status, stdout (JSON when
/// it is) and stderr.
fn plugin(env: &[(&str, &str)], stdin: &[u8]) -> (bool, Value, String) {
    let mut child = Command::new(binary("weft-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout));
    (
        out.status.success(),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The plugin's own configuration (as the runtime gives it) with `prev` as `prevResult`.
fn conf(lab: &Lab, prev: &Value) -> Vec<u8> {
    json!({
        "cniVersion": "1.0.0",
        "name": "weft-lab",
        "type": "weft-cni",
        "agentSocket": lab.agent(NODE).admin_socket,
        "prevResult": prev,
    })
    .to_string()
    .into_bytes()
}

/// The runtime's variables for `command` on the container whose namespace is `netns`
/// (the container is named like its namespace, as [`Container`]s are).
fn pod_env<'a>(command: &'a str, netns: &'a str, args: &'a str) -> Vec<(&'a str, &'a str)> {
    let id = netns.rsplit('/').next().unwrap_or(netns);
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", args),
    ]
}

/// node-1's enrollments: netns path → identity.
fn enrollments(lab: &Lab) -> Vec<(String, String)> {
    let r = api::admin::Client::new(&lab.agent(NODE).admin_socket)
        .get("/v1/enrollments")
        .unwrap();
    let mut out: Vec<(String, String)> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["netns"].as_str().unwrap().to_owned(),
                e["identity"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn enrolled(lab: &Lab, path: &Path) -> Option<String> {
    let path = path.display().to_string();
    enrollments(lab)
        .into_iter()
        .find(|(p, _)| *p == path)
        .map(|(_, id)| id)
}

fn workloads_yaml(pods: &[(&str, &str, &str, &str, &[String])]) -> String {
    let mut yaml = String::new();
    for (ns, name, sa, labels, addresses) in pods {
        yaml.push_str(&format!(
            "---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  serviceAccount: {sa}\n  node: {NODE}\n  addresses: {addresses:?}\n"
        ));
    }
    yaml
}

fn code(stdout: &Value) -> u64 {
    stdout["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code in {stdout}"))
}

#[test]
fn add_enrolls_before_it_returns_check_and_del_follow_and_a_silent_agent_fails_closed() {
    let lab = Lab::up(lab::topology::DEFAULT, &["WEFT_CNI_WAIT=2s"], &[]);
    // The pods are scheduled (the control plane knows them, without addresses yet).
    lab.apply_to_nodes(
        "cni-pods",
        &workloads_yaml(&[
            ("shop", "cni-1", "cart", "", &[]),
            ("shop", "cni-out", "cart", "weft.dev/mesh: disabled", &[]),
            ("legacy", "cni-2", "billing", "", &[]),
        ]),
        &[NODE],
    );

    // ADD of a pod of the mesh namespace: enrolled, with its identity, when ADD returns.
    let mut c1 = Container::new("shop", "cni-1", network(&lab, true));
    let started = std::time::Instant::now();
    let result = c1.add().expect("ADD through bridge and weft-cni");
    let mesh_add = started.elapsed();
    assert!(c1.ip().starts_with("10.244.1."), "{result}");
    assert_eq!(
        enrolled(&lab, &c1.path()).as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/cart"),
        "{:?}",
        enrollments(&lab)
    );
    // CHECK of the whole chain passes.
    c1.check().expect("CHECK");

    // The previous result goes on untouched, whatever it holds (an ADD again is fine).
    let mut prev = result.clone();
    prev["dns"] = json!({"nameservers": ["10.96.0.53"], "search": ["shop.svc.cluster.local"]});
    prev["x-runtime-field"] = json!({"kept": [1, 2, 3]});
    let path = c1.path().display().to_string();
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cni-1";
    let (ok, out, err) = plugin(&pod_env("ADD", &path, args), &conf(&lab, &prev));
    assert!(ok, "{out} {err}");
    assert_eq!(out, prev);

    // A namespace outside the mesh, and a pod that opts out: attached, not enrolled.
    let mut c2 = Container::new("legacy", "cni-2", network(&lab, true));
    let started = std::time::Instant::now();
    c2.add().expect("ADD of a legacy pod");
    println!(
        "ADD (loopback, bridge, weft-cni): {:.1} ms for a mesh pod (enrolled), {:.1} ms for one outside",
        mesh_add.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(enrolled(&lab, &c2.path()), None);
    c2.check().expect("CHECK of a legacy pod");
    let mut out_pod = Container::new("shop", "cni-out", network(&lab, true));
    out_pod.add().expect("ADD of a pod that opts out");
    assert_eq!(enrolled(&lab, &out_pod.path()), None);

    // A pod the control plane has not told the agent of: try again later (code 11).
    let args_ghost = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=ghost";
    let (ok, out, _) = plugin(&pod_env("ADD", &path, args_ghost), &conf(&lab, &result));
    assert!(!ok);
    assert_eq!(code(&out), 11, "{out}");
    assert!(
        out["details"]
            .as_str()
            .unwrap()
            .contains("shop/ghost has not reached"),
        "{out}"
    );

    // Bad input: refused with the spec's codes, and nothing changes.
    let before = enrollments(&lab);
    let env = pod_env("ADD", &path, args);
    for (env, stdin, want, needle) in [
        (env.clone(), &b"{not json"[..], 6, "not valid JSON"),
        (
            env.clone(),
            &br#"{"cniVersion":"9.9.9","name":"x"}"#[..],
            1,
            "not supported",
        ),
        (
            env.clone(),
            &br#"{"cniVersion":"1.0.0","name":"x","agentSocket":"relative"}"#[..],
            7,
            "agentSocket",
        ),
        (
            vec![("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x")],
            &br#"{"cniVersion":"1.0.0","name":"x"}"#[..],
            4,
            "CNI_NETNS",
        ),
    ] {
        let (ok, out, err) = plugin(&env, stdin);
        assert!(!ok, "{out}");
        assert_eq!(code(&out), want, "{out}");
        assert!(out["msg"].as_str().unwrap().contains(needle), "{out}");
        assert!(err.contains("weft-cni:"), "{err}");
    }
    assert_eq!(enrollments(&lab), before);
    let (ok, out, _) = plugin(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    assert!(ok);
    assert_eq!(
        out["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    );

    // DEL unenrolls and forgets; CHECK then says so; DEL again is no error.
    c1.del().expect("DEL");
    assert_eq!(enrolled(&lab, &c1.path()), None);
    let (ok, out, _) = plugin(&pod_env("CHECK", &path, args), &conf(&lab, &result));
    assert!(!ok);
    assert!(
        out["details"].as_str().unwrap().contains("no record"),
        "{out}"
    );
    let (ok, out, err) = plugin(&pod_env("DEL", &path, args), &conf(&lab, &result));
    assert!(ok, "{out} {err}");

    // The agent dies: a pod of the mesh namespace is refused, so it never runs
    // unmeshed; one of a namespace outside the mesh goes on; so do DEL and the
    // cluster's own namespaces.
    let agent = lab.agent(NODE).pid;
    // SAFETY: kill(2) of the agent process the lab started.
    assert_eq!(unsafe { libc::kill(agent as i32, libc::SIGKILL) }, 0);
    wire::eventually(Duration::from_secs(5), "the agent to exit", || {
        !Path::new(&format!("/proc/{agent}")).exists()
            || std::fs::read_to_string(format!("/proc/{agent}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let mut c3 = Container::new("shop", "cni-3", network(&lab, true));
    let e = c3.add().expect_err("a mesh pod without its agent");
    let cni::Error::Plugin { code, message, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(*code, Some(11), "{e}");
    assert!(message.contains("does not answer"), "{message}");
    assert!(
        message.contains("namespace shop is in the mesh"),
        "{message}"
    );
    let mut c4 = Container::new("legacy", "cni-4", network(&lab, true));
    c4.add()
        .expect("a pod outside the mesh goes on without the agent");
    // A namespace the agent never heard of may be in the mesh by now: refused too.
    let new_ns = "K8S_POD_NAMESPACE=created-later;K8S_POD_NAME=p";
    let (ok, out, _) = plugin(&pod_env("ADD", &path, new_ns), &conf(&lab, &result));
    assert!(!ok);
    assert!(
        out["msg"].as_str().unwrap().contains("is not known"),
        "{out}"
    );
    let system = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1";
    let (ok, out, _) = plugin(&pod_env("ADD", &path, system), &conf(&lab, &result));
    assert!(ok, "{out}");
    assert_eq!(out, result);
    c2.del().expect("DEL without the agent");
}

#[test]
fn namespace_labels_bring_running_pods_in_and_out_also_pods_never_announced() {
    let lab = Lab::up(lab::topology::DEFAULT, &[], &[]);
    // Pods attached before Weft's plugin was there (bridge alone): one in a namespace
    // the runtime named, one in a namespace only its process holds.
    let mut named = Container::new("legacy", "old-1", network(&lab, false));
    named.add().expect("ADD through bridge alone");
    let _sleeper =
        Process::spawn(Command::new("ip").args(["netns", "exec", &named.netns, "sleep", "120"]));
    let unnamed_process = Process::spawn(Command::new("unshare").args(["--net", "sleep", "120"]));
    wire::eventually(
        Duration::from_secs(5),
        "the process's own namespace",
        || {
            std::fs::read_link(format!("/proc/{}/ns/net", unnamed_process.pid())).ok()
                != std::fs::read_link("/proc/self/ns/net").ok()
        },
    );
    let mut unnamed =
        Container::of_process("legacy", "old-2", network(&lab, false), &unnamed_process);
    unnamed.add().expect("ADD through bridge alone");
    lab.apply_to_nodes(
        "old-pods",
        &workloads_yaml(&[
            ("legacy", "old-1", "old", "", &[named.ip()]),
            ("legacy", "old-2", "old", "", &[unnamed.ip()]),
            ("shop", "stale-1", "cart", "", &[]),
        ]),
        &[NODE],
    );
    // A mesh pod whose namespace goes without a DEL (its node went down with it).
    let mut stale = Container::new("shop", "stale-1", network(&lab, true));
    stale.add().expect("ADD of a mesh pod");
    let stale_path = stale.path();
    assert!(enrolled(&lab, &stale_path).is_some());
    let status = Command::new("ip")
        .args(["netns", "del", &stale.netns])
        .status()
        .unwrap();
    assert!(status.success());
    let billing = lab.pod("legacy/billing-1");
    let billing_path = lab::netns_path(&billing.netns);
    assert_eq!(enrolled(&lab, &billing_path), None);

    let out = weftctl(&["lab", "enroll", "legacy"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        enrolled(&lab, &billing_path).as_deref(),
        Some("spiffe://cluster.local/ns/legacy/sa/billing")
    );
    let old_id = "spiffe://cluster.local/ns/legacy/sa/old";
    let named_path = named.path().display().to_string();
    wire::eventually(
        Duration::from_secs(10),
        "the pods found by their addresses",
        || {
            let found: Vec<String> = enrollments(&lab)
                .into_iter()
                .filter(|(_, id)| id == old_id)
                .map(|(p, _)| p)
                .collect();
            found.len() == 2
                && found.contains(&named_path)
                && found.iter().any(|p| p.starts_with("/proc/"))
        },
    );
    assert!(
        lab.agent_log(NODE)
            .contains("found a pod that was never announced"),
        "{}",
        lab.agent_log(NODE)
    );
    // In the mesh for real: billing-1 gets its certificate.
    wire::eventually(Duration::from_secs(10), "billing-1's certificate", || {
        api::admin::Client::new(&lab.agent(NODE).admin_socket)
            .get("/v1/enrollments")
            .unwrap()
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["netns"] == billing_path.display().to_string() && e["certificate"] == "ready"
            })
    });

    let out = weftctl(&["lab", "enroll", "legacy", "--off"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(enrolled(&lab, &billing_path), None);
    // The next configuration let the agent forget the namespace that went.
    assert_eq!(enrolled(&lab, &stale_path), None, "{:?}", enrollments(&lab));
    wire::eventually(Duration::from_secs(10), "the found pod to leave", || {
        !enrollments(&lab).iter().any(|(_, id)| id == old_id)
    });
    // The mesh pods stay.
    let cart = lab::netns_path(&lab.pod("shop/cart-1").netns);
    assert!(enrolled(&lab, &cart).is_some());
}
