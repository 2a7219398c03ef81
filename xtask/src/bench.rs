//! `cargo xtask bench`: builds the release binaries and runs `weftctl lab bench` with
//! them, writing the results to `target/bench/`.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{cargo, is_root, setup, workspace_root};

pub fn run(quick: bool) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the benchmark runs the lab (network namespaces, cgroups, eBPF programs) and \
             must run as root"
        );
    }
    setup::run()?;
    cargo(&["build", "--release", "--workspace", "--bins"])?;
    // The release weftctl starts the release agent, control plane and sample app that
    // sit beside it.
    let weftctl = target_dir().join("release/weftctl");
    let out = workspace_root().join("target/bench");
    let mut cmd = Command::new(&weftctl);
    cmd.args(["lab", "bench", "--out"]).arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", weftctl.display()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    eprintln!(
        "==> results: {}/results.md, results.json, chart.svg",
        out.display()
    );
    Ok(())
}

/// Where cargo puts the binaries: `CARGO_TARGET_DIR` (relative to the workspace, where
/// [`cargo`] runs) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}
