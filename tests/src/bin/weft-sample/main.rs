//! `weft-sample`: the sample app of the lab and of the tests.
//!
//! * `serve`: a TCP echo server; an HTTP endpoint (HTTP/1.1 and HTTP/2 prior knowledge
//!   on one listener) that answers with the pod's name, the client's address and the
//!   request, as JSON, and echoes WebSocket messages; a gRPC echo service; an OTLP
//!   trace collector that writes the spans it receives as JSON lines.
//! * `echo`: sends N bytes to an echo server while reading them back, and prints what
//!   it sent and received (counts and SHA-256) and the peer address it saw, as JSON.
//! * `chat`: keeps one connection open and echoes each line of standard input through
//!   it, printing the answer; for tests that act on a connection while it is open.
//! * `rr`, `connrate`, `hold`: the load of `weftctl lab bench` — round-trip latency on
//!   one connection, new connections per second, and many idle connections held open.
//! * `calls`: a call on a new connection every few milliseconds, each outcome counted
//!   (refused, cut, timed out): what the upgrade and crash tests run across restarts.
//! * `spread`, `get`: one-shot HTTP/1.1 GETs.
//! * `http`, `raw`, `grpc`, `ws`: clients of the L7 tests — keep-alive HTTP/1.1 or
//!   HTTP/2 requests, raw request bytes from a corpus, the gRPC service, WebSocket.
//! * `load`: an open-loop HTTP/1.1 load generator for the benchmarks.
//! * `dns`, `dns-load`: one DNS question (UDP with TCP fallback, or TCP), and an
//!   open-loop UDP query load.
//!
//! Every subcommand first raises its open-file limit to the hard limit, so that servers
//! and load tools can hold tens of thousands of sockets.
//!
//! Errors are `anyhow` throughout: every module here is part of this one binary's
//! command line, and each error ends as the process's exit message.

mod calls;
mod dns;
mod grpc;
mod http;
mod latency;
mod load;
mod otlp;
mod raw;
mod serve;
mod tcp;
mod websocket;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft-sample", about = "Weft's sample app")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve TCP echo, HTTP (and WebSocket), gRPC and an OTLP trace collector.
    Serve {
        /// TCP echo listener, e.g. `[::]:7000` (both families).
        #[arg(long)]
        echo: Vec<SocketAddr>,
        /// HTTP listener, e.g. `[::]:8080`: HTTP/1.1 and HTTP/2 prior knowledge, and
        /// WebSocket upgrades.
        #[arg(long)]
        http: Vec<SocketAddr>,
        /// gRPC listener of the `weft.sample.v1.Echo` service, e.g. `[::]:9090`.
        #[arg(long)]
        grpc: Vec<SocketAddr>,
        /// OTLP/gRPC trace collector listener, e.g. `[::]:4317`.
        #[arg(long, requires = "otlp_out")]
        otlp: Vec<SocketAddr>,
        /// The file the collector appends each span to, as one JSON line.
        #[arg(long)]
        otlp_out: Option<PathBuf>,
        /// The name the HTTP endpoint and the gRPC service report.
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
        /// Use the socket the way an event loop does: non-blocking, waiting for
        /// readiness with poll(2), rather than blocking in read and write.
        #[arg(long)]
        nonblocking: bool,
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
    /// New connections per second: CONCURRENCY threads each connect, send SIZE bytes,
    /// read them back and close, until DURATION_SECS pass or MAX_COUNT connections are
    /// made; prints the rate, the errors and percentiles of the whole exchange in
    /// microseconds, as JSON. Fails when more than 1% of the attempts fail.
    Connrate {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 5)]
        duration_secs: u64,
        #[arg(long, default_value_t = 50_000)]
        max_count: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Open COUNT connections (one 16-byte echo round trip each, checked), print
    /// `{"open":COUNT,"open_secs":…}`, then keep them open and idle until a line or the
    /// end of standard input arrives, or TIMEOUT_SECS pass. Fails if any connection
    /// fails.
    Hold {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
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
    /// Send COUNT HTTP requests over CONNECTIONS keep-alive connections (HTTP/1.1, or
    /// HTTP/2 prior knowledge with --h2) and print the statuses and pods seen, as JSON.
    Http(http::client::Args),
    /// Send each raw HTTP/1.1 request of a JSON corpus on its own connection and print
    /// what came back, as JSON.
    Raw(raw::Args),
    /// Call the sample app's gRPC service.
    Grpc(grpc::ClientArgs),
    /// Send WebSocket text messages one at a time and check their echoes.
    Ws(websocket::ClientArgs),
    /// Open-loop HTTP/1.1 load at a fixed rate; prints latency percentiles measured
    /// from each request's scheduled time, as JSON.
    Load(load::Args),
    /// Ask one DNS question and print the answer, as JSON.
    Dns(dns::Args),
    /// Ask DNS questions at a fixed rate over UDP; prints answers and latencies.
    DnsLoad(dns::LoadArgs),
    /// One call (connect, echo a message, close) every INTERVAL_MS until standard
    /// input ends; prints how each call ended, counted, as JSON.
    Calls(calls::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_open_files_limit()?;
    match cli.command {
        Command::Serve {
            echo,
            http,
            grpc,
            otlp,
            otlp_out,
            name,
        } => {
            let listeners = serve::Listeners {
                echo,
                http,
                grpc,
                otlp,
                otlp_out,
            };
            anyhow::ensure!(
                !listeners.is_empty(),
                "give at least one --echo, --http, --grpc or --otlp listener"
            );
            runtime()?.block_on(serve::serve(listeners, name))
        }
        Command::Echo {
            connect,
            bytes,
            timeout_secs,
            text,
            rate,
            nonblocking,
        } => tcp::echo(
            connect,
            bytes,
            Duration::from_secs(timeout_secs),
            text.map(String::into_bytes),
            (rate, nonblocking),
        ),
        Command::Spread { connect, count } => tcp::spread(connect, count),
        Command::Rr {
            connect,
            count,
            size,
        } => tcp::rr(connect, count, size),
        Command::Connrate {
            connect,
            duration_secs,
            max_count,
            concurrency,
            size,
        } => tcp::connrate(
            connect,
            Duration::from_secs(duration_secs),
            max_count,
            concurrency,
            size,
        ),
        Command::Hold {
            connect,
            count,
            timeout_secs,
        } => tcp::hold(connect, count, Duration::from_secs(timeout_secs)),
        Command::Chat { connect } => tcp::chat(connect),
        Command::Get { connect, path } => tcp::get(connect, &path),
        Command::Http(args) => runtime()?.block_on(http::client::run(args)),
        Command::Raw(args) => raw::run(&args),
        Command::Grpc(args) => runtime()?.block_on(grpc::client(args)),
        Command::Ws(args) => runtime()?.block_on(websocket::client(args)),
        Command::Load(args) => runtime()?.block_on(load::run(args)),
        Command::Dns(args) => dns::ask(&args),
        Command::DnsLoad(args) => dns::load(&args),
        Command::Calls(args) => calls::run(args),
    }
}

/// The runtime of the servers and the async clients: two workers, as the machines of
/// the lab and of CI have two cores.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Raises the soft limit on open files to the hard limit.
fn raise_open_files_limit() -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the open files limit");
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit through a valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error()).context("raising the open files limit");
        }
    }
    Ok(())
}

/// Waits a little after a failed `accept` (out of file descriptors, say), rather than
/// spinning on it.
async fn accept_failed() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Lowercase hexadecimal, two digits a byte (hashes, trace and span IDs).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
