//! The waypoint end to end, on the lab: a real control plane, agents with their eBPF
//! capture, and `weft-waypoint` in a pod of its own serving `shop/cart`. Requests go
//! client agent → waypoint → destination agent → application, over HBONE both legs.
//! This file: the protocols, routing, and `weftctl waypoint`; `waypoint_policy.rs`:
//! authorization, bad configuration and traces.
//! Root, one test at a time (they share the lab's fixed names).

use std::{net::Ipv4Addr, time::Duration};

use serde_json::Value;
use tests::{
    lab::{Lab, metric, sa},
    waypoint::*,
    weftctl,
    wire::eventually,
};
use weftctl::lab;

#[test]
fn requests_streams_grpc_and_websockets_go_through_the_waypoint() {
    // Pooled connections close soon after use, so the destination agent logs them.
    let lab = Lab::up(TOPOLOGY, &[], &["WEFT_HBONE_POOL_IDLE_TIMEOUT=1s"]);

    // HTTP/1.1: the app answers, the waypoint's headers arrive.
    let v = http(&lab, &["--count", "20", "--path", "/hello?x=1"]);
    assert_eq!(count(&v, "statuses", "200"), 20, "{v}");
    let body = first_body(&v);
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

    // The three access logs (a line is written when its connection or request ends).
    // Client agent: to the waypoint, for the Service.
    eventually(Duration::from_secs(10), "the client agent's line", || {
        let client_log = lab.agent_log("node-1");
        !access_lines(
            &client_log,
            &[
                "reporter=\"source\"",
                "dst=10.96.0.10:80",
                "dst_workload=shop/cart-waypoint",
            ],
        )
        .is_empty()
    });
    // The waypoint: the caller's identity and workload, the chosen endpoint.
    let request_lines = |log: &str| {
        access_lines(
            log,
            &["reporter=\"waypoint\"", "path=/hello?x=1", "status=200"],
        )
        .iter()
        .map(|l| (*l).to_owned())
        .collect::<Vec<String>>()
    };
    eventually(Duration::from_secs(10), "the waypoint's 20 lines", || {
        request_lines(&lab.pod_log(WAYPOINT)).len() == 20
    });
    let lines = request_lines(&lab.pod_log(WAYPOINT));
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
    let body = first_body(&v);
    assert_eq!(body["version"], "HTTP/2.0", "{body}");

    // A stream that is not HTTP on a port that declares nothing passes through.
    let echoed = lab.echo_ok(FRONTEND, sa(CART_VIP, 7000), 1 << 20, &[]);
    assert_eq!(echoed["peer"], "127.0.0.1:15001", "{echoed}");
    eventually(
        Duration::from_secs(10),
        "the waypoint's line of the stream",
        || {
            !access_lines(
                &lab.pod_log(WAYPOINT),
                &["connection", "dst=10.96.0.10:7000", "sent=1048576"],
            )
            .is_empty()
        },
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
    - matches: [{path: {type: PathPrefix, value: /mirrored}}]
      filters:
        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-canary, value: 'yes'}], remove: [x-debug]}}
        - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-served-by, value: weft-waypoint}]}}
        - {type: RequestMirror, requestMirror: {backendRef: {name: cart-v2, port: 80}}}
      backendRefs: [{name: cart-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{name: cart-v1, port: 80, weight: 90}, {name: cart-v2, port: 80, weight: 10}]
";

#[test]
fn canary_split_header_match_rewrite_redirect_mirror_and_missing_routes() {
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
    let body = first_body(&v);
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

    // Header modifiers both ways, and a mirror that gets a copy of each request (its
    // body too) while the answer comes from the rule's backend.
    let seen = |lab: &Lab| {
        let to = sa(lab.ip("shop/cart-v2-1"), 8080).to_string();
        let v = lab.sample_json(FRONTEND, &["http", "--connect", &to, "--path", "/seen"]);
        first_body(&v)
    };
    let before = seen(&lab)["count"].as_u64().unwrap();
    let v = http(
        &lab,
        &[
            "--path",
            "/mirrored/x",
            "--method",
            "POST",
            "--body-bytes",
            "4096",
            "--count",
            "20",
            "--header",
            "x-debug: 1",
        ],
    );
    assert_eq!(count(&v, "statuses", "200"), 20, "{v}");
    assert_eq!(
        count(&v, "pods", "cart-v1-1") + count(&v, "pods", "cart-v1-2"),
        20,
        "{v}"
    );
    assert_eq!(v["first"]["headers"]["x-served-by"], "weft-waypoint", "{v}");
    let body = first_body(&v);
    assert_eq!(body["headers"]["x-canary"], "yes", "{body}");
    assert!(body["headers"].get("x-debug").is_none(), "{body}");
    assert_eq!(body["body_bytes"], 4096, "{body}");
    let mut mirrored = Value::Null;
    eventually(Duration::from_secs(10), "the mirror's 20 copies", || {
        mirrored = seen(&lab);
        mirrored["count"].as_u64() == Some(before + 20)
    });
    let copies = mirrored["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/mirrored/x" && r["method"] == "POST" && r["body_bytes"] == 4096)
        .count();
    assert_eq!(copies, 20, "{mirrored}");

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
        },
    );
    // Its line is written when the response ends, maybe after the client has it.
    eventually(Duration::from_secs(10), "the new waypoint's line", || {
        !access_lines(&lab.pod_log("shop/v2-waypoint"), &["status=200"]).is_empty()
    });

    // Refused: a Service bound to another waypoint, one that does not exist.
    for service in ["cart", "nope"] {
        let args = [
            "waypoint",
            "apply",
            "-n",
            "shop",
            "--name",
            "v2-waypoint",
            "--for",
            service,
        ];
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
    let body = first_body(&v);
    assert!(
        body["headers"].get("x-request-id").is_none(),
        "still through a waypoint: {body}"
    );
}
