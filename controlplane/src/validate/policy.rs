//! AuthorizationPolicy: sources, operations, and L7 conditions only where a waypoint
//! can enforce them.

use crate::model::{Action, AuthorizationPolicy, IntOrString};

use super::{
    Check, HTTP_METHODS, Index, ROOT_NAMESPACE, cidr, dns_label, header_name, port, principal,
    selector, wildcard_value,
};

pub(super) fn policy(c: &mut Check<'_>, index: &Index<'_>, p: &AuthorizationPolicy) {
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
            for (field, list) in [("methods", &op.methods), ("notMethods", &op.not_methods)] {
                for (k, m) in list.iter().enumerate() {
                    if !HTTP_METHODS.contains(&m.as_str()) {
                        c.bad(
                            format!("{base}.{field}[{k}]"),
                            format!("{m:?} is not an HTTP method"),
                        );
                    }
                }
            }
            for (field, list) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
                for (k, path) in list.iter().enumerate() {
                    if !(path.starts_with('/') || path.starts_with('*')) {
                        c.bad(
                            format!("{base}.{field}[{k}]"),
                            format!("{path:?} must start with '/' or '*'"),
                        );
                    } else if let Err(e) = wildcard_value(path) {
                        c.bad(format!("{base}.{field}[{k}]"), e);
                    } else if let Err(e) = normalized_path(path) {
                        c.bad(format!("{base}.{field}[{k}]"), e);
                    }
                }
            }
            for (field, list) in [("hosts", &op.hosts), ("notHosts", &op.not_hosts)] {
                for (k, h) in list.iter().enumerate() {
                    if let Err(e) = wildcard_value(h).and_then(|()| host_pattern(h)) {
                        c.bad(format!("{base}.{field}[{k}]"), e);
                    }
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
            let first_l7 = [
                ("methods", op.methods.is_empty()),
                ("notMethods", op.not_methods.is_empty()),
                ("paths", op.paths.is_empty()),
                ("notPaths", op.not_paths.is_empty()),
                ("hosts", op.hosts.is_empty()),
                ("notHosts", op.not_hosts.is_empty()),
                ("headers", op.headers.is_empty()),
            ]
            .into_iter()
            .find(|(_, empty)| !empty);
            if let Some((field, _)) = first_l7 {
                l7.push(format!("{base}.{field}"));
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

/// A policy path is compared with the normalized request path (see the waypoint's
/// `normalize.rs`): a pattern that normalization changes could never match, so it is
/// refused with what to write instead.
fn normalized_path(pattern: &str) -> Result<(), String> {
    let body = pattern.trim_start_matches('*').trim_end_matches('*');
    let problem = if body.contains("//") {
        Some("duplicate slashes")
    } else if body.split('/').any(|s| s == "." || s == "..") {
        Some("'.' or '..' segments")
    } else if body.contains(['?', '#', ';', '\\']) {
        Some("'?', '#', ';' or '\\'")
    } else if !percent_encoding_is_normal(body) {
        Some("percent-encoded unreserved characters, '/' or '\\', or lowercase hex digits")
    } else {
        None
    };
    match problem {
        Some(what) => Err(format!(
            "{pattern:?} can never match: requests are normalized before policies are checked, \
             and normalized paths have no {what}"
        )),
        None => Ok(()),
    }
}

/// A host pattern: a host name (lowercase letters, digits, '-', '.') with an optional
/// `*` first or last, or `*`.
fn host_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.trim_start_matches('*').trim_end_matches('*');
    if body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not a host (letters, digits, '-' and '.', without a port)"
        ))
    }
}

/// Normalized paths keep a percent-encoding only for what must stay encoded, in
/// uppercase hex: never for an unreserved character, `/` or `\\`.
fn percent_encoding_is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
            let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                return false;
            };
            if !hex(h) || !hex(l) {
                return false;
            }
            let v = u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap_or(0);
            if v.is_ascii_alphanumeric() || b"-._~/\\".contains(&v) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}
