//! `ExternalService` (weft.dev/v1alpha1): a service outside the cluster that mesh pods
//! call, named so that their traffic to it is known, counted and subject to policy:
//! its host names (answered by the agents' DNS), the addresses they resolve to (where
//! connections go), its ports, and optionally the egress waypoint its traffic must go
//! through (`egressGateway`, a Gateway of class `weft-waypoint` in the same namespace),
//! which then originates TLS to it when `tls` says so.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Metadata;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalService {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ExternalServiceSpec,
    #[serde(default)]
    pub status: Option<IgnoredAny>,
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
    group = "weft.dev",
    version = "v1alpha1",
    kind = "ExternalService",
    root = "ExternalServiceResource",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServiceSpec {
    /// DNS names (`api.example.com`, `*.example.com`).
    pub hosts: Vec<String>,
    /// The addresses the hosts resolve to and connections go to.
    #[serde(default)]
    pub addresses: Vec<String>,
    pub ports: Vec<ExternalPort>,
    /// `STATIC` (the default): the addresses are the service's.
    #[serde(default)]
    pub resolution: Option<String>,
    /// The egress waypoint every connection to the service goes through.
    #[serde(default)]
    pub egress_gateway: Option<String>,
    /// With an egress gateway: it speaks TLS to the service (the application sends
    /// plaintext HTTP to the port, the gateway sends HTTPS to its `targetPort`).
    #[serde(default)]
    pub tls: Option<Origination>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalPort {
    pub name: String,
    pub port: i64,
    /// `TCP`, `HTTP` or `TLS`.
    pub protocol: String,
    /// The service's own port, when it is not `port` (TLS origination: 443).
    #[serde(default)]
    pub target_port: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Origination {
    /// The server name sent and verified (default: the first host).
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM certificates of the CAs the service's certificate must chain to.
    pub ca_certificates: String,
}
