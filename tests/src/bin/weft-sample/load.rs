//! The `load` client: open-loop HTTP/1.1 load for the benchmarks.
//!
//! Request `i` is due at `start + i / RATE`, whether or not earlier answers came back.
//! CONNECTIONS keep-alive connections take the requests in order, each as soon as it is
//! free; a request that waited for a free connection past its due time is timed from
//! its due time, so the waiting behind a slow answer counts (no coordinated omission).
//! A request whose connection was free before it was due is timed from when it went
//! out, which leaves out the lateness of this process's own timer.
//!
//! Bounded in count (RATE × DURATION_SECS, at most MAX_COUNT) and in time: each
//! request may take `REQUEST_TIMEOUT`, and no request starts later than that after
//! DURATION_SECS; those that did not start by then count as errors.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use crate::{
    http::client::{Connection, Protocol, Template},
    latency::percentile,
};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    connect: SocketAddr,
    /// Requests per second, in all.
    #[arg(long)]
    rate: f64,
    #[arg(long)]
    duration_secs: u64,
    /// Keep-alive connections to spread the requests over.
    #[arg(long)]
    connections: u32,
    #[arg(long, default_value = "/")]
    path: String,
    /// Send a body of this many bytes with each request (a POST then).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// At most this many requests, whatever the rate and duration.
    #[arg(long, default_value_t = 1_000_000)]
    max_count: u64,
}

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many requests a run sends: RATE × DURATION, at most `max_count`.
fn planned(rate: f64, duration: Duration, max_count: u64) -> u64 {
    ((rate * duration.as_secs_f64()).floor() as u64).min(max_count)
}

/// When request `i` is due, after the start.
fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// The instant a request is timed from: its due time when its connection was still
/// busy then (it queued), else the instant it went out.
fn timed_from(due: Instant, free: Instant, sent: Instant) -> Instant {
    if free > due { due } else { sent }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    micros: Vec<f64>,
    first_error: Option<String>,
    /// How many times a connection was established.
    opened: u32,
}

/// `load`: prints `{"requests", "errors", "achieved_rps", "p50_us", "p90_us",
/// "p99_us", "p999_us", "max_us"}`. `requests` is how many were planned; `errors` how
/// many of them got no 2xx answer in time (or never started); the rate and the
/// percentiles are of the others. Fails only when no connection could be made.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number"
    );
    anyhow::ensure!(
        args.duration_secs > 0 && args.connections > 0,
        "--duration-secs and --connections must be positive"
    );
    let duration = Duration::from_secs(args.duration_secs);
    let total = planned(args.rate, duration, args.max_count);
    anyhow::ensure!(total > 0, "--rate × --duration-secs plans no request");
    let method = if args.body_bytes > 0 { "POST" } else { "GET" };
    let host = args.connect.to_string();
    let template = Arc::new(Template::new(
        Protocol::Http1,
        method,
        &host,
        &args.path,
        &[],
        args.body_bytes,
    )?);
    let start = Instant::now();
    let last_start = start + duration + REQUEST_TIMEOUT;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..u64::from(args.connections).min(total) {
        let (template, next, addr, rate) = (
            Arc::clone(&template),
            Arc::clone(&next),
            args.connect,
            args.rate,
        );
        workers.spawn(async move {
            let mut connection = Connection::new(addr, Protocol::Http1);
            let mut tally = Tally::default();
            loop {
                let free = Instant::now();
                if free > last_start {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = start + due(i, rate);
                tokio::time::sleep_until(due).await;
                let sent = Instant::now();
                let from = timed_from(due, free, sent);
                match tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut connection, &template))
                    .await
                {
                    Ok(Ok(())) => tally.micros.push(from.elapsed().as_secs_f64() * 1e6),
                    Ok(Err(e)) => {
                        tally.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        tally
                            .first_error
                            .get_or_insert_with(|| format!("no answer within {REQUEST_TIMEOUT:?}"));
                        connection.reset();
                    }
                }
            }
            tally.opened = connection.opened();
            tally
        });
    }
    let mut micros = Vec::new();
    let mut first_error = None;
    let mut opened = 0;
    while let Some(done) = workers.join_next().await {
        let tally = done.context("a connection task panicked")?;
        micros.extend(tally.micros);
        opened += tally.opened;
        first_error = first_error.or(tally.first_error);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Failed requests and those that never started (out of time) alike.
    let errors = total - micros.len() as u64;
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| percentile(&micros, q).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "requests": total,
            "errors": errors,
            "achieved_rps": micros.len() as f64 / elapsed,
            "p50_us": at(0.5),
            "p90_us": at(0.9),
            "p99_us": at(0.99),
            "p999_us": at(0.999),
            "max_us": at(1.0),
        })
    );
    anyhow::ensure!(
        opened > 0,
        "no connection to {} could be made: {}",
        args.connect,
        first_error.unwrap_or_default()
    );
    if let Some(e) = first_error {
        eprintln!("weft-sample load: {errors} of {total} requests failed; the first: {e}");
    }
    Ok(())
}

/// One request, its answer read to the end; anything but 2xx is an error.
async fn exchange(connection: &mut Connection, template: &Template) -> anyhow::Result<()> {
    let response = connection.send(template.request()).await?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .context("reading the body")?;
    anyhow::ensure!(status.is_success(), "status {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_rate_times_duration_up_to_the_cap() {
        assert_eq!(planned(1000.0, Duration::from_secs(5), 1_000_000), 5000);
        assert_eq!(planned(1000.0, Duration::from_secs(5), 1200), 1200);
        assert_eq!(planned(0.5, Duration::from_secs(3), 100), 1);
        assert_eq!(planned(0.1, Duration::from_secs(1), 100), 0);
    }

    #[test]
    fn requests_are_due_at_fixed_intervals() {
        assert_eq!(due(0, 100.0), Duration::ZERO);
        assert_eq!(due(1, 100.0), Duration::from_millis(10));
        assert_eq!(due(250, 100.0), Duration::from_millis(2500));
        assert_eq!(due(3, 0.5), Duration::from_secs(6));
        // Exact enough over a long run.
        let late = due(999_999, 20_000.0);
        assert!(late.abs_diff(Duration::from_micros(49_999_950)) < Duration::from_micros(1));
    }

    #[test]
    fn queued_requests_are_timed_from_their_due_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Free before it was due: timed from when it went out (the timer's lateness
        // is not the server's).
        assert_eq!(
            timed_from(t0 + ms(10), t0 + ms(5), t0 + ms(11)),
            t0 + ms(11)
        );
        assert_eq!(
            timed_from(t0 + ms(10), t0 + ms(10), t0 + ms(10)),
            t0 + ms(10)
        );
        // Still busy with a slow answer when it was due: timed from the due time.
        assert_eq!(
            timed_from(t0 + ms(10), t0 + ms(30), t0 + ms(30)),
            t0 + ms(10)
        );
    }
}
