//! Copying both ways between two streams, counting bytes as they pass, so that a
//! connection closed from outside (a revoked policy, a drain deadline) still reports
//! what it carried. Half-close is passed on: when one side ends its writing, the other
//! side's write half is shut down, and the copy ends when both directions have.

use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Buffer per direction.
const BUFFER: usize = 16 * 1024;

/// Bytes copied so far: `a` to `b`, and `b` to `a`.
#[derive(Debug, Default)]
pub struct Counted {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

impl Counted {
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
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
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
