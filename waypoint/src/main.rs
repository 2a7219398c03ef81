//! `weft-waypoint`: the per-service L7 proxy. Configured through `WEFT_*` environment
//! variables (see `config.rs` and ARCHITECTURE.md).
#![forbid(unsafe_code)]

use anyhow::Context as _;
use waypoint::config::{Config, Env};

const USAGE: &str =
    "usage: weft-waypoint      run the waypoint (configuration from WEFT_* variables)";

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None | Some("run") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(_) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    let config = Config::from_source(&Env).context("invalid configuration")?;
    let _log = dataplane::logs::init(config.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(waypoint::run(config))
}
