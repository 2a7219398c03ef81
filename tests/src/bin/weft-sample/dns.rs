//! DNS clients of the tests: `dns` asks one question (UDP, falling back to TCP on a
//! truncated answer as stub resolvers do, or TCP only) and prints the answer; `dns-load`
//! asks at a fixed rate over UDP for a while and prints how many were answered and the
//! latency percentiles.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use agent::dns::wire;
use anyhow::{Context as _, bail};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The server to ask (the pod's resolver, as its resolv.conf would say).
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    name: Option<String>,
    /// `A`, `AAAA`, `ANY` or a number.
    #[arg(long, default_value = "A")]
    r#type: String,
    /// Advertise this EDNS UDP size.
    #[arg(long)]
    edns: Option<u16>,
    /// Over TCP only.
    #[arg(long)]
    tcp: bool,
    /// Send these bytes (hex) instead of a query built from --name.
    #[arg(long)]
    raw: Option<String>,
    /// Connect the UDP socket first (as glibc does) instead of `sendto`.
    #[arg(long)]
    connected: bool,
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
}

fn qtype(s: &str) -> anyhow::Result<u16> {
    Ok(match s {
        "A" => wire::TYPE_A,
        "AAAA" => wire::TYPE_AAAA,
        "ANY" => wire::TYPE_ANY,
        n => n.parse().with_context(|| format!("--type {n}"))?,
    })
}

fn hex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("--raw: an odd number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("--raw: not hex"))
        .collect()
}

pub fn ask(args: &Args) -> anyhow::Result<()> {
    let query = match (&args.raw, &args.name) {
        (Some(raw), _) => hex(raw)?,
        (None, Some(name)) => wire::encode_query(0x5157, name, qtype(&args.r#type)?, args.edns),
        (None, None) => bail!("give --name or --raw"),
    };
    let timeout = Duration::from_secs(args.timeout_secs);
    let (transport, answer, from, truncated_first) = if args.tcp {
        (
            "tcp",
            tcp_exchange(args.server, &query, timeout)?,
            args.server,
            false,
        )
    } else {
        let (answer, from) = udp_exchange(args.server, &query, timeout, args.connected)?;
        match wire::parse_response(&answer) {
            Ok(r) if r.tc => (
                "tcp",
                tcp_exchange(args.server, &query, timeout)?,
                args.server,
                true,
            ),
            _ => ("udp", answer, from, false),
        }
    };
    let out = match wire::parse_response(&answer) {
        Ok(r) => json!({
            "transport": transport,
            "from": from.to_string(),
            "truncatedFirst": truncated_first,
            "id": r.id,
            "rcode": r.rcode,
            "aa": r.aa,
            "tc": r.tc,
            "question": r.question.as_ref().map(|q| q.name.clone()),
            "answers": r.answers.iter().map(|a| match &a.data {
                wire::RecordData::A(ip) => json!({"name": a.name, "a": ip.to_string(), "ttl": a.ttl}),
                wire::RecordData::Aaaa(ip) => json!({"name": a.name, "aaaa": ip.to_string(), "ttl": a.ttl}),
                wire::RecordData::Cname(c) => json!({"name": a.name, "cname": c, "ttl": a.ttl}),
            }).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"transport": transport, "unparsed": e.reason(), "bytes": answer.len()}),
    };
    println!("{out}");
    Ok(())
}

fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
    connected: bool,
) -> anyhow::Result<(Vec<u8>, SocketAddr)> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(timeout))?;
    if connected {
        socket.connect(server)?;
        socket.send(query)?;
    } else {
        socket.send_to(query, server)?;
    }
    let mut buf = vec![0u8; 65_535];
    let (n, from) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no UDP answer from {server} within {timeout:?}"))?;
    buf.truncate(n);
    Ok((buf, from))
}

fn tcp_exchange(server: SocketAddr, query: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, timeout)
        .with_context(|| format!("connecting to {server} over TCP"))?;
    s.set_read_timeout(Some(timeout))?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).context("no TCP answer")?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut answer)?;
    Ok(answer)
}

#[derive(clap::Args)]
pub struct LoadArgs {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    name: String,
    /// Queries per second, sent open-loop.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Queries in all.
    #[arg(long, default_value_t = 20_000)]
    count: u32,
}

/// Open-loop load over one UDP socket: a sender thread paces the queries (each with
/// its own id), the receiver matches answers and measures from each send time.
pub fn load(args: &LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.count <= 1_000_000, "--count: at most 1,000,000");
    anyhow::ensure!(args.rate > 0, "--rate: more than 0");
    let bind = if args.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind)?;
    // The kernel's default receive buffer holds a few hundred answers; a burst of
    // scheduling delay would otherwise drop answers that did arrive. (Forced past the
    // system's limit: the tests run as root.)
    let _ = agent::dns::server::force_recv_buffer(&socket, 8 << 20);
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let count = args.count as usize;
    let queries: Vec<Vec<u8>> = (0..count)
        .map(|i| wire::encode_query((i % 65_536) as u16, &args.name, wire::TYPE_A, None))
        .collect();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let sender = {
        let socket = socket.try_clone()?;
        let server = args.server;
        std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
            let mut sent_at = Vec::with_capacity(queries.len());
            for (i, q) in queries.iter().enumerate() {
                let due = interval * i as u32;
                let now = start.elapsed();
                if due > now {
                    std::thread::sleep(due - now);
                }
                sent_at.push(start.elapsed());
                socket.send_to(q, server)?;
            }
            Ok(sent_at)
        })
    };
    // Answers are matched to queries by id; an id is reused every 65,536 queries, by
    // then long answered at these rates.
    let mut answered_at: Vec<Option<Duration>> = vec![None; count];
    let mut next_of_id = vec![0usize; 65_536];
    let mut answered = 0usize;
    let mut wrong = 0usize;
    let mut buf = vec![0u8; 4096];
    let deadline = start + interval * args.count + Duration::from_secs(3);
    while answered < count && Instant::now() < deadline {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let at = start.elapsed();
        let Ok(r) = wire::parse_response(&buf[..n]) else {
            wrong += 1;
            continue;
        };
        if r.rcode != wire::RCODE_NOERROR || r.answers.is_empty() {
            wrong += 1;
        }
        let id = usize::from(r.id);
        let i = next_of_id[id] * 65_536 + id;
        if i < count && answered_at[i].is_none() {
            answered_at[i] = Some(at);
            next_of_id[id] += 1;
            answered += 1;
        }
    }
    let sent_at = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let mut latencies: Vec<Duration> = answered_at
        .iter()
        .zip(&sent_at)
        .filter_map(|(a, s)| a.map(|a| a.saturating_sub(*s)))
        .collect();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e6
    };
    let send_secs = sent_at.last().map_or(0.0, Duration::as_secs_f64);
    println!(
        "{}",
        json!({
            "sent": sent_at.len(),
            "answered": answered,
            "wrong": wrong,
            "sendSeconds": send_secs,
            "ratePerSecond": if send_secs > 0.0 { sent_at.len() as f64 / send_secs } else { 0.0 },
            "p50Micros": pct(0.50),
            "p99Micros": pct(0.99),
            "p999Micros": pct(0.999),
            "maxMicros": pct(1.0),
        })
    );
    Ok(())
}
