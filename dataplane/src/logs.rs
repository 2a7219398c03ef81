//! Logging set-up shared by the binaries: `WEFT_LOG` filters (`info` by default),
//! `WEFT_LOG_FORMAT` chooses text or JSON lines, and lines are written in batches by a
//! thread of their own: an access line costs the data path an append to a buffer,
//! never a write or a thread wake-up of its own. The thread writes what is there every
//! few milliseconds (at once past 64 KiB); past 4 MiB unwritten (standard error
//! blocked), loggers wait for it: lines are never dropped.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

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

/// How often the writer thread writes what has gathered.
const INTERVAL: Duration = Duration::from_millis(5);
/// Gathered bytes that make it write at once.
const EAGER: usize = 64 * 1024;
/// Gathered bytes past which loggers wait.
const MOST: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer thread waits on it for bytes; loggers wait on it for room.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loggers' side: appends to the shared buffer.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.lock();
        while state.buf.len() >= MOST && !state.closed {
            state = self
                .0
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.buf.extend_from_slice(bytes);
        if state.buf.len() >= EAGER {
            self.0.changed.notify_all();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

/// Writes what is left and stops the writer thread when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the writer thread for `out`.
pub fn batched(mut out: impl std::io::Write + Send + 'static) -> (Lines, Guard) {
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("weft-log".to_owned())
            .spawn(move || {
                let mut spare = Vec::new();
                loop {
                    let (batch, closed) = {
                        let mut state = shared.lock();
                        if state.buf.len() < EAGER && !state.closed {
                            state = shared
                                .changed
                                .wait_timeout(state, INTERVAL)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        }
                        std::mem::swap(&mut state.buf, &mut spare);
                        (std::mem::take(&mut spare), state.closed)
                    };
                    shared.changed.notify_all();
                    if !batch.is_empty() {
                        let _ = out.write_all(&batch);
                        let _ = out.flush();
                    }
                    spare = batch;
                    spare.clear();
                    if closed {
                        let rest = std::mem::take(&mut shared.lock().buf);
                        let _ = out.write_all(&rest);
                        let _ = out.flush();
                        return;
                    }
                }
            })
            .expect("a thread can be started at start-up")
    };
    (
        Lines(Arc::clone(&shared)),
        Guard {
            shared,
            thread: Some(thread),
        },
    )
}

/// Logs to standard error through the writer thread. Keep the guard until the end of
/// `main`: it writes what is left.
pub fn init(format: LogFormat) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = batched(std::io::stderr());
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_soon_and_all_at_the_end() {
        let sink = Sink::default();
        let (mut lines, guard) = batched(sink.clone());
        lines.write_all(b"one\n").unwrap();
        let start = std::time::Instant::now();
        while sink.0.lock().unwrap().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(2), "never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Many writers, many lines: every one, each whole.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut l = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        l.write_all(format!("{t}:{i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 80_001);
        for t in 0..4 {
            let mine: Vec<u32> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t}:")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..20_000).collect::<Vec<_>>());
        }
    }
}
