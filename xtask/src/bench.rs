//! `cargo xtask bench`: builds the release binaries and runs `weftctl lab bench` with
//! them, writing the results to `target/bench/`.

use std::ffi::OsStr;

use anyhow::bail;

use crate::{cargo, is_root, setup, weftctl, workspace_root};

pub fn run(quick: bool) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the benchmark runs the lab (network namespaces, cgroups, eBPF programs) and \
             must run as root"
        );
    }
    setup::run()?;
    cargo(&["build", "--release", "--workspace", "--bins"])?;
    let out = workspace_root().join("target/bench");
    let mut args: Vec<&OsStr> = vec!["lab".as_ref(), "bench".as_ref(), "--out".as_ref()];
    args.push(out.as_os_str());
    if quick {
        args.push("--quick".as_ref());
    }
    weftctl("release", args)?;
    eprintln!(
        "==> results: {}/results.md, results.json, chart.svg",
        out.display()
    );
    Ok(())
}
