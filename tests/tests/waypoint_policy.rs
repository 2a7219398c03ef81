//! The waypoint end to end, on the lab (see `waypoint.rs`): L7 authorization and the
//! bypass corpus, bad configuration refused while the last good one serves, and traces
//! to an OTLP collector.
//! Root, one test at a time (they share the lab's fixed names).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    lab::{Lab, metric, sa},
    waypoint::*,
    weftctl,
    wire::{self, StreamOutcome, eventually},
};
use weftctl::lab;

const POLICIES: &str = "apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
    - to: [{operation: {methods: [GET, HEAD], paths: [/public, /public/*]}}]
    - to: [{operation: {methods: [POST], paths: [/api/*]}}]
---
apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-deny, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules:
    - to: [{operation: {paths: [/public/secret*]}}]
    - to: [{operation: {hosts: [internal.shop*]}}]
    - to: [{operation: {headers: [{name: x-debug, values: ['*']}]}}]
";

#[test]
fn l7_policy_decides_normalized_requests_and_the_bypass_corpus_holds() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    lab.apply("policy", POLICIES);

    let v = http(&lab, &["--path", "/public/a"]);
    assert_eq!(v["first"]["status"], 200, "{v}");
    let v = http(&lab, &["--path", "/admin", "--method", "POST"]);
    assert_eq!(v["first"]["status"], 403, "{v}");
    assert_eq!(v["first"]["body"], "RBAC: access denied\n", "{v}");
    let m = lab.pod_metrics(WAYPOINT);
    assert!(
        metric(
            &m,
            "weft_waypoint_authorization_decisions_total",
            &["policy=\"no ALLOW policy matched\"", "decision=\"deny\""]
        ) >= 1,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "weft_waypoint_authorization_decisions_total",
            &["policy=\"shop/cart-allow\"", "decision=\"allow\""]
        ) >= 1
    );
    assert!(
        metric(
            &m,
            "weft_requests_total",
            &["response_code=\"403\"", "response_flags=\"DENIED\""]
        ) >= 1
    );

    // The corpus: each raw request through the mesh, with its expected outcome.
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/waypoint-bypass.json");
    let expected: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&corpus).unwrap()).unwrap();
    assert!(
        expected.len() >= 40,
        "the corpus has {} entries",
        expected.len()
    );
    let got = raw(&lab, &corpus);
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), expected.len());
    let mut wrong = Vec::new();
    for (want, got) in expected.iter().zip(got) {
        let status_ok = got["status"] == want["status"];
        let path_ok = want.get("path").is_none_or(|p| got["path"] == *p);
        let second_ok = match want.get("note").and_then(Value::as_str) {
            Some("only one response") => got["statuses"].as_array().is_some_and(|s| s.len() == 1),
            _ => true,
        };
        if !(status_ok && path_ok && second_ok) {
            wrong.push(format!(
                "{}: expected {} {:?}, got {got}",
                want["name"],
                want["status"],
                want.get("path")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} entries differ:\n{}",
        wrong.len(),
        expected.len(),
        wrong.join("\n")
    );

    // Going around the waypoint to a pod: its agent cannot see requests, and the
    // L7 ALLOW rules do not let a bare connection in.
    let direct = lab.sample(
        FRONTEND,
        &[
            "get",
            "--connect",
            &sa(lab.ip("shop/cart-v1-1"), 8080).to_string(),
            "--path",
            "/public/a",
        ],
    );
    assert!(
        !direct.status.success(),
        "the pod answered around the waypoint: {direct:?}"
    );
}

#[test]
fn bad_configuration_is_refused_and_the_last_good_routes_keep_serving() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    // The good route through `weftctl lab apply`.
    let good = lab.dir.join("route.yaml");
    std::fs::write(
        &good,
        route("    - backendRefs: [{name: cart-v2, port: 80}]\n"),
    )
    .unwrap();
    let before = lab.waypoint_version(WAYPOINT);
    let out = weftctl(&["lab", "apply", "-f", good.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("applied route.yaml"));
    eventually(Duration::from_secs(10), "the route at the waypoint", || {
        lab.waypoint_version(WAYPOINT) > before
    });
    let to_v2 = |lab: &Lab| {
        let v = http(lab, &["--count", "20"]);
        count(&v, "pods", "cart-v2-1")
    };
    assert_eq!(to_v2(&lab), 20);

    // Two bad routes: a backend that does not exist, a regular expression that does
    // not compile. `weftctl validate` names the field; the control plane refuses them.
    let missing = route("    - backendRefs: [{name: cart-v3, port: 80}]\n");
    let regex = route(
        "    - matches: [{path: {type: RegularExpression, value: '/items/(['}}]\n      backendRefs: [{name: cart-v1, port: 80}]\n",
    );
    let dir = &lab.dir;
    for (name, doc, path, words) in [
        (
            "missing",
            &missing,
            "spec.rules[0].backendRefs[0].name",
            "no Service shop/cart-v3",
        ),
        (
            "regex",
            &regex,
            "spec.rules[0].matches[0].path.value",
            "is not a regular expression",
        ),
    ] {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, doc).unwrap();
        let out = weftctl(&["validate", "-f", file.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(path) && text.contains(words), "{text}");
        // `weftctl lab apply` refuses it too, and puts nothing in the folder.
        let out = weftctl(&["lab", "apply", "-f", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(path), "{err}");
        let copied = Path::new(lab::RUN_DIR)
            .join("controlplane/config")
            .join(format!("{name}.yaml"));
        assert!(!copied.exists(), "a refused file was applied");
        // Into the lab by hand, replacing the good route's file.
        let before = lab.waypoint_version(WAYPOINT);
        std::fs::write(
            Path::new(lab::RUN_DIR).join("controlplane/config/route.yaml"),
            doc,
        )
        .unwrap();
        let status = Path::new(lab::RUN_DIR).join("controlplane/state/status.json");
        eventually(
            Duration::from_secs(10),
            "the control plane to report the problem",
            || std::fs::read_to_string(&status).is_ok_and(|s| s.contains(path)),
        );
        assert_eq!(
            lab.waypoint_version(WAYPOINT),
            before,
            "a refused route reached the waypoint"
        );
        assert_eq!(to_v2(&lab), 20, "the last good route stopped serving");
    }

    // The control plane goes away: the waypoint keeps serving what it has, to new
    // connections too.
    let _ = Command::new("kill")
        .arg(lab.state.controlplane_pid.to_string())
        .status();
    eventually(Duration::from_secs(5), "the control plane to exit", || {
        !Path::new(&format!("/proc/{}", lab.state.controlplane_pid)).exists()
    });
    assert_eq!(to_v2(&lab), 20);
    let v = http(&lab, &["--count", "20", "--connections", "20"]);
    assert_eq!(count(&v, "pods", "cart-v2-1"), 20, "{v}");
}

/// The test's OTLP collector: the sample app in the control plane's namespace (which
/// every pod reaches), writing the spans it receives to a file.
struct Collector {
    child: Child,
    out: std::path::PathBuf,
}

impl Collector {
    fn start(dir: &Path) -> Collector {
        let out = dir.join("spans.jsonl");
        let child = Command::new("ip")
            .args(["netns", "exec", &lab::controlplane_netns()])
            .arg(tests::binary("weft-sample"))
            .args([
                "serve",
                "--otlp",
                "10.250.0.2:4317",
                "--otlp-out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Collector { child, out }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn spans_reach_the_collector_and_trace_context_goes_upstream() {
    let lab = Lab::up(
        TOPOLOGY,
        &[],
        &[
            "WEFT_OTLP_ENDPOINT=http://10.250.0.2:4317",
            "WEFT_TRACE_SAMPLING=1",
        ],
    );
    let collector = Collector::start(&lab.dir);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let header = format!("traceparent: 00-{trace}-{parent}-01");
    let mut upstream_parent = String::new();
    // The collector may take a moment to listen; the exporter retries with each batch.
    eventually(Duration::from_secs(20), "a span of the trace", || {
        let v = http(&lab, &["--path", "/traced", "--header", &header]);
        let body = first_body(&v);
        let tp = body["headers"]["traceparent"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            tp.starts_with(&format!("00-{trace}-")) && tp.ends_with("-01"),
            "{tp}"
        );
        upstream_parent = tp[36..52].to_owned();
        std::thread::sleep(Duration::from_millis(400));
        collector.spans().iter().any(|s| s["trace_id"] == trace)
    });
    let spans = collector.spans();
    let span = spans
        .iter()
        .rev()
        .find(|s| s["trace_id"] == trace && s["span_id"] == upstream_parent.as_str())
        .unwrap_or_else(|| panic!("no span {upstream_parent} in {spans:?}"));
    assert_eq!(span["parent_span_id"], parent, "{span}");
    assert_eq!(span["name"], "GET shop/cart", "{span}");
    assert_eq!(
        span["attributes"]["http.response.status_code"], 200,
        "{span}"
    );
    assert_eq!(span["attributes"]["url.path"], "/traced", "{span}");
    assert_eq!(
        span["attributes"]["weft.source.principal"], FRONTEND_ID,
        "{span}"
    );
    assert_eq!(span["resource"]["service.name"], "weft-waypoint", "{span}");
    let m = lab.pod_metrics(WAYPOINT);
    assert!(
        metric(&m, "weft_waypoint_spans_exported_total", &[]) >= 1,
        "{m}"
    );
}

#[test]
fn the_waypoint_admits_only_connects_for_what_it_serves() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let (roots, (cert, key)) = lab.client_cert("spiffe://cluster.local/ns/shop/sa/tester");
    let hbone = sa(lab.ip(WAYPOINT), 15008);
    // The test client runs in legacy/billing-1's namespace (not in the mesh).
    let netns = lab::netns_path(&lab.pod("legacy/billing-1").netns);
    let one = |fields: Vec<(&'static str, String)>, client: bool| {
        let target = wire::HboneTarget {
            addr: hbone,
            roots: roots.clone(),
            server_identity: WAYPOINT_ID.to_owned(),
            client: client.then(|| (cert.clone(), key.clone())),
        };
        let fields = fields.into_iter().map(|(a, b)| (a.to_owned(), b)).collect();
        wire::one_stream(&netns, &target, fields, false).ok()?.0
    };
    let connect =
        |authority: String| vec![(":method", "CONNECT".to_owned()), (":authority", authority)];
    let status = |o: Option<StreamOutcome>| match o {
        Some(StreamOutcome::Ok200) => "200".to_owned(),
        Some(StreamOutcome::Headers(h)) if h.first() == Some(&0x8c) => "400".to_owned(),
        // `:status` by name (index 8), the value "401" plain or Huffman-coded.
        Some(StreamOutcome::Headers(h))
            if h.windows(3).any(|w| w == b"401")
                || h.windows(3).any(|w| w == [0x82, 0x68, 0x01]) =>
        {
            "401".to_owned()
        }
        other => format!("{other:?}"),
    };

    // The Service bound to it: 200.
    assert_eq!(status(one(connect("10.96.0.10:80".into()), true)), "200");
    // Not CONNECT, a Service it does not serve, a pod of it not bound to it: 400.
    let get = vec![
        (":method", "GET".to_owned()),
        (":scheme", "https".to_owned()),
        (":path", "/".to_owned()),
        (":authority", "10.96.0.10:80".to_owned()),
    ];
    assert_eq!(status(one(get, true)), "400");
    assert_eq!(
        status(one(connect("10.96.0.11:80".into()), true)),
        "400",
        "cart-v1"
    );
    let pod = format!("{}:8080", lab.ip("shop/cart-v1-1"));
    assert_eq!(status(one(connect(pod), true)), "400", "a pod");
    // No client certificate: no tunnel at all.
    assert_eq!(one(connect("10.96.0.10:80".into()), false), None);

    // Policies that let no request of this caller through: the tunnel is refused (401).
    lab.apply(
        "policy",
        "apiVersion: security.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-from-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
    - from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]
      to: [{operation: {methods: [GET]}}]
",
    );
    assert_eq!(status(one(connect("10.96.0.10:80".into()), true)), "401");
    let m = lab.pod_metrics(WAYPOINT);
    assert!(
        metric(
            &m,
            "weft_waypoint_tunnels_refused_total",
            &["reason=\"hbone_denied\""]
        ) >= 1,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "weft_waypoint_tunnels_refused_total",
            &["reason=\"hbone_not_served\""]
        ) >= 2,
        "{m}"
    );
    // The frontend still gets through (its GETs may pass), and is served.
    let v = http(&lab, &[]);
    assert_eq!(v["first"]["status"], 200, "{v}");
}
