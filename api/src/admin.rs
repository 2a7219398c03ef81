//! The node agent's local admin API: its request and answer types, and a small
//! blocking client (HTTP/1.1 over the agent's Unix socket) for `weftctl`, the lab and
//! the tests.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

/// Body of `POST /v1/enroll` and `POST /v1/unenroll`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsRequest {
    /// Absolute path of the network namespace (`/run/netns/…`, `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    /// The workload in the namespace (on enroll): its identity is derived from it and
    /// its certificate fetched before its first connection needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
}

/// A pod or other workload, as the runtime (CNI plugin, lab) knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadRef {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
}

/// One enrolled namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enrollment {
    pub netns: PathBuf,
    /// The kernel's cookie of the namespace.
    pub cookie: u64,
    /// The capture listeners the agent opened inside it.
    pub listeners: Vec<SocketAddr>,
    /// The workload's SPIFFE identity, when the enrollment named the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `ready`, `pending` or `expired`: the state of the identity's certificate
    /// (absent without an identity or a control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// What an agent holds for one pod of its node: `GET /v1/pods/<namespace>/<name>`, on
/// the admin socket and the metrics port (for `weftctl proxy-config`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodConfig {
    /// `namespace/name`.
    pub pod: String,
    pub node: String,
    /// What the configuration says: its namespace is in the mesh and it did not opt out.
    pub in_mesh: bool,
    pub identity: String,
    pub addresses: Vec<String>,
    /// The agent's enrollment of its network namespace (none: not captured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    /// The waypoint its traffic goes through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<String>,
    /// `STRICT` or `PERMISSIVE`: what inbound plaintext meets.
    pub peer_authentication: String,
    /// The policies that apply to it, as `Kind namespace/name`.
    pub policies: Vec<String>,
    /// The Services it is behind, as `namespace/name`, with the waypoint each is bound
    /// to: `shop/cart (waypoint cart-waypoint)`.
    pub services: Vec<String>,
    /// The configuration version the agent has.
    pub config_version: u64,
}

/// A workload certificate the agent holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// `ready`, `pending` or `expired`.
    pub state: String,
    /// Seconds since the Unix epoch (absent while pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
}

/// What the CNI plugin tells the agent of its node: body of `POST /v1/cni/add`,
/// `/v1/cni/del` and `/v1/cni/check`, from the runtime's `CNI_*` variables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CniRequest {
    pub container_id: String,
    /// Absolute; on DEL it may be empty (the runtime removed the namespace already).
    #[serde(default)]
    pub netns: PathBuf,
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` of `CNI_ARGS`, when the runtime gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The agent's answer to a CNI request it could decide.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniAnswer {
    /// Whether the pod is (now) in the mesh.
    pub enrolled: bool,
    /// Why, in words (`namespace legacy is not in the mesh`, `enrolled as …`).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
}

/// What the agent last heard of each namespace, kept next to its admin socket
/// (`namespaces.json`), for the CNI plugin to decide when the agent does not answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamespaceRecord {
    /// The configuration version it was written from.
    pub version: u64,
    /// Namespace name → whether its pods join the mesh.
    pub namespaces: std::collections::BTreeMap<String, bool>,
}

/// The file name of the [`NamespaceRecord`], in the admin socket's folder.
pub const NAMESPACE_RECORD: &str = "namespaces.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("talking to the agent at {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent at {socket} sent something that is not an HTTP answer")]
    Malformed { socket: PathBuf },
}

/// An answer: its status and its body (JSON when it parses as JSON, else a string).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Response {
    /// The `error` field of a refusal, or the body as text.
    pub fn error_message(&self) -> String {
        self.body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| self.body.to_string())
    }
}

/// A client of one agent's admin socket. Each request uses its own connection.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// How long a request may take to write and to answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn get(&self, path: &str) -> Result<Response, Error> {
        self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    pub fn post_json(&self, path: &str, body: &str) -> Result<Response, Error> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.raw(req.as_bytes())
    }

    pub fn enroll(&self, netns: &Path, workload: Option<WorkloadRef>) -> Result<Response, Error> {
        let body = NetnsRequest {
            netns: netns.to_owned(),
            workload,
        };
        self.post_json(
            "/v1/enroll",
            &serde_json::to_string(&body).expect("serializable"),
        )
    }

    pub fn unenroll(&self, netns: &Path) -> Result<Response, Error> {
        let body = NetnsRequest {
            netns: netns.to_owned(),
            workload: None,
        };
        self.post_json(
            "/v1/unenroll",
            &serde_json::to_string(&body).expect("serializable"),
        )
    }

    /// Sends bytes as they are (for requests the helpers above would not make) and reads
    /// the whole answer; the request must ask for `Connection: close`.
    pub fn raw(&self, request: &[u8]) -> Result<Response, Error> {
        let io = |source| Error::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        stream.write_all(request).map_err(io)?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).map_err(io)?;
        parse_response(&bytes).ok_or_else(|| Error::Malformed {
            socket: self.socket.clone(),
        })
    }
}

fn parse_response(bytes: &[u8]) -> Option<Response> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body =
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_owned()));
    Some(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let r = parse_response(b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\n\r\n{\"error\":\"x is already enrolled\"}").unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.error_message(), "x is already enrolled");
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n# HELP a b\n").unwrap();
        assert_eq!(r.body, serde_json::Value::String("# HELP a b\n".to_owned()));
        assert!(parse_response(b"garbage").is_none());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_none());
    }
}
