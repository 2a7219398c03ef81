//! The `http` client: COUNT requests over CONNECTIONS keep-alive connections, HTTP/1.1
//! or HTTP/2 prior knowledge, and a summary of the answers as JSON. Its connection and
//! request template serve `load` too.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    HeaderMap, Method, Request, Response, Uri,
    body::{Bytes, Incoming},
    client::conn::{http1, http2},
    header::{HOST, HeaderName, HeaderValue},
};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    connect: SocketAddr,
    /// How many requests to send in all.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// How many keep-alive connections to spread them over.
    #[arg(long, default_value_t = 1)]
    connections: u32,
    #[arg(long, default_value = "/")]
    path: String,
    #[arg(long, default_value = "GET")]
    method: String,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The Host header (the authority with --h2); the address by default.
    #[arg(long)]
    host: Option<String>,
    /// Send a body of this many bytes.
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    #[arg(long)]
    h2: bool,
    /// How long each request may take, connecting included.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Start requests at this many per second in all (0: each as soon as the last
    /// of its connection is answered).
    #[arg(long, default_value_t = 0)]
    rate: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (no upgrade, no TLS).
    Http2,
}

/// What every request of a run looks like.
pub struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    /// HTTP/1.1 requests carry `path` in origin form and a Host header; HTTP/2 ones an
    /// absolute URI with `host` as the authority. A Host among `headers` replaces the
    /// default one.
    pub fn new(
        protocol: Protocol,
        method: &str,
        host: &str,
        path: &str,
        headers: &[String],
        body_bytes: usize,
    ) -> anyhow::Result<Self> {
        let method = Method::from_bytes(method.as_bytes())
            .with_context(|| format!("--method {method:?}"))?;
        let uri = match protocol {
            Protocol::Http1 => path.parse::<Uri>(),
            Protocol::Http2 => format!("http://{host}{path}").parse::<Uri>(),
        }
        .with_context(|| format!("--path {path:?} (host {host:?})"))?;
        let mut map = HeaderMap::new();
        for header in headers {
            let (name, value) = parse_header(header)?;
            map.append(name, value);
        }
        if protocol == Protocol::Http1 && !map.contains_key(HOST) {
            map.insert(
                HOST,
                HeaderValue::from_str(host).with_context(|| format!("--host {host:?}"))?,
            );
        }
        Ok(Self {
            method,
            uri,
            headers: map,
            body: Bytes::from(vec![b'x'; body_bytes]),
        })
    }

    pub fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// `Name: value` (spaces around the value trimmed).
fn parse_header(header: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = header
        .split_once(':')
        .with_context(|| format!("--header {header:?} is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("--header {header:?}: the name"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("--header {header:?}: the value"))?;
    Ok((name, value))
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Self::Http1(s) => s.ready().await,
            Self::Http2(s) => s.ready().await,
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Full<Bytes>>>> {
        match self {
            Self::Http1(s) => s.try_send_request(req).await,
            Self::Http2(s) => s.try_send_request(req).await,
        }
    }
}

/// One keep-alive connection, opened when first needed and again whenever the peer
/// closed it.
pub struct Connection {
    addr: SocketAddr,
    protocol: Protocol,
    sender: Option<Sender>,
    opened: u32,
}

impl Connection {
    pub fn new(addr: SocketAddr, protocol: Protocol) -> Self {
        Self {
            addr,
            protocol,
            sender: None,
            opened: 0,
        }
    }

    /// How many times a connection was established.
    pub fn opened(&self) -> u32 {
        self.opened
    }

    /// Forgets the connection (after a request timed out on it, say).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends `req`, on a new connection when there is none or the last one closed. A
    /// request that a closing connection did not take is sent again on a new one;
    /// after any other failure the connection is dropped.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>> {
        let mut sender = match self.sender.take() {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                Err(_) => self.open().await?,
            },
            None => self.open().await?,
        };
        let response = match sender.send(req).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    sender = self.open().await?;
                    sender
                        .send(req)
                        .await
                        .map_err(|e| e.into_error())
                        .context("sending the request")?
                }
                None => return Err(e.into_error()).context("sending the request"),
            },
        };
        self.sender = Some(sender);
        Ok(response)
    }

    async fn open(&mut self) -> anyhow::Result<Sender> {
        let addr = self.addr;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting {addr}"))?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        let mut sender = match self.protocol {
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await.context("HTTP/1.1")?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Sender::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .context("the HTTP/2 handshake")?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Sender::Http2(sender)
            }
        };
        self.opened += 1;
        sender.ready().await.context("the new connection closed")?;
        Ok(sender)
    }
}

/// A response, read to its end.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Bytes,
}

async fn exchange(connection: &mut Connection, template: &Template) -> anyhow::Result<Answer> {
    let (parts, body) = connection.send(template.request()).await?.into_parts();
    let body = body.collect().await.context("reading the body")?.to_bytes();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Ok(Answer {
        status: parts.status.as_u16(),
        headers,
        body,
    })
}

/// The pod that answered, when the body is the sample app's JSON.
fn pod_of(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("pod")?.as_str().map(str::to_owned)
}

/// What a run saw, added up over its connections.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u32>,
    /// Each answer's time, in milliseconds, by status.
    latencies: BTreeMap<u16, Vec<f64>>,
    pods: BTreeMap<String, u32>,
    errors: u32,
    first_error: Option<String>,
    /// The answer to the lowest-numbered request that got one.
    first: Option<(u32, serde_json::Value)>,
    opened: u32,
}

impl Tally {
    fn answered(&mut self, i: u32, answer: Answer, took: Duration) {
        *self.statuses.entry(answer.status).or_default() += 1;
        (self.latencies.entry(answer.status).or_default()).push(took.as_secs_f64() * 1e3);
        if let Some(pod) = pod_of(&answer.body) {
            *self.pods.entry(pod).or_default() += 1;
        }
        if self.first.as_ref().is_none_or(|(j, _)| i < *j) {
            let first = serde_json::json!({
                "status": answer.status,
                "headers": answer.headers,
                "body": String::from_utf8_lossy(&answer.body),
            });
            self.first = Some((i, first));
        }
    }

    fn failed(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    fn merge(&mut self, other: Self) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (status, mut list) in other.latencies {
            self.latencies.entry(status).or_default().append(&mut list);
        }
        for (pod, n) in other.pods {
            *self.pods.entry(pod).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if let Some((i, first)) = other.first
            && self.first.as_ref().is_none_or(|(j, _)| i < *j)
        {
            self.first = Some((i, first));
        }
        self.opened += other.opened;
    }
}

/// Minimum, median and maximum of each status's answer times, in milliseconds.
fn latency_summary(latencies: &mut BTreeMap<u16, Vec<f64>>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (status, list) in latencies.iter_mut() {
        list.sort_by(f64::total_cmp);
        let at = |q: f64| list[((list.len() - 1) as f64 * q).round() as usize];
        out.insert(
            status.to_string(),
            serde_json::json!({"min": at(0.0), "p50": at(0.5), "max": at(1.0)}),
        );
    }
    serde_json::Value::Object(out)
}

/// `http`: prints `{"requests", "statuses", "latency_ms", "pods", "errors", "first",
/// "first_error"}`. Any status is an answer; the run fails only when no connection
/// could be made.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.count > 0 && args.connections > 0,
        "--count and --connections must be positive"
    );
    let protocol = if args.h2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let host = args.host.unwrap_or_else(|| args.connect.to_string());
    let template = Arc::new(Template::new(
        protocol,
        &args.method,
        &host,
        &args.path,
        &args.headers,
        args.body_bytes,
    )?);
    let timeout = Duration::from_secs(args.timeout_secs);
    let next = Arc::new(AtomicU32::new(0));
    let began = tokio::time::Instant::now();
    let rate = args.rate;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections.min(args.count) {
        let (template, next) = (Arc::clone(&template), Arc::clone(&next));
        let (addr, count) = (args.connect, args.count);
        workers.spawn(async move {
            let mut connection = Connection::new(addr, protocol);
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                if rate > 0 {
                    let due = Duration::from_secs_f64(f64::from(i) / f64::from(rate));
                    tokio::time::sleep_until(began + due).await;
                }
                let sent = tokio::time::Instant::now();
                match tokio::time::timeout(timeout, exchange(&mut connection, &template)).await {
                    Ok(Ok(answer)) => tally.answered(i, answer, sent.elapsed()),
                    Ok(Err(e)) => tally.failed(format!("{e:#}")),
                    Err(_) => {
                        tally.failed(format!("no answer within {timeout:?}"));
                        connection.reset();
                    }
                }
            }
            tally.opened = connection.opened();
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = workers.join_next().await {
        tally.merge(done.context("a connection task panicked")?);
    }
    println!(
        "{}",
        serde_json::json!({
            "requests": args.count,
            "statuses": tally.statuses,
            "latency_ms": latency_summary(&mut tally.latencies),
            "pods": tally.pods,
            "errors": tally.errors,
            "first": tally.first.map(|(_, first)| first),
            "first_error": tally.first_error,
        })
    );
    anyhow::ensure!(
        tally.opened > 0,
        "nothing could be sent to {}: {}",
        args.connect,
        tally.first_error.unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value() {
        let (name, value) = parse_header("X-Test:  a b ").unwrap();
        assert_eq!(name, "x-test");
        assert_eq!(value, "a b");
        let (_, value) = parse_header("x-empty:").unwrap();
        assert_eq!(value, "");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn templates_by_protocol() {
        let h1 = Template::new(Protocol::Http1, "POST", "cart:8080", "/a?b=1", &[], 3).unwrap();
        let req = h1.request();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()[HOST], "cart:8080");

        let own_host = ["Host: other".to_owned(), "x-a: 1".to_owned()];
        let h1 = Template::new(Protocol::Http1, "GET", "cart", "/", &own_host, 0).unwrap();
        let req = h1.request();
        assert_eq!(req.headers().get_all(HOST).iter().count(), 1);
        assert_eq!(req.headers()[HOST], "other");
        assert_eq!(req.headers()["x-a"], "1");

        let h2 = Template::new(Protocol::Http2, "GET", "cart:8080", "/x", &[], 0).unwrap();
        let req = h2.request();
        assert_eq!(req.uri(), "http://cart:8080/x");
        assert!(req.headers().get(HOST).is_none());
    }

    #[test]
    fn pods_come_from_the_json_body() {
        assert_eq!(
            pod_of(br#"{"pod":"cart-1","path":"/"}"#).as_deref(),
            Some("cart-1")
        );
        assert_eq!(pod_of(b"RBAC: access denied"), None);
        assert_eq!(pod_of(br#"{"pod":7}"#), None);
    }

    #[test]
    fn the_first_answer_is_the_lowest_request() {
        let answer = |status| Answer {
            status,
            headers: BTreeMap::new(),
            body: Bytes::from_static(br#"{"pod":"p"}"#),
        };
        let mut a = Tally::default();
        a.answered(3, answer(200), Duration::from_millis(4));
        let mut b = Tally::default();
        b.answered(1, answer(503), Duration::from_millis(2));
        b.failed("boom".into());
        a.merge(b);
        assert_eq!(a.first.as_ref().unwrap().0, 1);
        assert_eq!(a.first.as_ref().unwrap().1["status"], 503);
        assert_eq!(a.statuses, BTreeMap::from([(200, 1), (503, 1)]));
        assert_eq!(a.pods["p"], 2);
        assert_eq!(a.errors, 1);
        assert_eq!(a.first_error.as_deref(), Some("boom"));
    }
}
