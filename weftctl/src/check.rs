//! `weftctl check`: the pre-flight checks of the node it runs on (`agent::preflight`),
//! as a table a person reads or as JSON (`-o json`); it fails when a required check
//! does.

use agent::preflight::{self, Check, Paths};

/// The table: one line per check, what was found, and the fix of each failure.
pub fn table(checks: &[Check], colour: bool) -> String {
    let paint = |ok: bool, required: bool| {
        let (word, code) = match (ok, required) {
            (true, _) => ("ok", "32"),
            (false, true) => ("FAIL", "31"),
            (false, false) => ("warn", "33"),
        };
        if colour {
            format!("\u{1b}[{code}m{word:<4}\u{1b}[0m")
        } else {
            format!("{word:<4}")
        }
    };
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{}  {:<26} {}\n",
            paint(c.ok, c.required),
            c.name,
            c.found
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:<26} fix: {fix}\n", ""));
        }
    }
    out
}

/// Runs the checks and prints them; `Ok(false)` when a required one failed.
pub fn run(paths: &Paths, format: Option<crate::output::Format>) -> anyhow::Result<bool> {
    let checks = preflight::run(paths);
    let passed = checks.iter().all(|c| c.ok || !c.required);
    let report = serde_json::json!({"node": checks, "passed": passed});
    print!(
        "{}",
        crate::output::render(format, &report, |colour| {
            let verdict = if passed {
                "this node can run the Weft agent"
            } else {
                "this node cannot run the Weft agent yet: see the fixes above"
            };
            format!("{}{verdict}\n", table(&checks, colour))
        })
    );
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_fix_and_warnings_are_not_failures() {
        let checks = vec![
            Check {
                name: "kernel",
                ok: true,
                required: true,
                found: "6.1.0".into(),
                fix: None,
            },
            Check {
                name: "bpffs",
                ok: false,
                required: true,
                found: "no bpffs at /sys/fs/bpf".into(),
                fix: Some("mount -t bpf bpf /sys/fs/bpf".into()),
            },
            Check {
                name: "BTF",
                ok: false,
                required: false,
                found: "none".into(),
                fix: Some("optional".into()),
            },
        ];
        let t = table(&checks, false);
        assert!(t.contains("ok    kernel"), "{t}");
        assert!(t.contains("FAIL  bpffs"), "{t}");
        assert!(t.contains("fix: mount -t bpf bpf /sys/fs/bpf"), "{t}");
        assert!(t.contains("warn  BTF"), "{t}");
        assert!(table(&checks, true).contains("\u{1b}[31mFAIL"));
    }
}
