//! The label schema of connection metrics that the agents and the waypoints share,
//! with the names mesh dashboards already know.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Who reports a connection: the client's agent (`source`), the server's
/// (`destination`), or a waypoint in between (`waypoint`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
    Waypoint,
}

impl Reporter {
    pub fn name(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

impl EncodeLabelValue for Reporter {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.name())
    }
}

/// The labels of a connection, with the names mesh dashboards already use. Unknown
/// values are `unknown`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
    pub request_protocol: &'static str,
    /// `mutual_tls` or `none`.
    pub connection_security_policy: &'static str,
    /// `-` when nothing went wrong; else what did (`DENIED`, `UF` upstream failure,
    /// `REVOKED` closed by a policy change, `DRAINED`).
    pub response_flags: &'static str,
}

impl Default for ConnectionLabels {
    fn default() -> Self {
        let unknown = || "unknown".to_owned();
        ConnectionLabels {
            reporter: Reporter::Source,
            source_workload: unknown(),
            source_workload_namespace: unknown(),
            source_principal: unknown(),
            destination_workload: unknown(),
            destination_workload_namespace: unknown(),
            destination_principal: unknown(),
            destination_service: unknown(),
            request_protocol: "tcp",
            connection_security_policy: "none",
            response_flags: "-",
        }
    }
}
