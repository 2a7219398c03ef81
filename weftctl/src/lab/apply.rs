//! `weftctl lab apply -f FILE…`: puts configuration documents (routes, policies …) into
//! the lab's control plane. Each file is validated first together with what the control
//! plane has (so a route to a Service of the lab is known), and refused whole with
//! every problem; accepted, it is copied into the control plane's folder and put in
//! force within a second.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

use super::{run_dir, wait_for};

fn folder() -> PathBuf {
    run_dir().join("controlplane/config")
}

/// The configuration version the control plane has in force (from its status file).
pub(super) fn version() -> Option<u64> {
    let text = std::fs::read_to_string(run_dir().join("controlplane/state/status.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["version"].as_u64()
}

pub fn apply(files: &[PathBuf]) -> anyhow::Result<()> {
    super::running_lab()?;
    let mut names = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .with_context(|| format!("{} names no file", f.display()))?
            .to_owned();
        if !name.to_string_lossy().ends_with(".yaml") && !name.to_string_lossy().ends_with(".yml") {
            bail!("{}: the control plane reads .yaml files", f.display());
        }
        names.push(name);
    }
    // What the control plane has, less the files being replaced, and the new files.
    let mut set: Vec<PathBuf> = std::fs::read_dir(folder())
        .context("reading the control plane's folder")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && !names.iter().any(|n| p.file_name() == Some(n.as_os_str()))
        })
        .collect();
    set.extend(files.iter().cloned());
    let (_, problems) = controlplane::validate::files(&set);
    let ours: Vec<_> = problems
        .iter()
        .filter(|p| {
            files
                .iter()
                .any(|f| p.origin.source == f.display().to_string())
        })
        .collect();
    if !ours.is_empty() {
        for p in &ours {
            eprintln!("{p}");
        }
        bail!("{} problems: nothing was applied", ours.len());
    }
    let before = version().unwrap_or(0);
    for (f, name) in files.iter().zip(&names) {
        let tmp = folder().join(format!(".{}.tmp", name.to_string_lossy()));
        std::fs::copy(f, &tmp).with_context(|| format!("copying {}", f.display()))?;
        std::fs::rename(&tmp, folder().join(name))?;
    }
    wait_for(
        "the control plane to take it",
        Duration::from_secs(10),
        || version().is_some_and(|v| v > before),
    )?;
    println!(
        "applied {} (configuration version {})",
        names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", "),
        version().unwrap_or(0)
    );
    Ok(())
}
