use super::*;

const WRK: &str = "Running 3s test @ http://10.96.0.10:80/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.60ms    8.22ms 101.14ms   92.51%
    Req/Sec   534.97     97.59   646.00     93.33%
  Latency Distribution
     50%  961.00us
     75%   17.46ms
     90%   20.86ms
     99%    1.02s
  3197 requests in 3.00s, 1.59MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:   1064.70
Transfer/sec:    542.75KB
";

const H2LOAD: &str = "Application protocol: h2c

finished in 3.00s, 2267.00 req/s, 850.30KB/s
requests: 6801 total, 6865 started, 6801 done, 6790 succeeded, 11 failed, 0 errored, 0 timeout
status codes: 6801 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.49MB (2612128) total, 60.09KB (61533) headers (space savings 89.72%), 2.32MB (2427957) data
                     min         max         mean         sd        +/- sd
time for request:     6.07ms     93.66ms     28.04ms      9.28ms    76.33%
time for connect:       62us       116us        94us        23us    75.00%
";

#[test]
fn wrk_output() {
    let w = parse_wrk(WRK).unwrap();
    assert_eq!(w.rps, 1064.70);
    assert_eq!(w.requests, 3197.0);
    assert!((w.p50_ms - 0.961).abs() < 1e-9, "{w:?}");
    assert_eq!(w.p99_ms, 1020.0);
    assert_eq!(w.failures, 9.0);
    assert_eq!(parse_wrk("nothing"), None);
    assert_eq!(wrk_duration_ms("2.00m"), Some(120_000.0));
    assert_eq!(wrk_duration_ms("12"), None);
}

#[test]
fn h2load_output() {
    let h = parse_h2load(H2LOAD).unwrap();
    assert_eq!(h.rps, 2267.0);
    assert_eq!((h.succeeded, h.failed), (6790.0, 11.0));
    assert_eq!((h.mean_ms, h.max_ms), (28.04, 93.66));
    assert_eq!(parse_h2load("finished in 3.00s"), None);
}

#[test]
fn proxy_configurations() {
    let backends = ["10.244.1.3:8080".to_owned(), "10.244.2.3:8080".to_owned()];
    let n = nginx_conf(&backends, (8081, 8083), Path::new("/run/x"));
    assert!(
        n.contains("server 10.244.1.3:8080;\n        server 10.244.2.3:8080;"),
        "{n}"
    );
    assert!(
        n.contains("listen 8083 http2;") && n.contains("keepalive 64;"),
        "{n}"
    );
    assert!(n.contains("access_log /run/x/nginx-access.log;"), "{n}");
    let h = haproxy_conf(&backends, (8082, 8084));
    assert!(
        h.contains("bind :8084 proto h2") && h.contains("server b1 10.244.2.3:8080"),
        "{h}"
    );
    assert!(
        h.contains("option httplog") && h.contains("nbthread 2"),
        "{h}"
    );
}

#[test]
fn goals_compare_the_waypoint_with_nginx() {
    let mut r = Results::default();
    for (proxy, rps_per_core, p99) in [
        (Proxy::Waypoint, 9000.0, 4.0),
        (Proxy::Nginx, 10_000.0, 5.0),
    ] {
        r.push(CLOSED, proxy, PER_CORE, "requests/s", rps_per_core);
        r.push(CLOSED, proxy, "p99", "ms", p99);
    }
    r.set_goals();
    assert_eq!(r.goals[0].met, Some(false), "{:?}", r.goals);
    assert_eq!(r.goals[1].met, Some(true), "{:?}", r.goals);
    let md = markdown(&r);
    assert!(
        md.contains("| requests/s per proxy core (requests/s) | 9000 | 10000 | – | 0.90× | – |"),
        "{md}"
    );
}
