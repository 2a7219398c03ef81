//! `weft-agent`: the per-node agent. Configured through `WEFT_*` environment variables
//! (see `config.rs` and ARCHITECTURE.md).

use agent::config::{Config, Env, LogFormat};
use anyhow::Context as _;

const USAGE: &str = "\
usage: weft-agent [run]     run the agent (configuration from WEFT_* variables)
       weft-agent uninstall remove this node's pinned programs, maps and state";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.as_slice() {
        [] => "run",
        [c] if c == "run" || c == "uninstall" => c.as_str(),
        [c] if c == "-h" || c == "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let config = Config::from_source(&Env).context("invalid configuration")?;
    // Flushes the log when dropped, at the end of `main`.
    let _log = init_tracing(config.log_format);
    match command {
        "uninstall" => agent::uninstall(&config),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(agent::run(config)),
    }
}

/// Logs go to standard error through a writer thread, so that a connection's access
/// line costs the data path a queue push rather than a write; when the queue is full
/// the data path waits (no line is dropped).
fn init_tracing(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("weft-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
