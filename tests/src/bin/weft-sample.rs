//! `weft-sample`: the sample app of the lab and of the tests.
//!
//! * `serve`: a TCP echo server and an HTTP endpoint that answers with the pod's name,
//!   the client's address and the request's headers, as JSON.
//! * `echo`: sends N bytes to an echo server while reading them back, and prints what
//!   it sent and received (counts and SHA-256) and the peer address it saw, as JSON.
//! * `chat`: keeps one connection open and echoes each line of standard input through
//!   it, printing the answer; for tests that act on a connection while it is open.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

#[derive(Parser)]
#[command(name = "weft-sample", about = "Weft's sample app")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve TCP echo and HTTP.
    Serve {
        /// TCP echo listener, e.g. `[::]:7000` (both families).
        #[arg(long)]
        echo: Vec<SocketAddr>,
        /// HTTP listener, e.g. `[::]:8080`.
        #[arg(long)]
        http: Vec<SocketAddr>,
        /// The name the HTTP endpoint reports.
        #[arg(long, default_value = "sample")]
        name: String,
    },
    /// Send bytes to an echo server and check what comes back.
    Echo {
        #[arg(long)]
        connect: SocketAddr,
        /// How many bytes to send.
        #[arg(long, default_value_t = 1024)]
        bytes: u64,
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        /// Send this text over and over instead of the pseudo-random stream (to look
        /// for it on the wire).
        #[arg(long)]
        text: Option<String>,
        /// Pace the sending at this many bytes per second.
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Request/response latency on one connection to an echo server: COUNT round
    /// trips of SIZE bytes; prints percentiles in microseconds, as JSON.
    Rr {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Send COUNT HTTP/1.1 GETs, one connection each, and print how many each pod
    /// answered, as JSON.
    Spread {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
    /// Echo each line of standard input through one connection.
    Chat {
        #[arg(long)]
        connect: SocketAddr,
    },
    /// Send one HTTP/1.1 GET and print the answer's body.
    Get {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { echo, http, name } => {
            anyhow::ensure!(
                !echo.is_empty() || !http.is_empty(),
                "give at least one --echo or --http listener"
            );
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(serve(echo, http, name))
        }
        Command::Echo {
            connect,
            bytes,
            timeout_secs,
            text,
            rate,
        } => echo(
            connect,
            bytes,
            Duration::from_secs(timeout_secs),
            text.map(String::into_bytes),
            rate,
        ),
        Command::Spread { connect, count } => spread(connect, count),
        Command::Rr {
            connect,
            count,
            size,
        } => rr(connect, count, size),
        Command::Chat { connect } => chat(connect),
        Command::Get { connect, path } => get(connect, &path),
    }
}

async fn serve(echo: Vec<SocketAddr>, http: Vec<SocketAddr>, name: String) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for addr in echo {
        let listener = bind(addr)?;
        eprintln!("echo listening on {}", listener.local_addr()?);
        tasks.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
    }
    for addr in http {
        let listener = bind(addr)?;
        eprintln!("http listening on {}", listener.local_addr()?);
        let name = name.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let body = describe(&name, peer, &req);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("valid response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(1024)?)
}

fn describe<B>(name: &str, peer: SocketAddr, req: &Request<B>) -> Vec<u8> {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "pod": name,
        "client": peer.to_string(),
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "headers": headers,
    }))
    .expect("serializable")
}

/// A repeatable byte stream (xorshift), so that both ends can be compared by hash.
fn pattern(len: usize, state: &mut u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn echo(
    addr: SocketAddr,
    bytes: u64,
    timeout: Duration,
    text: Option<Vec<u8>>,
    rate: Option<u64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        text.as_ref().is_none_or(|t| !t.is_empty()),
        "--text must not be empty"
    );
    let stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<String> {
        let mut hash = Sha256::new();
        let mut state = 0x5eed_u64;
        let mut left = bytes;
        let start = std::time::Instant::now();
        let mut sent = 0u64;
        // Paced sending goes in small chunks.
        let chunk_size = if rate.is_some() { 4 * 1024 } else { 64 * 1024 };
        while left > 0 {
            let n = left.min(chunk_size) as usize;
            let chunk = match &text {
                Some(t) => t
                    .iter()
                    .copied()
                    .cycle()
                    .skip((sent % t.len() as u64) as usize)
                    .take(n)
                    .collect(),
                None => pattern(n, &mut state),
            };
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            writer.write_all(&chunk)?;
            hash.update(&chunk);
            left -= n as u64;
            sent += n as u64;
        }
        writer.shutdown(std::net::Shutdown::Write)?;
        Ok(hex(&hash.finalize()))
    });
    let mut reader = stream;
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).context("reading the echo")?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n as u64;
    }
    let sent_hash = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?
        .context("sending")?;
    println!(
        "{}",
        serde_json::json!({
            "local": local.to_string(),
            "peer": peer.to_string(),
            "sent": bytes,
            "received": received,
            "sha256_sent": sent_hash,
            "sha256_received": hex(&hash.finalize()),
        })
    );
    Ok(())
}

fn chat(addr: SocketAddr) -> anyhow::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "connected {}", stream.peer_addr()?)?;
    out.flush()?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        writer.write_all(line.as_bytes())?;
        writer.write_all(b"\n")?;
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        anyhow::ensure!(!answer.is_empty(), "the connection closed");
        write!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    println!("{}", fetch(addr, path)?);
    Ok(())
}

fn rr(addr: SocketAddr, count: u32, size: usize) -> anyhow::Result<()> {
    anyhow::ensure!(count > 0 && size > 0, "--count and --size must be positive");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let message = vec![0x5a_u8; size];
    let mut answer = vec![0u8; size];
    let mut micros = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = std::time::Instant::now();
        stream.write_all(&message)?;
        stream
            .read_exact(&mut answer)
            .context("reading the answer")?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "count": count,
            "size": size,
            "p50_us": at(0.5),
            "p90_us": at(0.9),
            "p99_us": at(0.99),
            "p999_us": at(0.999),
            "max_us": at(1.0),
        })
    );
    Ok(())
}

fn spread(addr: SocketAddr, count: u32) -> anyhow::Result<()> {
    let mut pods: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..count {
        let body = fetch(addr, "/").with_context(|| format!("request {i}"))?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let pod = v["pod"].as_str().context("no pod in the answer")?;
        *pods.entry(pod.to_owned()).or_default() += 1;
    }
    println!("{}", serde_json::to_string(&pods)?);
    Ok(())
}

fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("the answer is not HTTP")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_repeatable_across_chunkings() {
        let mut a = 0x5eed_u64;
        let whole = pattern(64, &mut a);
        let mut b = 0x5eed_u64;
        let mut parts = pattern(32, &mut b);
        parts.extend(pattern(32, &mut b));
        assert_eq!(whole, parts);
        assert_ne!(whole[..8], whole[8..16]);
    }
}
