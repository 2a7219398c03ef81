//! HTTP/2 floods against the agent's HBONE port (15008, mutual TLS with a certificate
//! of the mesh) and against the waypoint's HTTP/2 (prior knowledge, from a mesh pod
//! through its tunnel): rapid reset, CONTINUATION, SETTINGS, PING, a zero window and
//! 10,000 streams. The attacked process pushes back (GOAWAY, refused streams, or it
//! stops reading), its memory stays bounded, and other clients keep being served.
//! Root, on the lab.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tests::{
    calls::{Callers, count},
    flood::{self, Flood, Outcome},
    lab::{Lab, sa},
    waypoint::{CART_VIP, FRONTEND, TOPOLOGY, WAYPOINT, http},
    wire,
};
use weftctl::lab;

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
/// What the attacked process may grow by, over its size before the floods.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The largest RSS of `pid` while `f` runs (sampled every 10 ms).
fn peak_rss_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                peak.fetch_max(rss_kib(pid), Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Release);
    sampler.join().unwrap();
    (out, peak.load(Ordering::Acquire))
}

/// How a flood reaches its target.
#[derive(Clone)]
enum Way {
    /// HBONE: mutual TLS to `addr` as a mesh client.
    Hbone {
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    },
    /// Plaintext HTTP/2 to `addr`, which the agent of the client's pod captures.
    Plain { addr: SocketAddr },
}

/// Runs `flood` from inside the namespace `netns` along `way`.
fn attack(netns: &std::path::Path, way: &Way, flood: Flood, request: &[(&str, &str)]) -> Outcome {
    let batches = flood::batches(flood, request);
    let way = way.clone();
    let addr = match &way {
        Way::Hbone { addr, .. } | Way::Plain { addr } => *addr,
    };
    let tcp = wire::in_netns(netns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let (limit, linger) = (Duration::from_secs(10), Duration::from_secs(2));
        match way {
            Way::Hbone { addr, config } => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .expect("the TLS handshake");
                use tokio::io::AsyncWriteExt as _;
                tls.write_all(&flood::preface()).await.unwrap();
                flood::run(tls, batches, limit, linger).await
            }
            Way::Plain { .. } => {
                let mut tcp = tcp;
                use tokio::io::AsyncWriteExt as _;
                tcp.write_all(&flood::preface()).await.unwrap();
                flood::run(tcp, batches, limit, linger).await
            }
        }
    })
}

/// Every flood against one target, with the bystanders checked after each.
fn every_flood(
    what: &str,
    pid: u32,
    (netns, way): (&std::path::Path, &Way),
    request: &[(&str, &str)],
    bystander: &dyn Fn(),
) {
    let before = rss_kib(pid);
    for f in Flood::ALL {
        let (outcome, peak) = peak_rss_during(pid, || attack(netns, way, f, request));
        eprintln!(
            "{what} {f:?}: {outcome:?}; RSS {before} KiB before, peak {peak} KiB (+{} KiB)",
            peak.saturating_sub(before)
        );
        expect(what, f, &outcome);
        assert!(
            peak <= before + RSS_BOUND_KIB,
            "{what} {f:?}: RSS grew from {before} to {peak} KiB"
        );
        bystander();
    }
    let after = rss_kib(pid);
    eprintln!("{what}: RSS {before} KiB before the floods, {after} KiB after");
}

/// What the peer must have done under each flood.
fn expect(what: &str, f: Flood, o: &Outcome) {
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    const REFUSED_STREAM: u32 = 0x7;
    const FLOW_CONTROL_ERROR: u32 = 0x3;
    match f {
        // Cancelled streams past h2's budget end the connection.
        Flood::RapidReset => assert!(
            o.goaway == Some(ENHANCE_YOUR_CALM) || o.closed,
            "{what} {f:?}: {o:?}"
        ),
        // The header block is cut off long before the 64 MiB were taken.
        Flood::Continuation => {
            assert!(o.goaway.is_some() || o.closed, "{what} {f:?}: {o:?}");
            assert!(o.written < 16 << 20, "{what} {f:?}: {o:?}");
        }
        // Answered while read, or refused; never queued without end.
        Flood::Settings | Flood::Ping => {
            assert!(o.acks > 0 || o.pushed_back(), "{what} {f:?}: {o:?}")
        }
        // Streams whose answers cannot be sent: they are taken (answered with
        // headers, which flow control does not hold back, or held by an upstream
        // waiting on its body) and cost nothing beyond the RSS bound; a client that
        // keeps to flow control is not cut off for it.
        Flood::ZeroWindow => assert!(
            o.goaway != Some(FLOW_CONTROL_ERROR) && o.written > 0,
            "{what} {f:?}: {o:?}"
        ),
        // Past the concurrent stream limit, streams are refused.
        Flood::Streams => assert!(
            o.resets.get(&REFUSED_STREAM).copied().unwrap_or(0) > 0
                || o.goaway == Some(ENHANCE_YOUR_CALM),
            "{what} {f:?}: {o:?}"
        ),
    }
}

#[test]
fn http2_floods_are_pushed_back_with_bounded_memory_while_others_are_served() {
    let lab = Lab::up(TOPOLOGY, &[], &[]);
    let callers = Callers::start(&lab, &[(FRONTEND, "shop/cart-v1-2")], 20, "weft-flood");
    let bystander = || {
        let v = http(&lab, &["--count", "5"]);
        assert_eq!(v["statuses"]["200"], 5, "through the waypoint: {v}");
    };

    // The agent of node-2, on cart-v1-2's HBONE port, from a pod outside the mesh.
    let (roots, (cert, key)) = lab.client_cert("spiffe://cluster.local/ns/legacy/sa/tester");
    let cart = lab.ip("shop/cart-v1-2");
    let config = wire::client_config(&roots, "cluster.local", CART, Some((&cert, &key))).unwrap();
    let way = Way::Hbone {
        addr: sa(cart, 15008),
        config,
    };
    let netns = lab::netns_path(&lab.pod("legacy/billing-1").netns);
    let authority = format!("{cart}:7000");
    let connect = [(":method", "CONNECT"), (":authority", authority.as_str())];
    every_flood(
        "agent",
        lab.agent("node-2").pid,
        (&netns, &way),
        &connect,
        &bystander,
    );

    // The waypoint's HTTP/2, through the frontend's tunnel.
    let way = Way::Plain {
        addr: SocketAddr::from((CART_VIP, 80)),
    };
    let netns = lab::netns_path(&lab.pod(FRONTEND).netns);
    let post = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "cart"),
        (":path", "/flood"),
    ];
    every_flood(
        "waypoint",
        lab.pod(WAYPOINT).app_pid,
        (&netns, &way),
        &post,
        &bystander,
    );

    for (from, v) in callers.stop() {
        eprintln!("calls from {from} during the floods: {v}");
        assert!(count(&v, "calls") >= 100, "{v}");
        assert_eq!(
            count(&v, "ok"),
            count(&v, "calls"),
            "calls from {from}: {v}"
        );
    }
}
