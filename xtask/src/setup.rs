//! `cargo xtask setup`: installs what is missing, and nothing else.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{is_root, step, workspace_root};

/// Debian packages the project uses: `protoc` for the gRPC protocol, `ip` and `nsenter`
/// for namespaces, `bpftool` to inspect attachments in tests, the CNI reference plugins
/// for the lab, iperf3 for benchmarks.
const PACKAGES: [(&str, &str); 6] = [
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("iproute2", "/usr/sbin/ip"),
    ("util-linux", "/usr/bin/nsenter"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iperf3", "/usr/bin/iperf3"),
];

const BPF_LINKER_VERSION: &str = "0.9.15";

pub fn run() -> anyhow::Result<()> {
    packages()?;
    stable_components()?;
    nightly_rust_src()?;
    bpf_linker()?;
    eprintln!("==> set-up complete");
    Ok(())
}

fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, file)| !std::path::Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; install them as root: apt-get install {}",
            missing.join(" ")
        );
    }
    step(Command::new("apt-get").args(["update", "-q"]))?;
    step(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn stable_components() -> anyhow::Result<()> {
    for (component, probe) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let ok = Command::new("cargo")
            .args([probe, "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            step(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

fn nightly_sysroot() -> anyhow::Result<Option<PathBuf>> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(String::from_utf8(out.stdout)?.trim())))
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let sysroot = match nightly_sysroot()? {
        Some(s) => s,
        None => {
            step(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))?;
            nightly_sysroot()?.context("the nightly toolchain did not install")?
        }
    };
    let core = sysroot.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    let added = step(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]));
    if added.is_ok() && core.is_dir() {
        return Ok(());
    }
    // No network for rustup: the shared folder carries rust-src for this machine's
    // nightly (see its README).
    let archive = workspace_root().join("../shared/toolchain/rust-src-nightly.tar.xz");
    if !archive.is_file() {
        bail!(
            "rust-src for nightly is missing, rustup could not add it, and {} does not exist",
            archive.display()
        );
    }
    eprintln!(
        "==> rustup could not fetch rust-src; using {}",
        archive.display()
    );
    step(
        Command::new("tar")
            .arg("-xJf")
            .arg(&archive)
            .arg("-C")
            .arg(sysroot.join("lib/rustlib")),
    )?;
    if !core.is_dir() {
        bail!(
            "{} did not provide {} (does it match `rustc +nightly -V`?)",
            archive.display(),
            core.display()
        );
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let installed = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if installed
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    step(Command::new("cargo").args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
}
