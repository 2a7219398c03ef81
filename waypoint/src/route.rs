//! Routes as the waypoint runs them: HTTPRoutes and GRPCRoutes compiled once per
//! configuration (regular expressions, header names), indexed by what they attach to,
//! and ordered by the Gateway API's precedence, so that a request takes the first
//! candidate that matches.
//!
//! Which routes apply to a request for Service S on port P: those attached to S (with
//! no port, or P); when S has none, those attached to this waypoint's Gateway whose
//! hostnames match the request's host; when there is none of either, the request goes
//! to S itself. A gRPC request (`content-type: application/grpc…`) tries GRPCRoutes
//! first, then HTTPRoutes; other requests HTTPRoutes only. Hostnames of routes
//! attached to a Service are not used (the Service is the destination).
//!
//! Precedence among HTTPRoute rules: an `Exact` path, then a `RegularExpression`
//! (longer pattern first), then a `PathPrefix` (longer first); then a method match;
//! then more header matches; then more query matches; then (for Gateway parents) the
//! more specific hostname; ties go to the route whose `namespace/name` sorts first,
//! then to rule and match order. GRPCRoute rules: longer service, then longer method,
//! then more header matches. Routes carry no creation time here, so the name decides
//! where the Gateway API would take the older route.

use std::{collections::HashMap, sync::Arc, time::Duration};

use api::proto::config as wire;
use dataplane::discovery::{Config, Key, Route as WireRoute};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::{backend::Backend, filters::Filters, normalize::Normalized, retry::Retry};

#[derive(Debug)]
pub enum PathMatch {
    Exact(String),
    /// Without a trailing `/` (except the root): matches whole segments.
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => {
                p == "/"
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// The prefix a `ReplacePrefixMatch` replaces.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn compile(kind: &str, value: &str) -> Result<Self, String> {
        Ok(match kind {
            "RegularExpression" => ValueMatch::Regex(api::pattern::compile_regex(value)?),
            _ => ValueMatch::Exact(value.to_owned()),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == value,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug)]
pub struct HeaderCondition {
    name: HeaderName,
    value: ValueMatch,
}

fn headers_match(conditions: &[HeaderCondition], headers: &HeaderMap) -> bool {
    conditions.iter().all(|c| {
        headers
            .get_all(&c.name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| c.value.matches(v)))
    })
}

/// One match of a rule.
#[derive(Debug)]
pub enum Match {
    Http {
        path: Option<PathMatch>,
        method: Option<Method>,
        headers: Vec<HeaderCondition>,
        query: Vec<(String, ValueMatch)>,
    },
    Grpc {
        service: Option<ValueMatch>,
        method: Option<ValueMatch>,
        headers: Vec<HeaderCondition>,
    },
}

/// What a request offers to matches.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    pub normalized: &'a Normalized,
    pub headers: &'a HeaderMap,
}

impl Match {
    fn matches(&self, req: &Request<'_>) -> bool {
        match self {
            Match::Http {
                path,
                method,
                headers,
                query,
            } => {
                path.as_ref()
                    .is_none_or(|p| p.matches(&req.normalized.path))
                    && method.as_ref().is_none_or(|m| m == req.method)
                    && headers_match(headers, req.headers)
                    && query.iter().all(|(name, v)| {
                        req.normalized
                            .query_param(name)
                            .is_some_and(|q| v.matches(&q))
                    })
            }
            Match::Grpc {
                service,
                method,
                headers,
            } => {
                // `/package.Service/Method`
                let Some((s, m)) = req
                    .normalized
                    .path
                    .strip_prefix('/')
                    .and_then(|p| p.split_once('/'))
                else {
                    return false;
                };
                !m.contains('/')
                    && service.as_ref().is_none_or(|v| v.matches(s))
                    && method.as_ref().is_none_or(|v| v.matches(m))
                    && headers_match(headers, req.headers)
            }
        }
    }

    /// Precedence, larger first (see the module's documentation).
    fn rank(&self) -> [usize; 6] {
        match self {
            Match::Http {
                path,
                method,
                headers,
                query,
            } => {
                let (kind, len) = match path {
                    Some(PathMatch::Exact(p)) => (3, p.len()),
                    Some(PathMatch::Regex(r)) => (2, r.as_str().len()),
                    Some(PathMatch::Prefix(p)) => (1, p.len()),
                    None => (1, 1),
                };
                [
                    kind,
                    len,
                    usize::from(method.is_some()),
                    headers.len(),
                    query.len(),
                    0,
                ]
            }
            Match::Grpc {
                service,
                method,
                headers,
            } => {
                let len = |v: &Option<ValueMatch>| match v {
                    Some(ValueMatch::Exact(s)) => s.len(),
                    Some(ValueMatch::Regex(r)) => r.as_str().len(),
                    None => 0,
                };
                [len(service), len(method), headers.len(), 0, 0, 0]
            }
        }
    }
}

#[derive(Debug)]
pub struct Rule {
    /// None: every request.
    pub matches: Vec<Match>,
    pub filters: Filters,
    pub backends: Vec<Backend>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    pub retry: Option<Retry>,
}

#[derive(Debug)]
pub struct Route {
    /// `HTTPRoute shop/cart`.
    pub name: String,
    hostnames: Vec<String>,
    pub rules: Vec<Rule>,
}

fn header_conditions(list: &[wire::HeaderMatch]) -> Result<Vec<HeaderCondition>, String> {
    list.iter()
        .map(|h| {
            Ok(HeaderCondition {
                name: h
                    .name
                    .parse()
                    .map_err(|_| format!("{:?} is not a header name", h.name))?,
                value: ValueMatch::compile(&h.r#type, &h.value)?,
            })
        })
        .collect()
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn http_match(m: &wire::HttpRouteMatch) -> Result<Match, String> {
    let path = match &m.path {
        None => None,
        Some(p) => Some(match p.r#type.as_str() {
            "Exact" => PathMatch::Exact(p.value.clone()),
            "RegularExpression" => PathMatch::Regex(api::pattern::compile_regex(&p.value)?),
            _ => {
                let v = p.value.trim_end_matches('/');
                PathMatch::Prefix(if v.is_empty() {
                    "/".to_owned()
                } else {
                    v.to_owned()
                })
            }
        }),
    };
    let method = match m.method.as_str() {
        "" => None,
        s => Some(
            s.parse::<Method>()
                .map_err(|_| format!("{s:?} is not a method"))?,
        ),
    };
    let query = m
        .query_params
        .iter()
        .map(|q| Ok((q.name.clone(), ValueMatch::compile(&q.r#type, &q.value)?)))
        .collect::<Result<_, String>>()?;
    Ok(Match::Http {
        path,
        method,
        headers: header_conditions(&m.headers)?,
        query,
    })
}

fn grpc_match(m: &wire::GrpcRouteMatch) -> Result<Match, String> {
    let (kind, service, method) = match &m.method {
        Some(g) => (g.r#type.as_str(), g.service.as_str(), g.method.as_str()),
        None => ("Exact", "", ""),
    };
    let value = |v: &str| {
        (!v.is_empty())
            .then(|| ValueMatch::compile(kind, v))
            .transpose()
    };
    Ok(Match::Grpc {
        service: value(service)?,
        method: value(method)?,
        headers: header_conditions(&m.headers)?,
    })
}

impl Rule {
    /// A rule of `matches`, with its filters, backends, (request, backend request)
    /// timeouts in milliseconds (0: none) and retries.
    fn compile(
        matches: Vec<Match>,
        (filters, backends): (&[wire::RouteFilter], &[wire::BackendRef]),
        (request_ms, backend_ms): (u64, u64),
        retry: Option<&wire::HttpRetry>,
    ) -> Result<Self, String> {
        Ok(Rule {
            matches,
            filters: Filters::compile(filters)?,
            backends: backends
                .iter()
                .map(Backend::from_wire)
                .collect::<Result<_, _>>()?,
            request_timeout: millis(request_ms),
            backend_timeout: millis(backend_ms),
            retry: retry.map(Retry::compile).filter(|r| r.attempts > 0),
        })
    }
}

impl Route {
    fn compile(key: &Key, route: &WireRoute) -> Result<Self, String> {
        let name = format!("{} {}/{}", key.0, key.1, key.2);
        let rules = match route {
            WireRoute::Http(r) => r
                .rules
                .iter()
                .map(|rule| {
                    Rule::compile(
                        rule.matches
                            .iter()
                            .map(http_match)
                            .collect::<Result<_, _>>()?,
                        (&rule.filters, &rule.backends),
                        (rule.request_timeout_ms, rule.backend_request_timeout_ms),
                        rule.retry.as_ref(),
                    )
                })
                .collect::<Result<Vec<_>, String>>()?,
            WireRoute::Grpc(r) => r
                .rules
                .iter()
                .map(|rule| {
                    Rule::compile(
                        rule.matches
                            .iter()
                            .map(grpc_match)
                            .collect::<Result<_, _>>()?,
                        (&rule.filters, &rule.backends),
                        (0, 0),
                        rule.retry.as_ref(),
                    )
                })
                .collect::<Result<Vec<_>, String>>()?,
        };
        let hostnames = match route {
            WireRoute::Http(r) => &r.hostnames,
            WireRoute::Grpc(r) => &r.hostnames,
        };
        Ok(Route {
            name,
            hostnames: hostnames.iter().map(|h| h.to_ascii_lowercase()).collect(),
            rules,
        })
    }

    /// How specifically the route's hostnames match `host` (larger: more), or `None`
    /// when none does. No hostnames: every host, least specifically.
    fn host_rank(&self, host: &str) -> Option<usize> {
        if self.hostnames.is_empty() {
            return Some(0);
        }
        self.hostnames
            .iter()
            .filter_map(|h| match h.strip_prefix("*.") {
                Some(suffix) => (host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.')
                    .then_some(suffix.len() + 1),
                None => (h == host).then_some(h.len() + 1000),
            })
            .max()
    }
}

/// One rule (and one of its matches, or none for a rule without matches) in the order
/// requests try them.
#[derive(Debug, Clone)]
struct Candidate {
    selected: Selected,
    /// 0: every port of the parent.
    port: u16,
    grpc: bool,
    rank: [usize; 6],
}

impl Candidate {
    fn matches(&self, req: &Request<'_>) -> bool {
        let s = &self.selected;
        match s.matcher {
            None => true,
            Some(i) => s.rule().matches[i].matches(req),
        }
    }
}

/// A rule chosen for a request.
#[derive(Debug, Clone)]
pub struct Selected {
    pub route: Arc<Route>,
    pub rule: usize,
    pub matcher: Option<usize>,
}

impl Selected {
    pub fn rule(&self) -> &Rule {
        &self.route.rules[self.rule]
    }

    /// The path prefix of the match that selected the rule, if it is a prefix match.
    pub fn matched_prefix(&self) -> Option<&str> {
        match &self.rule().matches.get(self.matcher?)? {
            Match::Http { path: Some(p), .. } => p.prefix(),
            _ => None,
        }
    }
}

/// What routing says about a request.
#[derive(Debug)]
pub enum Lookup {
    /// No route applies: the request goes to the Service it was sent to.
    Default,
    Matched(Selected),
    /// Routes apply and none matches: 404.
    NoMatch,
}

#[derive(Debug, Default)]
pub struct Table {
    by_service: HashMap<Key, Vec<Candidate>>,
    gateway: Vec<Candidate>,
}

fn candidates(route: &Arc<Route>, port: u16, grpc: bool) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut push = |rule, matcher, rank| {
        let selected = Selected {
            route: Arc::clone(route),
            rule,
            matcher,
        };
        out.push(Candidate {
            selected,
            port,
            grpc,
            rank,
        });
    };
    for (r, rule) in route.rules.iter().enumerate() {
        if rule.matches.is_empty() {
            push(r, None, if grpc { [0; 6] } else { [1, 1, 0, 0, 0, 0] });
        }
        for (m, matcher) in rule.matches.iter().enumerate() {
            push(r, Some(m), matcher.rank());
        }
    }
    out
}

/// GRPCRoutes first, then by rank (larger first), then name, rule and match order.
fn order(list: &mut [Candidate]) {
    list.sort_by(|a, b| {
        let (sa, sb) = (&a.selected, &b.selected);
        b.grpc
            .cmp(&a.grpc)
            .then(b.rank.cmp(&a.rank))
            .then_with(|| sa.route.name.cmp(&sb.route.name))
            .then(sa.rule.cmp(&sb.rule))
            .then(sa.matcher.cmp(&sb.matcher))
    });
}

impl Table {
    /// The routes of `config` that attach to `waypoint` (namespace, name) or to a
    /// Service, compiled; an error names the route and what does not compile.
    pub fn new(config: &Config, waypoint: (&str, &str)) -> Result<Self, String> {
        let mut table = Table::default();
        for (key, route) in &config.routes {
            let compiled = Arc::new(
                Route::compile(key, route)
                    .map_err(|e| format!("{} {}/{}: {e}", key.0, key.1, key.2))?,
            );
            let (parents, grpc) = match route {
                WireRoute::Http(r) => (&r.parents, false),
                WireRoute::Grpc(r) => (&r.parents, true),
            };
            for p in parents {
                let port = u16::try_from(p.port).unwrap_or(0);
                match p.kind.as_str() {
                    "Service" => table
                        .by_service
                        .entry(("Service".to_owned(), p.namespace.clone(), p.name.clone()))
                        .or_default()
                        .extend(candidates(&compiled, port, grpc)),
                    "Gateway" if (p.namespace.as_str(), p.name.as_str()) == waypoint => {
                        table.gateway.extend(candidates(&compiled, port, grpc))
                    }
                    _ => {}
                }
            }
        }
        for list in table.by_service.values_mut() {
            order(list);
        }
        order(&mut table.gateway);
        Ok(table)
    }

    /// Routing for a request to `service` on `port` (`None`: a workload addressed
    /// directly, which only the waypoint's own routes can match).
    pub fn lookup(
        &self,
        service: Option<&Key>,
        port: u16,
        grpc: bool,
        req: &Request<'_>,
    ) -> Lookup {
        let applies = |c: &&Candidate| (c.port == 0 || c.port == port) && (grpc || !c.grpc);
        if let Some(list) = service.and_then(|s| self.by_service.get(s))
            && list.iter().any(|c| c.port == 0 || c.port == port)
        {
            return match list.iter().filter(applies).find(|c| c.matches(req)) {
                Some(c) => Lookup::Matched(c.selected.clone()),
                None => Lookup::NoMatch,
            };
        }
        let host = req.normalized.host.as_str();
        let mut any = false;
        let mut best: Option<(usize, &Candidate)> = None;
        for c in self.gateway.iter().filter(applies) {
            let Some(host_rank) = c.selected.route.host_rank(host) else {
                continue;
            };
            any = true;
            // The list is in precedence order; a more specific hostname goes first.
            if c.matches(req) && best.is_none_or(|(r, _)| host_rank > r) {
                best = Some((host_rank, c));
            }
        }
        match (best, any) {
            (Some((_, c)), _) => Lookup::Matched(c.selected.clone()),
            (None, true) => Lookup::NoMatch,
            (None, false) => Lookup::Default,
        }
    }
}

#[cfg(test)]
mod tests;
