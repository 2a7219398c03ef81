//! The label schema of connection metrics that the agents and the waypoints share,
//! with the names mesh dashboards already know.

use prometheus_client::encoding::{
    EncodeLabel as _, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

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
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
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

impl ConnectionLabels {
    /// Encodes these labels and leaves `encoder` open, for a label set that adds its
    /// own after them (a waypoint's request labels).
    pub fn encode_into(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("reporter", self.reporter).encode(encoder.encode_label())?;
        let texts = [
            ("source_workload", self.source_workload.as_str()),
            ("source_workload_namespace", &self.source_workload_namespace),
            ("source_principal", &self.source_principal),
            ("destination_workload", &self.destination_workload),
            (
                "destination_workload_namespace",
                &self.destination_workload_namespace,
            ),
            ("destination_principal", &self.destination_principal),
            ("destination_service", &self.destination_service),
            ("request_protocol", self.request_protocol),
            (
                "connection_security_policy",
                self.connection_security_policy,
            ),
            ("response_flags", self.response_flags),
        ];
        for label in texts {
            label.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl EncodeLabelSet for ConnectionLabels {
    fn encode(&self, mut encoder: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.encode_into(&mut encoder)
    }
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
