//! Slow and too many clients, on the lab. Slowloris on the HBONE TLS handshake (the
//! agent) and on the waypoint's HTTP/1.1 header section: each is closed at its
//! deadline while others are served. Overload of the waypoint: past its connection
//! limit a client gets 503 at once, the admitted ones go on being answered. The
//! times measured are printed for docs/reliability.md; the tests assert what happens,
//! with deadlines only as generous bounds. Root.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tests::{
    lab::{Lab, sa},
    waypoint::{CART_VIP, FRONTEND, TOPOLOGY, http},
    wire,
};
use weftctl::lab;

const DEADLINE: Duration = Duration::from_secs(2);
const LIMIT: usize = 20;

fn lab() -> Lab {
    Lab::up(
        TOPOLOGY,
        &["WEFT_TLS_HANDSHAKE_TIMEOUT=2s"],
        &[
            "WEFT_HTTP_HEADER_TIMEOUT=2s",
            &format!("WEFT_WAYPOINT_MAX_CONNECTIONS={LIMIT}"),
        ],
    )
}

fn connect_in(netns: &Path, to: SocketAddr) -> TcpStream {
    let netns = netns.to_owned();
    wire::in_netns(&netns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connects")
    })
}

/// Feeds `first`, then one byte of `drip` every 500 ms, until the peer closes; how
/// long after the first byte that was, and what it answered.
fn slowloris(mut s: TcpStream, first: &[u8], drip: &[u8]) -> (Duration, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let _ = s.write_all(first);
    for b in drip.iter().cycle() {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if start.elapsed() > DEADLINE * 5 {
            panic!("still open after {:?}", start.elapsed());
        }
        if s.write_all(std::slice::from_ref(b)).is_err() {
            // Closed under the write; read what came first.
            let _ = s.read_to_end(&mut answer);
            break;
        }
    }
    (start.elapsed(), answer)
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "min {:?} p50 {:?} max {:?} over {}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    )
}

#[test]
fn slow_handshakes_and_slow_headers_are_closed_at_their_deadlines() {
    let lab = lab();
    let billing = lab::netns_path(&lab.pod("legacy/billing-1").netns);
    let frontend = lab::netns_path(&lab.pod(FRONTEND).netns);
    let hbone = sa(lab.ip("shop/cart-v1-2"), 15008);
    let cart = SocketAddr::from((CART_VIP, 80));

    // 50 TLS handshakes that never finish: a ClientHello record header, then a byte
    // every 500 ms.
    let tls: Vec<_> = (0..50)
        .map(|_| {
            let s = connect_in(&billing, hbone);
            std::thread::spawn(move || slowloris(s, &[0x16, 0x03, 0x01, 0x02, 0x00], &[0x01]))
        })
        .collect();
    // 10 HTTP/1.1 requests whose header section never ends, through the mesh.
    let headers: Vec<_> = (0..10)
        .map(|_| {
            let s = connect_in(&frontend, cart);
            std::thread::spawn(move || {
                slowloris(s, b"GET / HTTP/1.1\r\nhost: cart\r\nx-slow: ", b"a")
            })
        })
        .collect();
    // A kept-alive connection that waits idle past the header timeout is not a slow
    // client: its next request is served.
    let mut idle = connect_in(&frontend, cart);
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(get(&mut idle).0, 200);
    // Meanwhile others are served, through the same agent and the same waypoint.
    std::thread::sleep(Duration::from_millis(500));
    let v = http(&lab, &["--count", "10"]);
    assert_eq!(v["statuses"]["200"], 10, "{v}");
    lab.echo_ok(FRONTEND, sa(lab.ip("shop/cart-v1-2"), 7000), 100_000, &[]);

    std::thread::sleep(DEADLINE + Duration::from_secs(1));
    assert_eq!(get(&mut idle).0, 200, "the idle connection was closed");

    let mut times = Vec::new();
    for t in tls {
        let (took, answer) = t.join().unwrap();
        // Not a TLS answer: nothing, or an alert.
        assert!(answer.len() < 64, "{answer:?}");
        assert!(
            took >= DEADLINE - Duration::from_millis(200),
            "closed early: {took:?}"
        );
        times.push(took);
    }
    eprintln!("slow TLS handshakes closed after {}", summary(times));
    let mut times = Vec::new();
    for t in headers {
        let (took, answer) = t.join().unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
        assert!(
            took >= DEADLINE - Duration::from_millis(200),
            "closed early: {took:?}"
        );
        times.push(took);
    }
    eprintln!("slow header sections closed after {}", summary(times));
}

/// One HTTP/1.1 GET on `s`: the status, whether the server will close, and the time
/// from the request to the end of the answer.
fn get(s: &mut TcpStream) -> (u16, bool, Duration) {
    let start = Instant::now();
    s.write_all(b"GET /overload HTTP/1.1\r\nhost: cart\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-answer: {head:?}");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status: u16 = text[9..12].parse().unwrap();
    let length: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    (status, text.contains("connection: close"), start.elapsed())
}

/// 400 connections past the limit from two clients, each pausing `pause` between its
/// connections, while `admitted` sends requests back to back: how long each refusal
/// took, and each admitted request meanwhile (at least 200).
fn refusals_beside(
    frontend: &Path,
    cart: SocketAddr,
    admitted: &mut TcpStream,
    pause: Duration,
) -> (Vec<Duration>, Vec<Duration>) {
    let refusals: Vec<_> = (0..2)
        .map(|_| {
            let frontend = frontend.to_owned();
            std::thread::spawn(move || {
                let mut times = Vec::new();
                for _ in 0..200 {
                    let mut s = connect_in(&frontend, cart);
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let (status, close, took) = get(&mut s);
                    assert_eq!((status, close), (503, true), "past the limit");
                    let mut rest = Vec::new();
                    let _ = s.read_to_end(&mut rest);
                    assert!(rest.is_empty(), "{rest:?}");
                    times.push(took);
                    std::thread::sleep(pause);
                }
                times
            })
        })
        .collect();
    let mut loaded = Vec::new();
    let started = Instant::now();
    while loaded.len() < 200 || refusals.iter().any(|t| !t.is_finished()) {
        let (status, _, took) = get(admitted);
        assert_eq!(status, 200);
        loaded.push(took);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the refusals hang"
        );
    }
    let refused = refusals
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    (refused, loaded)
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 99 / 100]
}

#[test]
fn past_the_waypoint_connection_limit_clients_get_503_and_admitted_ones_are_served() {
    let lab = lab();
    let frontend: PathBuf = lab::netns_path(&lab.pod(FRONTEND).netns);
    let cart = SocketAddr::from((CART_VIP, 80));
    let open = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let s = connect_in(&frontend, cart);
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect()
    };
    // As many client connections as the limit, each answered.
    let mut held = open(LIMIT);
    for s in &mut held {
        let (status, close, _) = get(s);
        assert_eq!((status, close), (200, false));
    }
    let active = tests::lab::metric(
        &lab.pod_metrics(tests::waypoint::WAYPOINT),
        "weft_waypoint_tunnels_active",
        &[],
    );
    assert_eq!(
        active, LIMIT as u64,
        "the waypoint holds every admitted connection"
    );
    let unloaded: Vec<Duration> = (0..200).map(|_| get(&mut held[0]).2).collect();

    // Two clients open new connections while an admitted one goes on: back to back
    // (they and the mesh share the machine's two cores), then one every 5 ms each.
    for (how, pause) in [
        ("back to back", Duration::ZERO),
        ("every 5 ms", Duration::from_millis(5)),
    ] {
        let (refused, loaded) = refusals_beside(&frontend, cart, &mut held[0], pause);
        let (u, l) = (p99(unloaded.clone()), p99(loaded.clone()));
        eprintln!(
            "{how}: 503 past the limit: {}; admitted p99 unloaded {u:?}, while refusing {l:?} \
             ({} requests; ratio {:.2})",
            summary(refused),
            loaded.len(),
            l.as_secs_f64() / u.as_secs_f64()
        );
    }

    // A connection that ends gives its place back.
    drop(held.pop());
    wire::eventually(Duration::from_secs(5), "a free place", || {
        let mut s = connect_in(&frontend, cart);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        get(&mut s).0 == 200
    });
    let metrics = lab.pod_metrics(tests::waypoint::WAYPOINT);
    assert!(
        tests::lab::metric(
            &metrics,
            "weft_waypoint_tunnels_refused_total",
            &["reason=\"overloaded\""]
        ) >= 800,
        "{metrics}"
    );
}
