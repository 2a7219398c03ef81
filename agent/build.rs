//! Builds the kernel programs (`agent-ebpf`) for the BPF target and leaves the object in
//! `OUT_DIR`, where `src/ebpf.rs` embeds it. There is no fallback: without the eBPF
//! toolchain the agent does not build, and the error says how to install it.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const SETUP: &str = "run `cargo xtask setup` to install it";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .context("agent crate has no parent directory")?
        .join("agent-ebpf");
    check_toolchain()?;
    let root_dir = ebpf_dir
        .to_str()
        .context("agent-ebpf path is not valid UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the eBPF programs (agent-ebpf) failed")?;
    Ok(())
}

/// Fails with a message naming the set-up command when a piece of the eBPF toolchain is
/// missing, instead of the long and puzzling error cargo would give.
fn check_toolchain() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => PathBuf::from(String::from_utf8(out.stdout)?.trim()),
        Ok(out) => bail!(
            "the nightly Rust toolchain is missing ({}); {SETUP}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!("rustup is not available ({e}); {SETUP}"),
    };
    let core_src = sysroot.join("lib/rustlib/src/rust/library/core");
    if !core_src.is_dir() {
        bail!(
            "rust-src for the nightly toolchain is missing ({} does not exist); {SETUP}",
            core_src.display()
        );
    }
    if find_on_path("bpf-linker").is_none() {
        bail!("bpf-linker is not on PATH; {SETUP}");
    }
    Ok(())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
