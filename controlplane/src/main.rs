//! `weft-controlplane`: the CA that gives workloads their SPIFFE identities. Configured
//! through `WEFT_*` variables (see `config.rs` and ARCHITECTURE.md).

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let config = controlplane::config::Config::from_source(&api::config::Env)
        .context("invalid configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let running = controlplane::start(config).await?;
            tracing::info!(addr = %running.addr, "control plane ready");
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
            running.stop().await;
            Ok(())
        })
}
