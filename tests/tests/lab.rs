//! End-to-end tests of the lab: `weftctl lab up` builds namespaces with the real CNI
//! plugins and runs real agents; the tests talk between pods and take it all down.
//! Root, one test at a time (they share the lab's fixed names).

use std::{path::Path, process::Command};

use serde_json::Value;
use tests::{require_root, weftctl};
use weftctl::lab::{self, State};

fn ok(args: &[&str]) -> String {
    let out = weftctl(args);
    assert!(
        out.status.success(),
        "weftctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Takes the lab down when the test ends, passed or failed.
struct Lab;

impl Lab {
    fn up(args: &[&str]) -> Lab {
        require_root();
        let mut all = vec!["lab", "up"];
        all.extend_from_slice(args);
        let guard = Lab;
        ok(&all);
        guard
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = weftctl(&["lab", "down"]);
        if !std::thread::panicking() {
            assert!(out.status.success(), "{out:?}");
        }
    }
}

fn echo(from: &str, to: std::net::Ipv4Addr, bytes: u64) -> Value {
    let out = ok(&[
        "lab",
        "exec",
        from,
        "--",
        "weft-sample",
        "echo",
        "--connect",
        &format!("{to}:{}", lab::ECHO_PORT),
        "--bytes",
        &bytes.to_string(),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["received"].as_u64(), Some(bytes), "{from} → {to}: {v}");
    assert_eq!(v["sha256_sent"], v["sha256_received"], "{from} → {to}: {v}");
    v
}

/// Nothing of a lab is left on the host.
fn assert_nothing_left(pids: &[u32]) {
    let netns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !netns.contains(lab::PREFIX),
        "namespaces left behind: {netns}"
    );
    let links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for name in ["br0", "cni0", "weft"] {
        assert!(!links.contains(name), "a lab link is on the host: {links}");
    }
    assert!(
        !lab::cgroup_root().unwrap().exists(),
        "the lab cgroup is left"
    );
    assert!(
        !Path::new(lab::RUN_DIR).exists(),
        "{} is left",
        lab::RUN_DIR
    );
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf/weft") {
        for e in entries.flatten() {
            assert!(
                !e.file_name().to_string_lossy().starts_with(lab::PREFIX),
                "pinned objects left: {:?}",
                e.path()
            );
        }
    }
    for pid in pids {
        // A zombie waiting for its reaper has exited; anything else is a leftover.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        assert!(
            matches!(state, None | Some("Z")),
            "process {pid} still runs: {stat}"
        );
    }
}

/// Every process the lab started.
fn pids(state: &State) -> Vec<u32> {
    state
        .pods
        .iter()
        .map(|p| p.app_pid)
        .chain(state.agents.iter().map(|a| a.pid))
        .chain([state.controlplane_pid])
        .collect()
}

#[test]
fn default_lab_connects_every_pod_and_captures_the_enrolled_ones() {
    let lab_guard = Lab::up(&[]);
    let state = State::load().unwrap().expect("state written");
    assert_eq!(state.topology.nodes.len(), 2);
    assert!(state.pods.len() >= 6);
    // The agents run under their nodes' cgroups, so their own connections from the
    // node's namespace (to the control plane) count as `not_enrolled` too: counted
    // from here on.
    let before = lab::agent_stats(&state);

    // The sample app runs in every pod but the waypoint's.
    let apps: Vec<&lab::PodState> = state.pods.iter().filter(|p| !p.pod.waypoint).collect();
    assert!(state.pods.iter().any(|p| p.pod.waypoint));
    for size in [100, 8 * 1024 * 1024] {
        for src in &apps {
            for dst in apps.iter().filter(|d| d.pod.key() != src.pod.key()) {
                let v = echo(&src.pod.key(), dst.ip, size);
                let peer = v["peer"].as_str().unwrap();
                if src.pod.enrolled {
                    assert_eq!(peer, "127.0.0.1:15001", "{} not captured", src.pod.key());
                } else {
                    assert_eq!(peer, format!("{}:{}", dst.ip, lab::ECHO_PORT));
                }
            }
        }
    }

    // Each agent proxied exactly the connections of its node's enrolled pods.
    let others = apps.len() as u64 - 1;
    let stats = lab::agent_stats(&state);
    for node in &state.topology.nodes {
        let enrolled = apps
            .iter()
            .filter(|p| p.pod.node == node.name && p.pod.enrolled)
            .count() as u64;
        let plain = apps
            .iter()
            .filter(|p| p.pod.node == node.name && !p.pod.enrolled)
            .count() as u64;
        let s = &stats[&node.name];
        assert_eq!(
            s["outbound"]["accepted"],
            2 * others * enrolled,
            "{}: {s}",
            node.name
        );
        assert_eq!(
            s["decisions"]["redirected"],
            2 * others * enrolled,
            "{}: {s}",
            node.name
        );
        // The programs sit at the cgroup root: every connect of the machine passes
        // them (the other node's pods too), so this node's plain pods are a part of
        // what was left alone; `redirected` above is exact.
        assert!(
            s["decisions"]["not_enrolled"].as_u64().unwrap()
                - before[&node.name]["decisions"]["not_enrolled"]
                    .as_u64()
                    .unwrap()
                >= 2 * others * plain,
            "{}: {s}",
            node.name
        );
        assert_eq!(s["enrolled_namespaces"], enrolled, "{}: {s}", node.name);
    }

    // The HTTP endpoint answers with the pod's name, and sees the client pod's
    // address as the peer: outside the mesh the agent's upstream leaves from it, and
    // inside the tunnel's last leg leaves from it too (a transparent socket).
    let client = state.pods.iter().find(|p| p.pod.enrolled).unwrap();
    for server in apps.iter().filter(|p| p.pod.node != client.pod.node) {
        let out = ok(&[
            "lab",
            "exec",
            &client.pod.key(),
            "--",
            "weft-sample",
            "get",
            "--connect",
            &format!("{}:{}", server.ip, lab::HTTP_PORT),
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["pod"], server.pod.name.as_str(), "{v}");
        let seen: std::net::SocketAddr = v["client"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            seen.ip().to_canonical(),
            std::net::IpAddr::V4(client.ip),
            "{} → {}: {v}",
            client.pod.key(),
            server.pod.key()
        );
    }

    // Each enrolled pod has its workload identity and a certificate from the lab's CA.
    for agent in &state.agents {
        let list = api::admin::Client::new(&agent.admin_socket)
            .get("/v1/enrollments")
            .unwrap()
            .body;
        let list: Vec<api::admin::Enrollment> = serde_json::from_value(list).unwrap();
        let expected: Vec<&lab::PodState> = state
            .pods
            .iter()
            .filter(|p| p.pod.enrolled && p.pod.node == agent.node)
            .collect();
        assert_eq!(list.len(), expected.len());
        for p in expected {
            let e = list
                .iter()
                .find(|e| e.netns == lab::netns_path(&p.netns))
                .unwrap();
            assert_eq!(
                e.identity.as_deref(),
                Some(
                    format!(
                        "spiffe://cluster.local/ns/{}/sa/{}",
                        p.pod.namespace, p.pod.service_account
                    )
                    .as_str()
                )
            );
            assert_eq!(e.certificate.as_deref(), Some("ready"), "{e:?}");
        }
    }

    // Each agent holds the configuration of its node, from the control plane.
    for agent in &state.agents {
        let config = api::admin::Client::new(&agent.admin_socket)
            .get("/v1/config")
            .unwrap()
            .body;
        let mut got: Vec<String> = serde_json::from_value(config["workloads"].clone()).unwrap();
        got.sort();
        let mut want: Vec<String> = state
            .pods
            .iter()
            .filter(|p| p.pod.node == agent.node)
            .map(|p| p.pod.key())
            .collect();
        want.sort();
        assert_eq!(got, want, "{config}");
        // Every Service, and each waypoint's.
        assert_eq!(
            config["services"].as_array().unwrap().len(),
            state.topology.services.len() + state.topology.waypoints.len(),
            "{config}"
        );
    }

    let status = ok(&["lab", "status"]);
    assert!(status.contains("control plane: running"), "{status}");
    assert!(status.contains("every file is in force"), "{status}");
    assert!(status.contains("ready"), "{status}");

    // A workload that leaves takes its certificate with it.
    let leaving = state
        .pods
        .iter()
        .find(|p| p.pod.enrolled && p.pod.service_account == "frontend")
        .unwrap();
    let agent = state
        .agents
        .iter()
        .find(|a| a.node == leaving.pod.node)
        .unwrap();
    let admin = api::admin::Client::new(&agent.admin_socket);
    let frontend = format!(
        "spiffe://cluster.local/ns/{}/sa/frontend",
        leaving.pod.namespace
    );
    let held = |admin: &api::admin::Client| -> Vec<String> {
        serde_json::from_value(admin.get("/v1/stats").unwrap().body["identities"].clone()).unwrap()
    };
    assert!(held(&admin).contains(&frontend));
    let r = admin.unenroll(&lab::netns_path(&leaving.netns)).unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!held(&admin).contains(&frontend), "{:?}", held(&admin));
    assert_eq!(held(&admin).len(), 1);
    assert!(status.contains("running"), "{status}");
    assert!(!status.contains("DOWN"), "{status}");

    // The control plane's documents describe every pod.
    let docs =
        std::fs::read_to_string(Path::new(lab::RUN_DIR).join("controlplane/config/lab.yaml"))
            .unwrap();
    for p in &state.pods {
        assert!(
            docs.contains(&format!("- {}", p.ip)),
            "{} missing from {docs}",
            p.ip
        );
    }

    // `lab up` on top of a lab cleans it first and builds a working one.
    let first_pids = pids(&state);
    ok(&["lab", "up"]);
    let again = State::load().unwrap().unwrap();
    let a = &again.pods[0];
    let b = again
        .pods
        .iter()
        .find(|p| p.pod.node != a.pod.node)
        .unwrap();
    echo(&a.pod.key(), b.ip, 4096);
    let mut pids = pids(&again);
    pids.extend(first_pids);

    drop(lab_guard);
    assert_nothing_left(&pids);
    // And again: nothing to do, no error.
    ok(&["lab", "down"]);
    assert_nothing_left(&pids);
}

#[test]
fn bad_topologies_are_refused_before_anything_is_created() {
    require_root();
    ok(&["lab", "down"]);
    let dir = std::env::temp_dir().join(tests::unique("topo"));
    std::fs::create_dir_all(&dir).unwrap();
    let base = weftctl::lab::topology::DEFAULT;
    let cases = [
        (
            "unknown-node",
            base.replacen("node: node-2", "node: node-9", 1),
            "pods[3].node: unknown node \"node-9\"",
        ),
        (
            "duplicate-pod",
            base.replacen("name: cart-2", "name: cart-1", 1),
            "pods[4].name: duplicate pod shop/cart-1",
        ),
        (
            "overlap",
            base.replacen("10.244.2.0/24", "10.244.1.0/25", 1),
            "nodes[1].podSubnet: 10.244.1.0/25 overlaps nodes[0].podSubnet (10.244.1.0/24)",
        ),
        (
            "syntax",
            base.replacen("  - name: node-2", "  - name: [node-2", 1),
            "line 10",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        let out = weftctl(&["lab", "up", "--topology", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(
            stderr.contains(expected),
            "{name}: {stderr:?} lacks {expected:?}"
        );
        assert_nothing_left(&[]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
