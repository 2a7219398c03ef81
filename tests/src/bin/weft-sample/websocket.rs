//! WebSocket: the echo behind `serve --http` (an HTTP/1.1 upgrade on any path) and
//! the `ws` client that checks it.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, handshake::derive_accept_key, protocol::Role},
};

/// Answers a WebSocket upgrade request with `101 Switching Protocols` and, once hyper
/// hands over the connection, echoes its messages on a task of their own.
pub fn accept(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::from_static(
                b"a WebSocket upgrade needs Sec-WebSocket-Key\n",
            )))
            .expect("valid response");
    };
    let accept_key = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(ws).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, accept_key)
        .body(Full::default())
        .expect("valid response")
}

/// Sends every text and binary message back unchanged. Pings are answered and a close
/// is returned by tungstenite itself; the loop ends when the stream does.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

#[derive(clap::Args)]
pub struct ClientArgs {
    #[arg(long)]
    connect: SocketAddr,
    /// The path of the upgrade request.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// How many text messages to send, each after the echo of the one before.
    #[arg(long, default_value_t = 10)]
    messages: u32,
    /// How long to wait to connect and for each echo.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

/// `ws`: upgrades one connection to WebSocket, sends MESSAGES text messages one at a
/// time and checks each echo; prints `{"sent": …, "echoed": …}`. Fails when an echo
/// differs or does not come.
pub async fn client(args: ClientArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let addr = args.connect;
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting {addr}: timed out"))?
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{addr}{}", args.path);
    let (mut ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::client_async(url, stream))
        .await
        .context("the WebSocket handshake timed out")?
        .context("the WebSocket handshake")?;
    let mut sent = 0u32;
    let mut echoed = 0u32;
    let mut failure = None;
    for i in 0..args.messages {
        let text = format!("weft-ws-{i}");
        if let Err(e) = ws.send(Message::text(text.clone())).await {
            failure = Some(format!("sending message {i}: {e}"));
            break;
        }
        sent += 1;
        match tokio::time::timeout(timeout, next_data(&mut ws)).await {
            Ok(Some(Message::Text(echo))) if echo.as_str() == text => echoed += 1,
            Ok(Some(other)) => {
                failure = Some(format!(
                    "message {i}: sent {text:?}, the echo was {other:?}"
                ));
                break;
            }
            Ok(None) => {
                failure = Some(format!("message {i}: the connection ended before its echo"));
                break;
            }
            Err(_) => {
                failure = Some(format!("message {i}: no echo within {timeout:?}"));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, ws.close(None)).await;
    println!("{}", serde_json::json!({ "sent": sent, "echoed": echoed }));
    match failure {
        Some(failure) => anyhow::bail!(failure),
        None => Ok(()),
    }
}

/// The next text or binary message; `None` when the stream ends or fails.
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Option<Message> {
    while let Some(message) = ws.next().await {
        match message {
            Ok(m) if m.is_text() || m.is_binary() => return Some(m),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upgrades_echo_text_and_binary() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::http::serve(listener, "cart-1".into()));
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut ws, response) =
            tokio_tungstenite::client_async(format!("ws://{addr}/any"), stream)
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        for message in [Message::text("hello"), Message::binary(vec![0u8, 1, 255])] {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(next_data(&mut ws).await, Some(message));
        }
        ws.close(None).await.unwrap();
        assert_eq!(next_data(&mut ws).await, None);
    }
}
