//! The waypoint's configuration: one typed [`Config`], read once at start from a
//! [`Source`] (the process environment in production, a map in tests) and checked up
//! front, with errors that name the variable and the value.

use std::{net::SocketAddr, time::Duration};

pub use api::config::{Env, Error, Source};
use api::{config::bounded, identity::Identity};
use dataplane::{identity::ControlPlane, logs::LogFormat};

pub const WAYPOINT_NAME: &str = "WEFT_WAYPOINT_NAME";
pub const WAYPOINT_NAMESPACE: &str = "WEFT_WAYPOINT_NAMESPACE";
pub const SERVICE_ACCOUNT: &str = "WEFT_SERVICE_ACCOUNT";
pub const TOKEN_FILE: &str = "WEFT_TOKEN_FILE";
pub const HBONE_ADDR: &str = "WEFT_HBONE_ADDR";
pub const METRICS_ADDR: &str = "WEFT_METRICS_ADDR";
pub const READINESS_ADDR: &str = "WEFT_READINESS_ADDR";
pub const WORKER_THREADS: &str = "WEFT_WORKER_THREADS";
pub const DRAIN_TIMEOUT: &str = "WEFT_DRAIN_TIMEOUT";
pub const HTTP_HEADER_TIMEOUT: &str = "WEFT_HTTP_HEADER_TIMEOUT";
pub const HTTP_MAX_HEADER_BYTES: &str = "WEFT_HTTP_MAX_HEADER_BYTES";
pub const HTTP_IDLE_TIMEOUT: &str = "WEFT_HTTP_IDLE_TIMEOUT";
pub const PROTOCOL_DETECT_TIMEOUT: &str = "WEFT_PROTOCOL_DETECT_TIMEOUT";
pub const UPSTREAM_IDLE_PER_ENDPOINT: &str = "WEFT_UPSTREAM_IDLE_PER_ENDPOINT";
pub const OTLP_ENDPOINT: &str = "WEFT_OTLP_ENDPOINT";
pub const TRACE_SAMPLING: &str = "WEFT_TRACE_SAMPLING";
/// Gateway mode: the HTTP listener (`0.0.0.0:8080`), the HTTPS one, and the HTTPS
/// listener's certificate chain and key (PEM files).
pub const GATEWAY_HTTP_ADDR: &str = "WEFT_GATEWAY_HTTP_ADDR";
pub const GATEWAY_HTTPS_ADDR: &str = "WEFT_GATEWAY_HTTPS_ADDR";
pub const GATEWAY_TLS_CERT: &str = "WEFT_GATEWAY_TLS_CERT";
pub const GATEWAY_TLS_KEY: &str = "WEFT_GATEWAY_TLS_KEY";
/// The whole waypoint's request rate limit, `<requests>/<interval>` (e.g. `1000/1s`).
pub const RATE_LIMIT: &str = "WEFT_WAYPOINT_RATE_LIMIT";
/// Client connections (tunnelled streams) the waypoint holds at once; more are
/// answered 503 at once.
pub const MAX_CONNECTIONS: &str = "WEFT_WAYPOINT_MAX_CONNECTIONS";

/// The HTTP side's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    /// A client must send a request's whole header section within this (slow clients
    /// are closed).
    pub header_timeout: Duration,
    /// Largest request header section (HTTP/1.1 bytes, HTTP/2 header list).
    pub max_header_bytes: u32,
    /// On a port whose protocol is not declared, how long to wait for the client's
    /// first bytes before taking the stream as opaque TCP.
    pub detect_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per upstream endpoint.
    pub idle_per_endpoint: usize,
    /// A client connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            detect_timeout: Duration::from_millis(250),
            idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// `http://host:port` of an OTLP/gRPC collector.
    pub endpoint: String,
    /// The share of new traces (requests without a sampled parent) that are sampled.
    pub sampling: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The Gateway (of class `weft-waypoint`) this process is a workload of.
    pub namespace: String,
    pub name: String,
    /// The waypoint's own identity, whose certificate it presents on both sides.
    pub identity: Identity,
    pub trust_domain: String,
    pub controlplane: ControlPlane,
    pub hbone_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub readiness_addr: Option<SocketAddr>,
    pub hbone: dataplane::hbone::Settings,
    pub http: Http,
    pub tracing: Option<Tracing>,
    pub worker_threads: usize,
    pub drain_timeout: Duration,
    pub log_format: LogFormat,
    /// Requests per interval for the whole waypoint (a burst of as many).
    pub rate_limit: Option<(u32, Duration)>,
    /// Client connections held at once (`WEFT_WAYPOINT_MAX_CONNECTIONS`, 10,000).
    pub max_connections: usize,
    /// Gateway mode (a Gateway of class `weft-gateway`); `None`: a waypoint.
    pub gateway: Option<Gateway>,
}

/// The listeners of gateway mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub http: Option<SocketAddr>,
    /// The HTTPS listener, with the certificate and key files.
    pub https: Option<(SocketAddr, String, String)>,
}

fn gateway(source: &impl Source) -> Result<Option<Gateway>, Error> {
    let addr = |key: &'static str| -> Result<Option<SocketAddr>, Error> {
        match source.get(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| Error::Invalid {
                key,
                value: v.clone(),
                reason: "expected ip:port".to_owned(),
            }),
        }
    };
    let http = addr(GATEWAY_HTTP_ADDR)?;
    let https = match (
        addr(GATEWAY_HTTPS_ADDR)?,
        source.get(GATEWAY_TLS_CERT),
        source.get(GATEWAY_TLS_KEY),
    ) {
        (None, None, None) => None,
        (Some(a), Some(cert), Some(key)) => Some((a, cert, key)),
        (Some(_), _, _) => {
            return Err(Error::Missing {
                key: if source.get(GATEWAY_TLS_CERT).is_none() {
                    GATEWAY_TLS_CERT
                } else {
                    GATEWAY_TLS_KEY
                },
                reason: "the HTTPS listener terminates TLS with this certificate and key",
            });
        }
        (None, _, _) => {
            return Err(Error::Missing {
                key: GATEWAY_HTTPS_ADDR,
                reason: "a certificate is only for the HTTPS listener",
            });
        }
    };
    Ok((http.is_some() || https.is_some()).then_some(Gateway { http, https }))
}

fn rate_limit(source: &impl Source) -> Result<Option<(u32, Duration)>, Error> {
    let Some(value) = source.get(RATE_LIMIT) else {
        return Ok(None);
    };
    let invalid = |reason: String| Error::Invalid {
        key: RATE_LIMIT,
        value: value.clone(),
        reason,
    };
    let (n, interval) = value
        .split_once('/')
        .ok_or_else(|| invalid("expected <requests>/<interval>, e.g. 1000/1s".to_owned()))?;
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid("the requests are a whole number above 0".to_owned()))?;
    let one = std::collections::HashMap::from([(RATE_LIMIT, interval)]);
    let interval = api::config::duration(&one, RATE_LIMIT, Duration::ZERO)
        .map_err(|e| invalid(e.to_string()))?;
    if interval.is_zero() {
        return Err(invalid("the interval is longer than 0".to_owned()));
    }
    Ok(Some((n, interval)))
}

impl Config {
    pub fn from_source(source: &impl Source) -> Result<Self, Error> {
        let required = |key: &'static str, reason: &'static str| {
            source.get(key).ok_or(Error::Missing { key, reason })
        };
        let namespace = required(WAYPOINT_NAMESPACE, "it names the waypoint's Gateway")?;
        let name = required(WAYPOINT_NAME, "it names the waypoint's Gateway")?;
        let service_account = source.get(SERVICE_ACCOUNT).unwrap_or_else(|| name.clone());
        let trust_domain = dataplane::identity::trust_domain(source);
        if api::names::dns_label(&service_account).is_err() {
            return Err(Error::Invalid {
                key: SERVICE_ACCOUNT,
                value: service_account,
                reason: "a service account name is 1 to 63 lowercase letters, digits and '-'"
                    .to_owned(),
            });
        }
        let identity = Identity::new(&trust_domain, &namespace, &service_account).map_err(|e| {
            Error::Invalid {
                key: SERVICE_ACCOUNT,
                value: service_account.clone(),
                reason: e.to_string(),
            }
        })?;
        let controlplane =
            ControlPlane::from_source(source, TOKEN_FILE)?.ok_or(Error::Missing {
                key: dataplane::identity::CONTROLPLANE,
                reason: "a waypoint gets its identity and configuration from the control plane",
            })?;
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        let hbone_addr =
            api::config::listen_addr(source, HBONE_ADDR, any(15008))?.ok_or(Error::Invalid {
                key: HBONE_ADDR,
                value: "off".to_owned(),
                reason: "the HBONE listener is the waypoint's only way in".to_owned(),
            })?;
        let d = Http::default();
        let http = Http {
            header_timeout: api::config::duration(source, HTTP_HEADER_TIMEOUT, d.header_timeout)?,
            max_header_bytes: bounded(
                source,
                HTTP_MAX_HEADER_BYTES,
                d.max_header_bytes,
                1024..=1024 * 1024,
            )?,
            detect_timeout: api::config::duration(
                source,
                PROTOCOL_DETECT_TIMEOUT,
                d.detect_timeout,
            )?,
            idle_per_endpoint: bounded(
                source,
                UPSTREAM_IDLE_PER_ENDPOINT,
                d.idle_per_endpoint as u32,
                0..=10_000,
            )? as usize,
            idle_timeout: api::config::duration(source, HTTP_IDLE_TIMEOUT, d.idle_timeout)?,
        };
        let tracing = match source.get(OTLP_ENDPOINT) {
            None => None,
            Some(endpoint) => {
                if !endpoint.starts_with("http://") {
                    return Err(Error::Invalid {
                        key: OTLP_ENDPOINT,
                        value: endpoint,
                        reason: "expected http://host:port of an OTLP/gRPC collector".to_owned(),
                    });
                }
                let sampling = api::config::parsed(source, TRACE_SAMPLING, 0.01f64)?;
                if !(0.0..=1.0).contains(&sampling) {
                    return Err(Error::Invalid {
                        key: TRACE_SAMPLING,
                        value: sampling.to_string(),
                        reason: "expected a share from 0 to 1".to_owned(),
                    });
                }
                Some(Tracing { endpoint, sampling })
            }
        };
        let gateway = gateway(source)?;
        Ok(Config {
            gateway,
            namespace,
            name,
            identity,
            trust_domain,
            controlplane,
            hbone_addr,
            metrics_addr: api::config::listen_addr(source, METRICS_ADDR, any(15020))?,
            readiness_addr: api::config::listen_addr(source, READINESS_ADDR, any(15021))?,
            hbone: dataplane::hbone::Settings::from_source(source)?,
            http,
            tracing,
            worker_threads: bounded(source, WORKER_THREADS, 2, 1..=256)? as usize,
            drain_timeout: api::config::duration(source, DRAIN_TIMEOUT, Duration::from_secs(30))?,
            log_format: LogFormat::from_source(source)?,
            rate_limit: rate_limit(source)?,
            max_connections: bounded(source, MAX_CONNECTIONS, 10_000, 1..=1_000_000)? as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, Error> {
        let mut map: HashMap<&str, &str> = pairs.iter().copied().collect();
        for (k, v) in [
            (WAYPOINT_NAMESPACE, "shop"),
            (WAYPOINT_NAME, "cart-waypoint"),
            ("WEFT_CONTROLPLANE", "10.0.0.2:15012"),
            ("WEFT_CONTROLPLANE_CA", "/ca.pem"),
            (TOKEN_FILE, "/token"),
        ] {
            map.entry(k).or_insert(v);
        }
        Config::from_source(&map)
    }

    #[test]
    fn gateway_mode_needs_its_listeners_and_the_https_certificate() {
        assert_eq!(config(&[]).unwrap().gateway, None);
        let g = config(&[(GATEWAY_HTTP_ADDR, "0.0.0.0:8080")])
            .unwrap()
            .gateway
            .unwrap();
        assert_eq!(
            (g.http, g.https),
            (Some("0.0.0.0:8080".parse().unwrap()), None)
        );
        let g = config(&[
            (GATEWAY_HTTPS_ADDR, "0.0.0.0:8443"),
            (GATEWAY_TLS_CERT, "/tls.crt"),
            (GATEWAY_TLS_KEY, "/tls.key"),
        ])
        .unwrap()
        .gateway
        .unwrap();
        assert_eq!(g.https.unwrap().1, "/tls.crt");
        let e = config(&[(GATEWAY_HTTPS_ADDR, "0.0.0.0:8443")]).unwrap_err();
        assert!(e.to_string().contains(GATEWAY_TLS_CERT), "{e}");
        let e = config(&[(GATEWAY_TLS_CERT, "/tls.crt")]).unwrap_err();
        assert!(e.to_string().contains(GATEWAY_HTTPS_ADDR), "{e}");
        let e = config(&[(GATEWAY_HTTP_ADDR, "8080")]).unwrap_err();
        assert!(e.to_string().starts_with("WEFT_GATEWAY_HTTP_ADDR="), "{e}");
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/cart-waypoint"
        );
        assert_eq!(c.hbone_addr, "0.0.0.0:15008".parse().unwrap());
        assert_eq!(c.metrics_addr, Some("0.0.0.0:15020".parse().unwrap()));
        assert_eq!(c.http, Http::default());
        assert_eq!(c.tracing, None);
        assert_eq!(
            c.controlplane.token_file,
            std::path::PathBuf::from("/token")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Config::from_source(&HashMap::from([(WAYPOINT_NAME, "w")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("WEFT_WAYPOINT_NAMESPACE is not set"),
            "{e}"
        );
        let e = config(&[(SERVICE_ACCOUNT, "Bad_SA")]).unwrap_err();
        assert!(
            e.to_string().starts_with("WEFT_SERVICE_ACCOUNT=\"Bad_SA\""),
            "{e}"
        );
        let e = config(&[(OTLP_ENDPOINT, "collector:4317")]).unwrap_err();
        assert!(e.to_string().contains("http://host:port"), "{e}");
        let e = config(&[(OTLP_ENDPOINT, "http://c:4317"), (TRACE_SAMPLING, "2")]).unwrap_err();
        assert!(e.to_string().starts_with("WEFT_TRACE_SAMPLING="), "{e}");
        let e = config(&[(HBONE_ADDR, "off")]).unwrap_err();
        assert!(e.to_string().contains("only way in"), "{e}");
        let c = config(&[(OTLP_ENDPOINT, "http://c:4317"), (TRACE_SAMPLING, "1")]).unwrap();
        assert_eq!(c.tracing.unwrap().sampling, 1.0);
        let c = config(&[(HTTP_HEADER_TIMEOUT, "2s"), (SERVICE_ACCOUNT, "wp")]).unwrap();
        assert_eq!(c.http.header_timeout, Duration::from_secs(2));
        assert_eq!(c.identity.service_account(), "wp");
    }

    #[test]
    fn the_connection_limit() {
        assert_eq!(config(&[]).unwrap().max_connections, 10_000);
        assert_eq!(
            config(&[(MAX_CONNECTIONS, "20")]).unwrap().max_connections,
            20
        );
        for bad in ["0", "x", "-1"] {
            let e = config(&[(MAX_CONNECTIONS, bad)]).unwrap_err();
            assert!(e.to_string().contains(MAX_CONNECTIONS), "{e}");
        }
    }

    #[test]
    fn the_waypoint_wide_rate_limit() {
        assert_eq!(config(&[]).unwrap().rate_limit, None);
        let c = config(&[(RATE_LIMIT, "500/2s")]).unwrap();
        assert_eq!(c.rate_limit, Some((500, Duration::from_secs(2))));
        for bad in ["500", "0/1s", "x/1s", "10/1", "10/0s"] {
            let e = config(&[(RATE_LIMIT, bad)]).unwrap_err().to_string();
            assert!(e.contains(RATE_LIMIT), "{bad}: {e}");
        }
    }
}
