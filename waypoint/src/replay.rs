//! A request body that can be sent again, for retries: the first attempt streams the
//! client's body on as it comes and keeps a copy of what passed, up to a limit; a later
//! attempt sends the copy, then goes on with the rest of the client's body where the
//! first left it. A body larger than the limit is not kept, and its request is not
//! retried. Only the newest attempt reads the client's body on.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Frame, SizeHint};

use crate::body::{Body, BoxError};

/// What is kept of a body at most.
pub const LIMIT: usize = 64 * 1024;

enum Kept {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Kept {
    fn frame(&self) -> Frame<Bytes> {
        match self {
            Kept::Data(d) => Frame::data(d.clone()),
            Kept::Trailers(t) => Frame::trailers(t.clone()),
        }
    }
}

struct Shared {
    source: Body,
    kept: Vec<Kept>,
    kept_bytes: usize,
    /// More passed than the limit: no attempt after the current one.
    overflowed: bool,
    ended: bool,
    failed: bool,
    /// The attempt allowed to read the source on.
    current: u32,
}

/// The client's body, from which each attempt takes its copy.
pub struct Replayable {
    shared: Arc<Mutex<Shared>>,
    hint: SizeHint,
    attempts: u32,
}

/// One attempt's copy of the body.
pub struct Replay {
    shared: Arc<Mutex<Shared>>,
    attempt: u32,
    position: usize,
    hint: SizeHint,
}

impl Replayable {
    pub fn new(source: Body) -> Self {
        let hint = hyper::body::Body::size_hint(&source);
        let ended = hyper::body::Body::is_end_stream(&source);
        Replayable {
            shared: Arc::new(Mutex::new(Shared {
                source,
                kept: Vec::new(),
                kept_bytes: 0,
                overflowed: false,
                ended,
                failed: false,
                current: 0,
            })),
            hint,
            attempts: 0,
        }
    }

    /// The next attempt's body; after the first, `None` when the body cannot be sent
    /// again (it was larger than the limit, or failed).
    pub fn attempt(&mut self) -> Option<Replay> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if self.attempts > 0 && (s.overflowed || s.failed) {
            return None;
        }
        self.attempts += 1;
        s.current = self.attempts;
        Some(Replay {
            shared: Arc::clone(&self.shared),
            attempt: self.attempts,
            position: 0,
            hint: self.hint,
        })
    }

    /// Whether another attempt could have the body.
    pub fn can_replay(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        !s.overflowed && !s.failed
    }
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut s = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = s.kept.get(this.position) {
            this.position += 1;
            return Poll::Ready(Some(Ok(k.frame())));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if s.current != this.attempt {
            return Poll::Ready(Some(Err("a newer attempt took the request body".into())));
        }
        let polled = Pin::new(&mut s.source).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if !s.overflowed {
                    let kept = match frame.data_ref() {
                        Some(d) => Some(Kept::Data(d.clone())),
                        None => frame.trailers_ref().map(|t| Kept::Trailers(t.clone())),
                    };
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    if s.kept_bytes + len > LIMIT {
                        // Nothing more is kept, and nobody will replay what was.
                        s.overflowed = true;
                        s.kept.clear();
                        this.position = 0;
                    } else if let Some(k) = kept {
                        s.kept_bytes += len;
                        s.kept.push(k);
                        this.position += 1;
                    }
                }
                if hyper::body::Body::is_end_stream(&s.source) {
                    s.ended = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                s.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.ended && self.position >= s.kept.len()
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::body::{self, testing::Frames};

    #[tokio::test]
    async fn a_kept_body_is_sent_again_whole() {
        let mut body = Replayable::new(body::full("payload"));
        let first = body.attempt().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(&first[..], b"payload");
        let again = body.attempt().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(&again[..], b"payload");

        // A retry while the first attempt has read only part: the kept part, then the
        // rest; the older attempt may not read on.
        let mut body = Replayable::new(body::boxed(Frames::of(&["ab", "cd"])));
        let mut first = body.attempt().unwrap();
        let f = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&f[..], b"ab");
        let second = body.attempt().unwrap();
        assert!(first.frame().await.unwrap().is_err());
        let all = second.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_not_sent_again() {
        let mut body = Replayable::new(body::full(vec![7_u8; LIMIT + 1]));
        let sent = body.attempt().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), LIMIT + 1, "the first attempt still gets it all");
        assert!(!body.can_replay());
        assert!(body.attempt().is_none());

        // Passing the limit half way: the attempt streams on to the end.
        let big: &'static str = Box::leak("x".repeat(LIMIT / 2 + 1).into_boxed_str());
        let mut body = Replayable::new(body::boxed(Frames::of(&[big, big, "end"])));
        let sent = body.attempt().unwrap().collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 2 * (LIMIT / 2 + 1) + 3);
        assert!(body.attempt().is_none());
    }
}
