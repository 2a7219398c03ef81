//! The `raw` client: sends each request of a corpus byte for byte, on its own
//! connection, and reports the first answer that came back — for the tests of how the
//! mesh parses and normalises what clients send (smuggling, path tricks).
//!
//! The corpus is a JSON array of `{"name": …, "request": …}` (other fields are left to
//! the tests); each character of `request` is one byte (U+0000 to U+00FF), so `"\r\n"`
//! and `"\u00ff"` write the bytes they name.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    connect: SocketAddr,
    /// The corpus: a JSON array of `{"name", "request"}`.
    #[arg(long)]
    file: PathBuf,
}

/// How long to read an answer for, unless the peer closes first.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How much of an answer is kept.
const ANSWER_LIMIT: usize = 1024 * 1024;
/// How much of the body is reported.
const BODY_CHARS: usize = 300;

/// One request of the corpus.
#[derive(Debug, PartialEq)]
struct Case {
    name: String,
    request: Vec<u8>,
}

fn parse_corpus(text: &str) -> anyhow::Result<Vec<Case>> {
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        request: String,
    }
    let entries: Vec<Entry> =
        serde_json::from_str(text).context("the corpus is not a JSON array of {name, request}")?;
    entries
        .into_iter()
        .map(|entry| {
            let request = entry
                .request
                .chars()
                .map(u8::try_from)
                .collect::<Result<Vec<u8>, _>>()
                .with_context(|| {
                    format!(
                        "{:?}: the request has a character above U+00FF, which is no byte",
                        entry.name
                    )
                })?;
            Ok(Case {
                name: entry.name,
                request,
            })
        })
        .collect()
}

/// What the answer to one request says.
#[derive(Debug, PartialEq)]
struct Answer {
    /// The first final response's status; `None` when the answer does not start with
    /// an HTTP status line.
    status: Option<u16>,
    /// The statuses of every final response in the answer, in order (more than one
    /// when a request was pipelined, or smuggled, behind the first).
    statuses: Vec<u16>,
    /// The start of the first final response's body (decoded from chunks); of the
    /// whole answer when it is not HTTP.
    body: String,
    /// The `path` of the sample app's JSON, when that is the first body.
    path: Option<String>,
}

/// Splits `raw` into its responses, by their framing. `head_request`: the (first)
/// request was a HEAD, so the first answer has no body whatever its headers say.
fn parse_answer(raw: &[u8], head_request: bool) -> Answer {
    let mut statuses = Vec::new();
    let mut first_body = None;
    let mut rest = raw;
    while let Some(head) = parse_head(rest) {
        let after = &rest[head.len..];
        // Interim answers (100 Continue, …) come before the final one.
        let interim = (100..200).contains(&head.status) && head.status != 101 && !after.is_empty();
        let bodiless = interim
            || matches!(head.status, 100..=199 | 204 | 304)
            || (head_request && first_body.is_none());
        let (body, used) = if bodiless {
            (Vec::new(), 0)
        } else if head.chunked {
            dechunk(after)
        } else if let Some(length) = head.content_length {
            let length = length.min(after.len());
            (after[..length].to_vec(), length)
        } else {
            (after.to_vec(), after.len())
        };
        if !interim {
            statuses.push(head.status);
            first_body.get_or_insert(body);
        }
        rest = &after[used..];
        // After 101 the bytes are another protocol's.
        if rest.is_empty() || head.status == 101 {
            break;
        }
    }
    match first_body {
        Some(body) => Answer {
            status: statuses.first().copied(),
            statuses,
            body: first_chars(&body),
            path: sample_path(&body),
        },
        None => Answer {
            status: None,
            statuses,
            body: first_chars(raw),
            path: None,
        },
    }
}

/// The head of one response.
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    /// Bytes up to and including the blank line; all of them when it never came.
    len: usize,
}

fn parse_head(bytes: &[u8]) -> Option<Head> {
    let len = find(bytes, b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
    let head = String::from_utf8_lossy(&bytes[..len]);
    let mut lines = head.split("\r\n");
    let status = status_of(lines.next()?)?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Some(Head {
        status,
        content_length,
        chunked,
        len,
    })
}

/// The code of `HTTP/x.y NNN reason`.
fn status_of(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    let known = version.strip_prefix("HTTP/")?;
    (known.len() == 3 && code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse().ok())
        .flatten()
}

/// The data of a chunked body, as much of it as arrived, and how many bytes the body
/// took (trailers included).
fn dechunk(body: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut data = body;
    while let Some(end) = find(data, b"\r\n") {
        let size = String::from_utf8_lossy(&data[..end]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        data = &data[end + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            data = match data.strip_prefix(b"\r\n") {
                Some(after) => after,
                None => find(data, b"\r\n\r\n").map_or(&data[data.len()..], |at| &data[at + 4..]),
            };
            break;
        }
        if size > data.len() {
            out.extend_from_slice(data);
            data = &data[data.len()..];
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    (out, body.len() - data.len())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn first_chars(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(BODY_CHARS)
        .collect()
}

/// The `path` field of the sample app's JSON answer.
fn sample_path(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("pod")?;
    json.get("path")?.as_str().map(str::to_owned)
}

/// Sends `request` on a new connection and reads what comes back until the peer closes
/// or `ANSWER_WAIT` passes; with the time from sending to the close, if it closed.
fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<(Vec<u8>, Option<Duration>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting {addr}"))?;
    stream.set_write_timeout(Some(ANSWER_WAIT))?;
    // A peer may answer and close before it has read everything, failing the write;
    // what it answered still counts.
    let _ = stream.write_all(request);
    let sent = Instant::now();
    let deadline = sent + ANSWER_WAIT;
    let mut answer = Vec::new();
    let mut closed = None;
    let mut buf = vec![0u8; 16 * 1024];
    while answer.len() < ANSWER_LIMIT {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = Some(sent.elapsed());
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = Some(sent.elapsed());
                break;
            }
            // The wait is over.
            Err(_) => break,
        }
    }
    Ok((answer, closed))
}

/// `raw`: prints a JSON array of `{"name", "status", "statuses", "body", "path",
/// "closed_after_ms"}` (the last `null` when the peer kept the connection open), in
/// corpus order.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let cases = parse_corpus(&text).with_context(|| format!("parsing {}", args.file.display()))?;
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let (raw, closed) =
            exchange(args.connect, &case.request).with_context(|| format!("{:?}", case.name))?;
        let answer = parse_answer(&raw, case.request.starts_with(b"HEAD "));
        results.push(serde_json::json!({
            "name": case.name,
            "status": answer.status,
            "statuses": answer.statuses,
            "body": answer.body,
            "path": answer.path,
            "closed_after_ms": closed.map(|d| d.as_millis() as u64),
        }));
    }
    println!("{}", serde_json::Value::Array(results));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_characters_are_bytes() {
        let cases = parse_corpus(
            r#"[{"name": "a", "request": "GET / HTTP/1.1\r\n\r\n", "status": 200},
                {"name": "high", "request": "\u00ff\u0000"}]"#,
        )
        .unwrap();
        assert_eq!(
            cases,
            vec![
                Case {
                    name: "a".into(),
                    request: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                },
                Case {
                    name: "high".into(),
                    request: vec![0xff, 0x00],
                },
            ]
        );
        let e = parse_corpus(r#"[{"name": "snowman", "request": "\u2603"}]"#).unwrap_err();
        assert!(format!("{e:#}").contains("snowman"), "{e:#}");
        assert!(parse_corpus(r#"{"name": "x"}"#).is_err());
        assert!(parse_corpus(r#"[{"name": "x"}]"#).is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_of("HTTP/1.0 403"), Some(403));
        assert_eq!(status_of("HTTP/1.1 20 OK"), None);
        assert_eq!(status_of("HTTP/1.1 abc OK"), None);
        assert_eq!(status_of("SSH-2.0-OpenSSH"), None);
        assert_eq!(status_of(""), None);
    }

    #[test]
    fn sample_json_then_a_pipelined_answer() {
        let body = r#"{"pod":"cart-1","path":"/public/x","headers":{}}"#;
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{body}HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\n\r\nRBAC: access denied",
            body.len()
        );
        assert_eq!(
            parse_answer(raw.as_bytes(), false),
            Answer {
                status: Some(200),
                statuses: vec![200, 403],
                body: body.into(),
                path: Some("/public/x".into()),
            }
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\n{\"pod\r\n14\r\n\":\"p\",\"path\":\"/a/b\"}\r\n0\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n";
        let answer = parse_answer(raw, false);
        assert_eq!(answer.status, Some(200));
        assert_eq!(answer.statuses, [200, 404]);
        assert_eq!(answer.body, r#"{"pod":"p","path":"/a/b"}"#);
        assert_eq!(answer.path.as_deref(), Some("/a/b"));
        // Trailers belong to the body.
        assert_eq!(
            dechunk(b"2\r\nok\r\n0\r\nx-t: 1\r\n\r\nnext"),
            (b"ok".to_vec(), 20)
        );
        // Cut short: what arrived.
        assert_eq!(dechunk(b"a\r\n01234"), (b"01234".to_vec(), 8));
    }

    #[test]
    fn other_answers() {
        // Not the sample app's JSON.
        let answer = parse_answer(
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\n\r\nRBAC: access denied",
            false,
        );
        assert_eq!(answer.status, Some(403));
        assert_eq!(answer.body, "RBAC: access denied");
        assert_eq!(answer.path, None);
        // Closed without a word.
        assert_eq!(
            parse_answer(b"", false),
            Answer {
                status: None,
                statuses: vec![],
                body: String::new(),
                path: None,
            }
        );
        // Not HTTP: the start of what came.
        let answer = parse_answer("x".repeat(400).as_bytes(), false);
        assert_eq!((answer.status, answer.statuses.len()), (None, 0));
        assert_eq!(answer.body.len(), BODY_CHARS);
        // A head that never ended.
        let answer = parse_answer(b"HTTP/1.1 400 Bad Request\r\nconnection: close", false);
        assert_eq!(answer.status, Some(400));
        // The answer to a HEAD has no body, whatever its Content-Length.
        let answer = parse_answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nHTTP/1.1 403 Forbidden\r\n\r\n",
            true,
        );
        assert_eq!(
            (answer.statuses, answer.body.as_str()),
            (vec![200, 403], "")
        );
        // An interim answer first.
        let answer = parse_answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            false,
        );
        assert_eq!((answer.status, answer.body.as_str()), (Some(201), "ok"));
        assert_eq!(answer.statuses, [201]);
        // No body on 204: what follows is the next answer, or garbage.
        let answer = parse_answer(b"HTTP/1.1 204 No Content\r\n\r\nleftover", false);
        assert_eq!((answer.status, answer.body.as_str()), (Some(204), ""));
        assert_eq!(answer.statuses, [204]);
    }
}
