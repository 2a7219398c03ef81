//! `cargo xtask test`: the one command that checks everything — the README's test
//! command and what `.ci/run` runs.

use std::{process::Command, time::Instant};

use anyhow::bail;

use crate::{cargo, is_root, setup, step, workspace_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let start = Instant::now();
    if !is_root() {
        bail!(
            "the test suite includes privileged tests (eBPF, network namespaces, cgroups) \
             and must run as root; none of them is skipped"
        );
    }
    setup::run()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    // The kernel programs, with the toolchain that builds them.
    step(
        Command::new("rustup")
            .args(["run", "nightly", "cargo"])
            .args([
                "clippy",
                "--package",
                "agent-ebpf",
                "--bins",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(workspace_root()),
    )?;
    // The privileged tests run the real binaries.
    cargo(&["build", "--workspace", "--bins", "--locked"])?;
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();

    // Unit and in-process tests, in parallel.
    let mut unit = vec![
        "test",
        "--workspace",
        "--locked",
        "--exclude",
        "tests",
        "--",
    ];
    unit.extend(&extra);
    cargo(&unit)?;

    // Privileged tests share kernel state (bpffs, cgroups): one at a time.
    let mut privileged = vec![
        "test",
        "--package",
        "tests",
        "--locked",
        "--",
        "--test-threads=1",
    ];
    privileged.extend(&extra);
    cargo(&privileged)?;

    eprintln!(
        "==> all checks and tests passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
