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
    init_tracing(config.log_format);
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

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
