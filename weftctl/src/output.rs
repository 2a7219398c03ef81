//! How commands print: for a person (tables and lines, coloured on a terminal) or for
//! scripts (`-o json`, `-o yaml`), the same data either way.

use std::io::IsTerminal as _;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

/// `value` as `format` asks, or `human(colour)` (colour when stdout is a terminal).
pub fn render<T: Serialize>(
    format: Option<Format>,
    value: &T,
    human: impl FnOnce(bool) -> String,
) -> String {
    match format {
        Some(Format::Json) => {
            let mut s = serde_json::to_string_pretty(value).expect("serializable");
            s.push('\n');
            s
        }
        Some(Format::Yaml) => serde_yaml_ng::to_string(value).expect("serializable"),
        None => human(std::io::stdout().is_terminal()),
    }
}

/// `text` in the colour `code` (`32` green, `31` red, `33` yellow) when `colour`.
pub fn paint(colour: bool, code: &str, text: &str) -> String {
    if colour {
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    } else {
        text.to_owned()
    }
}

/// How long until `unix` (seconds since the epoch), in words: `23h 59m`, `expired`.
pub fn until(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if unix <= now {
        return "expired".to_owned();
    }
    let left = unix - now;
    let (d, h, m) = (left / 86_400, left % 86_400 / 3600, left % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
