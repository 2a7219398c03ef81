//! `serve`: binds every listener, says so on standard error (`echo listening on ADDR`,
//! `http listening on …`, `grpc listening on …`, `otlp listening on …`: the lab waits
//! for these lines), and serves them all until one fails.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use tokio::{io::AsyncWriteExt as _, net::TcpListener};

use crate::{accept_failed, grpc, http, otlp};

/// The listeners `serve` was asked for.
pub struct Listeners {
    pub echo: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    pub grpc: Vec<SocketAddr>,
    pub otlp: Vec<SocketAddr>,
    /// Where the OTLP collector writes spans; given whenever `otlp` is not empty.
    pub otlp_out: Option<PathBuf>,
}

impl Listeners {
    pub fn is_empty(&self) -> bool {
        self.echo.is_empty() && self.http.is_empty() && self.grpc.is_empty() && self.otlp.is_empty()
    }
}

pub async fn serve(listeners: Listeners, name: String) -> anyhow::Result<()> {
    let name: Arc<str> = name.into();
    let mut tasks = tokio::task::JoinSet::new();
    for addr in listeners.echo {
        let listener = bind(addr)?;
        eprintln!("echo listening on {}", listener.local_addr()?);
        tasks.spawn(echo(listener));
    }
    for addr in listeners.http {
        let listener = bind(addr)?;
        eprintln!("http listening on {}", listener.local_addr()?);
        tasks.spawn(http::serve(listener, Arc::clone(&name)));
    }
    for addr in listeners.grpc {
        let listener = bind(addr)?;
        eprintln!("grpc listening on {}", listener.local_addr()?);
        tasks.spawn(grpc::serve(listener, Arc::clone(&name)));
    }
    if !listeners.otlp.is_empty() {
        let path = listeners.otlp_out.context("--otlp needs --otlp-out FILE")?;
        let spans = otlp::SpanFile::open(&path)?;
        for addr in listeners.otlp {
            let listener = bind(addr)?;
            eprintln!("otlp listening on {}", listener.local_addr()?);
            tasks.spawn(otlp::serve(listener, spans.clone()));
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a listener task panicked")??;
    }
    Ok(())
}

/// A listening socket with `SO_REUSEADDR`, so that a restarted server binds at once.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(1024)?)
}

/// TCP echo: every connection gets back what it sends, and the end of its stream.
async fn echo(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            accept_failed().await;
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}
