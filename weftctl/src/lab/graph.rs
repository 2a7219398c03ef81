//! `weftctl lab graph`: the control plane's service graph, from the host. The lab's
//! addresses are reachable only inside the lab, so either a relay on the host's
//! loopback carries a browser's connections to the control plane's 15014 (each one
//! opened from inside the control plane's namespace), or headless Chromium, run in that
//! namespace, loads the page and writes a screenshot (and, with `--dom`, prints the
//! page as its scripts left it).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{State, build, netns_path};

/// Where the control plane serves the graph, inside the lab.
fn target(state: &State) -> anyhow::Result<SocketAddr> {
    let cp = build::controlplane_address(&state.topology)?;
    Ok(SocketAddr::from((cp, 15014)))
}

/// The page's address inside the lab (`path` may carry a query).
pub fn url(state: &State, path: &str) -> anyhow::Result<String> {
    Ok(format!("http://{}{path}", target(state)?))
}

/// Relays connections from `listen` (the host's loopback) to the control plane's metrics
/// port, until interrupted.
pub fn relay(listen: SocketAddr) -> anyhow::Result<()> {
    let state = State::load()?.context("no lab is up (start one with `weftctl lab up`)")?;
    if !listen.ip().is_loopback() {
        bail!("--listen {listen}: only a loopback address (the lab stays off the host's network)");
    }
    let to = target(&state)?;
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!(
        "service graph: http://{}/graph (relayed to {to} in the lab; Ctrl-C stops)",
        listener.local_addr()?
    );
    let netns = netns_path(&build::controlplane_netns());
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let netns = netns.clone();
        std::thread::spawn(move || {
            if let Err(e) = carry(client, &netns, to) {
                eprintln!("relay: {e:#}");
            }
        });
    }
    Ok(())
}

/// One relayed connection: connect from inside the lab, then copy both ways.
fn carry(client: TcpStream, netns: &Path, to: SocketAddr) -> anyhow::Result<()> {
    let file = std::fs::File::open(netns).with_context(|| netns.display().to_string())?;
    // This thread serves one connection and ends: entering the namespace is for it alone.
    // SAFETY: setns with an open namespace file, on this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "entering the control plane's namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    let upstream = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .with_context(|| format!("connecting to {to}"))?;
    let (mut up_read, mut client_write) = (upstream.try_clone()?, client.try_clone()?);
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut client_read, mut up_write) = (client, upstream);
    let _ = std::io::copy(&mut client_read, &mut up_write);
    let _ = up_write.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
    Ok(())
}

/// Loads the page in headless Chromium inside the lab: writes a PNG to `screenshot`, and
/// returns the page's DOM after its scripts ran when `dom` is asked.
pub fn capture(query: &str, screenshot: &Path, dom: bool) -> anyhow::Result<Option<String>> {
    let state = State::load()?.context("no lab is up (start one with `weftctl lab up`)")?;
    let path = if query.is_empty() {
        "/graph".to_owned()
    } else {
        format!("/graph?{query}")
    };
    let url = url(&state, &path)?;
    let profile = tempdir()?;
    let run = |what: &[String]| -> anyhow::Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &build::controlplane_netns(), "chromium"])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                "--window-size=1500,900",
                // Time enough for the page's fetch of the picture.
                "--virtual-time-budget=4000",
            ])
            .arg(format!("--user-data-dir={}", profile.path.display()))
            .args(what)
            .arg(&url);
        let out = cmd
            .output()
            .context("running chromium (install it: cargo xtask setup)")?;
        if !out.status.success() {
            bail!(
                "chromium failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if let Some(parent) = screenshot.parent() {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    let screenshot = std::path::absolute(screenshot)?;
    run(&[format!("--screenshot={}", screenshot.display())])?;
    if !screenshot.exists() {
        bail!("chromium wrote no screenshot to {}", screenshot.display());
    }
    if dom {
        Ok(Some(run(&["--dump-dom".to_owned()])?))
    } else {
        Ok(None)
    }
}

/// A folder removed when dropped (Chromium's profile).
struct TempDir {
    path: PathBuf,
}

fn tempdir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("weft-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&path).with_context(|| path.display().to_string())?;
    Ok(TempDir { path })
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
