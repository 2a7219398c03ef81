//! The waypoint end to end, on the lab: a real control plane, agents with their eBPF
//! capture, and `weft-waypoint` in a pod of its own serving `shop/cart`. Requests go
//! client agent → waypoint → destination agent → application, over HBONE both legs.
//! Root, one test at a time (they share the lab's fixed names).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{
    lab::{Lab, metric, sa},
    weftctl,
    wire::eventually,
};
use weftctl::lab;

/// Two nodes; `shop` in the mesh with two versions of cart behind one Service (and a
/// Service for each version), a waypoint for `shop/cart` on node-2; `legacy` outside.
const TOPOLOGY: &str = "\
underlay: 10.250.0.0/24
serviceSubnet: 10.96.0.0/16
nodes:
  - {name: node-1, podSubnet: 10.244.1.0/24}
  - {name: node-2, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: shop, labels: {weft.dev/mesh: enabled}}
  - {name: legacy}
pods:
  - {name: frontend-1, namespace: shop, node: node-1, serviceAccount: frontend, labels: {app: frontend}}
  - {name: cart-v1-1, namespace: shop, node: node-1, serviceAccount: cart, labels: {app: cart, version: v1}}
  - {name: cart-v1-2, namespace: shop, node: node-2, serviceAccount: cart, labels: {app: cart, version: v1}}
  - {name: cart-v2-1, namespace: shop, node: node-2, serviceAccount: cart, labels: {app: cart, version: v2}}
  - {name: billing-1, namespace: legacy, node: node-1, serviceAccount: billing, labels: {app: billing}}
services:
  - name: cart
    namespace: shop
    vip: 10.96.0.10
    selector: {app: cart}
    ports:
      - {name: http, port: 80, targetPort: 8080}
      - {name: echo, port: 7000, targetPort: 7000}
      - {name: grpc, port: 9090, targetPort: 9090}
  - name: cart-v1
    namespace: shop
    vip: 10.96.0.11
    selector: {app: cart, version: v1}
    ports:
      - {name: http, port: 80, targetPort: 8080}
  - name: cart-v2
    namespace: shop
    vip: 10.96.0.12
    selector: {app: cart, version: v2}
    ports:
      - {name: http, port: 80, targetPort: 8080}
waypoints:
  - {name: cart-waypoint, namespace: shop, node: node-2, vip: 10.96.0.30, services: [cart]}
";

const WAYPOINT: &str = "shop/cart-waypoint";
const FRONTEND: &str = "shop/frontend-1";
const CART_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/shop/sa/cart-waypoint";
const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

fn cart(port: u16) -> String {
    sa(CART_VIP, port).to_string()
}

/// `weft-sample http` from the frontend to cart's port 80, with `extra` arguments.
fn http(lab: &Lab, extra: &[&str]) -> Value {
    let to = cart(80);
    let mut args = vec!["http", "--connect", &to];
    args.extend_from_slice(extra);
    lab.sample_json(FRONTEND, &args)
}

fn count(v: &Value, field: &str, key: &str) -> u64 {
    v[field][key].as_u64().unwrap_or(0)
}

/// The `weft::access` lines of a log that contain every one of `words`.
fn access_lines<'a>(log: &'a str, words: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("weft::access") && words.iter().all(|w| l.contains(w)))
        .collect()
}

#[test]
fn requests_streams_grpc_and_websockets_go_through_the_waypoint() {
    // Pooled connections close soon after use, so the destination agent logs them.
    let lab = Lab::up(TOPOLOGY, &[], &["WEFT_HBONE_POOL_IDLE_TIMEOUT=1s"]);

    // HTTP/1.1: the app answers, the waypoint's headers arrive.
    let v = http(&lab, &["--count", "20", "--path", "/hello?x=1"]);
    assert_eq!(count(&v, "statuses", "200"), 20, "{v}");
    let body: Value = serde_json::from_str(v["first"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/hello", "{body}");
    assert_eq!(body["query"], "x=1", "{body}");
    let headers = &body["headers"];
    assert_eq!(
        headers["x-forwarded-for"],
        lab.ip(FRONTEND).to_string(),
        "{body}"
    );
    assert!(
        headers["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-"))
    );
    assert!(headers["x-request-id"].as_str().is_some());

    // The three access logs. Client agent: to the waypoint, for the Service.
    let client_log = lab.agent_log("node-1");
    assert!(
        !access_lines(
            &client_log,
            &[
                "reporter=\"source\"",
                "dst=10.96.0.10:80",
                "dst_workload=shop/cart-waypoint"
            ]
        )
        .is_empty(),
        "{client_log}"
    );
    // The waypoint: the caller's identity and workload, the chosen endpoint.
    let wp_log = lab.pod_log(WAYPOINT);
    let lines = access_lines(
        &wp_log,
        &["reporter=\"waypoint\"", "path=/hello?x=1", "status=200"],
    );
    assert_eq!(lines.len(), 20, "{wp_log}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(FRONTEND_ID) && l.contains("src_workload=shop/frontend-1"))
    );
    // The destination agents: the waypoint is the peer, the caller is forwarded for.
    eventually(
        Duration::from_secs(20),
        "the destination agents' lines",
        || {
            let both = lab.agent_log("node-1") + &lab.agent_log("node-2");
            !access_lines(
                &both,
                &[
                    "reporter=\"destination\"",
                    WAYPOINT_ID,
                    FRONTEND_ID,
                    ":8080",
                ],
            )
            .is_empty()
        },
    );

    // Metrics: the waypoint's request schema, the destinations' connections from it.
    let m = lab.pod_metrics(WAYPOINT);
    let labels = [
        "reporter=\"waypoint\"",
        "source_workload=\"frontend-1\"",
        "destination_service=\"shop/cart\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    assert_eq!(metric(&m, "weft_requests_total", &labels), 20, "{m}");
    assert_eq!(
        metric(&m, "weft_request_duration_milliseconds_count", &labels),
        20
    );
    assert!(metric(&m, "weft_response_bytes_sum", &labels) > 0);
    let dst = format!("source_principal=\"{WAYPOINT_ID}\"");
    let from_waypoint = metric(
        &lab.metrics("node-1"),
        "weft_tcp_connections_opened_total",
        &[&dst],
    ) + metric(
        &lab.metrics("node-2"),
        "weft_tcp_connections_opened_total",
        &[&dst],
    );
    assert!(from_waypoint >= 1, "no destination saw the waypoint");

    // HTTP/2 with prior knowledge.
    let v = http(&lab, &["--h2", "--count", "10", "--connections", "1"]);
    assert_eq!(count(&v, "statuses", "200"), 10, "{v}");
    let body: Value = serde_json::from_str(v["first"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["version"], "HTTP/2.0", "{body}");

    // A stream that is not HTTP on a port that declares nothing passes through.
    let echoed = lab.echo_ok(FRONTEND, sa(CART_VIP, 7000), 1 << 20, &[]);
    assert_eq!(echoed["peer"], "127.0.0.1:15001", "{echoed}");
    let wp_log = lab.pod_log(WAYPOINT);
    assert!(
        !access_lines(
            &wp_log,
            &["\"connection\"", "dst=10.96.0.10:7000", "sent=1048576"]
        )
        .is_empty()
            || !access_lines(&wp_log, &["connection", "dst=10.96.0.10:7000"]).is_empty(),
        "{wp_log}"
    );

    // gRPC: unary, a failing call with its status and trailers, bidirectional streaming.
    let to = cart(9090);
    let v = lab.sample_json(
        FRONTEND,
        &["grpc", "--connect", &to, "say", "--message", "hi"],
    );
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["message"], "hi", "{v}");
    let v = lab.sample_json(
        FRONTEND,
        &[
            "grpc",
            "--connect",
            &to,
            "say",
            "--message",
            "x",
            "--fail-code",
            "5",
        ],
    );
    assert_eq!(v["code"], 5, "NOT_FOUND: {v}");
    assert_eq!(
        v["trailers"]["x-sample-detail"], "failing-on-purpose",
        "{v}"
    );
    let v = lab.sample_json(
        FRONTEND,
        &["grpc", "--connect", &to, "chat", "--messages", "50"],
    );
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(50), Some(50)),
        "{v}"
    );
    let m = lab.pod_metrics(WAYPOINT);
    assert!(
        metric(
            &m,
            "weft_requests_total",
            &["request_protocol=\"grpc\"", "grpc_response_status=\"5\""]
        ) >= 1,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "weft_requests_total",
            &["request_protocol=\"grpc\"", "grpc_response_status=\"0\""]
        ) >= 2,
        "{m}"
    );

    // A WebSocket through the waypoint.
    let v = lab.sample_json(
        FRONTEND,
        &[
            "ws",
            "--connect",
            &cart(80),
            "--path",
            "/ws",
            "--messages",
            "20",
        ],
    );
    assert_eq!(v["echoed"], 20, "{v}");

    // Readiness of the waypoint.
    let p = lab.pod(WAYPOINT);
    let ready = tests::lab::http_get(
        &lab::netns_path(&p.netns),
        sa(p.ip, 15021),
        "/healthz/ready",
    );
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

fn route(rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: cart, namespace: shop}}
spec:
  parentRefs: [{{kind: Service, name: cart, port: 80}}]
  rules:
{rules}"
    )
}

const CANARY: &str = "    - matches: [{headers: [{name: x-user, value: tester}]}]
      backendRefs: [{name: cart-v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}
      backendRefs: [{name: cart-v1, port: 80}]
    - matches: [{path: {type: Exact, value: /moved}}]
      filters:
        - {type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /here}, statusCode: 301}}
    - matches: [{path: {type: PathPrefix, value: /broken}}]
      backendRefs: [{name: cart, port: 81}]
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{name: cart-v1, port: 80, weight: 90}, {name: cart-v2, port: 80, weight: 10}]
";

#[test]
fn canary_split_header_match_rewrite_redirect_and_missing_routes() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    lab.apply_routes("route", &route(CANARY));

    // 90/10 over 2,000 requests: 200 expected for v2, σ ≈ 13.4; allow 4.5σ.
    let v = http(&lab, &["--count", "2000", "--connections", "8"]);
    assert_eq!(count(&v, "statuses", "200"), 2000, "{v}");
    let v2 = count(&v, "pods", "cart-v2-1");
    let v1 = count(&v, "pods", "cart-v1-1") + count(&v, "pods", "cart-v1-2");
    assert_eq!(v1 + v2, 2000, "{v}");
    assert!((140..=260).contains(&v2), "cart-v2 got {v2} of 2000: {v}");
    // Both v1 endpoints take part.
    assert!(
        count(&v, "pods", "cart-v1-1") > 400 && count(&v, "pods", "cart-v1-2") > 400,
        "{v}"
    );

    // The tagged user goes to v2 only.
    let v = http(&lab, &["--count", "100", "--header", "x-user: tester"]);
    assert_eq!(count(&v, "pods", "cart-v2-1"), 100, "{v}");

    // A prefix rewrite, as the application sees it.
    let v = http(&lab, &["--path", "/old/items/7"]);
    let body: Value = serde_json::from_str(v["first"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/new/items/7", "{body}");
    assert!(
        body["pod"].as_str().unwrap().starts_with("cart-v1"),
        "{body}"
    );

    // A redirect, as the client sees it.
    let v = http(&lab, &["--path", "/moved?a=1", "--host", "cart.shop"]);
    assert_eq!(v["first"]["status"], 301, "{v}");
    assert_eq!(
        v["first"]["headers"]["location"], "http://cart.shop/here?a=1",
        "{v}"
    );

    // A backend port the Service does not have: 500, counted.
    let v = http(&lab, &["--path", "/broken"]);
    assert_eq!(v["first"]["status"], 500, "{v}");
    let m = lab.pod_metrics(WAYPOINT);
    assert_eq!(
        metric(
            &m,
            "weft_waypoint_local_replies_total",
            &["reason=\"unknown_backend\""]
        ),
        1,
        "{m}"
    );

    // Routes that match nothing of a request: 404 with a body saying so.
    lab.apply_routes(
        "route",
        &route("    - matches: [{path: {type: Exact, value: /only}}]\n      backendRefs: [{name: cart-v1, port: 80}]\n"),
    );
    let v = http(&lab, &["--path", "/other"]);
    assert_eq!(v["first"]["status"], 404, "{v}");
    assert!(
        v["first"]["body"]
            .as_str()
            .unwrap()
            .contains("no route of shop/cart matches"),
        "{v}"
    );
    assert_eq!(http(&lab, &["--path", "/only"])["first"]["status"], 200);
}

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
    let got = lab.sample_json(
        FRONTEND,
        &[
            "raw",
            "--connect",
            &cart(80),
            "--file",
            corpus.to_str().unwrap(),
        ],
    );
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
    lab.apply_routes(
        "route",
        &route("    - backendRefs: [{name: cart-v2, port: 80}]\n"),
    );
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
        // Into the lab, replacing the good route's file.
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
        let body: Value = serde_json::from_str(v["first"]["body"].as_str().unwrap()).unwrap();
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
fn weftctl_waypoint_apply_list_and_delete_edit_the_lab() {
    let mut lab = Lab::up(TOPOLOGY, &[], &[]);
    let ok = |args: &[&str]| {
        let out = weftctl(args);
        assert!(out.status.success(), "weftctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = ok(&["waypoint", "list"]);
    assert!(
        list.contains("shop/cart-waypoint") && list.contains("ready"),
        "{list}"
    );

    // A second waypoint, for cart-v2, on node-1.
    ok(&[
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--name",
        "v2-waypoint",
        "--for",
        "cart-v2",
        "--node",
        "node-1",
    ]);
    lab.reload();
    let list = ok(&["waypoint", "list"]);
    assert!(
        list.lines().any(|l| l.contains("shop/v2-waypoint")
            && l.contains("node-1")
            && l.contains("cart-v2")),
        "{list}"
    );
    let status = ok(&["lab", "status"]);
    assert!(status.contains("shop/v2-waypoint"), "{status}");
    let to = sa(Ipv4Addr::new(10, 96, 0, 12), 80).to_string();
    eventually(
        Duration::from_secs(10),
        "traffic through the new waypoint",
        || {
            let v = lab.sample_json(FRONTEND, &["http", "--connect", &to]);
            v["first"]["status"] == 200
                && access_lines(&lab.pod_log("shop/v2-waypoint"), &["status=200"]).len() == 1
        },
    );

    // Refused: a Service bound to another waypoint, one that does not exist.
    for args in [
        [
            "waypoint",
            "apply",
            "-n",
            "shop",
            "--name",
            "v2-waypoint",
            "--for",
            "cart",
        ],
        [
            "waypoint",
            "apply",
            "-n",
            "shop",
            "--name",
            "v2-waypoint",
            "--for",
            "nope",
        ],
    ] {
        assert!(!weftctl(&args).status.success(), "{args:?}");
    }

    // Delete: the Service goes straight to its endpoint again, the pod is gone.
    ok(&["waypoint", "delete", "-n", "shop", "--name", "v2-waypoint"]);
    lab.reload();
    assert!(!ok(&["waypoint", "list"]).contains("v2-waypoint"));
    assert!(!lab::netns_path("weft-lab-pod-shop.v2-waypoint").exists());
    let mut last = Value::Null;
    let direct = (0..100).any(|_| {
        last = lab.sample_json(FRONTEND, &["http", "--connect", &to]);
        std::thread::sleep(Duration::from_millis(100));
        last["first"]["status"] == 200
    });
    assert!(direct, "cart-v2 without its waypoint: {last}");
    let v = lab.sample_json(FRONTEND, &["http", "--connect", &to]);
    let body: Value = serde_json::from_str(v["first"]["body"].as_str().unwrap()).unwrap();
    assert!(
        body["headers"].get("x-request-id").is_none(),
        "still through a waypoint: {body}"
    );
}
