//! The one normalization of a request that routing, authorization and the upstream
//! all see: a request is matched, authorized and forwarded with the same path and
//! host, so that what a policy allowed is exactly what the application receives.
//!
//! The path (request target in origin form, or the path of an absolute form):
//! 1. It must start with `/` (or be `*` for `OPTIONS`). A fragment (`#…`) is removed.
//! 2. Percent-encodings are decoded once. An encoded unreserved character (letters,
//!    digits, `-`, `.`, `_`, `~`) becomes itself; an encoded `/` (`%2F`) or `\`
//!    (`%5C`) becomes `/`. Anything else stays encoded, with uppercase hex. An invalid
//!    encoding (`%G1`, a lone `%`), or encoded bytes that are not UTF-8 (overlong forms
//!    such as `%C0%AF`), is refused. So `%252F` stays `%252F`: one decoding, never two.
//! 3. A `\` is a `/`.
//! 4. In each segment, everything from a `;` on (path parameters) is removed.
//! 5. Empty segments are removed (`//` becomes `/`), then `.` and `..` segments as RFC
//!    3986 says (never above the root). A trailing `/` stays.
//! 6. Case is kept: paths are case-sensitive.
//!
//! The query is kept as it came, for the upstream; route matches read its parameters
//! percent-decoded.
//!
//! The host (`:authority`, `Host`, or the authority of an absolute form, which wins):
//! exactly one; lowercase; without a trailing dot; the port apart. An HTTP/1.1 request
//! without one, with two `Host` headers, or HTTP/2 with a `host` header that differs
//! from `:authority`, is refused; an HTTP/1.0 request without one takes the address
//! its tunnel was opened for.
//!
//! Messages with both `Content-Length` and `Transfer-Encoding` are refused (request
//! smuggling); HTTP/1.1 framing errors are refused by the parser itself.

use std::fmt::Write as _;

use http::{HeaderMap, Method, Request, Version, header};

/// A request as routing and policy see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub path: String,
    /// As received, without the `?`.
    pub query: Option<String>,
    /// Lowercase, without port or trailing dot.
    pub host: String,
    pub port: Option<u16>,
}

impl Normalized {
    /// `path?query`, for the upstream request.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is kept).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode_lossy(k) == name).then(|| percent_decode_lossy(v))
        })
    }
}

/// Why a request was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the request target must be a path starting with '/'")]
    NotOriginForm,
    #[error("invalid percent-encoding in the path")]
    BadEncoding,
    #[error("percent-encoded bytes in the path are not UTF-8")]
    NotUtf8,
    #[error("the request has no host")]
    NoHost,
    #[error("the request has more than one host")]
    ManyHosts,
    #[error("the host is not a valid host name or address")]
    BadHost,
    #[error("Content-Length and Transfer-Encoding together")]
    Smuggling,
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotOriginForm => "bad_target",
            Rejection::BadEncoding => "bad_encoding",
            Rejection::NotUtf8 => "bad_utf8",
            Rejection::NoHost => "no_host",
            Rejection::ManyHosts => "many_hosts",
            Rejection::BadHost => "bad_host",
            Rejection::Smuggling => "smuggling",
        }
    }
}

/// Normalizes `req` (see the module's documentation); `fallback` is the host of an
/// HTTP/1.0 request that names none.
pub fn request<B>(req: &Request<B>, fallback: &str) -> Result<Normalized, Rejection> {
    let headers = req.headers();
    if headers.contains_key(header::CONTENT_LENGTH)
        && headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(Rejection::Smuggling);
    }
    let (host, port) = host(req, fallback)?;
    let uri = req.uri();
    let raw = uri.path_and_query().map_or("/", |p| p.path());
    let path = if raw == "*" && req.method() == Method::OPTIONS {
        "*".to_owned()
    } else {
        path(raw)?
    };
    Ok(Normalized {
        path,
        query: uri.query().map(str::to_owned),
        host,
        port,
    })
}

fn host<B>(req: &Request<B>, fallback: &str) -> Result<(String, Option<u16>), Rejection> {
    let mut values = req.headers().get_all(header::HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(Rejection::ManyHosts);
    }
    let header = header
        .map(|h| h.to_str().map_err(|_| Rejection::BadHost))
        .transpose()?;
    let authority = req.uri().authority().map(|a| a.as_str());
    let chosen = match (authority, header) {
        // HTTP/2: `:authority`, and a `host` header may only repeat it.
        (Some(a), Some(h)) if req.version() == Version::HTTP_2 && !a.eq_ignore_ascii_case(h) => {
            return Err(Rejection::ManyHosts);
        }
        // HTTP/1.1 absolute form: its authority wins over `Host` (RFC 9112 3.2.2).
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) if req.version() == Version::HTTP_10 => fallback,
        (None, None) => return Err(Rejection::NoHost),
    };
    split_host(chosen)
}

/// `host[:port]`, `[v6][:port]`: lowercase host without trailing dot, and the port.
pub fn split_host(authority: &str) -> Result<(String, Option<u16>), Rejection> {
    if authority.contains('@') {
        return Err(Rejection::BadHost);
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(Rejection::BadHost)?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| Rejection::BadHost)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(Rejection::BadHost)?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !ok {
            return Err(Rejection::BadHost);
        }
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.is_empty() {
            return Err(Rejection::BadHost);
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(Rejection::BadHost)?,
        ),
    };
    Ok((host, port))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Steps 1 to 5 of the module's documentation on a raw path.
pub fn path(raw: &str) -> Result<String, Rejection> {
    let raw = raw.split('#').next().unwrap_or_default();
    if !raw.starts_with('/') && !raw.starts_with('\\') {
        return Err(Rejection::NotOriginForm);
    }
    // Decode once: unreserved characters and slashes; the rest stays encoded.
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b >= 0x80 {
            // A literal non-ASCII byte (of valid UTF-8: `raw` is a str) is written
            // encoded, as the encoded form of the same character is.
            let _ = write!(decoded, "%{b:02X}");
            i += 1;
            continue;
        }
        if b != b'%' {
            decoded.push(if b == b'\\' { '/' } else { char::from(b) });
            i += 1;
            continue;
        }
        let value = |at: usize| -> Result<u8, Rejection> {
            let (Some(h), Some(l)) = (bytes.get(at + 1), bytes.get(at + 2)) else {
                return Err(Rejection::BadEncoding);
            };
            match (hex(*h), hex(*l)) {
                (Some(h), Some(l)) => Ok(h << 4 | l),
                _ => Err(Rejection::BadEncoding),
            }
        };
        let v = value(i)?;
        if v < 0x80 {
            if is_unreserved(v) {
                decoded.push(char::from(v));
            } else if v == b'/' || v == b'\\' {
                decoded.push('/');
            } else {
                let _ = write!(decoded, "%{v:02X}");
            }
            i += 3;
            continue;
        }
        // A run of encoded non-ASCII bytes must be UTF-8; it stays encoded.
        let mut run = Vec::new();
        while i < bytes.len() && bytes[i] == b'%' {
            let v = value(i)?;
            if v < 0x80 {
                break;
            }
            run.push(v);
            i += 3;
        }
        if std::str::from_utf8(&run).is_err() {
            return Err(Rejection::NotUtf8);
        }
        for v in run {
            let _ = write!(decoded, "%{v:02X}");
        }
    }
    // Segments: parameters off, empty ones out, then dot segments.
    let raw_segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(raw_segments.len());
    let mut trailing = false;
    for (n, segment) in raw_segments.iter().enumerate() {
        let segment = segment.split(';').next().unwrap_or_default();
        let last = n + 1 == raw_segments.len();
        match segment {
            "" => trailing = last,
            "." => trailing = last,
            ".." => {
                out.pop();
                trailing = last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    Ok(path)
}

/// Decodes every percent-encoding it can; what does not decode stays as it is.
fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Headers that belong to one connection and are never forwarded (RFC 9110 7.6.1),
/// with those the `Connection` header names. `te: trailers` is kept (gRPC needs it).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| !(keep_upgrade && *n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    let trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for n in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "trailer",
        "transfer-encoding",
    ] {
        headers.remove(n);
    }
    headers.remove(header::TE);
    if trailers {
        headers.insert(header::TE, header::HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../etc", "/etc"),
            ("/%2e%2E/admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/admin%2Fx", "/admin/x"),
            ("/admin%2fx", "/admin/x"),
            ("/admin%5Cx", "/admin/x"),
            ("/admin\\x", "/admin/x"),
            ("/%61dmin", "/admin"),
            ("/a%7eb", "/a~b"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb"),
            ("/a%252Fb", "/a%252Fb"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/public/..;/admin", "/admin"),
            ("/admin;", "/admin"),
            ("/a#b", "/a"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9"),
            ("/Admin", "/Admin"),
        ] {
            assert_eq!(path(raw).as_deref(), Ok(want), "{raw}");
            // A fixed point: no second pass reaches another path.
            assert_eq!(path(want).as_deref(), Ok(want), "{want}");
        }
        for (raw, why) in [
            ("admin", Rejection::NotOriginForm),
            ("/a%2", Rejection::BadEncoding),
            ("/a%g1", Rejection::BadEncoding),
            ("/a%", Rejection::BadEncoding),
            ("/%C0%AF", Rejection::NotUtf8),
            ("/%E0%80%AF", Rejection::NotUtf8),
            ("/%FF", Rejection::NotUtf8),
        ] {
            assert_eq!(path(raw), Err(why), "{raw}");
        }
    }

    fn req(builder: http::request::Builder) -> Result<Normalized, Rejection> {
        request(&builder.body(()).unwrap(), "10.96.0.10:80")
    }

    #[test]
    fn hosts() {
        let n = req(Request::get("/x?a=1").header("host", "Cart.Shop.:8080")).unwrap();
        assert_eq!((n.host.as_str(), n.port), ("cart.shop", Some(8080)));
        assert_eq!(n.path_and_query(), "/x?a=1");
        let n = req(Request::get("http://Other/y").header("host", "cart")).unwrap();
        assert_eq!((n.host.as_str(), n.path.as_str()), ("other", "/y"));
        let n = req(Request::get("/").header("host", "[FE80::1]:80")).unwrap();
        assert_eq!(n.host, "[fe80::1]");
        assert_eq!(req(Request::get("/")), Err(Rejection::NoHost));
        let old = req(Request::get("/").version(Version::HTTP_10)).unwrap();
        assert_eq!((old.host.as_str(), old.port), ("10.96.0.10", Some(80)));
        assert_eq!(
            req(Request::get("/").header("host", "a").header("host", "b")),
            Err(Rejection::ManyHosts)
        );
        for bad in ["a b", "user@host", "host:99999", "host:", "[::1", ":80"] {
            assert_eq!(
                req(Request::get("/").header("host", bad)),
                Err(Rejection::BadHost),
                "{bad}"
            );
        }
        let h2 = Request::get("http://cart/").version(Version::HTTP_2);
        assert!(req(h2.header("host", "cart")).is_ok());
        let h2 = Request::get("http://cart/").version(Version::HTTP_2);
        assert_eq!(req(h2.header("host", "admin")), Err(Rejection::ManyHosts));
        assert_eq!(
            req(Request::post("/")
                .header("host", "a")
                .header("content-length", "3")
                .header("transfer-encoding", "chunked")),
            Err(Rejection::Smuggling)
        );
        let n = req(Request::options("*").header("host", "a")).unwrap();
        assert_eq!(n.path, "*");
    }

    #[test]
    fn query_params_are_decoded_for_matching() {
        let n = req(Request::get("/?v=2&name=a%20b&v=3&flag").header("host", "a")).unwrap();
        assert_eq!(n.query_param("v").as_deref(), Some("2"));
        assert_eq!(n.query_param("name").as_deref(), Some("a b"));
        assert_eq!(n.query_param("flag").as_deref(), Some(""));
        assert_eq!(n.query_param("x"), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers, deflate".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}
