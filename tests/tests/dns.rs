//! The agent answers DNS for enrolled pods: their UDP port 53 datagrams are sent to it
//! by `cgroup/sendmsg4` (or `connect4` for a connected socket) and its answers shown by
//! `cgroup/recvmsg4` as coming from the server asked; TCP port 53 comes through the
//! outbound capture. Mesh names are answered from the configuration, the rest goes to
//! the lab's dnsmasq (`10.250.0.4`, outside the mesh).

use serde_json::Value;
use tests::lab::Lab;
use weftctl::lab;

const SERVER: &str = "10.250.0.4:53";

fn ask(lab: &Lab, pod: &str, extra: &[&str]) -> Value {
    let mut args = vec!["dns", "--server", SERVER];
    args.extend(extra);
    lab.sample_json(pod, &args)
}

fn addresses(answer: &Value) -> Vec<String> {
    let mut out: Vec<String> = answer["answers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["a"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// The agent's counter of DNS messages answered `answer` over `transport`.
fn answered(lab: &Lab, node: &str, answer: &str, transport: &str) -> f64 {
    let line =
        format!("weft_agent_dns_queries_total{{answer=\"{answer}\",transport=\"{transport}\"}} ");
    lab.metrics(node)
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn enrolled_pods_get_mesh_names_from_the_agent_and_the_rest_from_their_server() {
    let lab = Lab::up(lab::topology::DEFAULT, &[], &[]);
    let pod = "shop/frontend-1";

    // Mesh names: the full name, the short name (the pod's namespace) and
    // service.namespace, with sendto and with a connected socket (as glibc does); the
    // answer comes "from" the server the pod asked.
    for (name, connected) in [
        ("cart.shop.svc.cluster.local", false),
        ("CART.Shop.svc.cluster.local", true),
        ("cart", false),
        ("billing.legacy", true),
    ] {
        let mut extra = vec!["--name", name];
        if connected {
            extra.push("--connected");
        }
        let a = ask(&lab, pod, &extra);
        let vip = if name.starts_with("billing") {
            "10.96.0.20"
        } else {
            "10.96.0.10"
        };
        assert_eq!(addresses(&a), [vip], "{name}: {a}");
        assert_eq!(a["rcode"], 0, "{a}");
        assert_eq!(a["aa"], true, "answered by the mesh: {a}");
        assert_eq!(a["from"], SERVER, "{a}");
        assert_eq!(a["answers"][0]["ttl"], 30, "{a}");
    }
    // A Service has no IPv6 address: NOERROR without data.
    let a = ask(
        &lab,
        pod,
        &["--name", "cart.shop.svc.cluster.local", "--type", "AAAA"],
    );
    assert_eq!(
        (a["rcode"].as_u64(), addresses(&a).len()),
        (Some(0), 0),
        "{a}"
    );
    // The mesh is authoritative for the cluster domain: what it does not hold is not,
    // including a stub's search-list expansions.
    for name in [
        "nope.shop.svc.cluster.local",
        "api.example.com.shop.svc.cluster.local",
    ] {
        let a = ask(&lab, pod, &["--name", name]);
        assert_eq!(a["rcode"], 3, "{name}: {a}");
    }
    // Other names: the pod's own server answers them, through the agent.
    let a = ask(&lab, pod, &["--name", "api.example.com"]);
    assert_eq!(addresses(&a), ["203.0.113.10"], "{a}");
    assert_eq!(a["from"], SERVER, "{a}");
    assert_eq!(a["transport"], "udp");
    // An answer too big for 512 bytes: truncated over UDP (by dnsmasq, relayed), then
    // the client asks again over TCP, which the agent carries to the same server.
    let a = ask(&lab, pod, &["--name", "many.example.com"]);
    assert_eq!(a["truncatedFirst"], true, "{a}");
    assert_eq!(a["transport"], "tcp", "{a}");
    assert_eq!(addresses(&a).len(), 40, "{a}");
    // With EDNS the client takes a bigger UDP answer and no retry is needed.
    let a = ask(&lab, pod, &["--name", "many.example.com", "--edns", "1232"]);
    assert_eq!(
        (a["truncatedFirst"].as_bool(), addresses(&a).len()),
        (Some(false), 40),
        "{a}"
    );
    // Over TCP, mesh names are answered by the agent too.
    let a = ask(
        &lab,
        pod,
        &["--name", "cart.shop.svc.cluster.local", "--tcp"],
    );
    assert_eq!(
        (addresses(&a), a["aa"].as_bool()),
        (vec!["10.96.0.10".to_owned()], Some(true)),
        "{a}"
    );

    // Malformed messages get FORMERR (with the id when it could be read) and take
    // nothing down; another opcode gets NOTIMP.
    for (raw, rcode, id) in [
        ("0102", 1, Some(0x0102)),
        // A question cut before its class.
        (
            concat!(
                "0007", "0100", "0001", "0000", "0000", "0000", "03616263", "00", "0001"
            ),
            1,
            Some(7),
        ),
        // A compression pointer to itself.
        (
            concat!(
                "0008", "0100", "0001", "0000", "0000", "0000", "c00c", "0001", "0001"
            ),
            1,
            Some(8),
        ),
        // Opcode 2 (status).
        (
            concat!(
                "0009", "1000", "0001", "0000", "0000", "0000", "03616263", "00", "0001", "0001"
            ),
            4,
            Some(9),
        ),
    ] {
        let a = ask(&lab, pod, &["--raw", raw]);
        assert_eq!(a["rcode"], rcode, "{raw}: {a}");
        assert_eq!(a["id"].as_u64(), id, "{raw}: {a}");
    }
    let a = ask(&lab, pod, &["--name", "cart"]);
    assert_eq!(addresses(&a), ["10.96.0.10"], "after malformed ones: {a}");

    // A pod outside the mesh keeps its own DNS: its server knows no mesh names.
    let a = ask(
        &lab,
        "legacy/billing-1",
        &["--name", "cart.shop.svc.cluster.local"],
    );
    assert_ne!(a["rcode"], 0, "{a}");
    assert_eq!(a["aa"], false, "{a}");

    // What was counted: the kernel's redirections and restored sources, and the
    // agent's answers by kind.
    let metrics = lab.metrics("node-1");
    for reason in ["dns_redirected", "dns_reply_restored"] {
        let line = format!("weft_agent_capture_decisions_total{{reason=\"{reason}\"}} ");
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line).and_then(|v| v.parse().ok()))
            .unwrap_or_else(|| panic!("no {reason} in {metrics}"));
        assert!(n >= 10.0, "{reason}: {n}");
    }
    assert!(answered(&lab, "node-1", "mesh", "udp") >= 6.0);
    assert!(answered(&lab, "node-1", "mesh", "tcp") >= 1.0);
    assert!(answered(&lab, "node-1", "nxdomain", "udp") >= 2.0);
    assert!(answered(&lab, "node-1", "forwarded", "udp") >= 3.0);
    assert!(answered(&lab, "node-1", "forwarded", "tcp") >= 1.0);
    assert!(answered(&lab, "node-1", "formerr", "udp") >= 3.0);
    assert!(answered(&lab, "node-1", "notimp", "udp") >= 1.0);
}

#[test]
fn the_resolver_holds_ten_thousand_queries_a_second_and_survives_its_upstream() {
    let lab = Lab::up(lab::topology::DEFAULT, &[], &[]);
    let pod = "shop/frontend-2";
    // 10,000 queries a second for 2 s, open loop: every one answered, correctly.
    let load = lab.sample_json(
        pod,
        &[
            "dns-load",
            "--server",
            SERVER,
            "--name",
            "cart.shop.svc.cluster.local",
            "--rate",
            "10000",
            "--count",
            "20000",
        ],
    );
    println!("10k queries/s from {pod}: {load}");
    assert_eq!(load["sent"], 20_000, "{load}");
    assert_eq!(load["answered"], 20_000, "{load}");
    assert_eq!(load["wrong"], 0, "{load}");

    // The upstream server goes away: names it would answer fail fast with SERVFAIL,
    // mesh names are still answered.
    let dns_pid = lab.state.dns_pid.expect("the lab runs dnsmasq");
    // SAFETY: kill(2) on the lab's own dnsmasq.
    assert_eq!(unsafe { libc::kill(dns_pid as i32, libc::SIGKILL) }, 0);
    // (The client waits 5 s; the agent answers SERVFAIL after its 2 s upstream timeout.)
    let a = ask(&lab, pod, &["--name", "api.example.com"]);
    assert_eq!(a["rcode"], 2, "{a}");
    let a = ask(&lab, pod, &["--name", "cart.shop.svc.cluster.local"]);
    assert_eq!(addresses(&a), ["10.96.0.10"], "{a}");
    assert!(answered(&lab, "node-2", "servfail", "udp") >= 1.0);
}
