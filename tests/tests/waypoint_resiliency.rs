//! The waypoint's resiliency features end to end, on the lab (`tests::waypoint`'s
//! topology: three cart endpoints behind `shop/cart`, its waypoint on node-2): request
//! timeouts, retries and the retry budget, the circuit breaker, outlier detection,
//! fault injection, rate limits and consistent hashing, each configured by documents
//! in the control plane's folder and observed at the client, the endpoints (the sample
//! app's `/seen`) and the waypoint's metrics.
//! Root, one test at a time (they share the lab's fixed names).

use std::time::Duration;

use serde_json::Value;
use tests::{
    lab::{Lab, http_get, metric, sa},
    waypoint::*,
    weftctl,
    wire::eventually,
};
use weftctl::lab;

const CARTS: [&str; 3] = ["shop/cart-v1-1", "shop/cart-v1-2", "shop/cart-v2-1"];

/// A GET to the sample app of `pod` from inside its own namespace (not through the
/// mesh); the body.
fn direct(lab: &Lab, pod: &str, path: &str) -> String {
    let p = lab.pod(pod);
    let raw = http_get(&lab::netns_path(&p.netns), sa(p.ip, 8080), path);
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(raw)
}

/// Requests the cart endpoints have answered, all together.
fn seen(lab: &Lab) -> u64 {
    CARTS
        .iter()
        .map(|pod| {
            let v: Value = serde_json::from_str(&direct(lab, pod, "/seen")).unwrap();
            v["count"].as_u64().unwrap()
        })
        .sum()
}

fn latency(v: &Value, status: &str, which: &str) -> f64 {
    v["latency_ms"][status][which]
        .as_f64()
        .unwrap_or_else(|| panic!("no {which} latency for {status}: {v}"))
}

/// A TrafficFilter `name` with `spec`, and the route of cart that uses it on every
/// request, with `rule_extra` (more fields of the rule).
fn filtered_route(name: &str, spec: &str, rule_extra: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: TrafficFilter
metadata: {{name: {name}, namespace: shop}}
spec: {spec}
---
{}",
        route(&format!(
            "    - filters: [{{type: ExtensionRef, extensionRef: {{group: weft.dev, kind: TrafficFilter, name: {name}}}}}]
      backendRefs: [{{name: cart, port: 80}}]
{rule_extra}"
        ))
    )
}

fn backend_policy(spec: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: BackendPolicy
metadata: {{name: cart, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, name: cart}}]
{spec}"
    )
}

fn waypoint_metric(lab: &Lab, name: &str, labels: &[&str]) -> u64 {
    metric(&lab.pod_metrics(WAYPOINT), name, labels)
}

/// Upstream connections the destination agents have open from the waypoint.
fn open_from_waypoint(lab: &Lab) -> i64 {
    let principal = format!("source_principal=\"{WAYPOINT_ID}\"");
    ["node-1", "node-2"]
        .iter()
        .map(|n| {
            let m = lab.metrics(n);
            metric(&m, "weft_tcp_connections_opened_total", &[&principal]) as i64
                - metric(&m, "weft_tcp_connections_closed_total", &[&principal]) as i64
        })
        .sum()
}

/// Requests the waypoint turned away for a circuit breaker: (all, those within 8 ms).
fn overflow_times(lab: &Lab) -> (u64, u64) {
    let uo = "response_flags=\"UO\"";
    let m = lab.pod_metrics(WAYPOINT);
    (
        metric(&m, "weft_request_duration_milliseconds_count", &[uo]),
        metric(
            &m,
            "weft_request_duration_milliseconds_bucket",
            &[uo, "le=\"8.0\""],
        ),
    )
}

#[test]
fn timeouts_retries_and_the_retry_budget() {
    // Pooled upstream connections close soon after use, so leaks would show; client
    // connections close after half a second without a request.
    let lab = Lab::up(
        TOPOLOGY,
        &[],
        &[
            "WEFT_HBONE_POOL_IDLE_TIMEOUT=1s",
            "WEFT_HTTP_IDLE_TIMEOUT=500ms",
        ],
    );

    // The idle timeout: a keep-alive connection is answered, then closed when idle.
    let corpus = lab.dir.join("keep-alive.json");
    std::fs::write(
        &corpus,
        r#"[{"name": "keep-alive", "request": "GET / HTTP/1.1\r\nHost: cart\r\n\r\n"}]"#,
    )
    .unwrap();
    let got = raw(&lab, &corpus);
    assert_eq!(got[0]["status"], 200, "{got}");
    let closed = got[0]["closed_after_ms"].as_u64();
    assert!(
        closed.is_some_and(|ms| (500..1500).contains(&ms)),
        "closed after {closed:?} ms"
    );
    println!("idle timeout 500 ms: the client's connection closed after {closed:?} ms");

    // A slow backend, a 200 ms request timeout: 504 within 200–300 ms.
    lab.apply_routes(
        "route",
        &route("    - backendRefs: [{name: cart, port: 80}]\n      timeouts: {request: 200ms}\n"),
    );
    let v = http(&lab, &["--count", "10", "--path", "/slow?delay_ms=1000"]);
    assert_eq!(count(&v, "statuses", "504"), 10, "{v}");
    let (fastest, slowest) = (latency(&v, "504", "min"), latency(&v, "504", "max"));
    assert!(
        fastest >= 200.0 && slowest <= 300.0,
        "504s took {fastest}..{slowest} ms"
    );
    println!("timeout 200 ms: 504 after {fastest:.1}..{slowest:.1} ms");
    let flagged = waypoint_metric(&lab, "weft_requests_total", &["response_flags=\"UT\""]);
    assert_eq!(flagged, 10);
    // Nothing is left behind: no attempt in flight, the upstream connections close.
    eventually(Duration::from_secs(10), "no attempt in flight", || {
        waypoint_metric(&lab, "weft_waypoint_upstream_requests_active", &[]) == 0
    });
    eventually(
        Duration::from_secs(15),
        "upstream connections closed",
        || open_from_waypoint(&lab) == 0,
    );

    // A backend that fails every other request: three retries hide it. (One request
    // at a time: each endpoint alternates, so a retry meets a failure again only on
    // another endpoint. Failures drawn independently at 50 % would leave 1 in 16
    // requests failing after three retries, whatever the proxy.)
    lab.apply_routes(
        "route",
        &filtered_route(
            "retries",
            "{retry: {attempts: 3, on: [5xx], backoff: 5ms}}",
            "",
        ),
    );
    let v = http(
        &lab,
        &["--count", "1000", "--connections", "1", "--path", "/flaky"],
    );
    let ok = count(&v, "statuses", "200");
    assert!(ok >= 990, "{ok} of 1000 succeeded: {v}");
    let retried = waypoint_metric(
        &lab,
        "weft_waypoint_retries_total",
        &["service=\"shop/cart\""],
    );
    assert!(retried >= 400, "only {retried} retries");
    println!("50 % failing backend, 3 retries: {ok}/1000 succeeded, {retried} retries");

    // A backend that always fails, with a retry budget of 20 %: no retry storm.
    lab.apply(
        "policy",
        &backend_policy("  retryBudget: {percent: 20, minRetries: 3}\n"),
    );
    let before = seen(&lab);
    let v = http(
        &lab,
        &[
            "--count",
            "200",
            "--connections",
            "4",
            "--path",
            "/status/500",
        ],
    );
    assert_eq!(count(&v, "statuses", "500"), 200, "{v}");
    let reached = seen(&lab) - before;
    assert!(
        (200..=243).contains(&reached),
        "200 requests reached the backend {reached} times"
    );
    let overflows = waypoint_metric(
        &lab,
        "weft_waypoint_overflows_total",
        &["reason=\"retry_budget\""],
    );
    assert!(overflows > 0);
    println!("100 % failing backend, budget 20 %: 200 requests, {reached} attempts");
}

#[test]
fn the_circuit_breaker_fault_injection_and_the_rate_limit() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    lab.apply_routes(
        "route",
        &route("    - backendRefs: [{name: cart, port: 80}]\n"),
    );

    // At most 2 upstream connections (none open yet): of 10 slow requests at once, 8
    // are turned away.
    lab.apply(
        "policy",
        &backend_policy("  circuitBreaker: {maxConnections: 2}\n"),
    );
    let v = http(
        &lab,
        &[
            "--count",
            "10",
            "--connections",
            "10",
            "--path",
            "/?delay_ms=1000",
        ],
    );
    assert_eq!(
        (count(&v, "statuses", "200"), count(&v, "statuses", "503")),
        (2, 8),
        "{v}"
    );
    let by_connections = waypoint_metric(
        &lab,
        "weft_waypoint_overflows_total",
        &["reason=\"connections\""],
    );
    assert_eq!(by_connections, 8);

    // 100 at once against a limit of 10: about 90 fast 503s, the backend sees 10.
    lab.apply(
        "policy",
        &backend_policy("  circuitBreaker: {maxRequests: 10}\n"),
    );
    let before = seen(&lab);
    let before_uo = overflow_times(&lab);
    let v = http(
        &lab,
        &[
            "--count",
            "100",
            "--connections",
            "100",
            "--path",
            "/?delay_ms=1500",
        ],
    );
    let (ok, overflowed) = (count(&v, "statuses", "200"), count(&v, "statuses", "503"));
    assert_eq!(ok + overflowed, 100, "{v}");
    assert!(ok <= 10 && overflowed >= 85, "{v}");
    assert_eq!(
        seen(&lab) - before,
        ok,
        "the backend saw more than the limit"
    );
    // Every one of them left the waypoint within 8 ms (its histogram's bucket).
    let (total, fast) = overflow_times(&lab);
    assert_eq!(
        (total - before_uo.0, fast - before_uo.1),
        (overflowed, overflowed),
        "fast-fail over 8 ms"
    );
    println!(
        "breaker 10 of 100: {ok} passed, {overflowed} 503 UO; client p50 {:.1} ms, max {:.1} ms",
        latency(&v, "503", "p50"),
        latency(&v, "503", "max")
    );
    // While the limit is taken, each request is turned away at once.
    let to = cart(80);
    let mut slow = tests::lab::sample_command(
        FRONTEND,
        &[
            "http",
            "--connect",
            &to,
            "--count",
            "10",
            "--connections",
            "10",
            "--path",
            "/?delay_ms=3000",
        ],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    eventually(Duration::from_secs(5), "the limit taken", || {
        waypoint_metric(&lab, "weft_waypoint_upstream_requests_active", &[]) == 10
    });
    let v = http(&lab, &["--count", "50"]);
    assert_eq!(count(&v, "statuses", "503"), 50, "{v}");
    let (p50, max) = (latency(&v, "503", "p50"), latency(&v, "503", "max"));
    assert!(max < 10.0, "a fast-fail took {max} ms (median {p50})");
    println!("fast-fail while the limit is taken: p50 {p50:.2} ms, max {max:.2} ms");
    assert!(slow.wait().unwrap().success());

    lab.apply("policy", &backend_policy("  retryBudget: {percent: 100}\n"));

    // Aborts on 10 %: 8–12 % of 2,000 aborted, and the backend never sees them.
    lab.apply_routes(
        "route",
        &filtered_route(
            "chaos",
            "{fault: {abort: {httpStatus: 503, percentage: 10}}}",
            "",
        ),
    );
    let before = seen(&lab);
    let v = http(&lab, &["--count", "2000", "--connections", "10"]);
    let aborted = count(&v, "statuses", "503");
    assert!(
        (160..=240).contains(&aborted),
        "{aborted} of 2000 aborted: {v}"
    );
    assert_eq!(count(&v, "statuses", "200") + aborted, 2000, "{v}");
    assert_eq!(seen(&lab) - before, 2000 - aborted);
    let fi = waypoint_metric(&lab, "weft_requests_total", &["response_flags=\"FI\""]);
    assert_eq!(fi, aborted);
    println!("abort 10 %: {aborted} of 2000 aborted");

    // A 1 s delay on half the requests.
    lab.apply_routes(
        "route",
        &filtered_route(
            "chaos",
            "{fault: {delay: {fixedDelay: 1s, percentage: 50}}}",
            "",
        ),
    );
    let ok200 = ["response_code=\"200\"", "reporter=\"waypoint\""];
    let bucket = |lab: &Lab| {
        let m = lab.pod_metrics(WAYPOINT);
        (
            metric(&m, "weft_request_duration_milliseconds_count", &ok200),
            metric(
                &m,
                "weft_request_duration_milliseconds_bucket",
                &[ok200[0], "le=\"512.0\""],
            ),
        )
    };
    let (all_before, quick_before) = bucket(&lab);
    let v = http(&lab, &["--count", "100", "--connections", "50"]);
    assert_eq!(count(&v, "statuses", "200"), 100, "{v}");
    let (all, quick) = bucket(&lab);
    let delayed = (all - all_before) - (quick - quick_before);
    assert!((30..=70).contains(&delayed), "{delayed} of 100 delayed");
    assert!(latency(&v, "200", "max") >= 1000.0 && latency(&v, "200", "min") < 500.0);
    println!("delay 1 s on 50 %: {delayed} of 100 delayed");

    // 100 per second (a burst of 10) under 300 per second for 5 s: about 500 pass.
    lab.apply_routes(
        "route",
        &filtered_route(
            "limit",
            "{rateLimit: {requests: 100, interval: 1s, burst: 10}}",
            "",
        ),
    );
    let v = http(
        &lab,
        &["--count", "1500", "--connections", "20", "--rate", "300"],
    );
    let (passed, limited) = (count(&v, "statuses", "200"), count(&v, "statuses", "429"));
    assert_eq!(passed + limited, 1500, "{v}");
    assert!((450..=550).contains(&passed), "{passed} passed: {v}");
    println!("rate limit 100/s under 300/s for 5 s: {passed} passed, {limited} 429");
    let rl = waypoint_metric(&lab, "weft_requests_total", &["response_flags=\"RL\""]);
    assert_eq!(rl, limited);
    // The answer says when to come back: one request a minute, the second waits.
    lab.apply_routes(
        "route",
        &filtered_route(
            "limit",
            "{rateLimit: {requests: 1, interval: 60s, burst: 1}}",
            "",
        ),
    );
    let v = http(&lab, &[]);
    assert_eq!(v["first"]["status"], 200, "{v}");
    let v = http(&lab, &[]);
    assert_eq!(v["first"]["status"], 429, "{v}");
    let after: u64 = v["first"]["headers"]["retry-after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after: {v}"));
    assert!((55..=60).contains(&after), "retry-after {after}");
}

#[test]
fn outliers_are_ejected_and_come_back_and_hashing_keeps_sessions() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    lab.apply(
        "policy",
        &backend_policy(
            "  outlierDetection: {consecutive5xx: 3, baseEjectionTime: 2s, maxEjectionPercent: 34}\n",
        ),
    );
    lab.apply_routes(
        "route",
        &route("    - backendRefs: [{name: cart, port: 80}]\n"),
    );
    let v = http(&lab, &["--count", "30"]);
    assert_eq!(count(&v, "statuses", "200"), 30, "{v}");

    // cart-v2-1 starts failing: ejected after 3 errors, the others take its share.
    let sick = "shop/cart-v2-1";
    direct(&lab, sick, "/mode?status=500");
    let v = http(&lab, &["--count", "100"]);
    let failed = count(&v, "statuses", "500");
    assert_eq!(failed, 3, "{v}");
    assert_eq!(count(&v, "pods", "cart-v2-1"), 3, "{v}");
    let ejections = waypoint_metric(
        &lab,
        "weft_waypoint_ejections_total",
        &["service=\"shop/cart\""],
    );
    assert_eq!(ejections, 1);
    let p = lab.pod(WAYPOINT);
    let listed = http_get(&lab::netns_path(&p.netns), sa(p.ip, 15020), "/ejections");
    let sick_ip = lab.ip(sick).to_string();
    assert!(listed.contains(&sick_ip), "{listed}");
    let out = weftctl(&["waypoint", "ejections", WAYPOINT]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&sick_ip), "{out:?}");
    println!("ejected after 3 errors: {text}");

    // Healthy again: back after its ejection time, with no help.
    direct(&lab, sick, "/mode?status=0");
    std::thread::sleep(Duration::from_millis(2200));
    let v = http(&lab, &["--count", "60"]);
    assert_eq!(count(&v, "statuses", "200"), 60, "{v}");
    assert!(count(&v, "pods", "cart-v2-1") >= 5, "not back: {v}");

    // Consistent hashing on a header: one user, one endpoint; users spread out.
    lab.apply(
        "policy",
        &backend_policy(
            "  loadBalancer: {type: ConsistentHash, consistentHash: {header: x-user}}\n",
        ),
    );
    let mut used = std::collections::BTreeSet::new();
    for user in 0..10 {
        let header = format!("x-user: user-{user}");
        let v = http(
            &lab,
            &["--count", "20", "--connections", "4", "--header", &header],
        );
        let pods = v["pods"].as_object().unwrap();
        assert_eq!(pods.len(), 1, "user-{user} went to several: {v}");
        used.extend(pods.keys().cloned());
    }
    assert!(used.len() >= 2, "every user on one endpoint: {used:?}");
}

#[test]
fn bad_resiliency_settings_are_refused_with_their_field() {
    let dir = std::env::temp_dir().join(tests::unique("resiliency"));
    std::fs::create_dir_all(&dir).unwrap();
    let head = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {weft.dev/mesh: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
";
    for (name, doc, field) in [
        (
            "timeout",
            route("    - backendRefs: [{name: cart, port: 80}]\n      timeouts: {request: -1s}\n"),
            "spec.rules[0].timeouts.request",
        ),
        (
            "attempts",
            filtered_route("r", "{retry: {attempts: 50}}", ""),
            "spec.retry.attempts",
        ),
        (
            "percentage",
            filtered_route(
                "f",
                "{fault: {abort: {httpStatus: 503, percentage: 150}}}",
                "",
            ),
            "spec.fault.abort.percentage",
        ),
        (
            "unknown",
            route(
                "    - filters: [{type: ExtensionRef, extensionRef: {group: weft.dev, kind: TrafficFilter, name: nope}}]\n      backendRefs: [{name: cart, port: 80}]\n",
            ),
            "spec.rules[0].filters[0].extensionRef.name",
        ),
        (
            "budget",
            backend_policy("  retryBudget: {percent: 120}\n"),
            "spec.retryBudget.percent",
        ),
    ] {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, format!("{head}{doc}")).unwrap();
        let out = weftctl(&["validate", "-f", file.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name} passed: {text}");
        assert!(text.contains(field), "{name}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
