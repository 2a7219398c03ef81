//! HTTPRoute and GRPCRoute: parents, matches (regular expressions must compile),
//! filters, backends, timeouts and retries.

use std::collections::BTreeSet;

use crate::model::{
    BackendRef, GrpcRoute, HeaderMatch, HeaderModifier, HttpRoute, HttpRouteRetry,
    HttpRouteTimeouts, ParentRef, PathMatchType, PathModifier, PathModifierType, RouteFilter,
    RouteFilterType,
};

use super::{
    Check, HTTP_METHODS, Index, dns_subdomain, gateway_duration, header_name, port, traffic,
};

pub(super) fn http_route(c: &mut Check<'_>, index: &Index<'_>, r: &HttpRoute) {
    let ns = r.metadata.namespace.as_deref().unwrap_or_default();
    parents(c, index, ns, &r.spec.parent_refs);
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
            if let Some(path) = &m.path
                && path.type_ == PathMatchType::RegularExpression
            {
                regex(
                    c,
                    &format!("spec.rules[{i}].matches[{j}].path.value"),
                    &path.value,
                );
            }
            header_matches(c, &format!("spec.rules[{i}].matches[{j}]"), &m.headers);
            query_matches(c, &format!("spec.rules[{i}].matches[{j}]"), &m.query_params);
        }
        let prefix_matched = !rule.matches.is_empty()
            && rule.matches.iter().all(|m| {
                m.path
                    .as_ref()
                    .is_some_and(|p| p.type_ == PathMatchType::PathPrefix)
            });
        filters(
            c,
            index,
            ns,
            &format!("spec.rules[{i}]"),
            &rule.filters,
            RouteKind::Http { prefix_matched },
        );
        backends(
            c,
            index,
            ns,
            &format!("spec.rules[{i}]"),
            &rule.backend_refs,
        );
        traffic::extensions(
            c,
            index,
            (ns, &format!("spec.rules[{i}]")),
            &rule.filters,
            rule.retry.is_some(),
        );
        if let Some(t) = &rule.timeouts {
            timeouts(c, &format!("spec.rules[{i}].timeouts"), t);
        }
        if let Some(r) = &rule.retry {
            retry(c, &format!("spec.rules[{i}].retry"), r);
        }
    }
}

pub(super) fn grpc_route(c: &mut Check<'_>, index: &Index<'_>, r: &GrpcRoute) {
    let ns = r.metadata.namespace.as_deref().unwrap_or_default();
    parents(c, index, ns, &r.spec.parent_refs);
    for (i, rule) in r.spec.rules.iter().enumerate() {
        for (j, m) in rule.matches.iter().enumerate() {
            if let Some(method) = &m.method {
                if let Some(s) = &method.service
                    && method.type_.as_deref() != Some("RegularExpression")
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
                    c,
                    &format!("spec.rules[{i}].matches[{j}].method.type"),
                    method.type_.as_deref(),
                );
                if method.type_.as_deref() == Some("RegularExpression") {
                    for (field, value) in [("service", &method.service), ("method", &method.method)]
                    {
                        if let Some(v) = value {
                            regex(
                                c,
                                &format!("spec.rules[{i}].matches[{j}].method.{field}"),
                                v,
                            );
                        }
                    }
                }
            }
            header_matches(c, &format!("spec.rules[{i}].matches[{j}]"), &m.headers);
        }
        filters(
            c,
            index,
            ns,
            &format!("spec.rules[{i}]"),
            &rule.filters,
            RouteKind::Grpc,
        );
        traffic::extensions(
            c,
            index,
            (ns, &format!("spec.rules[{i}]")),
            &rule.filters,
            false,
        );
        backends(
            c,
            index,
            ns,
            &format!("spec.rules[{i}]"),
            &rule.backend_refs,
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
        if h.type_.as_deref() == Some("RegularExpression") {
            regex(c, &format!("{base}.headers[{k}].value"), &h.value);
        }
    }
}

fn query_matches(c: &mut Check<'_>, base: &str, params: &[HeaderMatch]) {
    let mut names = BTreeSet::new();
    for (k, q) in params.iter().enumerate() {
        if q.name.is_empty() || q.name.len() > 256 {
            c.bad(
                format!("{base}.queryParams[{k}].name"),
                "must be 1 to 256 characters",
            );
        } else if !names.insert(q.name.as_str()) {
            c.bad(
                format!("{base}.queryParams[{k}].name"),
                format!("{:?} appears twice", q.name),
            );
        }
        match_type(
            c,
            &format!("{base}.queryParams[{k}].type"),
            q.type_.as_deref(),
        );
        if q.type_.as_deref() == Some("RegularExpression") {
            regex(c, &format!("{base}.queryParams[{k}].value"), &q.value);
        }
    }
}

/// A regular expression as the waypoint compiles it (the `regex` crate's syntax, close
/// to RE2's), matched against the whole value. It must compile, within a size limit
/// that keeps matching cheap.
fn regex(c: &mut Check<'_>, path: &str, pattern: &str) {
    if let Err(e) = api::pattern::compile_regex(pattern) {
        c.bad(path, e);
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
            RouteFilterType::ExtensionRef => ("extensionRef", f.extension_ref.is_some()),
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
            ("extensionRef", f.extension_ref.is_some()),
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
        // Each kind of filter once per rule, except mirrors and extensions (Gateway API).
        if !matches!(
            f.type_,
            RouteFilterType::RequestMirror | RouteFilterType::ExtensionRef
        ) && !types.insert(field)
        {
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
        && !(0..=traffic::MAX_RETRIES).contains(&a)
    {
        c.bad(
            format!("{base}.attempts"),
            format!("{a} is not between 0 and {}", traffic::MAX_RETRIES),
        );
    }
    if let Some(b) = &r.backoff
        && let Err(e) = gateway_duration(b)
    {
        c.bad(format!("{base}.backoff"), e);
    }
}
