//! Copying both ways between two streams, counting bytes as they pass, so that a
//! connection closed from outside (a revoked policy, a drain deadline) still reports
//! what it carried. Half-close is passed on: when one side ends its writing, the other
//! side's write half is shut down, and the copy ends when both directions have.
//!
//! Memory: an idle connection holds a small inline buffer per direction; a direction
//! that carries bulk borrows a large heap buffer for as long as reads keep filling it.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{
        TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
};

use crate::hbone::{H2Stream, h2_io, poll_send_capacity};

/// The buffer a direction starts with, inline in the task: an idle connection holds
/// only this.
const SMALL: usize = 1024;
/// The heap buffer a direction moves to while bytes keep coming in bulk (a read filled
/// the small buffer), and gives back when they slow down.
const LARGE: usize = 64 * 1024;

/// Bytes copied so far: `a` to `b`, and `b` to `a`.
#[derive(Debug, Default)]
pub struct Counted {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

impl Counted {
    pub fn a_to_b(&self) -> &AtomicU64 {
        &self.a_to_b
    }

    pub fn b_to_a(&self) -> &AtomicU64 {
        &self.b_to_a
    }

    pub fn get(&self) -> (u64, u64) {
        (
            self.a_to_b.load(Ordering::Relaxed),
            self.b_to_a.load(Ordering::Relaxed),
        )
    }
}

async fn one_way<R, W>(mut r: R, mut w: W, count: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL];
    let mut large: Option<Box<[u8]>> = None;
    loop {
        let buf: &mut [u8] = match large.as_deref_mut() {
            Some(large) => large,
            None => &mut small,
        };
        let n = r.read(buf).await?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        if large.is_none() && n == SMALL {
            large = Some(vec![0u8; LARGE].into_boxed_slice());
        } else if large.is_some() && n < SMALL {
            large = None;
        }
    }
    w.shutdown().await
}

/// Copies until both directions have ended (or one failed).
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B, counted: &Counted) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    tokio::try_join!(
        one_way(ar, bw, &counted.a_to_b),
        one_way(br, aw, &counted.b_to_a)
    )?;
    Ok(())
}

/// Copies both ways between a TCP connection and an HBONE stream until both
/// directions have ended (or one failed). Bytes read from TCP go to h2 as they are
/// (no copy into a buffer of h2's), and h2's chunks are written to TCP as they come;
/// an idle connection holds no buffer at all.
pub async fn tcp_h2(
    tcp: &mut TcpStream,
    h2: &mut H2Stream,
    tcp_to_h2: &AtomicU64,
    h2_to_tcp: &AtomicU64,
) -> io::Result<()> {
    let (r, mut w) = tcp.split();
    let (send, recv, pending, shut) = h2.parts();
    tokio::try_join!(
        async {
            let r = tcp_into_h2(&r, send, tcp_to_h2).await;
            *shut = true;
            r
        },
        h2_into_tcp(recv, pending, &mut w, h2_to_tcp)
    )?;
    Ok(())
}

async fn tcp_into_h2(
    r: &ReadHalf<'_>,
    send: &mut h2::SendStream<Bytes>,
    count: &AtomicU64,
) -> io::Result<()> {
    let mut size = SMALL;
    loop {
        r.readable().await?;
        let mut buf = BytesMut::with_capacity(size);
        let n = match r.try_read_buf(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        // Reads that fill the buffer ask for a larger one next time; small ones go
        // back to the small size.
        size = if n == size {
            (size * 4).min(LARGE)
        } else if n < SMALL {
            SMALL
        } else {
            size
        };
        let mut data = buf.freeze();
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let capacity = std::future::poll_fn(|cx| poll_send_capacity(send, cx)).await?;
            let chunk = data.split_to(capacity.min(data.len()));
            send.send_data(chunk, false).map_err(h2_io)?;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    send.send_data(Bytes::new(), true).map_err(h2_io)
}

async fn h2_into_tcp(
    recv: &mut h2::RecvStream,
    pending: Bytes,
    w: &mut WriteHalf<'_>,
    count: &AtomicU64,
) -> io::Result<()> {
    if !pending.is_empty() {
        w.write_all(&pending).await?;
        count.fetch_add(pending.len() as u64, Ordering::Relaxed);
    }
    loop {
        let data = match recv.data().await {
            None => break,
            Some(Ok(data)) => data,
            // The peer ended the stream without error (a graceful reset).
            Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => break,
            Some(Err(e)) => return Err(h2_io(e)),
        };
        let _ = recv.flow_control().release_capacity(data.len());
        w.write_all(&data).await?;
        count.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_with_half_close_and_counts() {
        let (mut client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut server) = tokio::io::duplex(1024);
        let counted = Counted::default();
        let relay = bidirectional(&mut a, &mut b, &counted);
        let client_side = async {
            let payload = vec![7u8; 100_000];
            client.write_all(&payload).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, b"bye");
        };
        let server_side = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, vec![7u8; 100_000]);
            // The server answers after the client's half-close.
            server.write_all(b"bye").await.unwrap();
            server.shutdown().await.unwrap();
        };
        let ends = async {
            tokio::join!(client_side, server_side);
        };
        let (r, ()) = tokio::join!(relay, ends);
        r.unwrap();
        assert_eq!(counted.get(), (100_000, 3));
    }
}
