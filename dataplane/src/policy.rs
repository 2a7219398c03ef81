//! L4 authorization and peer authentication, decided from the configuration the agent
//! holds.
//!
//! Which AuthorizationPolicies apply to a workload: those of the root namespace
//! (`weft-system`, mesh-wide) and those of the workload's own namespace, each when its
//! selector is empty or matches the workload's labels. Then, in this order:
//! AUDIT policies that match are reported (they never change the outcome); a matching
//! DENY denies; if any ALLOW policy applies, the connection must match one of them;
//! with no ALLOW policy, it is allowed.
//!
//! A rule matches when any of its sources matches (or it has none) and the destination
//! port is among its ports (or it lists none); a policy matches when any rule does. An
//! ALLOW policy without rules matches nothing, so it denies everything it selects.
//! Principals are written without `spiffe://`, as in the documents.
//!
//! A rule with HTTP conditions (methods, paths, hosts, headers) cannot be checked on a
//! TCP connection. Without a request it errs on the safe side: in an ALLOW policy it
//! never matches (it would let through requests its HTTP conditions refuse); in a DENY
//! or AUDIT policy it matches on its L4 part alone (denying more, never less). A
//! waypoint decides with the request ([`authorize_request`], [`Request`]); the control
//! plane refuses HTTP conditions for workloads that no waypoint serves.

use std::{collections::BTreeMap, net::IpAddr};

use api::{identity::Identity, proto::config as wire};

use crate::discovery::{Config, Policy};

mod request;

pub use request::Request;

/// Policies in this namespace apply to every workload of the mesh.
pub const ROOT_NAMESPACE: &str = "weft-system";

/// The workload a connection is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub port: u16,
}

/// Who is connecting: a mesh peer has an identity; a plaintext client only an address.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub identity: Option<&'a Identity>,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `namespace/name` of the policy that decided, or why none did.
    pub reason: String,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
    /// The version of the configuration the decision was made with (0: none).
    pub version: u64,
}

impl Decision {
    fn allow(reason: impl Into<String>, audited: Vec<String>) -> Self {
        Decision {
            allowed: true,
            reason: reason.into(),
            audited,
            version: 0,
        }
    }

    fn deny(reason: impl Into<String>, audited: Vec<String>) -> Self {
        Decision {
            allowed: false,
            reason: reason.into(),
            audited,
            version: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMode {
    /// Only mutual TLS (HBONE) connections are accepted.
    Strict,
    /// Plaintext connections are accepted too (after the authorization check).
    Permissive,
}

/// The policies that apply to a workload of `namespace` with `labels` (its namespace's
/// and the root namespace's whose selector matches), as `Kind namespace/name`.
pub fn applying(
    config: &Config,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    config
        .policies
        .iter()
        .filter_map(|((_, ns, name), policy)| {
            let (kind, selector) = match policy {
                Policy::Authorization(p) => ("AuthorizationPolicy", &p.selector),
                Policy::PeerAuthentication(p) => ("PeerAuthentication", &p.selector),
            };
            ((ns == namespace || ns == ROOT_NAMESPACE) && selects(selector, labels))
                .then(|| format!("{kind} {ns}/{name}"))
        })
        .collect()
}

fn selects(
    selector: &std::collections::HashMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn applies(ns: &str, target: &Target<'_>) -> bool {
    ns == ROOT_NAMESPACE || ns == target.namespace
}

/// What a decision is about.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A TCP connection, whatever it carries: HTTP conditions never widen the decision
    /// (ALLOW rules with them do not match; DENY and AUDIT rules match on their L4 part).
    Connection,
    /// A tunnel that will carry HTTP requests, each decided on its own later: refused
    /// only when no request could be allowed (ALLOW rules match on their L4 part; DENY
    /// rules with HTTP conditions wait for the requests).
    AnyRequest,
    /// One HTTP request.
    Request(&'a Request<'a>),
}

/// Decides whether `source` may connect to `target`.
pub fn authorize(config: &Config, target: &Target<'_>, source: &Source<'_>) -> Decision {
    authorize_in(config, target, source, Scope::Connection)
}

/// Decides whether `source` may send `request` to `target` (a waypoint's view).
pub fn authorize_request(
    config: &Config,
    target: &Target<'_>,
    source: &Source<'_>,
    request: &Request<'_>,
) -> Decision {
    authorize_in(config, target, source, Scope::Request(request))
}

/// Decides within `scope`.
pub fn authorize_in(
    config: &Config,
    target: &Target<'_>,
    source: &Source<'_>,
    scope: Scope<'_>,
) -> Decision {
    let mut audited = Vec::new();
    let mut deny = None;
    let mut allow_policies = 0usize;
    let mut allowed_by = None;
    for ((_, ns, name), policy) in &config.policies {
        let Policy::Authorization(p) = policy else {
            continue;
        };
        if !applies(ns, target) || !selects(&p.selector, target.labels) {
            continue;
        }
        let id = format!("{ns}/{name}");
        let allow = p.action == "ALLOW";
        let matched = p
            .rules
            .iter()
            .filter(|r| match scope {
                // Without a request, an ALLOW rule with HTTP conditions cannot be shown
                // to hold.
                Scope::Connection => !(allow && has_http_conditions(r)),
                // Nor can a DENY rule's.
                Scope::AnyRequest => allow || !has_http_conditions(r),
                Scope::Request(_) => true,
            })
            .any(|r| {
                rule_matches(r, target, source)
                    && match scope {
                        Scope::Request(req) => request::conditions_hold(r, req),
                        _ => true,
                    }
            });
        match p.action.as_str() {
            "AUDIT" => {
                if matched {
                    audited.push(id);
                }
            }
            "DENY" => {
                if matched && deny.is_none() {
                    deny = Some(id);
                }
            }
            "ALLOW" => {
                allow_policies += 1;
                if matched && allowed_by.is_none() {
                    allowed_by = Some(id);
                }
            }
            // The control plane validates actions; an action this agent does not know
            // must not open anything.
            other => {
                if deny.is_none() {
                    deny = Some(format!("{id} (unknown action {other:?})"));
                }
            }
        }
    }
    let decision = if let Some(id) = deny {
        Decision::deny(id, audited)
    } else {
        match (allow_policies, allowed_by) {
            (0, _) => Decision::allow("no policy", audited),
            (_, Some(id)) => Decision::allow(id, audited),
            (_, None) => Decision::deny("no ALLOW policy matched", audited),
        }
    };
    Decision {
        version: config.version,
        ..decision
    }
}

pub fn has_http_conditions(rule: &wire::PolicyRule) -> bool {
    !rule.methods.is_empty()
        || !rule.paths.is_empty()
        || !rule.headers.is_empty()
        || !rule.hosts.is_empty()
        || !rule.not_methods.is_empty()
        || !rule.not_paths.is_empty()
        || !rule.not_hosts.is_empty()
}

fn rule_matches(rule: &wire::PolicyRule, target: &Target<'_>, source: &Source<'_>) -> bool {
    let port_ok = rule.ports.is_empty() || rule.ports.contains(&u32::from(target.port));
    let from_ok = rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, source));
    port_ok && from_ok
}

fn source_matches(s: &wire::PolicySource, source: &Source<'_>) -> bool {
    let principal = source.identity.map(Identity::unprefixed);
    let namespace = source.identity.map(Identity::namespace);
    // A field that is set must match; a source without an identity matches no
    // principal or namespace (and is not excluded by a negative one either).
    let positive = |list: &[String], value: Option<&str>, m: fn(&str, &str) -> bool| {
        list.is_empty() || value.is_some_and(|v| list.iter().any(|p| m(p, v)))
    };
    let negative = |list: &[String], value: Option<&str>, m: fn(&str, &str) -> bool| {
        value.is_none_or(|v| !list.iter().any(|p| m(p, v)))
    };
    positive(&s.principals, principal.as_deref(), wildcard_matches)
        && negative(&s.not_principals, principal.as_deref(), wildcard_matches)
        && positive(&s.namespaces, namespace, namespace_matches)
        && negative(&s.not_namespaces, namespace, namespace_matches)
        && (s.ip_blocks.is_empty() || s.ip_blocks.iter().any(|b| in_block(b, source.ip)))
        && !s.not_ip_blocks.iter().any(|b| in_block(b, source.ip))
}

/// `pattern` against `value`: exact, `prefix*`, `*suffix` or `*` (principals, and the
/// values of HTTP conditions).
fn wildcard_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else {
        pattern == value
    }
}

fn namespace_matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// `a.b.c.d/len`, `x::/len`, or a single address. A block that does not parse matches
/// nothing (the control plane refuses such documents).
fn in_block(block: &str, ip: IpAddr) -> bool {
    let (addr, len) = match block.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (block, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    let ip = match (net, ip) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        _ => ip,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return false;
            }
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return false;
            }
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The PeerAuthentication mode for a workload: a policy selecting it by labels wins
/// over its namespace's policy without selector, which wins over the mesh-wide one;
/// PERMISSIVE when none applies.
pub fn peer_mode(config: &Config, namespace: &str, labels: &BTreeMap<String, String>) -> PeerMode {
    // (specificity, mode): 2 = workload selector, 1 = namespace, 0 = mesh.
    let mut best: Option<(u8, PeerMode)> = None;
    for ((_, ns, _), policy) in &config.policies {
        let Policy::PeerAuthentication(p) = policy else {
            continue;
        };
        let rank = if ns == namespace && !p.selector.is_empty() {
            if !selects(&p.selector, labels) {
                continue;
            }
            2
        } else if ns == namespace {
            1
        } else if ns == ROOT_NAMESPACE && p.selector.is_empty() {
            0
        } else {
            continue;
        };
        let mode = if p.mode == "PERMISSIVE" {
            PeerMode::Permissive
        } else {
            // STRICT, and anything unknown: never weaker than asked.
            PeerMode::Strict
        };
        // Among equals, STRICT wins.
        let better = match best {
            None => true,
            Some((r, m)) => rank > r || (rank == r && m == PeerMode::Permissive),
        };
        if better {
            best = Some((rank, mode));
        }
    }
    best.map_or(PeerMode::Permissive, |(_, m)| m)
}

#[cfg(test)]
mod tests;
