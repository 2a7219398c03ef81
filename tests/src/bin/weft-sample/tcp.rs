//! The TCP clients: `echo`, `chat`, `rr`, `connrate`, `hold`, and the one-shot
//! HTTP/1.1 GETs of `spread` and `get`. Plain blocking sockets and threads, so that
//! they measure the mesh rather than a runtime.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::{hex, latency::percentile};

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

pub fn echo(
    addr: SocketAddr,
    bytes: u64,
    timeout: Duration,
    text: Option<Vec<u8>>,
    (rate, nonblocking): (Option<u64>, bool),
) -> anyhow::Result<()> {
    anyhow::ensure!(
        text.as_ref().is_none_or(|t| !t.is_empty()),
        "--text must not be empty"
    );
    let stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // Shared by both halves: the flag belongs to the open file.
    stream.set_nonblocking(nonblocking)?;
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
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                match writer.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        ready(&writer, libc::POLLOUT, timeout)?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
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
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if nonblocking && e.kind() == std::io::ErrorKind::WouldBlock => {
                ready(&reader, libc::POLLIN, timeout).context("waiting for the echo")?;
                continue;
            }
            Err(e) => return Err(e).context("reading the echo"),
        };
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

/// Waits until `stream` is ready for `events` (poll(2)), at most `timeout`.
fn ready(stream: &TcpStream, events: libc::c_short, timeout: Duration) -> std::io::Result<()> {
    let mut fd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(stream),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    match unsafe { libc::poll(&mut fd, 1, ms) } {
        0 => Err(std::io::ErrorKind::TimedOut.into()),
        n if n < 0 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        }
        _ => Ok(()),
    }
}

pub fn chat(addr: SocketAddr) -> anyhow::Result<()> {
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

pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    println!("{}", fetch(addr, path)?);
    Ok(())
}

pub fn rr(addr: SocketAddr, count: u32, size: usize) -> anyhow::Result<()> {
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
    let at = |q: f64| percentile(&micros, q).unwrap_or_default();
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

/// Did more than 1% of `attempts` fail?
fn too_many_errors(errors: u64, attempts: u64) -> bool {
    errors * 100 > attempts
}

/// One short-lived connection: connect, send `message`, read it back, close.
fn one_exchange(addr: SocketAddr, message: &[u8], answer: &mut [u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(message)?;
    stream.read_exact(answer)?;
    if answer != message {
        return Err(std::io::Error::other("the echo differs from what was sent"));
    }
    Ok(())
}

pub fn connrate(
    addr: SocketAddr,
    duration: Duration,
    max_count: u64,
    concurrency: u32,
    size: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        max_count > 0 && concurrency > 0 && size > 0,
        "--max-count, --concurrency and --size must be positive"
    );
    let start = Instant::now();
    let deadline = start + duration;
    // Attempts are claimed one at a time, so `max_count` bounds them all together.
    let claimed = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..concurrency {
        let claimed = Arc::clone(&claimed);
        threads.push(std::thread::spawn(
            move || -> (Vec<f64>, u64, Option<String>) {
                let message = vec![0x5a_u8; size];
                let mut answer = vec![0u8; size];
                let mut micros = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                while Instant::now() < deadline
                    && claimed.fetch_add(1, Ordering::Relaxed) < max_count
                {
                    let begin = Instant::now();
                    match one_exchange(addr, &message, &mut answer) {
                        Ok(()) => micros.push(begin.elapsed().as_secs_f64() * 1e6),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                            // Do not spin on a refusing peer.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                (micros, errors, first_error)
            },
        ));
    }
    let mut micros = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    for t in threads {
        let (m, e, first) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a connection thread panicked"))?;
        micros.extend(m);
        errors += e;
        first_error = first_error.or(first);
    }
    let elapsed = start.elapsed().as_secs_f64();
    micros.sort_by(f64::total_cmp);
    let count = micros.len() as u64;
    let at = |q: f64| percentile(&micros, q).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "count": count,
            "per_sec": count as f64 / elapsed,
            "errors": errors,
            "p50_us": at(0.5),
            "p90_us": at(0.9),
            "p99_us": at(0.99),
            "p999_us": at(0.999),
        })
    );
    anyhow::ensure!(
        !too_many_errors(errors, count + errors),
        "{errors} of {} connections failed; the first: {}",
        count + errors,
        first_error.unwrap_or_default()
    );
    Ok(())
}

/// Connections opened at once by `hold`.
const HOLD_PARALLELISM: u32 = 64;

/// The 16 bytes `hold` sends on connection `i`.
fn hold_message(i: u32) -> [u8; 16] {
    let mut message = [0u8; 16];
    message.copy_from_slice(format!("weft-hold-{:05}\n", i % 100_000).as_bytes());
    message
}

/// Opens one held connection and checks one round trip on it.
fn open_held(addr: SocketAddr, i: u32) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connection {i}: connecting {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let message = hold_message(i);
    let mut answer = [0u8; 16];
    stream
        .write_all(&message)
        .and_then(|()| stream.read_exact(&mut answer))
        .with_context(|| format!("connection {i}: the echo round trip"))?;
    anyhow::ensure!(
        answer == message,
        "connection {i}: the echo differs from what was sent"
    );
    Ok(stream)
}

pub fn hold(addr: SocketAddr, count: u32, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..HOLD_PARALLELISM.min(count.max(1)) {
        let next = Arc::clone(&next);
        let failed = Arc::clone(&failed);
        threads.push(std::thread::spawn(
            move || -> (Vec<TcpStream>, Option<anyhow::Error>) {
                let mut held = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= u64::from(count) || failed.load(Ordering::Relaxed) {
                        return (held, None);
                    }
                    match open_held(addr, i as u32) {
                        Ok(stream) => held.push(stream),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return (held, Some(e));
                        }
                    }
                }
            },
        ));
    }
    let mut held = Vec::with_capacity(count as usize);
    let mut first_error = None;
    for t in threads {
        let (streams, error) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a connection thread panicked"))?;
        held.extend(streams);
        first_error = first_error.or(error);
    }
    if let Some(e) = first_error {
        return Err(e.context(format!(
            "holding {count} connections to {addr} ({} were open)",
            held.len()
        )));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({ "open": held.len(), "open_secs": start.elapsed().as_secs_f64() })
    )?;
    out.flush()?;
    // A line or the end of standard input ends the wait; so does the timeout. The
    // reading thread may stay blocked: the process exits without it.
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = done.send(());
    });
    let _ = wait.recv_timeout(timeout);
    drop(held);
    Ok(())
}

pub fn spread(addr: SocketAddr, count: u32) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_budget_is_one_percent() {
        assert!(!too_many_errors(0, 0));
        assert!(!too_many_errors(1, 100));
        assert!(too_many_errors(2, 100));
        assert!(!too_many_errors(10, 1000));
        assert!(too_many_errors(11, 1000));
        assert!(too_many_errors(1, 1));
    }

    #[test]
    fn hold_messages_are_distinct_and_sixteen_bytes() {
        assert_eq!(&hold_message(7), b"weft-hold-00007\n");
        assert_ne!(hold_message(1), hold_message(2));
        assert_eq!(hold_message(12_345).len(), 16);
    }

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
