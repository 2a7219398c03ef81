//! W3C trace context: a request's `traceparent` is continued (or a trace started), the
//! waypoint's own span id goes upstream as the parent, and each sampled request
//! becomes a span for the exporter (`otlp.rs`). `tracestate` passes through untouched.

use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

/// The trace a request belongs to, and the waypoint's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub trace_id: [u8; 16],
    /// The caller's span, if it sent one.
    pub parent: Option<[u8; 8]>,
    /// The waypoint's span for this request.
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex digits of `bytes` (ids on every request: no formatting machinery).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let v: [u8; N] = rand::random();
        if v.iter().any(|b| *b != 0) {
            return v;
        }
    }
}

/// `version-traceid-parentid-flags`, version `00`; ids not all zero.
fn parse(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parse_hex::<16>(parts.next()?)?;
    let parent = parse_hex::<8>(parts.next()?)?;
    let flags = parse_hex::<1>(parts.next()?)?;
    // Version 00 has exactly four parts; later versions may add some.
    if version == "ff" || version.len() != 2 || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags[0] & 1 == 1))
}

impl Context {
    /// Continues the caller's trace, or starts one sampled with probability
    /// `sampling`.
    pub fn from_headers(headers: &HeaderMap, sampling: f64) -> Self {
        let incoming = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse);
        match incoming {
            Some((trace_id, parent, sampled)) => Context {
                trace_id,
                parent: Some(parent),
                span_id: random_nonzero(),
                sampled,
            },
            None => Context {
                trace_id: random_nonzero(),
                parent: None,
                span_id: random_nonzero(),
                sampled: sampling > 0.0 && rand::random::<f64>() < sampling,
            },
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` for the upstream request: this trace, the waypoint's span.
    pub fn traceparent(&self) -> HeaderValue {
        let value = format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        );
        HeaderValue::from_str(&value).expect("hex digits and dashes are a valid header value")
    }
}

/// A finished request, as a span.
#[derive(Debug, Clone)]
pub struct Span {
    pub context: Context,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    pub error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_parent_and_starts_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let c = Context::from_headers(&h, 0.0);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(c.sampled);
        let up = c.traceparent();
        let up = up.to_str().unwrap();
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        assert!(up.ends_with("-01"));
        assert!(
            !up.contains("00f067aa0ba902b7"),
            "the waypoint's own span is the parent"
        );

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            h.insert("traceparent", bad.parse().unwrap());
            let c = Context::from_headers(&h, 1.0);
            assert_eq!(c.parent, None, "{bad}");
            assert!(c.sampled, "a new trace at sampling 1");
        }
        assert!(!Context::from_headers(&HeaderMap::new(), 0.0).sampled);
    }
}
