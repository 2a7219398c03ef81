//! The documents operators declare, in the shape they write them (Kubernetes YAML):
//! `Namespace` and `Service` (core v1), `EndpointSlice` (discovery.k8s.io/v1), Weft's
//! `Workload` (weft.dev/v1alpha1) for workloads that are not pods, `AuthorizationPolicy`
//! and `PeerAuthentication` (security.weft.dev/v1alpha1), Weft's traffic kinds
//! `TrafficFilter` and `BackendPolicy` (weft.dev/v1alpha1), `ExternalService`
//! (weft.dev/v1alpha1) for services outside the cluster, and the Gateway API's
//! `Gateway`, `HTTPRoute` and `GRPCRoute` (gateway.networking.k8s.io/v1). Parsing
//! gives every document its origin and every error its field path; `validate.rs`
//! checks the meaning.

pub mod documents;
pub mod external;
pub mod gateway;
pub mod traffic;

pub use documents::*;
pub use external::*;
pub use gateway::*;
pub use traffic::*;

use std::fmt;

/// Where a document came from: the file (or request) and its position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    /// 1-based index of the document in a multi-document YAML stream.
    pub index: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.source, self.index)
    }
}

/// A problem with a document: where, which field, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    /// `Kind namespace/name`, when known.
    pub object: Option<String>,
    /// Field path, e.g. `spec.rules[0].from[0].source.principals[1]`; empty for the
    /// document as a whole.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {}: {}", self.path, self.reason)
        }
    }
}

/// One parsed document of a known kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub origin: Origin,
    pub object: Object,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Workload(Workload),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    TrafficFilter(TrafficFilter),
    BackendPolicy(BackendPolicy),
    ExternalService(ExternalService),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Workload(_) => "Workload",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::Gateway(_) => "Gateway",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::TrafficFilter(_) => "TrafficFilter",
            Object::BackendPolicy(_) => "BackendPolicy",
            Object::ExternalService(_) => "ExternalService",
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Workload(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::TrafficFilter(o) => &o.metadata,
            Object::BackendPolicy(o) => &o.metadata,
            Object::ExternalService(o) => &o.metadata,
        }
    }

    /// `Kind namespace/name` (or `Kind name` for cluster-scoped kinds).
    pub fn describe(&self) -> String {
        let m = self.metadata();
        match &m.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind(), m.name),
            None => format!("{} {}", self.kind(), m.name),
        }
    }
}

/// The API versions accepted for each kind.
pub const KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "Service"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("weft.dev/v1alpha1", "Workload"),
    ("security.weft.dev/v1alpha1", "AuthorizationPolicy"),
    ("security.weft.dev/v1alpha1", "PeerAuthentication"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
    ("weft.dev/v1alpha1", "TrafficFilter"),
    ("weft.dev/v1alpha1", "BackendPolicy"),
    ("weft.dev/v1alpha1", "ExternalService"),
];

/// Parses a YAML stream. Documents that do not parse are reported and left out; the
/// rest are returned for validation.
pub fn parse(source: &str, text: &str) -> (Vec<Document>, Vec<Problem>) {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            source: source.to_owned(),
            index: i + 1,
        };
        let problem = |object: Option<String>, path: String, reason: String| Problem {
            origin: origin.clone(),
            object,
            path,
            reason,
        };
        let value = match serde_yaml_ng::Value::deserialize(de) {
            Ok(serde_yaml_ng::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                    .unwrap_or_default();
                problems.push(problem(None, String::new(), format!("{at}{e}")));
                // After a syntax error the rest of the stream cannot be trusted.
                break;
            }
        };
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
            problems.push(problem(
                None,
                if field("apiVersion").is_none() {
                    "apiVersion"
                } else {
                    "kind"
                }
                .to_owned(),
                "required".to_owned(),
            ));
            continue;
        };
        let Some((want, _)) = KINDS.iter().find(|(_, k)| *k == kind) else {
            problems.push(problem(
                None,
                "kind".to_owned(),
                format!(
                    "unknown kind {kind:?}; known: {}",
                    KINDS.iter().map(|(_, k)| *k).collect::<Vec<_>>().join(", ")
                ),
            ));
            continue;
        };
        if api_version != *want {
            problems.push(problem(
                None,
                "apiVersion".to_owned(),
                format!("{kind} is {want}, not {api_version:?}"),
            ));
            continue;
        }
        let name_hint = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .map(|n| format!("{kind} {n}"));
        match documents::from_value(&kind, value) {
            Ok(object) => docs.push(Document { origin, object }),
            Err((path, reason)) => problems.push(problem(name_hint, path, reason)),
        }
    }
    (docs, problems)
}
