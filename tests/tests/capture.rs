//! Privileged tests of outbound capture: real eBPF programs attached to a cgroup, a
//! real agent, real processes in network namespaces created here. Run as root with one
//! test thread (`cargo xtask test` does).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use serde_json::Value;
use tests::{Agent, Cgroup, Netns, Process, binary, require_root, run, veth};

const V4_CLIENT: &str = "10.251.0.1";
const V4_SERVER: &str = "10.251.0.2";
const V6_CLIENT: &str = "fd00:251::1";
const V6_SERVER: &str = "fd00:251::2";
/// Echo ports of the server: a normal one, one the tests exclude, one of the agent's.
const ECHO: u16 = 7000;
const ECHO_EXCLUDED: u16 = 7001;
const ECHO_AGENT_PORT: u16 = 15008;

/// A client namespace and a server namespace joined by a veth pair, an echo server in
/// the server namespace, a cgroup for the client, and an agent attached to it.
struct Setup {
    agent: Agent,
    _server: Process,
    cgroup: Cgroup,
    client: Netns,
    server_ns: Netns,
}

impl Setup {
    fn new(agent_env: &[(&str, &str)]) -> Self {
        require_root();
        let client = Netns::create("c");
        let server_ns = Netns::create("s");
        veth(
            &client,
            &[&format!("{V4_CLIENT}/24"), &format!("{V6_CLIENT}/64")],
            &server_ns,
            &[&format!("{V4_SERVER}/24"), &format!("{V6_SERVER}/64")],
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", server_ns.path().display()))
            .arg(binary("weft-sample"))
            .arg("serve")
            .stderr(Stdio::piped());
        for port in [ECHO, ECHO_EXCLUDED, ECHO_AGENT_PORT] {
            cmd.arg("--echo").arg(format!("[::]:{port}"));
        }
        let mut server = Process::spawn(&mut cmd);
        // Wait until all three listeners are up.
        let stderr = server.child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        for _ in 0..3 {
            let line = lines.next().expect("server output").expect("utf-8");
            assert!(line.contains("listening"), "{line}");
        }
        let cgroup = Cgroup::create("cg");
        let agent = Agent::start(&cgroup, agent_env);
        Setup {
            agent,
            _server: server,
            cgroup,
            client,
            server_ns,
        }
    }

    /// Runs the sample echo client inside the client's cgroup and namespace.
    fn echo_from(&self, netns: &Netns, ip: &str, port: u16, bytes: u64) -> Value {
        let addr = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        let out = run(&mut self.cgroup.command(
            netns,
            &binary("weft-sample"),
            &["echo", "--connect", &addr, "--bytes", &bytes.to_string()],
        ));
        let v: Value = serde_json::from_slice(&out.stdout).expect("echo prints JSON");
        assert_eq!(v["sent"].as_u64(), Some(bytes), "{v}");
        assert_eq!(v["received"].as_u64(), Some(bytes), "bytes lost: {v}");
        assert_eq!(v["sha256_sent"], v["sha256_received"], "bytes changed: {v}");
        v
    }

    fn echo(&self, ip: &str, port: u16, bytes: u64) -> Value {
        self.echo_from(&self.client, ip, port, bytes)
    }
}

/// A connection through the agent ends at its loopback listener: that is what the
/// client sees as its peer.
fn assert_captured(v: &Value) {
    let peer = v["peer"].as_str().expect("peer");
    assert!(
        peer == "127.0.0.1:15001" || peer == "[::1]:15001",
        "connection was not captured: {v}"
    );
}

fn assert_direct(v: &Value, ip: &str, port: u16) {
    let peer = v["peer"].as_str().expect("peer");
    let expected = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    assert_eq!(peer, expected, "connection was captured: {v}");
}

const MIB16: u64 = 16 * 1024 * 1024;

#[test]
fn enrolled_namespace_is_captured_for_ipv4_and_ipv6() {
    let s = Setup::new(&[]);
    let r = s.agent.enroll(&s.client.path());
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["listeners"],
        serde_json::json!([
            "127.0.0.1:15001",
            "[::1]:15001",
            "127.0.0.1:15053",
            "[::1]:15053"
        ])
    );

    let v4 = s.echo(V4_SERVER, ECHO, MIB16);
    assert_captured(&v4);
    let v6 = s.echo(V6_SERVER, ECHO, MIB16);
    assert_eq!(v6["peer"], "[::1]:15001", "{v6}");

    assert_eq!(s.agent.accepted(), 2);
    assert_eq!(s.agent.decision("redirected"), 2);
    assert_eq!(s.agent.decision("original_dst_recorded"), 2);
    let stats = s.agent.stats();
    assert_eq!(stats["outbound"]["closed"], 2, "{stats}");

    // The Prometheus view carries the same kernel counters.
    let metrics = s.agent.get("/metrics");
    let text = metrics.body.as_str().expect("text");
    assert!(
        text.lines()
            .any(|l| l == "weft_agent_capture_decisions_total{reason=\"redirected\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("weft_agent_outbound_connections_accepted_total 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "weft_agent_outbound_bytes_total{{direction=\"sent\"}} {}",
            2 * MIB16
        )),
        "{text}"
    );
}

#[test]
fn namespace_that_is_not_enrolled_is_left_alone() {
    let s = Setup::new(&[]);
    // Another namespace is enrolled, so the programs are active.
    let other = Netns::create("o");
    assert_eq!(s.agent.enroll(&other.path()).status, 200);

    let v4 = s.echo(V4_SERVER, ECHO, MIB16);
    assert_direct(&v4, V4_SERVER, ECHO);
    let v6 = s.echo(V6_SERVER, ECHO, 4096);
    assert_direct(&v6, V6_SERVER, ECHO);

    assert_eq!(s.agent.accepted(), 0);
    assert_eq!(s.agent.decision("redirected"), 0);
    assert_eq!(s.agent.decision("not_enrolled"), 2);
}

#[test]
fn loopback_agent_ports_and_excluded_ports_are_not_captured() {
    let s = Setup::new(&[("WEFT_EXCLUDED_PORTS", "7001")]);
    assert_eq!(s.agent.enroll(&s.client.path()).status, 200);

    assert_direct(
        &s.echo(V4_SERVER, ECHO_EXCLUDED, 4096),
        V4_SERVER,
        ECHO_EXCLUDED,
    );
    assert_eq!(s.agent.decision("excluded_port"), 1);
    assert_direct(
        &s.echo(V6_SERVER, ECHO_AGENT_PORT, 4096),
        V6_SERVER,
        ECHO_AGENT_PORT,
    );
    assert_eq!(s.agent.decision("agent_port"), 1);

    // An echo server on the server namespace's loopback, reached from inside it: a
    // server-side process in an enrolled namespace talking to itself.
    assert_eq!(s.agent.enroll(&s.server_ns.path()).status, 200);
    let v = s.echo_from(&s.server_ns, "127.0.0.1", ECHO, 4096);
    assert_direct(&v, "127.0.0.1", ECHO);
    let v = s.echo_from(&s.server_ns, "::1", ECHO, 4096);
    assert_direct(&v, "::1", ECHO);
    assert_eq!(s.agent.decision("loopback"), 2);

    assert_eq!(s.agent.accepted(), 0);
    assert_eq!(s.agent.decision("redirected"), 0);
    // And the normal port still is captured.
    assert_captured(&s.echo(V4_SERVER, ECHO, 4096));
    assert_eq!(s.agent.decision("redirected"), 1);
}

#[test]
fn unenroll_stops_new_captures_and_keeps_open_connections() {
    let s = Setup::new(&[]);
    assert_eq!(s.agent.enroll(&s.client.path()).status, 200);

    let mut chat = Process::spawn(
        s.cgroup
            .command(
                &s.client,
                &binary("weft-sample"),
                &["chat", "--connect", &format!("{V4_SERVER}:{ECHO}")],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut input = chat.child.stdin.take().expect("stdin");
    let mut output = BufReader::new(chat.child.stdout.take().expect("stdout")).lines();
    let connected = output.next().expect("a first line").expect("utf-8");
    assert_eq!(connected, "connected 127.0.0.1:15001");
    let mut say = |line: &str| -> String {
        writeln!(input, "{line}").expect("write");
        input.flush().expect("flush");
        output.next().expect("an answer").expect("utf-8")
    };
    assert_eq!(say("before"), "before");

    let r = s.agent.unenroll(&s.client.path());
    assert_eq!(r.status, 200, "{:?}", r.body);
    let enrollments = s.agent.get("/v1/enrollments");
    assert_eq!(enrollments.body, serde_json::json!([]));

    // The open connection keeps working …
    assert_eq!(say("after"), "after");
    // … and a new one goes straight to the server.
    assert_direct(&s.echo(V4_SERVER, ECHO, 65536), V4_SERVER, ECHO);
    assert_eq!(s.agent.accepted(), 1);
    assert_eq!(s.agent.decision("redirected"), 1);
    assert_eq!(s.agent.decision("not_enrolled"), 1);
    assert_eq!(say("still"), "still");
}

/// `(attach type, program name)` of everything attached to a cgroup, from the kernel
/// (through bpftool).
fn attachments(cgroup: &Cgroup) -> Vec<(String, String)> {
    let out = run(Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&cgroup.path));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let mut list: Vec<(String, String)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|a| {
            (
                a["attach_type"].as_str().unwrap_or("?").to_owned(),
                a["name"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

fn expected_attachments() -> Vec<(String, String)> {
    let mut v = vec![
        (
            "cgroup_inet4_connect".to_owned(),
            "weft_connect4".to_owned(),
        ),
        (
            "cgroup_inet6_connect".to_owned(),
            "weft_connect6".to_owned(),
        ),
        ("cgroup_sock_ops".to_owned(), "weft_sockops".to_owned()),
        // DNS (UDP port 53) to the agent's resolver, and its answers back.
        ("cgroup_udp4_sendmsg".to_owned(), "weft_sendmsg4".to_owned()),
        ("cgroup_udp6_sendmsg".to_owned(), "weft_sendmsg6".to_owned()),
        ("cgroup_udp4_recvmsg".to_owned(), "weft_recvmsg4".to_owned()),
        ("cgroup_udp6_recvmsg".to_owned(), "weft_recvmsg6".to_owned()),
    ];
    v.sort();
    v
}

/// What the agent says it did with each program at start (attached, adopted, replaced).
fn attachment_outcomes(agent: &Agent) -> Vec<String> {
    agent.stats()["attachments"]
        .as_array()
        .expect("attachments")
        .iter()
        .map(|a| a[1].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn restarted_agent_adopts_its_pinned_programs_and_enrollments() {
    let mut s = Setup::new(&[]);
    assert_eq!(s.agent.enroll(&s.client.path()).status, 200);
    assert_captured(&s.echo(V4_SERVER, ECHO, 4096));
    assert_eq!(attachments(&s.cgroup), expected_attachments());
    assert_eq!(attachment_outcomes(&s.agent), ["attached"; 7]);

    for round in 0..2 {
        s.agent.kill();
        // Still attached while no agent runs: the links are pinned.
        assert_eq!(
            attachments(&s.cgroup),
            expected_attachments(),
            "round {round}"
        );
        s.agent.restart();
        assert_eq!(
            attachment_outcomes(&s.agent),
            ["adopted"; 7],
            "round {round}"
        );
        assert_eq!(
            attachments(&s.cgroup),
            expected_attachments(),
            "round {round}"
        );
        // The enrollment came back from the state file, and capture works again.
        let list = s.agent.get("/v1/enrollments").body;
        assert_eq!(
            list[0]["netns"],
            s.client.path().display().to_string(),
            "{list}"
        );
        assert_captured(&s.echo(V4_SERVER, ECHO, MIB16));
        assert_captured(&s.echo(V6_SERVER, ECHO, 4096));
        // The kernel counters live in a pinned map: they kept counting across restarts.
        assert_eq!(s.agent.decision("redirected"), 1 + 2 * (round + 1));
    }
}

#[test]
fn bad_admin_requests_get_clear_errors_and_change_nothing() {
    let s = Setup::new(&[]);
    let good = s.agent.enroll(&s.client.path());
    assert_eq!(good.status, 200);
    let before = s.agent.get("/v1/enrollments").body;

    let regular_file = std::env::current_exe().unwrap();
    let cases: Vec<(api::admin::Response, u16, &str)> = vec![
        (s.agent.enroll(&regular_file), 422, "not a network namespace"),
        (
            s.agent.enroll(std::path::Path::new("/proc/self/ns/mnt")),
            422,
            "a namespace of another type",
        ),
        (
            s.agent.enroll(std::path::Path::new("/run/netns/weft-no-such-namespace")),
            404,
            "No such file",
        ),
        (s.agent.enroll(&s.client.path()), 409, "already enrolled"),
        (
            s.agent.unenroll(&s.server_ns.path()),
            404,
            "is not enrolled",
        ),
        (
            s.agent.post_json("/v1/enroll", "{\"netns\": "),
            400,
            "malformed request",
        ),
        (
            s.agent.post_json("/v1/enroll", "{\"path\": \"/run/netns/x\"}"),
            400,
            "unknown field",
        ),
        (
            s.agent.post_json("/v1/enroll", "{\"netns\": \"relative/ns\"}"),
            400,
            "not an absolute path",
        ),
        (
            s.agent.post_json("/v1/enroll", &format!("{{\"netns\": \"/{}\"}}", "a".repeat(20_000))),
            413,
            "larger than",
        ),
        (s.agent.get("/v1/enroll"), 405, "not allowed"),
        (s.agent.get("/v1/nothing"), 404, "no such endpoint"),
        (
            s.agent.admin().raw(
                b"POST /v1/enroll HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
            )
            .unwrap(),
            415,
            "must be JSON",
        ),
    ];
    // The same namespace under another name is still the same namespace.
    let pid_path = {
        let holder = Process::spawn(
            Command::new("nsenter")
                .arg(format!("--net={}", s.client.path().display()))
                .args(["sleep", "30"]),
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        let path = std::path::PathBuf::from(format!("/proc/{}/ns/net", holder.pid()));
        let r = s.agent.enroll(&path);
        drop(holder);
        r
    };
    for (i, (r, status, words)) in cases.iter().enumerate() {
        assert_eq!(r.status, *status, "case {i}: {:?}", r.body);
        let error = r.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "case {i}: {error:?} lacks {words:?}");
    }
    assert_eq!(pid_path.status, 409, "{:?}", pid_path.body);

    // Nothing changed: the same enrollment, and it still captures.
    assert_eq!(s.agent.get("/v1/enrollments").body, before);
    assert_captured(&s.echo(V4_SERVER, ECHO, 4096));
    assert_eq!(s.agent.accepted(), 1);
}
