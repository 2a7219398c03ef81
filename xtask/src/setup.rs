//! `cargo xtask setup`: installs what is missing, and nothing else.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{is_root, step, workspace_root};

/// Debian packages the project uses: `protoc` for the gRPC protocol, `ip` and `nsenter`
/// for namespaces, `bpftool` to inspect attachments in tests, the CNI reference plugins
/// for the lab; for benchmarks iperf3, wrk and h2load (load), sockperf (a second opinion
/// on round-trip latency), nginx and HAProxy (the reverse proxies the waypoint is
/// measured against), perf (`cargo xtask profile`); Prometheus for the lab's
/// observability (`weftctl lab up --observability`).
const PACKAGES: [(&str, &str); 16] = [
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("iproute2", "/usr/sbin/ip"),
    ("util-linux", "/usr/bin/nsenter"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iperf3", "/usr/bin/iperf3"),
    ("sockperf", "/usr/bin/sockperf"),
    ("linux-perf", "/usr/bin/perf"),
    ("wrk", "/usr/bin/wrk"),
    ("nghttp2-client", "/usr/bin/h2load"),
    ("nginx-light", "/usr/sbin/nginx"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("prometheus", "/usr/bin/prometheus"),
    ("chromium", "/usr/bin/chromium"),
    ("dnsmasq", "/usr/sbin/dnsmasq"),
    ("curl", "/usr/bin/curl"),
];

/// While packages install, services they bring (nginx, HAProxy) must not start on the
/// host: the benchmark runs its own, inside the lab. Debian asks this program first.
const POLICY_RC: &str = "/usr/sbin/policy-rc.d";

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
    let ours = !std::path::Path::new(POLICY_RC).exists();
    if ours {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(
            POLICY_RC,
            "#!/bin/sh\n# cargo xtask setup: no service starts\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC}"))?;
        std::fs::set_permissions(POLICY_RC, std::fs::Permissions::from_mode(0o755))?;
    }
    let installed = step(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if ours {
        let _ = std::fs::remove_file(POLICY_RC);
    }
    installed
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
