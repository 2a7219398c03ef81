//! The document kinds, as serde types. Weft's own kinds and the Gateway API parts Weft
//! implements refuse unknown fields (a typo, or a feature Weft does not implement, is
//! an error, never silently ignored); Kubernetes core kinds accept the many fields Weft
//! does not use.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Object;

/// Object metadata: what Weft reads of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A port given as a number or, in Kubernetes style, as a name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(
    Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

// --- Namespace (v1)

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub metadata: Metadata,
}

// --- Service (v1)

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: i64,
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    #[serde(default)]
    pub protocol: Option<String>,
    /// What the port carries (`http`, `kubernetes.io/h2c`, `grpc`, `tcp` …).
    #[serde(default)]
    pub app_protocol: Option<String>,
}

// --- EndpointSlice (discovery.k8s.io/v1)

/// The annotation that chooses how a waypoint balances a Service's requests.
pub const LOAD_BALANCER_ANNOTATION: &str = "weft.dev/load-balancer";

/// The wire name of a load-balancer annotation value, if it is one.
pub fn load_balancer(value: &str) -> Option<&'static str> {
    match value {
        "round-robin" => Some("ROUND_ROBIN"),
        "least-request" => Some("LEAST_REQUEST"),
        _ => None,
    }
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    pub metadata: Metadata,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub target_ref: Option<ObjectReference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    /// Unknown (absent) counts as ready, as Kubernetes asks of consumers.
    #[serde(default)]
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
}

// --- Workload (weft.dev/v1alpha1)

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: WorkloadSpec,
}

#[derive(
    Debug,
    Clone,
    PartialEq,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
    kube::CustomResource,
)]
#[kube(
    group = "weft.dev",
    version = "v1alpha1",
    kind = "Workload",
    root = "WorkloadResource",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    #[serde(default = "default_service_account")]
    pub service_account: String,
    pub node: String,
    pub addresses: Vec<String>,
}

fn default_service_account() -> String {
    "default".to_owned()
}

// --- AuthorizationPolicy (security.weft.dev/v1alpha1)

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: AuthorizationPolicySpec,
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
}

#[derive(
    Debug,
    Clone,
    PartialEq,
    Default,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
    kube::CustomResource,
)]
#[kube(
    group = "security.weft.dev",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    root = "AuthorizationPolicyResource",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Which workloads of the policy's namespace it applies to; none: all of them. A
    /// policy in the root namespace (`weft-system`) applies mesh-wide.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<RuleFrom>,
    #[serde(default)]
    pub to: Vec<RuleTo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    pub operation: Operation,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default)]
    pub ports: Vec<IntOrString>,
    /// L7: enforced by a waypoint only.
    #[serde(default)]
    pub methods: Vec<String>,
    /// L7: enforced by a waypoint only.
    #[serde(default)]
    pub paths: Vec<String>,
    /// L7: enforced by a waypoint only. Every condition must hold.
    #[serde(default)]
    pub headers: Vec<HeaderCondition>,
    /// L7: request hosts, enforced by a waypoint only.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// L7: methods that must not match.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// L7: paths that must not match.
    #[serde(default)]
    pub not_paths: Vec<String>,
    /// L7: hosts that must not match.
    #[serde(default)]
    pub not_hosts: Vec<String>,
}

impl Operation {
    /// Whether it has conditions only a waypoint can check.
    pub fn has_l7(&self) -> bool {
        !self.methods.is_empty()
            || !self.paths.is_empty()
            || !self.headers.is_empty()
            || !self.hosts.is_empty()
            || !self.not_methods.is_empty()
            || !self.not_paths.is_empty()
            || !self.not_hosts.is_empty()
    }
}

/// A request header that must be present with one of `values` (each exact, with one
/// `*` at the start or end, or `*` alone for any value).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderCondition {
    pub name: String,
    pub values: Vec<String>,
}

// --- PeerAuthentication (security.weft.dev/v1alpha1)

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PeerAuthenticationSpec,
    #[serde(default)]
    pub status: Option<IgnoredAny>,
}

#[derive(
    Debug,
    Clone,
    PartialEq,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
    kube::CustomResource,
)]
#[kube(
    group = "security.weft.dev",
    version = "v1alpha1",
    kind = "PeerAuthentication",
    root = "PeerAuthenticationResource",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    pub mtls: Mtls,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    pub mode: MtlsMode,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    Strict,
    Permissive,
}

// --- Gateway API (gateway.networking.k8s.io/v1): in `gateway.rs`.

/// Deserializes a document of `kind`; an error comes with its field path.
pub fn from_value(kind: &str, value: serde_yaml_ng::Value) -> Result<Object, (String, String)> {
    fn typed<T: serde::de::DeserializeOwned>(
        value: serde_yaml_ng::Value,
    ) -> Result<T, (String, String)> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            (path, e.into_inner().to_string())
        })
    }
    Ok(match kind {
        "Namespace" => Object::Namespace(typed(value)?),
        "Service" => Object::Service(typed(value)?),
        "EndpointSlice" => Object::EndpointSlice(typed(value)?),
        "Workload" => Object::Workload(typed(value)?),
        "AuthorizationPolicy" => Object::AuthorizationPolicy(typed(value)?),
        "PeerAuthentication" => Object::PeerAuthentication(typed(value)?),
        "Gateway" => Object::Gateway(typed(value)?),
        "HTTPRoute" => Object::HttpRoute(typed(value)?),
        "GRPCRoute" => Object::GrpcRoute(typed(value)?),
        "TrafficFilter" => Object::TrafficFilter(typed(value)?),
        "BackendPolicy" => Object::BackendPolicy(typed(value)?),
        "ExternalService" => Object::ExternalService(typed(value)?),
        other => return Err(("kind".to_owned(), format!("unknown kind {other:?}"))),
    })
}
