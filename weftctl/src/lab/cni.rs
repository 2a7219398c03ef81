//! A CNI runtime, as small as the lab needs and as the CNI spec (1.0) says: plugins
//! are executables found in `CNI_PATH`, called with the `CNI_*` environment variables,
//! the network configuration on stdin, and the result (or an error object) on stdout.
//! A configuration list runs its plugins in order on ADD, each getting the previous
//! result as `prevResult`, and in reverse on DEL — so a Weft plugin can be chained
//! after `bridge` exactly as on a Kubernetes node. CHECK runs them in order with the
//! ADD's result.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{Value, json};

/// Where Debian's `containernetworking-plugins` installs the reference plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
pub const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CNI plugin {plugin} is not installed in {path}")]
    Missing { plugin: String, path: PathBuf },
    #[error("running CNI plugin {plugin}: {source}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} failed on {command} for {container}: {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        container: String,
        /// The error's `code` (11: try again later).
        code: Option<u64>,
        message: String,
    },
    #[error("CNI plugin {plugin} returned a result that is not JSON: {output:?}")]
    BadResult { plugin: String, output: String },
}

/// What one attachment of a container to a network is called.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    /// The container's network namespace (a path).
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// `CNI_ARGS`, e.g. `K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1`.
    pub args: String,
    /// The namespace the runtime itself runs in (the node's), where plugins execute.
    pub runtime_netns: &'a Path,
    /// `CNI_PATH`: where plugins are looked for, in order.
    pub plugin_dirs: &'a [PathBuf],
}

/// Runs every plugin of `conflist` for ADD and returns the final result.
pub fn add(conflist: &Value, at: &Attachment<'_>) -> Result<Value, Error> {
    let mut prev: Option<Value> = None;
    for plugin in plugins(conflist) {
        let mut conf = plugin_conf(conflist, plugin);
        if let Some(prev) = &prev {
            conf["prevResult"] = prev.clone();
        }
        prev = Some(exec("ADD", &conf, at)?);
    }
    Ok(prev.unwrap_or_else(|| json!({ "cniVersion": CNI_VERSION })))
}

/// Runs every plugin of `conflist` for CHECK, with the result of the ADD.
pub fn check(conflist: &Value, at: &Attachment<'_>, add_result: &Value) -> Result<(), Error> {
    for plugin in plugins(conflist) {
        let mut conf = plugin_conf(conflist, plugin);
        conf["prevResult"] = add_result.clone();
        exec("CHECK", &conf, at)?;
    }
    Ok(())
}

/// Runs every plugin of `conflist` for DEL, last first, with the result of the ADD.
pub fn del(conflist: &Value, at: &Attachment<'_>, add_result: Option<&Value>) -> Result<(), Error> {
    let mut list: Vec<&Value> = plugins(conflist).collect();
    list.reverse();
    for plugin in list {
        let mut conf = plugin_conf(conflist, plugin);
        if let Some(prev) = add_result {
            conf["prevResult"] = prev.clone();
        }
        exec("DEL", &conf, at)?;
    }
    Ok(())
}

fn plugins(conflist: &Value) -> impl Iterator<Item = &Value> {
    conflist["plugins"].as_array().into_iter().flatten()
}

/// A plugin's own configuration: its entry in the list plus the list's name and version.
fn plugin_conf(conflist: &Value, plugin: &Value) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    conf
}

fn exec(command: &'static str, conf: &Value, at: &Attachment<'_>) -> Result<Value, Error> {
    let plugin = conf["type"].as_str().unwrap_or_default().to_owned();
    let found = at
        .plugin_dirs
        .iter()
        .map(|d| d.join(&plugin))
        .find(|p| p.is_file());
    let path = match found {
        Some(p) if !plugin.is_empty() && !plugin.contains('/') => p,
        _ => {
            let dirs: Vec<String> = at
                .plugin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            return Err(Error::Missing {
                plugin,
                path: PathBuf::from(dirs.join(":")),
            });
        }
    };
    let cni_path = std::env::join_paths(at.plugin_dirs).map_err(|e| Error::Exec {
        plugin: plugin.clone(),
        source: std::io::Error::other(e),
    })?;
    let exec_err = |source| Error::Exec {
        plugin: plugin.clone(),
        source,
    };
    // The runtime's side of the attachment (bridge, host veth end) lives in the node's
    // namespace, so the plugin runs there; nsenter keeps the mounts (and /sys) as they are.
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", at.runtime_netns.display()))
        .arg(&path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", at.container_id)
        .env("CNI_NETNS", at.netns)
        .env("CNI_IFNAME", at.ifname)
        .env("CNI_ARGS", &at.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec_err)?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())
        .map_err(exec_err)?;
    let out = child.wait_with_output().map_err(exec_err)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let error = serde_json::from_str::<Value>(&stdout).ok();
        let code = error.as_ref().and_then(|v| v["code"].as_u64());
        let message = error
            .and_then(|v| {
                let msg = v["msg"].as_str()?.to_owned();
                Some(match v["details"].as_str() {
                    Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                    _ => msg,
                })
            })
            .unwrap_or_else(|| {
                format!(
                    "{} {}",
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            });
        return Err(Error::Plugin {
            plugin,
            command,
            container: at.container_id.to_owned(),
            code,
            message,
        });
    }
    if command != "ADD" || stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|_| Error::BadResult {
        plugin,
        output: stdout,
    })
}

/// The first IPv4 address of a CNI result, without its prefix length.
pub fn first_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .next()
}

/// The pod network of one node: the reference `bridge` plugin with `host-local` IPAM,
/// then Weft's plugin asking the node's agent at `agent_socket` (when given).
pub fn pod_network(
    subnet: &str,
    gateway: std::net::Ipv4Addr,
    data_dir: &Path,
    agent_socket: Option<&Path>,
) -> Value {
    let mut list = json!({
        "cniVersion": CNI_VERSION,
        "name": "weft-lab",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet, "gateway": gateway.to_string() }]],
                "dataDir": data_dir,
            },
        }],
    });
    if let Some(socket) = agent_socket {
        list["plugins"]
            .as_array_mut()
            .expect("a list")
            .push(json!({ "type": "weft-cni", "agentSocket": socket }));
    }
    list
}

/// The folders plugins are looked for in: the reference plugins', then the folder of
/// this program (where `weft-cni` is built next to `weftctl`).
pub fn plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(PLUGIN_DIR)];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        dirs.push(dir);
    }
    dirs
}

/// The loopback network every pod gets.
pub fn loopback() -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": "lo",
        "plugins": [{ "type": "loopback" }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_conf_carries_name_version_and_plugin_fields() {
        let list = pod_network(
            "10.244.1.0/24",
            "10.244.1.1".parse().unwrap(),
            Path::new("/d"),
            Some(Path::new("/run/weft/n1/admin.sock")),
        );
        assert_eq!(list["plugins"][1]["type"], "weft-cni");
        assert_eq!(list["plugins"][1]["agentSocket"], "/run/weft/n1/admin.sock");
        let first = plugins(&list).next().unwrap();
        let conf = plugin_conf(&list, first);
        assert_eq!(conf["name"], "weft-lab");
        assert_eq!(conf["cniVersion"], CNI_VERSION);
        assert_eq!(conf["type"], "bridge");
        assert_eq!(conf["ipam"]["ranges"][0][0]["gateway"], "10.244.1.1");
    }

    #[test]
    fn reads_the_address_of_a_result() {
        let result = json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 2}],
        });
        assert_eq!(first_ipv4(&result), Some("10.244.1.5".parse().unwrap()));
        assert_eq!(first_ipv4(&json!({})), None);
    }
}
