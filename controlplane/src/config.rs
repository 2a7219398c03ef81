//! The control plane's configuration, from `WEFT_*` variables through a
//! [`api::config::Source`].

use std::{net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use api::config::{Error, Source, duration, parsed};

pub const STATE_DIR: &str = "WEFT_CP_STATE_DIR";
pub const CONFIG_DIR: &str = "WEFT_CP_CONFIG_DIR";
pub const LISTEN: &str = "WEFT_CP_LISTEN";
pub const NODE_TOKENS: &str = "WEFT_CP_NODE_TOKENS";
pub const TRUST_DOMAIN: &str = "WEFT_TRUST_DOMAIN";
pub const CERT_LIFETIME: &str = "WEFT_CERT_LIFETIME";
pub const CERT_MAX_LIFETIME: &str = "WEFT_CERT_MAX_LIFETIME";
pub const CA_CERT: &str = "WEFT_CA_CERT";
pub const CA_KEY: &str = "WEFT_CA_KEY";
pub const CA_CHAIN: &str = "WEFT_CA_CHAIN";
pub const CA_ROOT: &str = "WEFT_CA_ROOT";
pub const CSR_BURST: &str = "WEFT_CSR_BURST";
pub const CSR_RATE: &str = "WEFT_CSR_RATE";
pub const SERVING_NAMES: &str = "WEFT_CP_SERVING_NAMES";
pub const SERVING_IPS: &str = "WEFT_CP_SERVING_IPS";
pub const WEBHOOK_LISTEN: &str = "WEFT_CP_WEBHOOK_LISTEN";

/// A CA plugged in from files instead of Weft's own root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluggedCa {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Intermediates between the signing certificate and the root, if any.
    pub chain: Option<PathBuf>,
    pub root: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub node_tokens: PathBuf,
    pub trust_domain: String,
    pub cert_lifetime: Duration,
    pub cert_max_lifetime: Duration,
    pub plugged_ca: Option<PluggedCa>,
    pub csr_burst: u32,
    pub csr_rate: f64,
    pub serving_names: Vec<String>,
    pub serving_ips: Vec<IpAddr>,
    /// The admission webhook's listener; `None` turns it off.
    pub webhook_listen: Option<SocketAddr>,
}

impl Config {
    pub fn from_source(source: &impl Source) -> Result<Self, Error> {
        let state_dir = source
            .get(STATE_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/weft/controlplane"));
        let trust_domain = source
            .get(TRUST_DOMAIN)
            .unwrap_or_else(|| api::identity::DEFAULT_TRUST_DOMAIN.to_owned());
        api::identity::Identity::new(&trust_domain, "a", "b").map_err(|e| Error::Invalid {
            key: TRUST_DOMAIN,
            value: trust_domain.clone(),
            reason: e.to_string(),
        })?;
        let plugged = [CA_CERT, CA_KEY, CA_ROOT].map(|k| source.get(k));
        let plugged_ca = match plugged {
            [None, None, None] => None,
            [Some(cert), Some(key), Some(root)] => Some(PluggedCa {
                cert: cert.into(),
                key: key.into(),
                chain: source.get(CA_CHAIN).map(PathBuf::from),
                root: root.into(),
            }),
            _ => {
                return Err(Error::Missing {
                    key: CA_ROOT,
                    reason: "a plugged-in CA needs WEFT_CA_CERT, WEFT_CA_KEY and WEFT_CA_ROOT together",
                });
            }
        };
        let cert_lifetime = duration(source, CERT_LIFETIME, Duration::from_secs(24 * 3600))?;
        let cert_max_lifetime = duration(
            source,
            CERT_MAX_LIFETIME,
            Duration::from_secs(7 * 24 * 3600),
        )?;
        if cert_lifetime > cert_max_lifetime {
            return Err(Error::Invalid {
                key: CERT_LIFETIME,
                value: format!("{cert_lifetime:?}"),
                reason: format!("longer than {CERT_MAX_LIFETIME} ({cert_max_lifetime:?})"),
            });
        }
        let serving_ips = source
            .get(SERVING_IPS)
            .unwrap_or_else(|| "127.0.0.1".to_owned())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse().map_err(|_| Error::Invalid {
                    key: SERVING_IPS,
                    value: s.to_owned(),
                    reason: "not an IP address".to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        let webhook_listen = match source.get(WEBHOOK_LISTEN).as_deref() {
            Some("off") => None,
            _ => Some(parsed(
                source,
                WEBHOOK_LISTEN,
                SocketAddr::from(([0, 0, 0, 0], 15017)),
            )?),
        };
        Ok(Config {
            webhook_listen,
            node_tokens: source
                .get(NODE_TOKENS)
                .map(PathBuf::from)
                .unwrap_or_else(|| state_dir.join("node-tokens.yaml")),
            config_dir: source.get(CONFIG_DIR).map(PathBuf::from),
            listen: parsed(source, LISTEN, SocketAddr::from(([0, 0, 0, 0], 15012)))?,
            trust_domain,
            cert_lifetime,
            cert_max_lifetime,
            plugged_ca,
            csr_burst: parsed(source, CSR_BURST, 100)?,
            csr_rate: parsed(source, CSR_RATE, 20.0)?,
            serving_names: source
                .get(SERVING_NAMES)
                .unwrap_or_else(|| "weft-controlplane,localhost".to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            serving_ips,
            state_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_source(&HashMap::<&str, &str>::new()).unwrap();
        assert_eq!(c.listen, "0.0.0.0:15012".parse().unwrap());
        assert_eq!(c.trust_domain, "cluster.local");
        assert_eq!(c.cert_lifetime, Duration::from_secs(86400));
        assert_eq!(c.plugged_ca, None);
        let e = Config::from_source(&HashMap::from([(CA_CERT, "/x")])).unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = Config::from_source(&HashMap::from([(TRUST_DOMAIN, "Bad Domain")])).unwrap_err();
        assert!(e.to_string().starts_with("WEFT_TRUST_DOMAIN="), "{e}");
        let e = Config::from_source(&HashMap::from([(CERT_LIFETIME, "200h")])).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
