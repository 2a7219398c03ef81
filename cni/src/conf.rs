//! What the runtime gives a plugin: the `CNI_*` environment and the network
//! configuration on stdin, and the errors of the spec, with their codes.

use std::path::PathBuf;

use serde_json::{Value, json};

/// The CNI versions this plugin speaks. (1.1's GC and STATUS are not implemented, so
/// runtimes do not call them.)
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The admin socket of the agent, when the configuration names none.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/weft/admin.sock";

/// Namespaces whose pods are never asked about: the cluster's own and Weft's (the
/// control plane's pods start before any agent has a configuration to decide with).
pub const DEFAULT_EXCLUDED: &[&str] = &["kube-system", "weft-system"];

/// An error as the spec prints it: a code (below 100: the spec's; from 100: this
/// plugin's), a message and details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct Error {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// The spec's codes.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// This plugin's: the agent refused the pod.
    pub const AGENT_REFUSED: u32 = 100;
}

impl Error {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Error {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error's JSON, in `version` (the configuration's, when it was read).
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

/// The runtime's `CNI_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS`.
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
}

impl Env {
    /// Reads the variables through `get`; ADD and CHECK need a container, a namespace
    /// and an interface, DEL a container.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let invalid = |msg: String| Error::new(code::INVALID_ENVIRONMENT, msg, "");
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some(other) => return Err(invalid(format!("CNI_COMMAND {other:?} is not supported"))),
            None => return Err(invalid("CNI_COMMAND is not set".into())),
        };
        let need = |key: &str| -> Result<String, Error> {
            match get(key) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(invalid(format!("{key} is not set"))),
            }
        };
        let (container_id, netns, ifname) = match command {
            Command::Version => (String::new(), String::new(), String::new()),
            Command::Del => (
                need("CNI_CONTAINERID")?,
                get("CNI_NETNS").unwrap_or_default(),
                get("CNI_IFNAME").unwrap_or_default(),
            ),
            Command::Add | Command::Check => (
                need("CNI_CONTAINERID")?,
                need("CNI_NETNS")?,
                need("CNI_IFNAME")?,
            ),
        };
        let netns = PathBuf::from(netns);
        if matches!(command, Command::Add | Command::Check) && !netns.is_absolute() {
            return Err(invalid(format!(
                "CNI_NETNS {} is not an absolute path",
                netns.display()
            )));
        }
        let args = get("CNI_ARGS").unwrap_or_default();
        let arg = |key: &str| {
            args.split(';').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == key && !v.is_empty()).then(|| v.to_owned())
            })
        };
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            pod_namespace: arg("K8S_POD_NAMESPACE"),
            pod_name: arg("K8S_POD_NAME"),
        })
    }
}

/// The plugin's network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// The agent's admin socket; the namespace record is read from its folder.
    pub agent_socket: PathBuf,
    pub exclude_namespaces: Vec<String>,
    /// The result of the plugins before this one, passed on as it is.
    pub prev_result: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(default)]
    agent_socket: Option<PathBuf>,
    #[serde(default)]
    exclude_namespaces: Option<Vec<String>>,
    #[serde(default)]
    prev_result: Option<Value>,
}

impl NetConf {
    /// Parses stdin. The `cniVersion` is needed by every command; the rest by all but
    /// VERSION, which the caller decides.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, Error> {
        let raw: Raw = serde_json::from_slice(stdin).map_err(|e| {
            Error::new(
                code::DECODE,
                "the network configuration on stdin is not valid JSON",
                e.to_string(),
            )
        })?;
        let cni_version = raw.cni_version.unwrap_or_default();
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(Error::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {cni_version:?} is not supported"),
                format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        let name = raw.name.unwrap_or_default();
        if name.is_empty() {
            return Err(Error::new(
                code::INVALID_CONFIG,
                "name: the network configuration has no name",
                "",
            ));
        }
        let agent_socket = raw
            .agent_socket
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET));
        if !agent_socket.is_absolute() {
            return Err(Error::new(
                code::INVALID_CONFIG,
                format!(
                    "agentSocket: {} is not an absolute path",
                    agent_socket.display()
                ),
                "",
            ));
        }
        if let Some(prev) = &raw.prev_result
            && !prev.is_object()
        {
            return Err(Error::new(
                code::INVALID_CONFIG,
                "prevResult: not an object",
                "",
            ));
        }
        Ok(NetConf {
            cni_version,
            name,
            agent_socket,
            exclude_namespaces: raw
                .exclude_namespaces
                .unwrap_or_else(|| DEFAULT_EXCLUDED.iter().map(|s| (*s).to_owned()).collect()),
            prev_result: raw.prev_result,
        })
    }

    /// What ADD prints: the previous result, untouched, or an empty one.
    pub fn result(&self) -> Value {
        self.prev_result
            .clone()
            .unwrap_or_else(|| json!({ "cniVersion": self.cni_version }))
    }
}

/// The version of a configuration that may not parse otherwise (for error output).
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".to_owned())
}

#[cfg(test)]
mod tests;
