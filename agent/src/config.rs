//! The agent's configuration: one typed [`Config`], read once at start from a
//! [`Source`] (the process environment in production, a map in tests) and validated
//! up front, with errors that name the variable and the value.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use agent_common::AGENT_PORTS;

pub use api::config::{Env, Error, Source};
use api::config::{bounded, switch};
pub use dataplane::{
    hbone::{
        CONNECT_TIMEOUT, HBONE_KEEPALIVE_INTERVAL, HBONE_KEEPALIVE_TIMEOUT,
        HBONE_MAX_HEADER_LIST_SIZE, HBONE_MAX_STREAMS, HBONE_POOL_IDLE_TIMEOUT,
        TLS_HANDSHAKE_TIMEOUT,
    },
    identity::{
        CERT_LIFETIME, CONTROLPLANE, CONTROLPLANE_CA, CONTROLPLANE_NAME, CSR_BACKOFF_MAX,
        ControlPlane, TRUST_DOMAIN,
    },
    logs::{LOG_FORMAT, LogFormat},
};

pub const NODE_NAME: &str = "WEFT_NODE_NAME";
pub const CGROUP: &str = "WEFT_CGROUP";
pub const BPFFS: &str = "WEFT_BPFFS";
pub const STATE_DIR: &str = "WEFT_STATE_DIR";
pub const ADMIN_SOCKET: &str = "WEFT_ADMIN_SOCKET";
pub const EXCLUDED_PORTS: &str = "WEFT_EXCLUDED_PORTS";
pub const METRICS_ADDR: &str = "WEFT_METRICS_ADDR";
pub const READINESS_ADDR: &str = "WEFT_READINESS_ADDR";
pub const WORKER_THREADS: &str = "WEFT_WORKER_THREADS";
pub const DRAIN_TIMEOUT: &str = "WEFT_DRAIN_TIMEOUT";
pub const SOCKMAP: &str = "WEFT_SOCKMAP";
pub const SAME_NODE_FAST_PATH: &str = "WEFT_SAME_NODE_FAST_PATH";
pub const NODE_TOKEN_FILE: &str = "WEFT_NODE_TOKEN_FILE";
pub const CNI_WAIT: &str = "WEFT_CNI_WAIT";
pub const DNS: &str = "WEFT_DNS";
pub const DNS_UPSTREAM: &str = "WEFT_DNS_UPSTREAM";
pub const CLUSTER_DOMAIN: &str = "WEFT_CLUSTER_DOMAIN";
pub const CLIENT_ADDRESS: &str = "WEFT_CLIENT_ADDRESS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The node this agent serves; names its bpffs and state folders.
    pub node_name: String,
    /// The cgroup v2 directory the capture programs attach to. `None`: the root of the
    /// cgroup v2 hierarchy, found at start.
    pub cgroup: Option<PathBuf>,
    /// The bpffs mount point; the agent pins under `<bpffs>/weft/<node>`.
    pub bpffs: PathBuf,
    /// Where the agent keeps its enrollments across restarts.
    pub state_dir: PathBuf,
    pub admin_socket: PathBuf,
    /// Destination ports that are never captured.
    pub excluded_ports: BTreeSet<u16>,
    /// Prometheus metrics listener (in the agent's own namespace); `None` turns it off.
    pub metrics_addr: Option<SocketAddr>,
    /// Readiness listener (`GET /healthz/ready`); `None` turns it off.
    pub readiness_addr: Option<SocketAddr>,
    /// HBONE limits and timeouts, and the deadline of upstream `connect()`s.
    pub hbone: crate::hbone::Settings,
    /// Threads of the async runtime that carries all connections.
    pub worker_threads: usize,
    /// How long open connections may run on after SIGTERM.
    pub drain_timeout: Duration,
    /// How long a CNI ADD waits for the configuration to say what the pod is before it
    /// answers "try again later".
    pub cni_wait: Duration,
    pub log_format: LogFormat,
    /// Same-node acceleration: the bytes of app ↔ agent legs pass socket to socket
    /// (`sockops` + `sk_msg`) instead of through the loopback TCP/IP stack. Off unless
    /// asked for: see `agent-ebpf/src/local.rs` for the kernel's caveat.
    pub sockmap: bool,
    /// A connection between two mesh pods of this node is handed from the outbound
    /// side to the inbound side inside the agent, which holds both identities, instead
    /// of going through a TLS tunnel; authorization, telemetry and revocation are the
    /// same.
    pub same_node_fast_path: bool,
    /// The agent's leg to a destination application leaves from the original
    /// client's address, so the application sees who calls it (see
    /// `netns::client_address`). Off: it comes from the pod's own address.
    pub client_address: bool,
    pub trust_domain: String,
    /// `None`: no identities (capture and plain proxying only).
    pub controlplane: Option<ControlPlane>,
    /// The agent answers enrolled pods' DNS (`WEFT_DNS`, on by default); `None`: off.
    pub dns: Option<crate::dns::Settings>,
}

impl Config {
    pub fn from_source(source: &impl Source) -> Result<Self, Error> {
        let node_name = match source.get(NODE_NAME) {
            Some(name) => name,
            None => api::config::hostname().ok_or(Error::Missing {
                key: NODE_NAME,
                reason: "the host name cannot be read",
            })?,
        };
        validate_node_name(&node_name)?;

        let state_dir = source
            .get(STATE_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/weft").join(&node_name));
        let admin_socket = source
            .get(ADMIN_SOCKET)
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("admin.sock"));

        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        let metrics_addr =
            api::config::listen_addr(source, METRICS_ADDR, any(agent_common::METRICS_PORT))?;
        let readiness_addr =
            api::config::listen_addr(source, READINESS_ADDR, any(agent_common::READINESS_PORT))?;
        let hbone = crate::hbone::Settings::from_source(source)?;
        let log_format = LogFormat::from_source(source)?;

        let sockmap = switch(source, SOCKMAP, false)?;
        let same_node_fast_path = switch(source, SAME_NODE_FAST_PATH, true)?;
        let client_address = switch(source, CLIENT_ADDRESS, true)?;

        let dns = if switch(source, DNS, true)? {
            Some(crate::dns::Settings {
                cluster_domain: cluster_domain(source)?,
                upstream: dns_upstream(source)?,
            })
        } else {
            None
        };
        let trust_domain = dataplane::identity::trust_domain(source);
        let controlplane = ControlPlane::from_source(source, NODE_TOKEN_FILE)?;
        Ok(Config {
            dns,
            trust_domain,
            controlplane,
            cgroup: source.get(CGROUP).map(PathBuf::from),
            bpffs: source
                .get(BPFFS)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf")),
            excluded_ports: parse_ports(source.get(EXCLUDED_PORTS).as_deref().unwrap_or(""))?,
            hbone,
            readiness_addr,
            worker_threads: bounded(source, WORKER_THREADS, 2, 1..=256)? as usize,
            drain_timeout: api::config::duration(source, DRAIN_TIMEOUT, Duration::from_secs(30))?,
            cni_wait: api::config::duration(source, CNI_WAIT, crate::pods::DEFAULT_WAIT)?,
            node_name,
            state_dir,
            admin_socket,
            metrics_addr,
            log_format,
            sockmap,
            same_node_fast_path,
            client_address,
        })
    }

    /// The folder under bpffs that holds this node's pinned programs, links and maps.
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("weft").join(&self.node_name)
    }
}

fn cluster_domain(source: &impl Source) -> Result<String, Error> {
    let domain = source
        .get(CLUSTER_DOMAIN)
        .unwrap_or_else(|| "cluster.local".to_owned());
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain.len() <= 200
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(domain)
    } else {
        Err(Error::Invalid {
            key: CLUSTER_DOMAIN,
            value: domain,
            reason: "expected a DNS name such as cluster.local".to_owned(),
        })
    }
}

/// `WEFT_DNS_UPSTREAM`: `ip` or `ip:port` (port 53 by default).
fn dns_upstream(source: &impl Source) -> Result<Option<SocketAddr>, Error> {
    let Some(value) = source.get(DNS_UPSTREAM).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let v = value.trim();
    let parsed = v.parse::<SocketAddr>().or_else(|_| {
        v.parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
    });
    parsed.map(Some).map_err(|_| Error::Invalid {
        key: DNS_UPSTREAM,
        value: value.clone(),
        reason: "expected an IP address, with a port or not (53)".to_owned(),
    })
}

fn validate_node_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            key: NODE_NAME,
            value: name.to_owned(),
            reason: "expected 1 to 63 lowercase letters, digits, '-' or '.'".to_owned(),
        })
    }
}

fn parse_ports(value: &str) -> Result<BTreeSet<u16>, Error> {
    let mut ports = BTreeSet::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let invalid = |reason: String| Error::Invalid {
            key: EXCLUDED_PORTS,
            value: value.to_owned(),
            reason,
        };
        let port: u16 = item
            .parse()
            .map_err(|e| invalid(format!("{item:?} is not a port: {e}")))?;
        if port == 0 {
            return Err(invalid("port 0 cannot be excluded".to_owned()));
        }
        if AGENT_PORTS.contains(&port) {
            return Err(invalid(format!(
                "{port} is one of the agent's own ports, which are never captured"
            )));
        }
        ports.insert(port);
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, Error> {
        let mut map: HashMap<&str, &str> = pairs.iter().copied().collect();
        map.entry(NODE_NAME).or_insert("node-a");
        Config::from_source(&map)
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.pin_dir(), PathBuf::from("/sys/fs/bpf/weft/node-a"));
        assert_eq!(c.admin_socket, PathBuf::from("/run/weft/node-a/admin.sock"));
        assert_eq!(c.metrics_addr, Some("0.0.0.0:15020".parse().unwrap()));
        assert!(c.excluded_ports.is_empty());
        assert_eq!(c.hbone, crate::hbone::Settings::default());
        assert_eq!(c.readiness_addr, Some("0.0.0.0:15021".parse().unwrap()));
        assert_eq!(c.cgroup, None);
        assert_eq!(c.controlplane, None);
        assert_eq!(c.trust_domain, "cluster.local");
    }

    #[test]
    fn control_plane_needs_its_ca_and_a_token() {
        let e = config(&[(CONTROLPLANE, "10.0.0.2:15012")]).unwrap_err();
        assert!(
            e.to_string().starts_with("WEFT_CONTROLPLANE_CA is not set"),
            "{e}"
        );
        let c = config(&[
            (CONTROLPLANE, "10.0.0.2:15012"),
            (CONTROLPLANE_CA, "/ca.pem"),
            (NODE_TOKEN_FILE, "/token"),
            (CERT_LIFETIME, "10s"),
        ])
        .unwrap();
        let cp = c.controlplane.unwrap();
        assert_eq!(cp.cert_lifetime, Some(Duration::from_secs(10)));
        assert_eq!(cp.backoff_max, Duration::from_secs(30));
        assert_eq!(cp.server_name, "weft-controlplane");
    }

    #[test]
    fn excluded_ports_are_parsed_and_checked() {
        let c = config(&[(EXCLUDED_PORTS, "22, 8443,22")]).unwrap();
        assert_eq!(c.excluded_ports, BTreeSet::from([22, 8443]));
        let e = config(&[(EXCLUDED_PORTS, "22,http")]).unwrap_err();
        assert!(e.to_string().contains("\"http\" is not a port"), "{e}");
        let e = config(&[(EXCLUDED_PORTS, "15008")]).unwrap_err();
        assert!(e.to_string().contains("agent's own ports"), "{e}");
    }

    #[test]
    fn dns_is_on_by_default_and_its_settings_are_checked() {
        let dns = config(&[]).unwrap().dns.unwrap();
        assert_eq!(dns.cluster_domain, "cluster.local");
        assert_eq!(dns.upstream, None);
        assert!(config(&[(DNS, "off")]).unwrap().dns.is_none());
        let dns = config(&[
            (DNS_UPSTREAM, "10.96.0.10"),
            (CLUSTER_DOMAIN, "Corp.Example."),
        ])
        .unwrap()
        .dns
        .unwrap();
        assert_eq!(dns.upstream, Some("10.96.0.10:53".parse().unwrap()));
        assert_eq!(dns.cluster_domain, "corp.example");
        let dns = config(&[(DNS_UPSTREAM, "[fd00::a]:5353")])
            .unwrap()
            .dns
            .unwrap();
        assert_eq!(dns.upstream, Some("[fd00::a]:5353".parse().unwrap()));
        for (key, value) in [
            (DNS_UPSTREAM, "dns.local"),
            (CLUSTER_DOMAIN, "a..b"),
            (CLUSTER_DOMAIN, "under_score.local"),
            (DNS, "yes"),
        ] {
            let e = config(&[(key, value)]).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{key}=")), "{e}");
        }
    }

    #[test]
    fn durations_need_units() {
        let c = config(&[(CONNECT_TIMEOUT, "250ms"), (DRAIN_TIMEOUT, "2m")]).unwrap();
        assert_eq!(c.hbone.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.drain_timeout, Duration::from_secs(120));
        for bad in ["10", "10d", "s", "0s"] {
            let e = Config::from_source(&HashMap::from([(NODE_NAME, "n"), (CONNECT_TIMEOUT, bad)]))
                .unwrap_err();
            assert!(
                e.to_string().starts_with("WEFT_CONNECT_TIMEOUT="),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[(METRICS_ADDR, "localhost")]).unwrap_err();
        assert!(
            e.to_string().starts_with("WEFT_METRICS_ADDR=\"localhost\""),
            "{e}"
        );
        assert_eq!(config(&[(METRICS_ADDR, "off")]).unwrap().metrics_addr, None);
        let e = Config::from_source(&HashMap::from([(NODE_NAME, "Node_A")])).unwrap_err();
        assert!(e.to_string().contains("WEFT_NODE_NAME"), "{e}");
        let e = config(&[(HBONE_MAX_STREAMS, "0")]).unwrap_err();
        assert!(
            e.to_string().starts_with("WEFT_HBONE_MAX_STREAMS=\"0\""),
            "{e}"
        );
        let c = config(&[
            (HBONE_MAX_STREAMS, "8"),
            (HBONE_MAX_HEADER_LIST_SIZE, "4096"),
            (TLS_HANDSHAKE_TIMEOUT, "2s"),
            (READINESS_ADDR, "off"),
        ])
        .unwrap();
        assert_eq!(c.hbone.max_streams, 8);
        assert_eq!(c.hbone.max_header_list_size, 4096);
        assert_eq!(c.hbone.handshake_timeout, Duration::from_secs(2));
        assert_eq!(c.readiness_addr, None);
        assert!(!config(&[]).unwrap().sockmap);
        assert!(config(&[(SOCKMAP, "on")]).unwrap().sockmap);
        assert!(!config(&[(SOCKMAP, "off")]).unwrap().sockmap);
        assert!(config(&[]).unwrap().same_node_fast_path);
        assert!(config(&[]).unwrap().client_address);
        assert!(!config(&[(CLIENT_ADDRESS, "off")]).unwrap().client_address);
        assert!(
            !config(&[(SAME_NODE_FAST_PATH, "off")])
                .unwrap()
                .same_node_fast_path
        );
        let e = config(&[(SOCKMAP, "no")]).unwrap_err();
        assert!(e.to_string().starts_with("WEFT_SOCKMAP=\"no\""), "{e}");
        let e = config(&[(LOG_FORMAT, "xml")]).unwrap_err();
        assert!(e.to_string().contains("\"text\" or \"json\""), "{e}");
    }
}
