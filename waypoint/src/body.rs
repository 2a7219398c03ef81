//! Message bodies on their way through: one boxed type for every body the waypoint
//! sends (a client's, an upstream's, or one of its own answers), a wrapper that counts
//! bytes and says when a body is done (for telemetry at the real end of a response),
//! and a tee that copies a request body to a mirror without ever slowing the request.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full, combinators::UnsyncBoxBody};
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the waypoint sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Any body, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// How a body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub bytes: u64,
    /// Read to its end (not failed, not dropped half way).
    pub clean: bool,
    /// `grpc-status` of its trailers, if it had some.
    pub grpc_status: Option<String>,
}

/// Counts the bytes of a body and runs `done` once, when it ends, fails or is dropped.
pub struct Counted<F: FnOnce(Ended) + Send> {
    inner: Body,
    bytes: u64,
    grpc_status: Option<String>,
    done: Option<F>,
}

impl<F: FnOnce(Ended) + Send> Counted<F> {
    pub fn new(inner: Body, done: F) -> Self {
        Counted {
            inner,
            bytes: 0,
            grpc_status: None,
            done: Some(done),
        }
    }

    fn finish(&mut self, clean: bool) {
        if let Some(done) = self.done.take() {
            done(Ended {
                bytes: self.bytes,
                clean,
                grpc_status: self.grpc_status.take(),
            });
        }
    }
}

impl<F: FnOnce(Ended) + Send> Drop for Counted<F> {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl<F: FnOnce(Ended) + Send + Unpin> hyper::body::Body for Counted<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(status) = frame
                    .trailers_ref()
                    .and_then(|t| t.get("grpc-status"))
                    .and_then(|v| v.to_str().ok())
                {
                    self.grpc_status = Some(status.to_owned());
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(None) => self.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A running byte count another task can read (the request side of a request's
/// telemetry, read when the response ends).
#[derive(Debug, Default, Clone)]
pub struct Tally(Arc<AtomicU64>);

impl Tally {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts a body's bytes into a [`Tally`].
pub struct Tallied {
    inner: Body,
    tally: Tally,
}

impl Tallied {
    pub fn new(inner: Body) -> (Self, Tally) {
        let tally = Tally::default();
        (
            Tallied {
                inner,
                tally: tally.clone(),
            },
            tally,
        )
    }
}

impl hyper::body::Body for Tallied {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.tally.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Frames a mirror may lag behind the request before it is given up.
const MIRROR_LAG: usize = 16;

/// Passes a body on and copies each data frame to a mirror's body. A mirror that
/// falls behind (or is gone) is cut off; the request goes on as if there were none.
pub struct Tee {
    inner: Body,
    mirror: Option<mpsc::Sender<Result<Frame<Bytes>, BoxError>>>,
}

/// The mirror's side of a [`Tee`].
pub struct Mirrored(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>);

impl Tee {
    pub fn new(inner: Body) -> (Self, Mirrored) {
        let (tx, rx) = mpsc::channel(MIRROR_LAG);
        (
            Tee {
                inner,
                mirror: Some(tx),
            },
            Mirrored(rx),
        )
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let copy = if let Some(data) = frame.data_ref() {
                    Some(Frame::data(data.clone()))
                } else {
                    frame.trailers_ref().map(|t| Frame::trailers(t.clone()))
                };
                if let (Some(tx), Some(copy)) = (&self.mirror, copy)
                    && tx.try_send(Ok(copy)).is_err()
                {
                    // Behind or gone: the mirror's body fails, the request goes on.
                    self.mirror = None;
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(tx) = self.mirror.take() {
                    let _ = tx.try_send(Err("the request body failed".into()));
                }
            }
            Poll::Ready(None) => self.mirror = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl hyper::body::Body for Mirrored {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::Frames, *};

    #[tokio::test]
    async fn counts_and_reports_once_at_the_end() {
        let (tx, rx) = std::sync::mpsc::channel();
        let body = Counted::new(full("hello"), move |e| tx.send((e.bytes, e.clean)).unwrap());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(rx.try_recv().unwrap(), (5, true));
        assert!(rx.try_recv().is_err());
        // Dropped before the end: reported as not clean.
        let (tx, rx) = std::sync::mpsc::channel();
        drop(Counted::new(full("x"), move |e| {
            tx.send((e.bytes, e.clean)).unwrap()
        }));
        assert_eq!(rx.try_recv().unwrap(), (0, false));
    }

    #[tokio::test]
    async fn a_tee_copies_and_a_slow_mirror_is_cut_off() {
        let (tee, mirrored) = Tee::new(full("payload"));
        let main = tee.collect().await.unwrap().to_bytes();
        let copy = mirrored.collect().await.unwrap().to_bytes();
        assert_eq!((&main[..], &copy[..]), (&b"payload"[..], &b"payload"[..]));

        let frames: std::collections::VecDeque<Bytes> =
            (0..100).map(|i| Bytes::from(vec![i as u8; 10])).collect();
        let (tee, mirrored) = Tee::new(boxed(Frames(frames)));
        // Nobody reads the mirror: the request still goes through whole.
        let main = tee.collect().await.unwrap().to_bytes();
        assert_eq!(main.len(), 1000);
        let copy = mirrored.collect().await;
        assert!(copy.map(|c| c.to_bytes().len() < 1000).unwrap_or(true));
    }
}

/// Bodies for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A body of several data frames, in order.
    pub struct Frames(pub std::collections::VecDeque<Bytes>);

    impl Frames {
        pub fn of(parts: &[&'static str]) -> Self {
            Frames(
                parts
                    .iter()
                    .map(|p| Bytes::from_static(p.as_bytes()))
                    .collect(),
            )
        }
    }

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }
}
