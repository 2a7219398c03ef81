//! Validation of a set of documents: each one on its own (names, labels, addresses,
//! ports, principals …) and all of them together (duplicates, references, rules that
//! cannot be enforced where they apply). The same code serves `weftctl validate`, the
//! admission webhook and the control plane's sources; every problem names the document,
//! the field path and the reason.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::{
    Action, AuthorizationPolicy, BackendRef, Document, EndpointSlice, HeaderMatch, HeaderModifier,
    HttpRouteRetry, HttpRouteTimeouts, IntOrString, LabelSelector, Metadata, Object, Origin,
    ParentRef, PathMatchType, PathModifier, PathModifierType, Problem, RouteFilter,
    RouteFilterType, SERVICE_NAME_LABEL, parse,
};

/// Enrollment label (namespace: `enabled`; pod: `disabled` opts out).
pub const MESH_LABEL: &str = "weft.dev/mesh";
/// Waypoint binding label on a namespace, Service or workload: a Gateway's name.
pub const USE_WAYPOINT_LABEL: &str = "weft.dev/use-waypoint";
/// The gateway class of Weft's waypoints.
pub const WAYPOINT_CLASS: &str = "weft-waypoint";
/// Policies in this namespace apply to the whole mesh.
pub const ROOT_NAMESPACE: &str = "weft-system";
/// The label that makes a workload one of a waypoint's (the Gateway API's label for the
/// pods of a Gateway): the Gateway's name, in the Gateway's namespace.
pub const WAYPOINT_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

struct Check<'a> {
    doc: &'a Document,
    problems: &'a mut Vec<Problem>,
}

impl Check<'_> {
    fn bad(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            origin: self.doc.origin.clone(),
            object: Some(self.doc.object.describe()),
            path: path.into(),
            reason: reason.into(),
        });
    }
}

/// DNS-1123 label (namespaces, most names).
pub(crate) fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1 to 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || s.starts_with('-')
        || s.ends_with('-')
    {
        return Err(format!(
            "{s:?} must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// DNS-1123 subdomain (object names that may hold dots).
pub(crate) fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1 to 253 characters"));
    }
    for part in s.split('.') {
        dns_label(part).map_err(|_| {
            format!("{s:?} must be lowercase letters, digits, '-' and '.', in labels of 1 to 63")
        })?;
    }
    Ok(())
}

/// Label keys: optional DNS-subdomain prefix and `/`, then a name of up to 63
/// alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|e| format!("key prefix: {e}"))?;
    }
    label_value(name).and_then(|()| {
        if name.is_empty() {
            Err("the key name is empty".to_owned())
        } else {
            Ok(())
        }
    })
}

fn label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err(format!("{v:?} is longer than 63 characters"));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    if !v.chars().all(ok_char) || !edge(v.chars().next()) || !edge(v.chars().last()) {
        return Err(format!(
            "{v:?} must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn port(p: i64) -> Result<u16, String> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{p} is not a port (1-65535)"))
}

fn cidr(s: &str) -> Result<(), String> {
    let (ip, len) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
    if !len.is_empty() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let n: u8 = len
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?;
        let _ = n;
    }
    Ok(())
}

/// Principals as in Istio: `<trust-domain>/ns/<ns>/sa/<sa>`, `*`, or a prefix or suffix
/// with one `*`.
fn principal(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    if p.matches('*').count() > 1 || (p.contains('*') && !p.starts_with('*') && !p.ends_with('*')) {
        return Err(format!("{p:?}: '*' may only stand alone, first or last"));
    }
    if p.contains('*') {
        return Ok(());
    }
    if p.starts_with("spiffe://") {
        return Err(format!(
            "{p:?}: write principals without spiffe:// (trust-domain/ns/<namespace>/sa/<service-account>)"
        ));
    }
    api::identity::Identity::from_str_unprefixed(p)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A Gateway API duration (GEP-2257): one to four parts of up to five digits, each with
/// a unit `h`, `m`, `s` or `ms` (`1h30m`, `250ms`, `0s`).
pub(crate) fn gateway_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 10s, 1m30s, 250ms)");
    let mut rest = s;
    let mut total = std::time::Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else {
            match rest.as_bytes().first() {
                Some(b'h') => (std::time::Duration::from_secs(3600), 1),
                Some(b'm') => (std::time::Duration::from_secs(60), 1),
                Some(b's') => (std::time::Duration::from_secs(1), 1),
                _ => return Err(bad()),
            }
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// An HTTP header name: a token (RFC 9110), without a `:` pseudo-header.
fn header_name(name: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(format!("{name:?} is not an HTTP header name"));
    }
    Ok(())
}

/// A value of a policy's path or header condition: exact, one `*` first or last, or
/// `*` alone.
fn wildcard_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty".to_owned());
    }
    let stars = v.matches('*').count();
    if stars > 1 || (stars == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*')) {
        return Err(format!("{v:?}: '*' may only stand alone, first or last"));
    }
    Ok(())
}

fn selector(c: &mut Check<'_>, path: &str, s: &LabelSelector) {
    for (k, v) in &s.match_labels {
        if let Err(e) = label_key(k).and_then(|()| label_value(v)) {
            c.bad(
                format!("{path}.matchLabels.{k}"),
                format!("can never match: {e}"),
            );
        }
    }
}

fn metadata(c: &mut Check<'_>, m: &Metadata, namespaced: bool) {
    if let Err(e) = dns_subdomain(&m.name) {
        c.bad("metadata.name", e);
    }
    match (&m.namespace, namespaced) {
        (None, true) => c.bad("metadata.namespace", "required"),
        (Some(_), false) => c.bad("metadata.namespace", "this kind is not namespaced"),
        (Some(ns), true) => {
            if let Err(e) = dns_label(ns) {
                c.bad("metadata.namespace", e);
            }
        }
        (None, false) => {}
    }
    for (k, v) in &m.labels {
        if let Err(e) = label_key(k).and_then(|()| label_value(v)) {
            c.bad(format!("metadata.labels.{k}"), e);
        }
    }
    if let Some(v) = m.labels.get(MESH_LABEL)
        && v != "enabled"
        && v != "disabled"
    {
        c.bad(
            format!("metadata.labels.{MESH_LABEL}"),
            format!("{v:?}: expected \"enabled\" or \"disabled\""),
        );
    }
}

/// Checks every document alone and the set together.
pub fn validate(docs: &[Document]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let index = Index::new(docs);
    let mut seen: BTreeMap<String, &Origin> = BTreeMap::new();
    for doc in docs {
        let mut c = Check {
            doc,
            problems: &mut problems,
        };
        let key = doc.object.describe();
        if let Some(first) = seen.get(&key) {
            c.bad(
                "metadata.name",
                format!("{key} is declared twice (also in {first})"),
            );
        } else {
            seen.insert(key, &doc.origin);
        }
        let namespaced = !matches!(doc.object, Object::Namespace(_));
        metadata(&mut c, doc.object.metadata(), namespaced);
        if let Some(ns) = &doc.object.metadata().namespace
            && index.has_namespaces
            && !index.namespaces.contains_key(ns.as_str())
        {
            c.bad(
                "metadata.namespace",
                format!("namespace {ns:?} is not declared"),
            );
        }
        match &doc.object {
            Object::Namespace(n) => waypoint_label(&mut c, &index, &n.metadata.name, &n.metadata),
            Object::Service(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                waypoint_label(&mut c, &index, ns, &s.metadata);
                for (i, ip) in s
                    .spec
                    .cluster_ip
                    .iter()
                    .chain(&s.spec.cluster_ips)
                    .enumerate()
                {
                    if ip != "None" && ip.parse::<IpAddr>().is_err() {
                        let path = if i == 0 && s.spec.cluster_ip.is_some() {
                            "spec.clusterIP".to_owned()
                        } else {
                            format!(
                                "spec.clusterIPs[{}]",
                                i - usize::from(s.spec.cluster_ip.is_some())
                            )
                        };
                        c.bad(path, format!("{ip:?} is not an IP address"));
                    }
                }
                // Kubernetes allows one port number once per protocol (DNS: 53/UDP and
                // 53/TCP).
                let mut ports = BTreeSet::new();
                for (i, p) in s.spec.ports.iter().enumerate() {
                    let protocol = p.protocol.as_deref().unwrap_or("TCP");
                    match port(p.port) {
                        Err(e) => c.bad(format!("spec.ports[{i}].port"), e),
                        Ok(n) if !ports.insert((n, protocol)) => c.bad(
                            format!("spec.ports[{i}].port"),
                            format!("port {n} ({protocol}) appears twice"),
                        ),
                        Ok(_) => {}
                    }
                    if let Some(IntOrString::Int(t)) = &p.target_port
                        && let Err(e) = port(*t)
                    {
                        c.bad(format!("spec.ports[{i}].targetPort"), e);
                    }
                }
                for (k, v) in &s.spec.selector {
                    if let Err(e) = label_key(k).and_then(|()| label_value(v)) {
                        c.bad(
                            format!("spec.selector.{k}"),
                            format!("can never match: {e}"),
                        );
                    }
                }
            }
            Object::EndpointSlice(e) => endpoint_slice(&mut c, &index, e),
            Object::Workload(w) => {
                let ns = w.metadata.namespace.as_deref().unwrap_or_default();
                waypoint_label(&mut c, &index, ns, &w.metadata);
                if let Err(e) = dns_label(&w.spec.service_account) {
                    c.bad("spec.serviceAccount", e);
                }
                if let Err(e) = dns_subdomain(&w.spec.node) {
                    c.bad("spec.node", e);
                }
                if w.spec.addresses.is_empty() {
                    c.bad("spec.addresses", "at least one address is needed");
                }
                for (i, a) in w.spec.addresses.iter().enumerate() {
                    if a.parse::<IpAddr>().is_err() {
                        c.bad(
                            format!("spec.addresses[{i}]"),
                            format!("{a:?} is not an IP address"),
                        );
                    }
                }
            }
            Object::AuthorizationPolicy(p) => policy(&mut c, &index, p),
            Object::PeerAuthentication(p) => {
                if let Some(s) = &p.spec.selector {
                    selector(&mut c, "spec.selector", s);
                }
            }
            Object::Gateway(g) => {
                if g.spec.gateway_class_name != WAYPOINT_CLASS {
                    c.bad(
                        "spec.gatewayClassName",
                        format!(
                            "{:?}: Weft serves Gateways of class {WAYPOINT_CLASS:?} only",
                            g.spec.gateway_class_name
                        ),
                    );
                }
                if g.spec.listeners.is_empty() {
                    c.bad("spec.listeners", "at least one listener is needed");
                }
                for (i, l) in g.spec.listeners.iter().enumerate() {
                    if let Err(e) = port(l.port) {
                        c.bad(format!("spec.listeners[{i}].port"), e);
                    }
                    if l.protocol != "HBONE" {
                        c.bad(
                            format!("spec.listeners[{i}].protocol"),
                            format!(
                                "{:?}: a waypoint listens with protocol \"HBONE\"",
                                l.protocol
                            ),
                        );
                    }
                }
            }
            Object::HttpRoute(r) => {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                parents(&mut c, &index, ns, &r.spec.parent_refs);
                for (i, rule) in r.spec.rules.iter().enumerate() {
                    for (j, m) in rule.matches.iter().enumerate() {
                        if let Some(path) = &m.path
                            && path.type_ != PathMatchType::RegularExpression
                            && !path.value.starts_with('/')
                        {
                            c.bad(
                                format!("spec.rules[{i}].matches[{j}].path.value"),
                                format!("{:?} must start with '/'", path.value),
                            );
                        }
                        if let Some(method) = &m.method
                            && !HTTP_METHODS.contains(&method.as_str())
                        {
                            c.bad(
                                format!("spec.rules[{i}].matches[{j}].method"),
                                format!("{method:?} is not an HTTP method"),
                            );
                        }
                        header_matches(
                            &mut c,
                            &format!("spec.rules[{i}].matches[{j}]"),
                            &m.headers,
                        );
                    }
                    let prefix_matched = !rule.matches.is_empty()
                        && rule.matches.iter().all(|m| {
                            m.path
                                .as_ref()
                                .is_some_and(|p| p.type_ == PathMatchType::PathPrefix)
                        });
                    filters(
                        &mut c,
                        &index,
                        ns,
                        &format!("spec.rules[{i}]"),
                        &rule.filters,
                        RouteKind::Http { prefix_matched },
                    );
                    backends(
                        &mut c,
                        &index,
                        ns,
                        &format!("spec.rules[{i}]"),
                        &rule.backend_refs,
                    );
                    if let Some(t) = &rule.timeouts {
                        timeouts(&mut c, &format!("spec.rules[{i}].timeouts"), t);
                    }
                    if let Some(r) = &rule.retry {
                        retry(&mut c, &format!("spec.rules[{i}].retry"), r);
                    }
                }
            }
            Object::GrpcRoute(r) => {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                parents(&mut c, &index, ns, &r.spec.parent_refs);
                for (i, rule) in r.spec.rules.iter().enumerate() {
                    for (j, m) in rule.matches.iter().enumerate() {
                        if let Some(method) = &m.method {
                            if let Some(s) = &method.service
                                && (s.is_empty()
                                    || !s
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                            {
                                c.bad(
                                    format!("spec.rules[{i}].matches[{j}].method.service"),
                                    format!("{s:?} is not a gRPC service name (package.Service)"),
                                );
                            }
                            if method.service.is_none() && method.method.is_none() {
                                c.bad(
                                    format!("spec.rules[{i}].matches[{j}].method"),
                                    "give a service, a method or both",
                                );
                            }
                            match_type(
                                &mut c,
                                &format!("spec.rules[{i}].matches[{j}].method.type"),
                                method.type_.as_deref(),
                            );
                        }
                        header_matches(
                            &mut c,
                            &format!("spec.rules[{i}].matches[{j}]"),
                            &m.headers,
                        );
                    }
                    filters(
                        &mut c,
                        &index,
                        ns,
                        &format!("spec.rules[{i}]"),
                        &rule.filters,
                        RouteKind::Grpc,
                    );
                    backends(
                        &mut c,
                        &index,
                        ns,
                        &format!("spec.rules[{i}]"),
                        &rule.backend_refs,
                    );
                }
            }
        }
    }
    problems
}

/// What the set declares, for references between documents.
struct Index<'a> {
    has_namespaces: bool,
    namespaces: BTreeMap<&'a str, &'a Metadata>,
    services: BTreeSet<(&'a str, &'a str)>,
    waypoints: BTreeSet<(&'a str, &'a str)>,
    /// Workloads by namespace.
    workloads: BTreeMap<&'a str, Vec<IndexedWorkload<'a>>>,
}

/// A workload's labels and whether a waypoint serves it.
type IndexedWorkload<'a> = (&'a BTreeMap<String, String>, bool);

impl<'a> Index<'a> {
    fn new(docs: &'a [Document]) -> Self {
        let mut index = Index {
            has_namespaces: false,
            namespaces: BTreeMap::new(),
            services: BTreeSet::new(),
            waypoints: BTreeSet::new(),
            workloads: BTreeMap::new(),
        };
        for d in docs {
            let m = d.object.metadata();
            let ns = m.namespace.as_deref().unwrap_or_default();
            match &d.object {
                Object::Namespace(n) => {
                    index.has_namespaces = true;
                    index.namespaces.insert(&n.metadata.name, &n.metadata);
                }
                Object::Service(_) => {
                    index.services.insert((ns, &m.name));
                }
                Object::Gateway(g) if g.spec.gateway_class_name == WAYPOINT_CLASS => {
                    index.waypoints.insert((ns, &m.name));
                }
                _ => {}
            }
        }
        for d in docs {
            if let Object::Workload(w) = &d.object {
                let ns = w.metadata.namespace.as_deref().unwrap_or_default();
                let ns_waypoint = index
                    .namespaces
                    .get(ns)
                    .is_some_and(|m| m.labels.contains_key(USE_WAYPOINT_LABEL));
                let has_waypoint =
                    ns_waypoint || w.metadata.labels.contains_key(USE_WAYPOINT_LABEL);
                index
                    .workloads
                    .entry(ns)
                    .or_default()
                    .push((&w.metadata.labels, has_waypoint));
            }
        }
        index
    }
}

fn waypoint_label(c: &mut Check<'_>, index: &Index<'_>, ns: &str, m: &Metadata) {
    if let Some(gw) = m.labels.get(USE_WAYPOINT_LABEL)
        && !index.waypoints.contains(&(ns, gw.as_str()))
    {
        c.bad(
            format!("metadata.labels.{USE_WAYPOINT_LABEL}"),
            format!("no Gateway {ns}/{gw} of class {WAYPOINT_CLASS:?} is declared"),
        );
    }
}

fn parents(c: &mut Check<'_>, index: &Index<'_>, ns: &str, refs: &[ParentRef]) {
    if refs.is_empty() {
        c.bad(
            "spec.parentRefs",
            "a route needs a parent (a waypoint Gateway or a Service)",
        );
    }
    for (i, r) in refs.iter().enumerate() {
        let target_ns = r.namespace.as_deref().unwrap_or(ns);
        let kind = r.kind.as_deref().unwrap_or("Gateway");
        let known = match kind {
            "Gateway" => index.waypoints.contains(&(target_ns, r.name.as_str())),
            "Service" => index.services.contains(&(target_ns, r.name.as_str())),
            _ => {
                c.bad(
                    format!("spec.parentRefs[{i}].kind"),
                    format!("{kind:?}: a parent is a Gateway or a Service"),
                );
                continue;
            }
        };
        if !known {
            c.bad(
                format!("spec.parentRefs[{i}]"),
                format!("no {kind} {target_ns}/{} is declared", r.name),
            );
        }
    }
}

fn backends(c: &mut Check<'_>, index: &Index<'_>, ns: &str, rule: &str, refs: &[BackendRef]) {
    for (i, b) in refs.iter().enumerate() {
        let path = format!("{rule}.backendRefs[{i}]");
        let target = (
            b.kind.as_deref(),
            b.namespace.as_deref(),
            b.name.as_str(),
            b.port,
        );
        if !service_backend(c, index, ns, &path, target) {
            continue;
        }
        if let Some(w) = b.weight
            && !(0..=1_000_000).contains(&w)
        {
            c.bad(
                format!("{path}.weight"),
                format!("{w} is not between 0 and 1000000"),
            );
        }
    }
}

/// A backend (of a rule, or of a mirror): a declared Service, with a port. `target` is
/// its kind, namespace, name and port. Returns `false` when it is not a Service at all
/// (nothing more to check).
fn service_backend(
    c: &mut Check<'_>,
    index: &Index<'_>,
    ns: &str,
    path: &str,
    (kind, namespace, name, port_number): (Option<&str>, Option<&str>, &str, Option<i64>),
) -> bool {
    if kind.is_some_and(|k| k != "Service") {
        c.bad(format!("{path}.kind"), "a backend is a Service");
        return false;
    }
    let target_ns = namespace.unwrap_or(ns);
    if !index.services.contains(&(target_ns, name)) {
        c.bad(
            format!("{path}.name"),
            format!("no Service {target_ns}/{name} is declared"),
        );
    }
    match port_number {
        None => c.bad(format!("{path}.port"), "required for a Service backend"),
        Some(p) => {
            if let Err(e) = port(p) {
                c.bad(format!("{path}.port"), e);
            }
        }
    }
    true
}

/// `Exact` (the default) or `RegularExpression`.
fn match_type(c: &mut Check<'_>, path: &str, t: Option<&str>) {
    if let Some(t) = t
        && t != "Exact"
        && t != "RegularExpression"
    {
        c.bad(
            path,
            format!("{t:?}: expected \"Exact\" or \"RegularExpression\""),
        );
    }
}

fn header_matches(c: &mut Check<'_>, base: &str, headers: &[HeaderMatch]) {
    for (k, h) in headers.iter().enumerate() {
        if let Err(e) = header_name(&h.name) {
            c.bad(format!("{base}.headers[{k}].name"), e);
        }
        match_type(c, &format!("{base}.headers[{k}].type"), h.type_.as_deref());
    }
}

/// What a route's filters may be: a GRPCRoute has no redirects or rewrites, and a
/// prefix replacement needs every match of its rule to be a path prefix.
#[derive(Clone, Copy)]
enum RouteKind {
    Http { prefix_matched: bool },
    Grpc,
}

fn filters(
    c: &mut Check<'_>,
    index: &Index<'_>,
    ns: &str,
    rule: &str,
    list: &[RouteFilter],
    kind: RouteKind,
) {
    let mut types = BTreeSet::new();
    for (i, f) in list.iter().enumerate() {
        let base = format!("{rule}.filters[{i}]");
        let (field, set) = match f.type_ {
            RouteFilterType::RequestHeaderModifier => {
                ("requestHeaderModifier", f.request_header_modifier.is_some())
            }
            RouteFilterType::ResponseHeaderModifier => (
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            RouteFilterType::RequestRedirect => ("requestRedirect", f.request_redirect.is_some()),
            RouteFilterType::UrlRewrite => ("urlRewrite", f.url_rewrite.is_some()),
            RouteFilterType::RequestMirror => ("requestMirror", f.request_mirror.is_some()),
        };
        if !set {
            c.bad(
                format!("{base}.{field}"),
                format!("required by type {field}"),
            );
        }
        let others = [
            ("requestHeaderModifier", f.request_header_modifier.is_some()),
            (
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            ("requestRedirect", f.request_redirect.is_some()),
            ("urlRewrite", f.url_rewrite.is_some()),
            ("requestMirror", f.request_mirror.is_some()),
        ];
        for (other, present) in others {
            if present && other != field {
                c.bad(
                    format!("{base}.{other}"),
                    format!("does not go with type {:?}", f.type_),
                );
            }
        }
        let grpc = matches!(kind, RouteKind::Grpc);
        if grpc
            && matches!(
                f.type_,
                RouteFilterType::RequestRedirect | RouteFilterType::UrlRewrite
            )
        {
            c.bad(
                format!("{base}.type"),
                format!("{:?} is not a GRPCRoute filter", f.type_),
            );
            continue;
        }
        // Each kind of filter once per rule, except mirrors (Gateway API).
        if f.type_ != RouteFilterType::RequestMirror && !types.insert(field) {
            c.bad(
                format!("{base}.type"),
                format!("{:?} appears twice in the rule", f.type_),
            );
        }
        if let Some(m) = &f.request_header_modifier {
            header_modifier(c, &format!("{base}.requestHeaderModifier"), m);
        }
        if let Some(m) = &f.response_header_modifier {
            header_modifier(c, &format!("{base}.responseHeaderModifier"), m);
        }
        let prefix_matched = matches!(
            kind,
            RouteKind::Http {
                prefix_matched: true
            }
        );
        if let Some(r) = &f.request_redirect {
            let base = format!("{base}.requestRedirect");
            if let Some(scheme) = &r.scheme
                && scheme != "http"
                && scheme != "https"
            {
                c.bad(
                    format!("{base}.scheme"),
                    format!("{scheme:?}: expected \"http\" or \"https\""),
                );
            }
            if let Some(h) = &r.hostname
                && let Err(e) = dns_subdomain(h)
            {
                c.bad(format!("{base}.hostname"), e);
            }
            if let Some(p) = r.port
                && let Err(e) = port(p)
            {
                c.bad(format!("{base}.port"), e);
            }
            if let Some(code) = r.status_code
                && code != 301
                && code != 302
            {
                c.bad(
                    format!("{base}.statusCode"),
                    format!("{code}: a redirect is 301 or 302"),
                );
            }
            if let Some(p) = &r.path {
                path_modifier(c, &format!("{base}.path"), p, prefix_matched);
            }
        }
        if let Some(r) = &f.url_rewrite {
            let base = format!("{base}.urlRewrite");
            if let Some(h) = &r.hostname
                && let Err(e) = dns_subdomain(h)
            {
                c.bad(format!("{base}.hostname"), e);
            }
            if let Some(p) = &r.path {
                path_modifier(c, &format!("{base}.path"), p, prefix_matched);
            }
        }
        if let Some(m) = &f.request_mirror {
            let b = &m.backend_ref;
            service_backend(
                c,
                index,
                ns,
                &format!("{base}.requestMirror.backendRef"),
                (
                    b.kind.as_deref(),
                    b.namespace.as_deref(),
                    b.name.as_str(),
                    b.port,
                ),
            );
        }
    }
    if types.contains("requestRedirect") && types.contains("urlRewrite") {
        c.bad(
            format!("{rule}.filters"),
            "a rule cannot both redirect and rewrite",
        );
    }
}

fn header_modifier(c: &mut Check<'_>, base: &str, m: &HeaderModifier) {
    let mut names = BTreeSet::new();
    for (field, list) in [("set", &m.set), ("add", &m.add)] {
        for (i, h) in list.iter().enumerate() {
            if let Err(e) = header_name(&h.name) {
                c.bad(format!("{base}.{field}[{i}].name"), e);
            } else if !names.insert((field, h.name.to_ascii_lowercase())) {
                c.bad(
                    format!("{base}.{field}[{i}].name"),
                    format!("{:?} appears twice", h.name),
                );
            }
        }
    }
    for (i, name) in m.remove.iter().enumerate() {
        if let Err(e) = header_name(name) {
            c.bad(format!("{base}.remove[{i}]"), e);
        }
    }
    if m.set.is_empty() && m.add.is_empty() && m.remove.is_empty() {
        c.bad(base, "set, add or remove at least one header");
    }
}

fn path_modifier(c: &mut Check<'_>, base: &str, p: &PathModifier, prefix_matched: bool) {
    let (field, value, other) = match p.type_ {
        PathModifierType::ReplaceFullPath => (
            "replaceFullPath",
            &p.replace_full_path,
            &p.replace_prefix_match,
        ),
        PathModifierType::ReplacePrefixMatch => (
            "replacePrefixMatch",
            &p.replace_prefix_match,
            &p.replace_full_path,
        ),
    };
    match value {
        None => c.bad(
            format!("{base}.{field}"),
            format!("required by type {field}"),
        ),
        Some(v) if !v.starts_with('/') => {
            c.bad(
                format!("{base}.{field}"),
                format!("{v:?} must start with '/'"),
            );
        }
        Some(_) => {}
    }
    if other.is_some() {
        c.bad(base, "give only the field of its type");
    }
    if p.type_ == PathModifierType::ReplacePrefixMatch && !prefix_matched {
        c.bad(
            format!("{base}.type"),
            "ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
        );
    }
}

fn timeouts(c: &mut Check<'_>, base: &str, t: &HttpRouteTimeouts) {
    let request = t
        .request
        .as_deref()
        .map(|r| gateway_duration(r).inspect_err(|e| c.bad(format!("{base}.request"), e.clone())));
    let backend = t.backend_request.as_deref().map(|r| {
        gateway_duration(r).inspect_err(|e| c.bad(format!("{base}.backendRequest"), e.clone()))
    });
    if let (Some(Ok(request)), Some(Ok(backend))) = (request, backend)
        && !request.is_zero()
        && backend > request
    {
        c.bad(
            format!("{base}.backendRequest"),
            "must not be longer than the request timeout",
        );
    }
}

fn retry(c: &mut Check<'_>, base: &str, r: &HttpRouteRetry) {
    for (i, code) in r.codes.iter().enumerate() {
        if !(400..=599).contains(code) {
            c.bad(
                format!("{base}.codes[{i}]"),
                format!("{code} is not an HTTP error status (400-599)"),
            );
        }
    }
    if let Some(a) = r.attempts
        && !(0..=100).contains(&a)
    {
        c.bad(
            format!("{base}.attempts"),
            format!("{a} is not between 0 and 100"),
        );
    }
    if let Some(b) = &r.backoff
        && let Err(e) = gateway_duration(b)
    {
        c.bad(format!("{base}.backoff"), e);
    }
}

fn endpoint_slice(c: &mut Check<'_>, index: &Index<'_>, e: &EndpointSlice) {
    let ns = e.metadata.namespace.as_deref().unwrap_or_default();
    match e.metadata.labels.get(SERVICE_NAME_LABEL) {
        None => c.bad(
            format!("metadata.labels.{SERVICE_NAME_LABEL}"),
            "required: it names the Service the slice belongs to",
        ),
        Some(svc) if !index.services.contains(&(ns, svc.as_str())) => c.bad(
            format!("metadata.labels.{SERVICE_NAME_LABEL}"),
            format!("no Service {ns}/{svc} is declared"),
        ),
        Some(_) => {}
    }
    let family = match e.address_type.as_str() {
        "IPv4" => Some(true),
        "IPv6" => Some(false),
        "FQDN" => None,
        other => {
            c.bad(
                "addressType",
                format!("{other:?}: expected \"IPv4\", \"IPv6\" or \"FQDN\""),
            );
            None
        }
    };
    if let Some(v4) = family {
        for (i, endpoint) in e.endpoints.iter().enumerate() {
            for (j, a) in endpoint.addresses.iter().enumerate() {
                match a.parse::<IpAddr>() {
                    Ok(ip) if ip.is_ipv4() == v4 => {}
                    Ok(_) => c.bad(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{a:?} is not an {} address", e.address_type),
                    ),
                    Err(_) => c.bad(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{a:?} is not an IP address"),
                    ),
                }
            }
        }
    }
    for (i, p) in e.ports.iter().enumerate() {
        if let Some(n) = p.port
            && let Err(e) = port(n)
        {
            c.bad(format!("ports[{i}].port"), e);
        }
    }
}

fn policy(c: &mut Check<'_>, index: &Index<'_>, p: &AuthorizationPolicy) {
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(s) = &p.spec.selector {
        selector(c, "spec.selector", s);
    }
    if p.spec.rules.is_empty() && p.spec.action != Action::Allow {
        let action = if p.spec.action == Action::Deny {
            "DENY"
        } else {
            "AUDIT"
        };
        c.bad(
            "spec.rules",
            format!("a {action} policy without rules matches nothing"),
        );
    }
    let mut l7 = Vec::new();
    for (i, rule) in p.spec.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let base = format!("spec.rules[{i}].from[{j}].source");
            let s = &from.source;
            for (field, list) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if let Err(e) = principal(v) {
                        c.bad(format!("{base}.{field}[{k}]"), e);
                    }
                }
            }
            for (field, list) in [
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if v != "*"
                        && let Err(e) = dns_label(v)
                    {
                        c.bad(format!("{base}.{field}[{k}]"), e);
                    }
                }
            }
            for (field, list) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if let Err(e) = cidr(v) {
                        c.bad(format!("{base}.{field}[{k}]"), e);
                    }
                }
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let base = format!("spec.rules[{i}].to[{j}].operation");
            let op = &to.operation;
            for (k, p) in op.ports.iter().enumerate() {
                let ok = match p {
                    IntOrString::Int(n) => port(*n).map(drop),
                    IntOrString::String(s) => s
                        .parse::<i64>()
                        .map_err(|_| format!("{s:?} is not a port number"))
                        .and_then(port)
                        .map(drop),
                };
                if let Err(e) = ok {
                    c.bad(format!("{base}.ports[{k}]"), e);
                }
            }
            for (k, m) in op.methods.iter().enumerate() {
                if !HTTP_METHODS.contains(&m.as_str()) {
                    c.bad(
                        format!("{base}.methods[{k}]"),
                        format!("{m:?} is not an HTTP method"),
                    );
                }
            }
            for (k, path) in op.paths.iter().enumerate() {
                if !(path.starts_with('/') || path.starts_with('*')) {
                    c.bad(
                        format!("{base}.paths[{k}]"),
                        format!("{path:?} must start with '/' or '*'"),
                    );
                } else if let Err(e) = wildcard_value(path) {
                    c.bad(format!("{base}.paths[{k}]"), e);
                }
            }
            for (k, h) in op.headers.iter().enumerate() {
                if let Err(e) = header_name(&h.name) {
                    c.bad(format!("{base}.headers[{k}].name"), e);
                }
                if h.values.is_empty() {
                    c.bad(
                        format!("{base}.headers[{k}].values"),
                        "at least one value is needed (\"*\": any)",
                    );
                }
                for (n, v) in h.values.iter().enumerate() {
                    if let Err(e) = wildcard_value(v) {
                        c.bad(format!("{base}.headers[{k}].values[{n}]"), e);
                    }
                }
            }
            if !op.methods.is_empty() {
                l7.push(format!("{base}.methods"));
            } else if !op.paths.is_empty() {
                l7.push(format!("{base}.paths"));
            } else if !op.headers.is_empty() {
                l7.push(format!("{base}.headers"));
            }
        }
    }
    // L7 rules are enforced by waypoints. Applied to workloads that no waypoint serves,
    // they would be silently ignored: refuse them instead.
    if !l7.is_empty() && ns != ROOT_NAMESPACE {
        let selected: Vec<bool> = index
            .workloads
            .get(ns)
            .into_iter()
            .flatten()
            .filter(|(labels, _)| {
                p.spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
            .map(|(_, waypoint)| *waypoint)
            .collect();
        if selected.iter().any(|w| !w) {
            for path in l7 {
                c.bad(
                    path,
                    "an L7 rule on workloads that no waypoint serves cannot be enforced \
                     (label the namespace or Service with weft.dev/use-waypoint)",
                );
            }
        }
    }
}

/// Parses and validates YAML files and folders (`.yaml`/`.yml` files in a folder, not
/// recursively); returns the documents and every problem.
pub fn files(paths: &[std::path::PathBuf]) -> (Vec<Document>, Vec<Problem>) {
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<_> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    for f in files {
        let source = f.display().to_string();
        match std::fs::read_to_string(&f) {
            Ok(text) => {
                let (d, p) = parse(&source, &text);
                docs.extend(d);
                problems.extend(p);
            }
            Err(e) => problems.push(Problem {
                origin: Origin { source, index: 0 },
                object: None,
                path: String::new(),
                reason: format!("cannot be read: {e}"),
            }),
        }
    }
    problems.extend(validate(&docs));
    (docs, problems)
}
