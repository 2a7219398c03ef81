//! The control plane's configuration, from `WEFT_*` variables through a
//! [`api::config::Source`].
//!
//! Two modes: **local** (`WEFT_CP_SOURCE=local`, the default when `WEFT_CP_CONFIG_DIR` is
//! set): the configuration is a folder of documents, the root CA is kept in the state
//! folder and agents authenticate with node bootstrap tokens. **Kubernetes**
//! (`WEFT_CP_SOURCE=kubernetes`, the default otherwise): the configuration is watched
//! from the API server, the root CA is kept in a Secret and agents authenticate with
//! their service account tokens (TokenReview).

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use api::config::{Error, Source, duration, parsed};

use crate::validate::{dns_label, dns_subdomain};

pub const STATE_DIR: &str = "WEFT_CP_STATE_DIR";
pub const CONFIG_DIR: &str = "WEFT_CP_CONFIG_DIR";
pub const LISTEN: &str = "WEFT_CP_LISTEN";
pub const NODE_TOKENS: &str = "WEFT_CP_NODE_TOKENS";
/// Local mode: how often the folder is looked at.
pub const POLL: &str = "WEFT_CP_POLL";
/// Local mode: how long a burst of changes settles before it is read and pushed.
pub const SETTLE: &str = "WEFT_CP_SETTLE";
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
pub const METRICS_LISTEN: &str = "WEFT_CP_METRICS_LISTEN";
/// The Prometheus the service graph reads (`http://host:port`).
pub const PROMETHEUS: &str = "WEFT_CP_PROMETHEUS";
pub const SOURCE: &str = "WEFT_CP_SOURCE";
pub const NAMESPACE: &str = "WEFT_CP_NAMESPACE";
pub const CA_SECRET: &str = "WEFT_CA_SECRET";
pub const AGENT_SERVICE_ACCOUNT: &str = "WEFT_CP_AGENT_SERVICE_ACCOUNT";
pub const TOKEN_AUDIENCES: &str = "WEFT_CP_TOKEN_AUDIENCES";
/// The image the waypoint controller runs `weft-waypoint` from.
pub const WAYPOINT_IMAGE: &str = "WEFT_CP_WAYPOINT_IMAGE";
/// `host:port` at which pods reach the control plane's gRPC.
pub const ADDRESS: &str = "WEFT_CP_ADDRESS";
/// The replica's name in leader election (its pod's name, from the downward API).
pub const POD_NAME: &str = "WEFT_CP_POD_NAME";

/// Where the configuration comes from, and with it how the CA keeps its root and how
/// agents authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Local(Local),
    Kubernetes(Kubernetes),
}

/// Local mode (the lab, machines without Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The folder of YAML documents.
    pub config_dir: PathBuf,
    /// The node bootstrap tokens (a YAML map `node: token`).
    pub node_tokens: PathBuf,
    /// How often the folder is looked at (`WEFT_CP_POLL`, 100 ms).
    pub poll: Duration,
    /// How long changes settle before they are read (`WEFT_CP_SETTLE`, 150 ms): the
    /// changes of a burst become one push.
    pub settle: Duration,
}

/// Kubernetes mode: the API server is found in-cluster or through a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// The control plane's namespace, where the CA Secret is kept.
    pub namespace: String,
    /// The Secret that keeps the root CA (unless a CA is plugged in from files).
    pub ca_secret: String,
    /// The agents' service account: only its tokens are accepted.
    pub agent_namespace: String,
    pub agent_service_account: String,
    /// The audiences an agent's token must be for; empty: the API server's own.
    pub token_audiences: Vec<String>,
    /// The image of the waypoints' Deployments.
    pub waypoint_image: String,
    /// Where the waypoints' pods reach the control plane (`host:port`).
    pub address: String,
    /// Who this replica is in leader election (default: the host name, which is the
    /// pod's name).
    pub identity: String,
}

/// Where metrics (and the debug status) are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    /// The default, `0.0.0.0:15014`: served when it can be bound. Observability does not
    /// take the CA and configuration down with it: a control plane that finds the port
    /// taken (another one in the same network namespace) serves without metrics and says
    /// so in its log.
    Default(SocketAddr),
    /// Asked for by `WEFT_CP_METRICS_LISTEN`: not being able to bind it fails the start.
    Given(SocketAddr),
}

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
    pub mode: Mode,
    pub listen: SocketAddr,
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
    pub metrics_listen: MetricsListen,
    /// Where the service graph reads its rates; none: the graph has nodes only.
    pub prometheus: Option<crate::graph::Prometheus>,
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
        let metrics_listen = match source.get(METRICS_LISTEN).as_deref() {
            Some("off") => MetricsListen::Off,
            Some(_) => MetricsListen::Given(parsed(
                source,
                METRICS_LISTEN,
                SocketAddr::from(([0, 0, 0, 0], 15014)),
            )?),
            None => MetricsListen::Default(SocketAddr::from(([0, 0, 0, 0], 15014))),
        };
        let prometheus = match source.get(PROMETHEUS) {
            Some(url) if !url.trim().is_empty() => Some(
                crate::graph::Prometheus::parse(url.trim()).map_err(|e| Error::Invalid {
                    key: PROMETHEUS,
                    value: url.clone(),
                    reason: match e {
                        crate::graph::PrometheusError::Url { reason, .. } => reason.to_owned(),
                        other => other.to_string(),
                    },
                })?,
            ),
            _ => None,
        };
        Ok(Config {
            webhook_listen,
            metrics_listen,
            prometheus,
            mode: mode(source, &state_dir)?,
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

fn mode(source: &impl Source, state_dir: &Path) -> Result<Mode, Error> {
    let config_dir = source.get(CONFIG_DIR).map(PathBuf::from);
    let chosen = source.get(SOURCE);
    let name = chosen.as_deref().unwrap_or(if config_dir.is_some() {
        "local"
    } else {
        "kubernetes"
    });
    match name {
        "local" => Ok(Mode::Local(Local {
            config_dir: config_dir.ok_or(Error::Missing {
                key: CONFIG_DIR,
                reason: "local mode reads its configuration from that folder",
            })?,
            node_tokens: source
                .get(NODE_TOKENS)
                .map(PathBuf::from)
                .unwrap_or_else(|| state_dir.join("node-tokens.yaml")),
            poll: api::config::duration(source, POLL, Duration::from_millis(100))?,
            settle: api::config::duration(source, SETTLE, Duration::from_millis(150))?,
        })),
        "kubernetes" => {
            if let Some(dir) = config_dir {
                return Err(Error::Invalid {
                    key: CONFIG_DIR,
                    value: dir.display().to_string(),
                    reason: format!(
                        "a configuration folder is for local mode, and {SOURCE} is kubernetes"
                    ),
                });
            }
            let namespace = source
                .get(NAMESPACE)
                .unwrap_or_else(|| "weft-system".to_owned());
            let invalid = |key, value: &str, reason: String| Error::Invalid {
                key,
                value: value.to_owned(),
                reason,
            };
            dns_label(&namespace).map_err(|e| invalid(NAMESPACE, &namespace, e))?;
            let agent = source
                .get(AGENT_SERVICE_ACCOUNT)
                .unwrap_or_else(|| format!("{namespace}/weft-agent"));
            let (agent_namespace, agent_service_account) =
                agent.split_once('/').ok_or_else(|| {
                    invalid(
                        AGENT_SERVICE_ACCOUNT,
                        &agent,
                        "expected <namespace>/<service account>".to_owned(),
                    )
                })?;
            dns_label(agent_namespace)
                .and_then(|()| dns_subdomain(agent_service_account))
                .map_err(|e| invalid(AGENT_SERVICE_ACCOUNT, &agent, e))?;
            let ca_secret = source
                .get(CA_SECRET)
                .unwrap_or_else(|| "weft-root-ca".to_owned());
            dns_subdomain(&ca_secret).map_err(|e| invalid(CA_SECRET, &ca_secret, e))?;
            let waypoint_image = source
                .get(WAYPOINT_IMAGE)
                .unwrap_or_else(|| format!("ghcr.io/weft-mesh/weft:{}", env!("CARGO_PKG_VERSION")));
            if waypoint_image.is_empty() || waypoint_image.contains(char::is_whitespace) {
                return Err(invalid(
                    WAYPOINT_IMAGE,
                    &waypoint_image,
                    "expected an image reference".to_owned(),
                ));
            }
            let address = source
                .get(ADDRESS)
                .unwrap_or_else(|| format!("weft-controlplane.{namespace}.svc:15012"));
            if !address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            {
                return Err(invalid(ADDRESS, &address, "expected host:port".to_owned()));
            }
            let identity = source
                .get(POD_NAME)
                .or_else(api::config::hostname)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "weft-controlplane".to_owned());
            Ok(Mode::Kubernetes(Kubernetes {
                waypoint_image,
                address,
                identity,
                agent_namespace: agent_namespace.to_owned(),
                agent_service_account: agent_service_account.to_owned(),
                namespace,
                ca_secret,
                token_audiences: source
                    .get(TOKEN_AUDIENCES)
                    .unwrap_or_else(|| "weft".to_owned())
                    .split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect(),
            }))
        }
        other => Err(Error::Invalid {
            key: SOURCE,
            value: other.to_owned(),
            reason: "expected \"local\" or \"kubernetes\"".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_source(&HashMap::from([(CONFIG_DIR, "/etc/weft")])).unwrap();
        assert_eq!(c.listen, "0.0.0.0:15012".parse().unwrap());
        assert_eq!(c.trust_domain, "cluster.local");
        assert_eq!(c.cert_lifetime, Duration::from_secs(86400));
        assert_eq!(c.plugged_ca, None);
        let e =
            Config::from_source(&HashMap::from([(CONFIG_DIR, "/c"), (CA_CERT, "/x")])).unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = Config::from_source(&HashMap::from([(TRUST_DOMAIN, "Bad Domain")])).unwrap_err();
        assert!(e.to_string().starts_with("WEFT_TRUST_DOMAIN="), "{e}");
        let e = Config::from_source(&HashMap::from([(CERT_LIFETIME, "200h")])).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn metrics_listener() {
        let listen = |v: Option<&str>| {
            let mut env = HashMap::from([(CONFIG_DIR, "/etc/weft")]);
            if let Some(v) = v {
                env.insert(METRICS_LISTEN, v);
            }
            Config::from_source(&env).map(|c| c.metrics_listen)
        };
        assert_eq!(
            listen(None).unwrap(),
            MetricsListen::Default("0.0.0.0:15014".parse().unwrap())
        );
        assert_eq!(listen(Some("off")).unwrap(), MetricsListen::Off);
        assert_eq!(
            listen(Some("127.0.0.1:9000")).unwrap(),
            MetricsListen::Given("127.0.0.1:9000".parse().unwrap())
        );
        let e = listen(Some("15014")).unwrap_err();
        assert!(e.to_string().starts_with("WEFT_CP_METRICS_LISTEN="), "{e}");
    }

    #[test]
    fn local_mode() {
        let c = Config::from_source(&HashMap::from([
            (STATE_DIR, "/var/lib/weft"),
            (CONFIG_DIR, "/etc/weft"),
        ]))
        .unwrap();
        assert_eq!(
            c.mode,
            Mode::Local(Local {
                config_dir: "/etc/weft".into(),
                node_tokens: "/var/lib/weft/node-tokens.yaml".into(),
                poll: Duration::from_millis(100),
                settle: Duration::from_millis(150),
            })
        );
        // Asked for by name, local mode needs its folder.
        let e = Config::from_source(&HashMap::from([(SOURCE, "local")])).unwrap_err();
        assert!(
            e.to_string().starts_with("WEFT_CP_CONFIG_DIR is not set"),
            "{e}"
        );
    }

    #[test]
    fn kubernetes_mode() {
        // Without a folder, Kubernetes is the default.
        let c = Config::from_source(&HashMap::<&str, &str>::new()).unwrap();
        let Mode::Kubernetes(k) = &c.mode else {
            panic!("{:?}", c.mode)
        };
        // The host name unless WEFT_CP_POD_NAME says.
        assert!(!k.identity.is_empty());
        assert_eq!(
            c.mode,
            Mode::Kubernetes(Kubernetes {
                namespace: "weft-system".into(),
                ca_secret: "weft-root-ca".into(),
                agent_namespace: "weft-system".into(),
                agent_service_account: "weft-agent".into(),
                token_audiences: vec!["weft".into()],
                waypoint_image: format!("ghcr.io/weft-mesh/weft:{}", env!("CARGO_PKG_VERSION")),
                address: "weft-controlplane.weft-system.svc:15012".into(),
                identity: k.identity.clone(),
            })
        );
        let named =
            Config::from_source(&HashMap::from([(POD_NAME, "weft-controlplane-7c9-x2")])).unwrap();
        assert!(
            matches!(&named.mode, Mode::Kubernetes(k) if k.identity == "weft-controlplane-7c9-x2")
        );
        let bad = Config::from_source(&HashMap::from([(ADDRESS, "nowhere")])).unwrap_err();
        assert!(bad.to_string().contains(ADDRESS), "{bad}");
        let c = Config::from_source(&HashMap::from([
            (SOURCE, "kubernetes"),
            (NAMESPACE, "mesh"),
            (CA_SECRET, "mesh-ca"),
            (TOKEN_AUDIENCES, ""),
        ]))
        .unwrap();
        let Mode::Kubernetes(k) = c.mode else {
            panic!("{:?}", c.mode)
        };
        assert_eq!(k.namespace, "mesh");
        assert_eq!(k.ca_secret, "mesh-ca");
        assert_eq!(
            (k.agent_namespace.as_str(), k.agent_service_account.as_str()),
            ("mesh", "weft-agent"),
            "the agent's namespace follows the control plane's"
        );
        assert!(k.token_audiences.is_empty(), "the API server's audiences");
        let c = Config::from_source(&HashMap::from([
            (AGENT_SERVICE_ACCOUNT, "nodes/agent"),
            (TOKEN_AUDIENCES, "weft, weft-ca"),
        ]))
        .unwrap();
        let Mode::Kubernetes(k) = c.mode else {
            panic!("{:?}", c.mode)
        };
        assert_eq!(k.agent_namespace, "nodes");
        assert_eq!(k.agent_service_account, "agent");
        assert_eq!(k.token_audiences, vec!["weft", "weft-ca"]);
    }

    #[test]
    fn mode_errors_name_the_variable() {
        for (env, key) in [
            (vec![(SOURCE, "etcd")], SOURCE),
            (
                vec![(SOURCE, "kubernetes"), (CONFIG_DIR, "/etc/weft")],
                CONFIG_DIR,
            ),
            (vec![(NAMESPACE, "Weft_System")], NAMESPACE),
            (
                vec![(AGENT_SERVICE_ACCOUNT, "weft-agent")],
                AGENT_SERVICE_ACCOUNT,
            ),
            (
                vec![(AGENT_SERVICE_ACCOUNT, "a/b/c")],
                AGENT_SERVICE_ACCOUNT,
            ),
            (vec![(CA_SECRET, "")], CA_SECRET),
        ] {
            let e = Config::from_source(&HashMap::from_iter(env.clone())).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("{key}=")),
                "{env:?}: {e}"
            );
        }
    }
}
