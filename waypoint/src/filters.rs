//! A rule's filters, compiled: request and response header modifiers, a redirect, a
//! URL rewrite, mirrors, and from a `weft.dev` TrafficFilter a rate limit and faults.
//! They apply in this order: the rate limit, then the faults (a delay, an abort) turn a
//! request away before anything else; the request header modifier and the rewrite
//! change the request that goes upstream (and to mirrors); a redirect answers instead
//! of forwarding; the response header modifier changes the answer.

use std::time::Duration;

use api::proto::config::{self as wire, route_filter::Filter};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::{backend::Backend, fault::Fault, ratelimit::Limit};

#[derive(Debug, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    fn compile(m: &wire::HeaderModifier) -> Result<Self, String> {
        let pair = |h: &wire::HttpHeader| -> Result<(HeaderName, HeaderValue), String> {
            Ok((
                h.name
                    .parse()
                    .map_err(|_| format!("{:?} is not a header name", h.name))?,
                h.value
                    .parse()
                    .map_err(|_| format!("{:?} is not a header value", h.value))?,
            ))
        };
        Ok(HeaderOps {
            set: m.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: m.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: m
                .remove
                .iter()
                .map(|n| n.parse().map_err(|_| format!("{n:?} is not a header name")))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    Full(String),
    /// Replaces the prefix that the rule's match matched.
    Prefix(String),
}

impl PathChange {
    fn compile(p: Option<&wire::PathModifier>) -> Option<Self> {
        let p = p?;
        Some(match p.r#type.as_str() {
            "ReplacePrefixMatch" => PathChange::Prefix(p.value.clone()),
            _ => PathChange::Full(p.value.clone()),
        })
    }

    /// `path` changed; `matched` is the prefix the rule matched (for a prefix change).
    pub fn apply(&self, path: &str, matched: Option<&str>) -> String {
        match self {
            PathChange::Full(p) => p.clone(),
            PathChange::Prefix(replacement) => {
                let rest = matched
                    .filter(|m| *m != "/")
                    .and_then(|m| path.strip_prefix(m))
                    .unwrap_or(path);
                let rest = rest.trim_start_matches('/');
                let base = replacement.trim_end_matches('/');
                match (base.is_empty(), rest.is_empty()) {
                    (true, true) => "/".to_owned(),
                    (true, false) => format!("/{rest}"),
                    (false, true) => base.to_owned(),
                    (false, false) => format!("{base}/{rest}"),
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
    pub port: Option<u16>,
    pub status: StatusCode,
}

impl Redirect {
    /// The `Location` for a request with these parts (Gateway API: the port is the
    /// redirect's, else the scheme's well-known port when the scheme changes, else the
    /// request's; a well-known port is left out).
    pub fn location(
        &self,
        (scheme, host, port): (&str, &str, u16),
        path: &str,
        query: Option<&str>,
        matched: Option<&str>,
    ) -> String {
        let to_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let well_known = |s: &str| if s == "https" { 443 } else { 80 };
        let to_port = self.port.unwrap_or(if self.scheme.is_some() {
            well_known(to_scheme)
        } else {
            port
        });
        let to_host = self.hostname.as_deref().unwrap_or(host);
        let to_path = self
            .path
            .as_ref()
            .map_or_else(|| path.to_owned(), |p| p.apply(path, matched));
        let mut out = format!("{to_scheme}://{to_host}");
        if to_port != well_known(to_scheme) {
            out.push_str(&format!(":{to_port}"));
        }
        out.push_str(&to_path);
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

#[derive(Debug)]
pub struct Rewrite {
    pub hostname: Option<HeaderValue>,
    pub path: Option<PathChange>,
}

#[derive(Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderOps>,
    pub response_headers: Option<HeaderOps>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Backend>,
    pub fault: Option<Fault>,
    /// Its bucket is the waypoint's (`ratelimit::Buckets`), by route and rule.
    pub rate_limit: Option<Limit>,
}

impl Filters {
    pub fn compile(list: &[wire::RouteFilter]) -> Result<Self, String> {
        let mut f = Filters::default();
        for filter in list.iter().filter_map(|f| f.filter.as_ref()) {
            match filter {
                Filter::RequestHeaderModifier(m) => {
                    f.request_headers = Some(HeaderOps::compile(m)?)
                }
                Filter::ResponseHeaderModifier(m) => {
                    f.response_headers = Some(HeaderOps::compile(m)?)
                }
                Filter::RequestRedirect(r) => {
                    f.redirect = Some(Redirect {
                        scheme: (!r.scheme.is_empty()).then(|| r.scheme.clone()),
                        hostname: (!r.hostname.is_empty()).then(|| r.hostname.clone()),
                        path: PathChange::compile(r.path.as_ref()),
                        port: u16::try_from(r.port).ok().filter(|p| *p != 0),
                        status: StatusCode::from_u16(r.status_code as u16)
                            .ok()
                            .filter(|s| s.is_redirection())
                            .unwrap_or(StatusCode::FOUND),
                    })
                }
                Filter::UrlRewrite(r) => {
                    f.rewrite = Some(Rewrite {
                        hostname: (!r.hostname.is_empty())
                            .then(|| {
                                r.hostname
                                    .parse()
                                    .map_err(|_| format!("{:?} is not a host", r.hostname))
                            })
                            .transpose()?,
                        path: PathChange::compile(r.path.as_ref()),
                    })
                }
                Filter::RequestMirror(m) => {
                    if let Some(b) = &m.backend {
                        f.mirrors.push(Backend::from_wire(b)?);
                    }
                }
                Filter::Fault(fault) => f.fault = Some(Fault::compile(fault)?),
                Filter::RateLimit(r) => {
                    f.rate_limit = Some(Limit {
                        requests: r.requests,
                        interval: Duration::from_millis(r.interval_ms.max(1)),
                        burst: r.burst,
                    })
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_keeps_segments() {
        let p = PathChange::Prefix("/new".into());
        assert_eq!(p.apply("/old/a/b", Some("/old")), "/new/a/b");
        assert_eq!(p.apply("/old", Some("/old")), "/new");
        assert_eq!(p.apply("/old/", Some("/old")), "/new");
        let root = PathChange::Prefix("/".into());
        assert_eq!(root.apply("/old/a", Some("/old")), "/a");
        assert_eq!(root.apply("/old", Some("/old")), "/");
        let from_root = PathChange::Prefix("/v2".into());
        assert_eq!(from_root.apply("/x", Some("/")), "/v2/x");
        assert_eq!(PathChange::Full("/f".into()).apply("/anything", None), "/f");
    }

    #[test]
    fn redirect_locations() {
        let r = Redirect {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathChange::Full("/new".into())),
            port: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(
            r.location(("http", "cart.shop", 80), "/old", Some("a=1"), None),
            "https://cart.shop/new?a=1"
        );
        let r = Redirect {
            scheme: None,
            hostname: Some("other".into()),
            path: None,
            port: None,
            status: StatusCode::FOUND,
        };
        assert_eq!(
            r.location(("http", "cart", 8080), "/p", None, None),
            "http://other:8080/p"
        );
    }

    #[test]
    fn header_operations_in_order() {
        let ops = HeaderOps::compile(&wire::HeaderModifier {
            set: vec![wire::HttpHeader {
                name: "x-a".into(),
                value: "1".into(),
            }],
            add: vec![wire::HttpHeader {
                name: "x-b".into(),
                value: "2".into(),
            }],
            remove: vec!["x-c".into()],
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-a", "0".parse().unwrap());
        h.insert("x-b", "1".parse().unwrap());
        h.insert("x-c", "gone".parse().unwrap());
        ops.apply(&mut h);
        assert_eq!(h["x-a"], "1");
        assert_eq!(h.get_all("x-b").iter().count(), 2);
        assert!(!h.contains_key("x-c"));
        let bad = HeaderOps::compile(&wire::HeaderModifier {
            set: vec![wire::HttpHeader {
                name: "bad name".into(),
                value: "1".into(),
            }],
            ..Default::default()
        });
        assert!(bad.unwrap_err().contains("is not a header name"));
    }
}
