//! `cargo xtask profile <scenario>`: one L4 scenario of the benchmark, quick, in the
//! `mesh` mode, with the agents recorded by `perf` (`weftctl lab bench --profile`);
//! inferno (installed here with cargo) turns each recording into a flame graph.

use std::{ffi::OsStr, process::Command};

use anyhow::{Context as _, bail};

use crate::{cargo, is_root, setup, weftctl, workspace_root};

const INFERNO_VERSION: &str = "0.12.8";
const SCENARIOS: [&str; 4] = ["throughput", "rr", "connrate", "concurrency"];

pub fn run(scenario: &str) -> anyhow::Result<()> {
    if !SCENARIOS.contains(&scenario) {
        bail!("no scenario {scenario:?}: one of {}", SCENARIOS.join(", "));
    }
    if !is_root() {
        bail!("profiling runs the lab and perf, and must run as root");
    }
    setup::run()?;
    inferno()?;
    cargo(&["build", "--release", "--workspace", "--bins"])?;
    let out = workspace_root().join("target/profile").join(scenario);
    let mut args: Vec<&OsStr> = [
        "lab",
        "bench",
        "--quick",
        "--modes",
        "mesh",
        "--suites",
        "l4",
        "--scenarios",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    args.extend([OsStr::new(scenario), "--profile".as_ref(), "--out".as_ref()]);
    args.push(out.as_os_str());
    weftctl("release", args)?;
    eprintln!(
        "==> profiles: {}/profile/ (*-top.txt, *.svg, *.perf.data)",
        out.display()
    );
    Ok(())
}

/// Installs inferno's flame-graph tools unless they are there.
fn inferno() -> anyhow::Result<()> {
    let installed = Command::new("inferno-flamegraph")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    let status = Command::new("cargo")
        .args([
            "install",
            "inferno",
            "--locked",
            "--version",
            INFERNO_VERSION,
        ])
        .status()
        .context("running cargo install inferno")?;
    if !status.success() {
        bail!("cargo install inferno@{INFERNO_VERSION} failed");
    }
    Ok(())
}
