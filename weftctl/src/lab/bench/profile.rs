//! Profiles of the agents while a scenario runs (`lab bench --profile`, `cargo xtask
//! profile`): `perf record` with DWARF call graphs on every agent of the lab, then
//! `perf report`'s top symbols as text and, where inferno is installed, a flame graph.
//!
//! For each scenario, topology and mode, in `<out>/profile/`:
//!
//! ```text
//! <name>.perf.data   what perf recorded (open it with `perf report -i`)
//! <name>-top.txt     the symbols with the most samples, self time, agents together
//! <name>.svg         the flame graph (inferno-collapse-perf, inferno-flamegraph)
//! ```

use std::{
    fs::File,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::procs::{Running, run_within};
use crate::lab::AgentState;

const PERF: &str = "/usr/bin/perf";
/// Samples per second and process: enough for a few seconds of a scenario, small
/// enough for DWARF stacks to stay tens of megabytes.
const FREQUENCY: &str = "299";
/// Bytes of stack copied per sample for DWARF unwinding.
const STACK: &str = "dwarf,16384";

/// Fails unless `perf` can run here.
pub(super) fn check() -> anyhow::Result<()> {
    if !Path::new(PERF).is_file() {
        bail!("perf is missing (Debian's linux-perf; `cargo xtask setup` installs it)");
    }
    Ok(())
}

/// `perf record` attached to the agents until [`Recording::finish`].
pub(super) struct Recording {
    perf: Running,
    data: PathBuf,
    dir: PathBuf,
    name: String,
}

impl Recording {
    pub(super) fn start(dir: &Path, name: &str, agents: &[AgentState]) -> anyhow::Result<Self> {
        let pids: Vec<String> = agents.iter().map(|a| a.pid.to_string()).collect();
        let data = dir.join(format!("{name}.perf.data"));
        // perf would keep an earlier recording beside as `.old`.
        let _ = std::fs::remove_file(&data);
        let mut cmd = Command::new(PERF);
        cmd.args(["record", "-F", FREQUENCY, "--call-graph", STACK, "-p"])
            .arg(pids.join(","))
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let perf = Running::spawn(&mut cmd, "perf record")?;
        // perf writes its header once it is attached.
        crate::lab::wait_for("perf record to attach", Duration::from_secs(10), || {
            std::fs::metadata(&data).is_ok_and(|m| m.len() > 0)
        })?;
        Ok(Recording {
            perf,
            data,
            dir: dir.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Stops the recording and writes the report (and the flame graph); returns the
    /// report's path.
    pub(super) fn finish(mut self) -> anyhow::Result<PathBuf> {
        let pid = libc::pid_t::try_from(self.perf.child.id()).context("perf's pid")?;
        // SAFETY: signals a child of ours that has not been waited for.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let errors = self.perf.collect_stderr();
        let status = self.perf.wait_within(Duration::from_secs(120))?;
        // perf ends by raising the SIGINT it handled.
        if !status.success() && status.signal() != Some(libc::SIGINT) {
            bail!(
                "perf record failed ({status}): {}",
                errors.join().unwrap_or_default().trim()
            );
        }
        let top = run_within(
            Command::new(PERF)
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "--percent-limit",
                    "0.5",
                ])
                .args(["--sort", "comm,dso,symbol", "-g", "none", "-i"])
                .arg(&self.data),
            Duration::from_secs(300),
            "perf report",
        )?;
        let report = self.dir.join(format!("{}-top.txt", self.name));
        std::fs::write(&report, tidy(&top))
            .with_context(|| format!("writing {}", report.display()))?;
        self.flame_graph()?;
        Ok(report)
    }

    /// `perf script` folded by inferno into a flame graph, when inferno is installed.
    fn flame_graph(&self) -> anyhow::Result<()> {
        let (Some(collapse), Some(flamegraph)) =
            (tool("inferno-collapse-perf"), tool("inferno-flamegraph"))
        else {
            return Ok(());
        };
        let script = self.dir.join(format!("{}.perf.script", self.name));
        let folded = self.dir.join(format!("{}.folded", self.name));
        let svg = self.dir.join(format!("{}.svg", self.name));
        let into = |path: &Path| {
            File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let data = self.data.as_os_str();
        let steps: [(&Path, Vec<&std::ffi::OsStr>, &Path, &str); 3] = [
            (
                Path::new(PERF),
                vec!["script".as_ref(), "-i".as_ref(), data],
                &script,
                "perf script",
            ),
            (
                &collapse,
                vec![script.as_os_str()],
                &folded,
                "inferno-collapse-perf",
            ),
            (
                &flamegraph,
                vec![folded.as_os_str()],
                &svg,
                "inferno-flamegraph",
            ),
        ];
        for (program, args, out, what) in steps {
            let mut cmd = Command::new(program);
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(into(out)?)
                .stderr(Stdio::null());
            let mut running = Running::spawn(&mut cmd, what)?;
            let status = running.wait_within(Duration::from_secs(300))?;
            if !status.success() {
                bail!("{what} failed ({status})");
            }
        }
        // The script is the flame graph's input only, and large.
        let _ = std::fs::remove_file(&script);
        Ok(())
    }
}

/// `perf report`'s lines without the padding and the empty columns it ends them with.
fn tidy(report: &str) -> String {
    report
        .lines()
        .map(|l| {
            let mut l = l.trim_end();
            while let Some(rest) = l.strip_suffix('-') {
                l = rest.trim_end();
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A program on `PATH` or in cargo's bin folder.
fn tool(name: &str) -> Option<PathBuf> {
    let cargo_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_lines_lose_their_padding_and_empty_columns() {
        let line = "     9.00%  tokio-rt-worker  [kernel.kallsyms]  [k] finish_task_switch      -      -     ";
        assert_eq!(
            super::tidy(&format!("# header\n{line}\n")),
            "# header\n     9.00%  tokio-rt-worker  [kernel.kallsyms]  [k] finish_task_switch\n"
        );
    }
}
