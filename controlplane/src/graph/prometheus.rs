//! Reading the graph's rates from Prometheus's HTTP API (`/api/v1/query`), over plain
//! HTTP/1.1: the scraper is inside the cluster (or the lab), next to the control plane.

use std::{collections::BTreeMap, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;

use super::{Rates, Series};

/// The labels every connection series is summed by.
const BY: &str = "reporter, source_workload, source_workload_namespace, destination_workload, \
                  destination_workload_namespace, destination_service, request_protocol, \
                  connection_security_policy";

/// How long one query may take before the graph is drawn without metrics.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("WEFT_CP_PROMETHEUS={url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("Prometheus at {authority}: {reason}")]
    Unreachable { authority: String, reason: String },
    #[error("Prometheus at {authority} answered {status} to {query:?}: {body}")]
    Refused {
        authority: String,
        status: u16,
        query: String,
        body: String,
    },
    #[error("Prometheus at {authority}: an answer to {query:?} that is not a vector: {reason}")]
    Answer {
        authority: String,
        query: String,
        reason: String,
    },
}

/// A Prometheus server, `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    authority: String,
    prefix: String,
}

impl Prometheus {
    pub fn parse(url: &str) -> Result<Prometheus, PrometheusError> {
        let bad = |reason| PrometheusError::Url {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(bad("needs a host[:port] and nothing else before the path"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((host, "")) => (format!("[{host}]"), "80"),
                Some((host, port)) => (format!("[{host}]"), port.strip_prefix(':').unwrap_or("")),
                None => return Err(bad("an IPv6 address needs its closing ]")),
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host.to_owned(), port),
                None => (authority.to_owned(), "80"),
            },
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the port must be a number"));
        }
        let authority = format!("{host}:{port}");
        Ok(Prometheus {
            authority,
            prefix: prefix.to_owned(),
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The rates of the last `window`, one query per figure.
    pub async fn rates(&self, window: &str) -> Result<Rates, PrometheusError> {
        let rate = |selector: &str| format!("sum by ({BY}) (rate({selector}[{window}]))");
        let (opened, failed, sent, received, denied, requests, request_errors, request_p99) = tokio::try_join!(
            self.query(rate("weft_tcp_connections_opened_total")),
            self.query(rate(
                r#"weft_tcp_connections_closed_total{response_flags!="-"}"#
            )),
            self.query(rate("weft_tcp_sent_bytes_total")),
            self.query(rate("weft_tcp_received_bytes_total")),
            self.query(rate(
                r#"weft_tcp_authorization_decisions_total{decision="deny"}"#
            )),
            self.query(rate("weft_requests_total")),
            self.query(rate(r#"weft_requests_total{response_code=~"5.."}"#)),
            self.query(format!(
                "histogram_quantile(0.99, sum by (le, {BY}) \
                 (rate(weft_request_duration_milliseconds_bucket[{window}])))"
            )),
        )?;
        let mut bytes = sent;
        bytes.extend(received);
        Ok(Rates {
            opened,
            failed,
            bytes,
            denied,
            requests,
            request_errors,
            request_p99,
        })
    }

    /// One instant query; its vector.
    pub async fn query(&self, promql: String) -> Result<Vec<Series>, PrometheusError> {
        let path = format!("{}/api/v1/query?query={}", self.prefix, encode(&promql));
        let (status, body) = tokio::time::timeout(TIMEOUT, self.get(&path))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {TIMEOUT:?}")))??;
        if status != 200 {
            return Err(PrometheusError::Refused {
                authority: self.authority.clone(),
                status,
                query: promql,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        vector(&body).map_err(|reason| PrometheusError::Answer {
            authority: self.authority.clone(),
            query: promql,
            reason,
        })
    }

    fn unreachable(&self, reason: String) -> PrometheusError {
        PrometheusError::Unreachable {
            authority: self.authority.clone(),
            reason,
        }
    }

    async fn get(&self, path: &str) -> Result<(u16, Bytes), PrometheusError> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let req = Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.unreachable(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        conn.abort();
        Ok((status, body))
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The series of a `resultType: vector` answer.
fn vector(body: &[u8]) -> Result<Vec<Series>, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        status: String,
        data: Data,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Data {
        result_type: String,
        result: Vec<Sample>,
    }
    #[derive(serde::Deserialize)]
    struct Sample {
        metric: BTreeMap<String, String>,
        value: (f64, String),
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if a.status != "success" || a.data.result_type != "vector" {
        return Err(format!("status {}, type {}", a.status, a.data.result_type));
    }
    a.data
        .result
        .into_iter()
        .map(|s| {
            // Prometheus writes NaN and ±Inf as text too.
            let value = s
                .value
                .1
                .parse::<f64>()
                .map_err(|_| format!("value {:?}", s.value.1))?;
            Ok(Series {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_host_and_port() {
        let p = Prometheus::parse("http://10.250.0.3:9090").unwrap();
        assert_eq!((p.authority(), p.prefix.as_str()), ("10.250.0.3:9090", ""));
        let p = Prometheus::parse("http://prometheus.weft-system/prom/").unwrap();
        assert_eq!(
            (p.authority(), p.prefix.as_str()),
            ("prometheus.weft-system:80", "/prom")
        );
        let p = Prometheus::parse("http://[fd00::3]:9090").unwrap();
        assert_eq!(p.authority(), "[fd00::3]:9090");
        for bad in [
            "https://x:9090",
            "x:9090",
            "http://",
            "http://a:b",
            "http://u@h:1",
        ] {
            let e = Prometheus::parse(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("WEFT_CP_PROMETHEUS="),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn answers_become_series_and_nan_stays_a_value() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"reporter":"destination","source_workload":"a"},"value":[1.5,"2.25"]},
            {"metric":{},"value":[1.5,"NaN"]}]}}"#;
        let v = vector(body).unwrap();
        assert_eq!(v[0].value, 2.25);
        assert_eq!(v[0].labels["source_workload"], "a");
        assert!(v[1].value.is_nan());
        assert!(
            vector(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#).is_err()
        );
        assert!(vector(b"<html>").is_err());
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(encode(r#"a{b="c"}[1m]"#), "a%7Bb%3D%22c%22%7D%5B1m%5D");
    }
}
