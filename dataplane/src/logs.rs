//! Logging set-up shared by the binaries: `WEFT_LOG` filters (`info` by default),
//! `WEFT_LOG_FORMAT` chooses text or JSON lines, and lines are written by a thread of
//! their own so that an access line costs the data path a queue push, not a write.

use api::config::{Error, Source};

pub const LOG_FORMAT: &str = "WEFT_LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn from_source(source: &impl Source) -> Result<Self, Error> {
        match source.get(LOG_FORMAT).as_deref() {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(v) => Err(Error::Invalid {
                key: LOG_FORMAT,
                value: v.to_owned(),
                reason: "expected \"text\" or \"json\"".to_owned(),
            }),
        }
    }
}

/// Logs to standard error through a writer thread; when its queue is full the caller
/// waits (no line is dropped). Keep the guard until the end of `main`: it flushes.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("weft-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}
