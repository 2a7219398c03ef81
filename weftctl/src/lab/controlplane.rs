//! The lab's control plane: how it is started, and stopping and starting it again
//! while the mesh runs (`weftctl lab stop-controlplane`, `start-controlplane`), to see
//! what the data path does without it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    State, agents::running, build::Setting, in_pod, netns_path, run_dir, topology::Topology,
};

pub(super) fn log() -> PathBuf {
    run_dir().join("logs/controlplane.log")
}

/// The command that runs the control plane in its namespace on the underlay.
pub(super) fn command(
    topology: &Topology,
    cgroup_root: &Path,
    binary: &Path,
    env: &[Setting],
) -> anyhow::Result<Command> {
    let dir = run_dir().join("controlplane");
    let addr = super::build::controlplane_address(topology)?;
    let mut cmd = in_pod(
        &cgroup_root.join("system"),
        &netns_path(&super::build::controlplane_netns()),
        binary,
        &[],
    );
    cmd.env("WEFT_CP_STATE_DIR", dir.join("state"))
        .env("WEFT_CP_CONFIG_DIR", dir.join("config"))
        .env("WEFT_CP_NODE_TOKENS", dir.join("node-tokens.yaml"))
        .env("WEFT_CP_LISTEN", format!("{addr}:15012"))
        .env("WEFT_CP_SERVING_IPS", addr.to_string())
        // The service graph reads the lab's Prometheus (there with --observability).
        .env(
            "WEFT_CP_PROMETHEUS",
            format!(
                "http://{}:{}",
                super::observability::address(topology)?,
                super::observability::PORT
            ),
        )
        .envs(env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// Stops the control plane (SIGTERM) and waits until it is gone.
pub fn stop() -> anyhow::Result<u32> {
    let state = State::load()?.context("no lab is up; run `weftctl lab up`")?;
    let pid = state.controlplane_pid;
    if !running(pid) {
        bail!("the control plane (pid {pid}) is not running");
    }
    // SAFETY: a plain kill(2) of the lab's own control plane process.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    super::wait_for("the control plane to stop", Duration::from_secs(20), || {
        !running(pid)
    })?;
    Ok(pid)
}

/// Starts the control plane again, with the state and settings it had; returns once
/// it serves.
pub fn start() -> anyhow::Result<u32> {
    let mut state = State::load()?.context("no lab is up; run `weftctl lab up`")?;
    if running(state.controlplane_pid) {
        bail!(
            "the control plane runs already (pid {})",
            state.controlplane_pid
        );
    }
    let cmd = command(
        &state.topology,
        &state.cgroup_root,
        &super::sibling("weft-controlplane")?,
        &state.controlplane_env,
    )?;
    let log = log();
    let ready = |text: &str| text.matches("control plane ready").count();
    let before = ready(&std::fs::read_to_string(&log).unwrap_or_default());
    let pid = super::agents::launch_appending(cmd, &log)?;
    super::wait_for(
        &format!("the control plane (log: {})", log.display()),
        Duration::from_secs(20),
        || running(pid) && ready(&std::fs::read_to_string(&log).unwrap_or_default()) > before,
    )?;
    state.controlplane_pid = pid;
    state.save()?;
    Ok(pid)
}
