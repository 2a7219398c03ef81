//! Validation of a set of documents: each one on its own (names, labels, addresses,
//! ports, principals …) and all of them together (duplicates, references, rules that
//! cannot be enforced where they apply). The same code serves `weftctl validate`, the
//! admission webhook and the control plane's sources; every problem names the document,
//! the field path and the reason.

mod external;
mod gateway;
mod policy;
mod route;
mod traffic;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::{
    Document, EndpointSlice, IntOrString, LabelSelector, Metadata, Object, Origin, Problem,
    SERVICE_NAME_LABEL, TrafficFilterSpec, parse,
};

/// Enrollment label (namespace: `enabled`; pod: `disabled` opts out).
pub use external::OUTBOUND_POLICY_LABEL;
pub const MESH_LABEL: &str = "weft.dev/mesh";
/// Waypoint binding label on a namespace, Service or workload: a Gateway's name.
pub const USE_WAYPOINT_LABEL: &str = "weft.dev/use-waypoint";
/// The gateway class of Weft's waypoints.
pub const WAYPOINT_CLASS: &str = "weft-waypoint";
/// The class of the mesh's ingress gateways (the waypoint binary in gateway mode).
pub const GATEWAY_CLASS: &str = "weft-gateway";

/// A Gateway Weft runs: a waypoint or an ingress gateway.
pub fn weft_class(class: &str) -> bool {
    class == WAYPOINT_CLASS || class == GATEWAY_CLASS
}
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

pub(crate) use api::names::{dns_label, dns_subdomain};

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
            Object::Namespace(n) => {
                waypoint_label(&mut c, &index, &n.metadata.name, &n.metadata);
                external::outbound_policy_label(&mut c, &n.metadata);
            }
            Object::ExternalService(e) => external::external_service(&mut c, &index, e),
            Object::Service(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                waypoint_label(&mut c, &index, ns, &s.metadata);
                let lb = crate::model::LOAD_BALANCER_ANNOTATION;
                if let Some(v) = s.metadata.annotations.get(lb)
                    && crate::model::load_balancer(v).is_none()
                {
                    c.bad(
                        format!("metadata.annotations.{lb}"),
                        format!("{v:?}: expected \"round-robin\" or \"least-request\""),
                    );
                }
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
                for (i, a) in w.spec.addresses.iter().enumerate() {
                    if a.parse::<IpAddr>().is_err() {
                        c.bad(
                            format!("spec.addresses[{i}]"),
                            format!("{a:?} is not an IP address"),
                        );
                    }
                }
            }
            Object::AuthorizationPolicy(p) => policy::policy(&mut c, &index, p),
            Object::PeerAuthentication(p) => {
                if let Some(s) = &p.spec.selector {
                    selector(&mut c, "spec.selector", s);
                }
            }
            Object::Gateway(g) => gateway::gateway(&mut c, g),
            Object::HttpRoute(r) => route::http_route(&mut c, &index, r),
            Object::GrpcRoute(r) => route::grpc_route(&mut c, &index, r),
            Object::TrafficFilter(f) => traffic::traffic_filter(&mut c, f),
            Object::BackendPolicy(p) => traffic::backend_policy(&mut c, &index, p),
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
    traffic_filters: BTreeMap<(&'a str, &'a str), &'a TrafficFilterSpec>,
    /// The BackendPolicy (first by name) that holds a Service, by the Service.
    backend_targets: BTreeMap<(&'a str, &'a str), &'a str>,
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
            traffic_filters: BTreeMap::new(),
            backend_targets: BTreeMap::new(),
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
                Object::Gateway(g) if weft_class(&g.spec.gateway_class_name) => {
                    index.waypoints.insert((ns, &m.name));
                }
                Object::TrafficFilter(f) => {
                    index.traffic_filters.insert((ns, &m.name), &f.spec);
                }
                Object::BackendPolicy(p) => {
                    for t in &p.spec.target_refs {
                        let first = index
                            .backend_targets
                            .entry((ns, &t.name))
                            .or_insert(&m.name);
                        if m.name.as_str() < *first {
                            *first = &m.name;
                        }
                    }
                }
                _ => {}
            }
        }
        // Selectors of Services bound to a waypoint: their workloads are served by it.
        let bound_selectors: Vec<(&str, &BTreeMap<String, String>)> = docs
            .iter()
            .filter_map(|d| match &d.object {
                Object::Service(s)
                    if s.metadata.labels.contains_key(USE_WAYPOINT_LABEL)
                        && !s.spec.selector.is_empty() =>
                {
                    Some((
                        s.metadata.namespace.as_deref().unwrap_or_default(),
                        &s.spec.selector,
                    ))
                }
                _ => None,
            })
            .collect();
        for d in docs {
            if let Object::Workload(w) = &d.object {
                let ns = w.metadata.namespace.as_deref().unwrap_or_default();
                let ns_waypoint = index
                    .namespaces
                    .get(ns)
                    .is_some_and(|m| m.labels.contains_key(USE_WAYPOINT_LABEL));
                let service_waypoint = bound_selectors.iter().any(|(sns, sel)| {
                    *sns == ns && sel.iter().all(|(k, v)| w.metadata.labels.get(k) == Some(v))
                });
                let has_waypoint = ns_waypoint
                    || service_waypoint
                    || w.metadata.labels.contains_key(USE_WAYPOINT_LABEL);
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
