//! Where certificates come from: the control plane's address, CA and token, as the
//! `WEFT_CONTROLPLANE*` settings give them, and the trust domain.

use std::{path::PathBuf, time::Duration};

use api::config::Source;

pub const CONTROLPLANE: &str = "WEFT_CONTROLPLANE";
pub const CONTROLPLANE_CA: &str = "WEFT_CONTROLPLANE_CA";
pub const CONTROLPLANE_NAME: &str = "WEFT_CONTROLPLANE_NAME";
pub const TRUST_DOMAIN: &str = "WEFT_TRUST_DOMAIN";
pub const CERT_LIFETIME: &str = "WEFT_CERT_LIFETIME";
pub const CSR_BACKOFF_MAX: &str = "WEFT_CSR_BACKOFF_MAX";

/// Where certificates and configuration come from: the control plane, as the
/// `WEFT_CONTROLPLANE*` settings give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    /// `host:port` of its gRPC endpoint (15012).
    pub address: String,
    /// PEM file of the roots that sign its serving certificate.
    pub ca_file: PathBuf,
    /// The name in its serving certificate.
    pub server_name: String,
    /// File holding the bearer token this process authenticates with.
    pub token_file: PathBuf,
    /// Certificate lifetime to ask for (`None`: the CA's default).
    pub cert_lifetime: Option<Duration>,
    /// Longest wait between failed requests.
    pub backoff_max: Duration,
}

impl ControlPlane {
    /// `None` when `WEFT_CONTROLPLANE` is not set; the token file is named by
    /// `token_key` (a node's bootstrap token for the agent, the waypoint's own token).
    pub fn from_source(
        source: &impl Source,
        token_key: &'static str,
    ) -> Result<Option<Self>, api::config::Error> {
        use api::config::Error as E;
        let Some(address) = source.get(CONTROLPLANE) else {
            return Ok(None);
        };
        Ok(Some(ControlPlane {
            address,
            ca_file: source
                .get(CONTROLPLANE_CA)
                .map(PathBuf::from)
                .ok_or(E::Missing {
                    key: CONTROLPLANE_CA,
                    reason: "WEFT_CONTROLPLANE is set and needs the CA that signs it",
                })?,
            server_name: source
                .get(CONTROLPLANE_NAME)
                .unwrap_or_else(|| "weft-controlplane".to_owned()),
            token_file: source.get(token_key).map(PathBuf::from).ok_or(E::Missing {
                key: token_key,
                reason: "WEFT_CONTROLPLANE is set and needs a token to authenticate with",
            })?,
            cert_lifetime: source
                .get(CERT_LIFETIME)
                .map(|_| api::config::duration(source, CERT_LIFETIME, Duration::ZERO))
                .transpose()?,
            backoff_max: api::config::duration(source, CSR_BACKOFF_MAX, Duration::from_secs(30))?,
        }))
    }
}

/// The trust domain (`WEFT_TRUST_DOMAIN`, `cluster.local` by default).
pub fn trust_domain(source: &impl Source) -> String {
    source
        .get(TRUST_DOMAIN)
        .unwrap_or_else(|| api::identity::DEFAULT_TRUST_DOMAIN.to_owned())
}

/// How the agent reaches the CA.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// `host:port` of the control plane's gRPC endpoint.
    pub address: String,
    /// The name its serving certificate carries.
    pub server_name: String,
    /// PEM roots to verify the control plane with.
    pub ca_pem: String,
    /// This node's bootstrap token.
    pub token: String,
    pub trust_domain: String,
    /// Lifetime to ask for; `None` takes the CA's default.
    pub lifetime: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}
