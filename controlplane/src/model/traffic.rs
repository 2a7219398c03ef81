//! Weft's traffic kinds (weft.dev/v1alpha1), for what the Gateway API leaves out:
//!
//! - `TrafficFilter`: a route filter, named by a rule's `ExtensionRef` filter
//!   (`group: weft.dev, kind: TrafficFilter`): fault injection (delay, abort), a local
//!   rate limit, and retries beyond the HTTPRoute's `retry` (connect failures, resets,
//!   gRPC statuses, per-try timeout, non-idempotent requests).
//! - `BackendPolicy`: how a waypoint treats a backend Service it sends to (by
//!   `targetRefs`): circuit breaking, outlier detection, the retry budget, and load
//!   balancing (consistent hashing among it).
//!
//! Durations are Gateway API durations (`250ms`, `1s`, `1m30s`); percentages are 0 to
//! 100 and may have decimals.

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Metadata;

// --- TrafficFilter

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficFilter {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TrafficFilterSpec,
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
    kind = "TrafficFilter",
    root = "TrafficFilterResource",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficFilterSpec {
    #[serde(default)]
    pub fault: Option<Fault>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub retry: Option<Retry>,
}

/// Faults injected into the requests a rule matches, for chaos testing.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

/// `percentage` of the requests wait `fixedDelay` before they go on.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay: String,
    pub percentage: f64,
}

/// `percentage` of the requests are answered at once with `httpStatus`, or for gRPC
/// with `grpcStatus` (a code, 1 to 16); the backend never sees them.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    #[serde(default)]
    pub http_status: Option<i64>,
    #[serde(default)]
    pub grpc_status: Option<i64>,
    pub percentage: f64,
}

/// A token bucket: `requests` per `interval` (default `1s`), up to `burst` at once
/// (default `requests`). Over it: 429 with `retry-after`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub requests: i64,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub burst: Option<i64>,
}

/// Why a request is tried again.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
pub enum RetryOn {
    /// Any 5xx answer.
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503 and 504.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The endpoint could not be reached: the request was never sent.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The endpoint reset or closed the stream before its answer.
    #[serde(rename = "reset")]
    Reset,
}

/// Retries, for HTTPRoutes beyond their `retry` field, and for GRPCRoutes.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Retries after the first attempt (default 2, at most 10).
    #[serde(default)]
    pub attempts: Option<i64>,
    #[serde(default)]
    pub on: Vec<RetryOn>,
    /// HTTP statuses retried besides those `on` names.
    #[serde(default)]
    pub codes: Vec<i64>,
    /// gRPC statuses retried (codes 1 to 16, e.g. 14 UNAVAILABLE).
    #[serde(default)]
    pub grpc_statuses: Vec<i64>,
    /// Each attempt's limit (default: the rule's `timeouts.backendRequest`).
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// The first wait before a retry (default 25ms); it doubles each retry, with jitter.
    #[serde(default)]
    pub backoff: Option<String>,
    /// The longest wait (default 10 × `backoff`).
    #[serde(default)]
    pub max_backoff: Option<String>,
    /// Also retry requests that are not idempotent (POST, PATCH) and have a body.
    #[serde(default)]
    pub non_idempotent: bool,
}

// --- BackendPolicy

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendPolicy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: BackendPolicySpec,
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
    kind = "BackendPolicy",
    root = "BackendPolicyResource",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendPolicySpec {
    /// Services of the policy's namespace.
    pub target_refs: Vec<TargetRef>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudget>,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
}

/// Limits per backend Service, for each waypoint; a request over one is answered 503
/// at once.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Upstream HTTP connections open to the Service's endpoints.
    #[serde(default)]
    pub max_connections: Option<i64>,
    #[serde(default)]
    pub max_pending_requests: Option<i64>,
    #[serde(default)]
    pub max_requests: Option<i64>,
    #[serde(default)]
    pub max_retries: Option<i64>,
}

/// Endpoints that fail in a row are left out for a while: `baseEjectionTime` times the
/// number of times they were, up to `maxEjectionTime`; never more than
/// `maxEjectionPercent` of the Service's endpoints at once.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// 5xx answers in a row (default 5).
    #[serde(default, rename = "consecutive5xx")]
    pub consecutive_5xx: Option<i64>,
    /// 502, 503, 504 and connection failures in a row (default: off).
    #[serde(default)]
    pub consecutive_gateway_errors: Option<i64>,
    /// Default `30s`.
    #[serde(default)]
    pub base_ejection_time: Option<String>,
    /// Default `300s`.
    #[serde(default)]
    pub max_ejection_time: Option<String>,
    /// Default 10 (at least one endpoint may always be ejected).
    #[serde(default)]
    pub max_ejection_percent: Option<f64>,
}

/// Retries in flight to the Service stay under `percent` of its requests in flight (or
/// `minRetries`, whichever is more), so retries cannot multiply an outage.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    pub percent: f64,
    #[serde(default)]
    pub min_retries: Option<i64>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
pub enum LoadBalancerType {
    RoundRobin,
    LeastRequest,
    /// Maglev on `consistentHash`'s key: the same key goes to the same endpoint while
    /// the endpoints stay.
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
}

/// The key requests are hashed on: one of a header, a cookie, or the client's address.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default, rename = "sourceIP")]
    pub source_ip: bool,
}
