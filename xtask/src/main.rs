//! `cargo xtask …`: set-up, test and run tasks for Weft.

mod bench;
mod profile;
mod setup;
mod test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Weft's build tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing Weft needs (Debian packages, the nightly
    /// rust-src, bpf-linker). Does nothing when everything is there.
    Setup,
    /// Set up, then check formatting, run clippy, and run every test, including the
    /// privileged ones (needs root).
    Test {
        /// Arguments passed on to the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build the release binaries, and run `weftctl lab bench` (as root): the
    /// mesh against direct traffic in the lab; results in target/bench/.
    Bench {
        /// One repeat of shorter runs (under two minutes) instead of three full ones.
        #[arg(long)]
        quick: bool,
    },
    /// Set up, build the release binaries, and run one L4 scenario of the benchmark
    /// in the mesh with the agents under `perf` (as root): the top symbols and a flame
    /// graph per topology in target/profile/<scenario>/profile/.
    Profile {
        /// throughput, rr, connrate or concurrency.
        scenario: String,
    },
    /// Set up, build, and run `weftctl lab …` (as root): `cargo xtask lab up` runs the
    /// mesh on this machine.
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test { args } => test::run(&args),
        Task::Bench { quick } => bench::run(quick),
        Task::Profile { scenario } => profile::run(&scenario),
        Task::Lab { args } => {
            setup::run()?;
            cargo(&["build", "--workspace", "--bins"])?;
            weftctl("debug", std::iter::once("lab".to_owned()).chain(args))
        }
    }
}

/// Runs the `weftctl` cargo built for `profile` (`debug` or `release`; it starts the
/// agent, control plane and sample app that sit beside it) with `args`. When it fails,
/// this process ends with its exit code.
pub fn weftctl<S: AsRef<std::ffi::OsStr>>(
    profile: &str,
    args: impl IntoIterator<Item = S>,
) -> anyhow::Result<()> {
    let weftctl = target_dir().join(profile).join("weftctl");
    let status = Command::new(&weftctl)
        .args(args)
        .status()
        .with_context(|| format!("running {}", weftctl.display()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// Where cargo puts the binaries: `CARGO_TARGET_DIR` (relative to the workspace, where
/// [`cargo`] runs) or `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs `cargo <args>` in the workspace and fails if it fails.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    step(Command::new(cargo).args(args).current_dir(workspace_root()))
}

/// Runs a command, echoing it first, and fails if it fails.
pub fn step(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("==> {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", display(cmd));
    }
    Ok(())
}

pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
