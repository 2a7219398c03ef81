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
    let mut totals = cargo_test(&unit)?;

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
    let p = cargo_test(&privileged)?;
    if p.passed == 0 || p.ignored > 0 {
        bail!(
            "the privileged suite must run every test: {} passed, {} ignored",
            p.passed,
            p.ignored
        );
    }
    totals.add(&p);

    eprintln!(
        "==> all checks and tests passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    println!("{} passed, {} failed", totals.passed, totals.failed);
    Ok(())
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Adds the counts of a libtest summary line
    /// (`test result: ok. 6 passed; 0 failed; 0 ignored; …`).
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test …`, passing its output through, and counts the results.
fn cargo_test(args: &[&str]) -> anyhow::Result<Totals> {
    use std::io::BufRead as _;
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped());
    eprintln!("==> {}", crate::display(&cmd));
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut totals = Totals::default();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() || totals.failed > 0 {
        println!("{} passed, {} failed", totals.passed, totals.failed.max(1));
        bail!("{} failed ({status})", crate::display(&cmd));
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_summaries() {
        let mut t = Totals::default();
        t.add_line(
            "test result: ok. 6 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 7.40s",
        );
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 6 tests");
        assert_eq!(
            t,
            Totals {
                passed: 9,
                failed: 2,
                ignored: 1
            }
        );
    }
}
