//! gRPC: the `weft.sample.v1.Echo` service of `serve --grpc` (`proto/sample.proto`) and
//! the `grpc` client that calls it.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::{
    Code, Request, Response, Status, Streaming,
    codegen::BoxStream,
    metadata::{MetadataMap, MetadataValue},
    transport::{Endpoint, Server, server::TcpIncoming},
};

use proto::{ChatMessage, SayReply, SayRequest, echo_client::EchoClient, echo_server::EchoServer};

mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs, reason = "generated code")]
    tonic::include_proto!("weft.sample.v1");
}

/// The message of the status `Say` fails with when asked to.
const FAILURE_MESSAGE: &str = "failing on purpose";

/// Serves the Echo service on `listener` until the server fails.
pub async fn serve(listener: TcpListener, name: Arc<str>) -> anyhow::Result<()> {
    Server::builder()
        .add_service(EchoServer::new(Echo { name }))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
        .context("serving gRPC")
}

struct Echo {
    name: Arc<str>,
}

#[tonic::async_trait]
impl proto::echo_server::Echo for Echo {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        let SayRequest { message, fail_code } = request.into_inner();
        if fail_code != 0 {
            return Err(failure(fail_code));
        }
        Ok(Response::new(SayReply {
            message,
            pod: self.name.to_string(),
        }))
    }

    type ChatStream = BoxStream<ChatMessage>;

    /// Each message is echoed as it is read, so a client can wait for the echo of one
    /// message before it sends the next.
    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let name = Arc::clone(&self.name);
        let echoes = request.into_inner().map(move |message| {
            message.map(|m| ChatMessage {
                text: m.text,
                pod: name.to_string(),
            })
        });
        Ok(Response::new(Box::pin(echoes)))
    }
}

/// The status `Say` answers with `fail_code`: its code, a fixed message, and metadata
/// (which travels in the trailers) that a test can look for.
fn failure(fail_code: i32) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        "x-sample-detail",
        MetadataValue::from_static("failing-on-purpose"),
    );
    Status::with_metadata(Code::from(fail_code), FAILURE_MESSAGE, metadata)
}

#[derive(clap::Args)]
pub struct ClientArgs {
    #[arg(long)]
    connect: SocketAddr,
    /// How long to wait to connect and for each answer.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    #[command(subcommand)]
    call: Call,
}

#[derive(clap::Subcommand)]
enum Call {
    /// One `Say`; prints `{"code", "message", "pod", "trailers"}`.
    Say {
        #[arg(long)]
        message: String,
        /// Ask the server to fail with this gRPC status code.
        #[arg(long, default_value_t = 0)]
        fail_code: i32,
    },
    /// One `Chat` stream of MESSAGES messages, each sent after the echo of the one
    /// before; prints `{"sent", "received", "pods"}`. Fails when an echo differs.
    Chat {
        #[arg(long, default_value_t = 10)]
        messages: u32,
    },
}

/// `grpc`: connects, makes the call, prints its JSON. A failed `Say` is an answer (exit
/// 0); not reaching the server is not.
pub async fn client(args: ClientArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let channel = Endpoint::from_shared(format!("http://{}", args.connect))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting {}", args.connect))?;
    let mut client = EchoClient::new(channel);
    match args.call {
        Call::Say { message, fail_code } => {
            let request = SayRequest { message, fail_code };
            let answer = tokio::time::timeout(timeout, client.say(request))
                .await
                .context("Say timed out")?;
            println!("{}", say_json(answer));
            Ok(())
        }
        Call::Chat { messages } => chat(&mut client, messages, timeout).await,
    }
}

fn say_json(answer: Result<Response<SayReply>, Status>) -> serde_json::Value {
    match answer {
        Ok(reply) => {
            let reply = reply.into_inner();
            serde_json::json!({
                "code": 0,
                "message": reply.message,
                "pod": reply.pod,
                "trailers": {},
            })
        }
        Err(status) => {
            let trailers: BTreeMap<String, String> = status
                .metadata()
                .clone()
                .into_headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            serde_json::json!({
                "code": i32::from(status.code()),
                "message": status.message(),
                "pod": null,
                "trailers": trailers,
            })
        }
    }
}

async fn chat(
    client: &mut EchoClient<tonic::transport::Channel>,
    messages: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let text = |i: u32| format!("weft-chat-{i}");
    let (outbound, requests) = tokio::sync::mpsc::channel(1);
    let mut sent = 0u32;
    let mut received = 0u32;
    let mut pods: BTreeMap<String, u32> = BTreeMap::new();
    let mut failure = None;
    if messages > 0 {
        // The first message waits in the channel; the others follow their echoes.
        outbound
            .send(ChatMessage {
                text: text(0),
                pod: String::new(),
            })
            .await
            .context("queueing the first message")?;
        sent = 1;
    }
    let mut echoes = tokio::time::timeout(
        timeout,
        client.chat(tokio_stream::wrappers::ReceiverStream::new(requests)),
    )
    .await
    .context("Chat timed out")?
    .context("starting Chat")?
    .into_inner();
    for i in 0..messages {
        if i > 0 {
            let message = ChatMessage {
                text: text(i),
                pod: String::new(),
            };
            if outbound.send(message).await.is_err() {
                failure = Some(format!("message {i}: the stream closed"));
                break;
            }
            sent += 1;
        }
        match tokio::time::timeout(timeout, echoes.message()).await {
            Ok(Ok(Some(echo))) if echo.text == text(i) => {
                received += 1;
                *pods.entry(echo.pod).or_default() += 1;
            }
            Ok(Ok(Some(echo))) => {
                failure = Some(format!(
                    "message {i}: sent {:?}, the echo was {:?}",
                    text(i),
                    echo.text
                ));
                break;
            }
            Ok(Ok(None)) => {
                failure = Some(format!("message {i}: the stream ended before its echo"));
                break;
            }
            Ok(Err(status)) => {
                failure = Some(format!("message {i}: {status}"));
                break;
            }
            Err(_) => {
                failure = Some(format!("message {i}: no echo within {timeout:?}"));
                break;
            }
        }
    }
    // Half-close, then read the rest: the server ends its side after ours.
    drop(outbound);
    if failure.is_none() {
        match tokio::time::timeout(timeout, echoes.message()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(extra))) => {
                failure = Some(format!("an unexpected message: {:?}", extra.text))
            }
            Ok(Err(status)) => failure = Some(format!("at the end of the stream: {status}")),
            Err(_) => failure = Some(format!("the stream did not end within {timeout:?}")),
        }
    }
    println!(
        "{}",
        serde_json::json!({ "sent": sent, "received": received, "pods": pods })
    );
    match failure {
        Some(failure) => anyhow::bail!(failure),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_code_message_and_detail() {
        let status = failure(14);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), FAILURE_MESSAGE);
        assert_eq!(
            status.metadata().get("x-sample-detail").unwrap(),
            "failing-on-purpose"
        );
        // Codes outside gRPC's range become Unknown rather than a panic.
        assert_eq!(failure(99).code(), Code::Unknown);
    }

    #[test]
    fn say_answers_as_json() {
        let ok = say_json(Ok(Response::new(SayReply {
            message: "hi".into(),
            pod: "cart-1".into(),
        })));
        assert_eq!(
            ok,
            serde_json::json!({"code": 0, "message": "hi", "pod": "cart-1", "trailers": {}})
        );
        let failed = say_json(Err(failure(7)));
        assert_eq!(failed["code"], 7);
        assert_eq!(failed["message"], FAILURE_MESSAGE);
        assert!(failed["pod"].is_null());
        assert_eq!(failed["trailers"]["x-sample-detail"], "failing-on-purpose");
    }

    #[tokio::test]
    async fn say_and_chat_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, "cart-1".into()));
        let mut client = EchoClient::connect(format!("http://{addr}")).await.unwrap();
        let reply = client
            .say(SayRequest {
                message: "hi".into(),
                fail_code: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (reply.message.as_str(), reply.pod.as_str()),
            ("hi", "cart-1")
        );
        let status = client
            .say(SayRequest {
                message: "hi".into(),
                fail_code: 9,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), FAILURE_MESSAGE);
        assert_eq!(
            status.metadata().get("x-sample-detail").unwrap(),
            "failing-on-purpose"
        );
        // Each message waits for the echo of the one before: this only ends if the
        // server answers as the messages come.
        chat(&mut client, 5, Duration::from_secs(5)).await.unwrap();
    }
}
