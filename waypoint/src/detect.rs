//! What a tunnelled stream carries, from its first bytes: the HTTP/2 connection preface
//! (prior knowledge), an HTTP/1.x request line, or anything else. The bytes read to
//! decide are handed on in front of the rest ([`Rewind`]).

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest method Weft takes as the start of an HTTP/1.x request line.
const LONGEST_METHOD: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// Not HTTP (or nothing came in time).
    Opaque,
}

/// What the bytes so far say, or `None` when more are needed.
fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.len() >= PREFACE.len() {
        if buf.starts_with(PREFACE) {
            return Some(Protocol::Http2);
        }
    } else if PREFACE.starts_with(buf) {
        return None;
    }
    let method = buf
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-')
        .count();
    match buf.get(method) {
        Some(b' ') if method > 0 => Some(Protocol::Http1),
        None if method < LONGEST_METHOD => None,
        _ => Some(Protocol::Opaque),
    }
}

/// Reads from `io` until its first bytes tell what it carries; after `timeout` (if any)
/// without an answer, or at its end, it is opaque. Returns the bytes read.
pub async fn detect<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Option<Duration>,
) -> std::io::Result<(Protocol, Bytes)> {
    let mut buf = BytesMut::with_capacity(64);
    let read = async {
        loop {
            if let Some(p) = classify(&buf) {
                return Ok::<_, std::io::Error>(p);
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(Protocol::Opaque);
            }
        }
    };
    let protocol = match timeout {
        Some(t) => match tokio::time::timeout(t, read).await {
            Ok(r) => r?,
            Err(_) => Protocol::Opaque,
        },
        None => read.await?,
    };
    Ok((protocol, buf.freeze()))
}

/// A stream with bytes already read put back in front.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(classify(PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(
            classify(b"PRI * HTTP/1.1\r\n\r\n......"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello"), Some(Protocol::Opaque));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQ"), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detected_bytes_come_back_in_front() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"POST /x HTTP/1.1\r\n").await.unwrap();
        drop(a);
        let (p, read) = detect(&mut b, None).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        let mut all = String::new();
        Rewind::new(read, b).read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "POST /x HTTP/1.1\r\n");
        // A server-first protocol: nothing comes, the stream is opaque after the wait.
        let (_a, mut b) = tokio::io::duplex(64);
        let (p, read) = detect(&mut b, Some(Duration::from_millis(20)))
            .await
            .unwrap();
        assert_eq!((p, read.len()), (Protocol::Opaque, 0));
    }
}
