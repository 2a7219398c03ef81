//! `weft-agent`: the per-node agent. Configured through `WEFT_*` environment variables
//! (see `config.rs` and ARCHITECTURE.md).

use agent::config::{Config, Env};
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
    let _log = dataplane::logs::init(config.log_format);
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
