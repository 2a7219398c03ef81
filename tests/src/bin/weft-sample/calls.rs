//! `calls`: one call (a new connection, a message echoed back, close) every INTERVAL,
//! until standard input ends or a line arrives on it, or MAX_SECS pass. Each call's
//! outcome is counted by kind, so a test can tell a refused connect (nothing was
//! sent) from a call cut in the middle. Prints the counts as JSON; never fails on a
//! failed call, only on bad arguments.

use std::{
    io::{BufRead as _, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::latency::percentile;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    connect: SocketAddr,
    #[arg(long, default_value_t = 5)]
    interval_ms: u64,
    /// The message each call sends (and expects back).
    #[arg(long, default_value = "weft-calls")]
    text: String,
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// How long each step of a call (connect, write, read) may take.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
}

#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    calls: u64,
    ok: u64,
    /// The connect was refused: nothing was sent.
    refused: u64,
    /// Reset or closed by the other side in the middle of the call.
    cut: u64,
    timed_out: u64,
    /// The echo differs from what was sent.
    wrong: u64,
    other: u64,
    /// The first few errors, as text.
    errors: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.interval_ms > 0, "--interval-ms must be positive");
    anyhow::ensure!(!args.text.is_empty(), "--text must not be empty");
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            stop.store(true, Ordering::Release);
        });
    }
    let interval = Duration::from_millis(args.interval_ms);
    let timeout = Duration::from_secs(args.timeout_secs);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_secs);
    let message = args.text.as_bytes();
    let mut answer = vec![0u8; message.len()];
    let mut counts = Counts::default();
    let mut micros = Vec::new();
    let mut next = start;
    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        let begin = Instant::now();
        counts.calls += 1;
        match call(args.connect, message, &mut answer, timeout) {
            Ok(()) => {
                counts.ok += 1;
                micros.push(begin.elapsed().as_secs_f64() * 1e6);
            }
            Err(e) => {
                let slot = match e.kind() {
                    ErrorKind::ConnectionRefused => &mut counts.refused,
                    ErrorKind::ConnectionReset
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::BrokenPipe
                    | ErrorKind::ConnectionAborted => &mut counts.cut,
                    ErrorKind::TimedOut | ErrorKind::WouldBlock => &mut counts.timed_out,
                    ErrorKind::InvalidData => &mut counts.wrong,
                    _ => &mut counts.other,
                };
                *slot += 1;
                if counts.errors.len() < 10 {
                    counts.errors.push(format!(
                        "call {} at {:.3}s: {e}",
                        counts.calls,
                        begin.duration_since(start).as_secs_f64()
                    ));
                }
            }
        }
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| percentile(&micros, q).unwrap_or_default();
    let mut report = serde_json::to_value(&counts)?;
    report["secs"] = start.elapsed().as_secs_f64().into();
    report["p50_us"] = at(0.50).into();
    report["p99_us"] = at(0.99).into();
    report["max_us"] = micros.last().copied().unwrap_or_default().into();
    println!("{report}");
    Ok(())
}

fn call(
    addr: SocketAddr,
    message: &[u8],
    answer: &mut [u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(message)?;
    stream.read_exact(answer)?;
    if answer != message {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "the echo differs from what was sent",
        ));
    }
    Ok(())
}
