//! Processes the benchmark runs, bounded in time, and what `/proc` says about them.

use std::{
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::lab::AgentState;

/// A child process that is killed if it is still running when dropped.
pub(super) struct Running {
    pub(super) child: Child,
    pub(super) what: String,
}

impl Running {
    pub(super) fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Running {
            child,
            what: what.to_owned(),
        })
    }

    /// Waits for the process to exit; kills it after `limit`.
    pub(super) fn wait_within(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("{} did not finish within {limit:?}; killed it", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Reads the process's standard error to its end, in a thread.
    pub(super) fn collect_stderr(&mut self) -> std::thread::JoinHandle<String> {
        let stderr = self.child.stderr.take();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut text);
            }
            text
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to its end (killing it after `limit`) and returns its standard
/// output; fails with its error output when it fails.
pub(super) fn run_within(cmd: &mut Command, limit: Duration, what: &str) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd, what)?;
    let stderr = running.collect_stderr();
    let stdout = running.child.stdout.take();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut o) = stdout {
            let _ = o.read_to_string(&mut text);
        }
        text
    });
    let status = running.wait_within(limit)?;
    let out = stdout.join().unwrap_or_default();
    if !status.success() {
        let err = stderr.join().unwrap_or_default();
        // iperf3 -J reports its errors on standard output.
        let tail: String = out
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let said: Vec<&str> = [err.trim(), tail.trim()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect();
        if said.is_empty() {
            bail!("{what} failed ({status}) without a word");
        }
        bail!("{what} failed ({status}): {}", said.join("; "));
    }
    Ok(out)
}

/// utime + stime, in clock ticks, from `/proc/<pid>/stat`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from `/proc/<pid>/status`.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn agent_rss_kib(agent: &AgentState) -> anyhow::Result<u64> {
    let path = format!("/proc/{}/status", agent.pid);
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (is the agent of {} up?)", agent.node))?;
    vm_rss_kib(&status).with_context(|| format!("no VmRSS in {path}"))
}

/// Does a `/proc/net/tcp{,6}` table have a listener on `port`?
pub fn table_listens_on(table: &str, port: u16) -> bool {
    let port = format!(":{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or_default();
        // st is the fourth field: 0A is LISTEN.
        let state = fields.nth(1).unwrap_or_default();
        local.ends_with(&port) && state == "0A"
    })
}

/// Does the network namespace of process `pid` have a listener on `port`?
pub(super) fn listening(pid: u32, port: u16) -> bool {
    ["tcp", "tcp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|table| table_listens_on(&table, port))
    })
}

/// Is process `pid` in the network namespace at `netns` already?
pub(super) fn in_netns(pid: u32, netns: &Path) -> bool {
    match (
        std::fs::metadata(format!("/proc/{pid}/ns/net")),
        std::fs::metadata(netns),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

pub(super) fn clock_ticks_per_second() -> anyhow::Result<f64> {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(ticks > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(ticks as f64)
}

/// Raises this process's open-files limit (soft and hard) to `wanted`, or as far as
/// the kernel allows; the lab's processes inherit it. Returns the soft limit reached.
pub(super) fn raise_open_files_limit(wanted: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the open files limit");
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(wanted);
    let target = wanted.min(ceiling).max(limit.rlim_cur);
    if limit.rlim_cur >= target {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: target.max(limit.rlim_max),
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(target);
    }
    // Without the privilege to raise the hard limit, go as far as it.
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("raising the open files limit");
    }
    Ok(limit.rlim_cur)
}
