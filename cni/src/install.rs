//! `weft-cni install`: what the agent DaemonSet's init container does on each node. It
//! copies the plugin into the node's CNI binary folder and chains it into the node's
//! primary network configuration (the first file of the configuration folder, as
//! runtimes pick it), after the plugins already there. Running it again changes
//! nothing; `weft-cni install --uninstall` takes the plugin out of the configuration and
//! removes the binary.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::conf::DEFAULT_EXCLUDED;

pub const PLUGIN_TYPE: &str = "weft-cni";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where runtimes look for plugin binaries (`/opt/cni/bin` on most nodes).
    pub bin_dir: PathBuf,
    /// The network configuration folder (`/etc/cni/net.d`).
    pub net_dir: PathBuf,
    /// The agent's admin socket on the node.
    pub agent_socket: PathBuf,
    pub exclude_namespaces: Vec<String>,
    /// The binary to install (this one, unless told).
    pub binary: Option<PathBuf>,
    /// Take the plugin out instead.
    pub uninstall: bool,
    /// Keep it installed: look again every so often (a primary plugin that rewrites
    /// its configuration drops Weft's entry).
    pub watch: Option<std::time::Duration>,
}

impl Options {
    /// `--bin-dir DIR --net-dir DIR --agent-socket PATH [--exclude NS,…] [--binary PATH]
    /// [--uninstall]`.
    pub fn from_args(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            bin_dir: PathBuf::from("/opt/cni/bin"),
            net_dir: PathBuf::from("/etc/cni/net.d"),
            agent_socket: PathBuf::from(crate::conf::DEFAULT_AGENT_SOCKET),
            exclude_namespaces: DEFAULT_EXCLUDED.iter().map(|s| (*s).to_owned()).collect(),
            binary: None,
            uninstall: false,
            watch: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--uninstall" {
                o.uninstall = true;
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .clone();
            match flag.as_str() {
                "--bin-dir" => o.bin_dir = value.into(),
                "--net-dir" => o.net_dir = value.into(),
                "--agent-socket" => o.agent_socket = value.into(),
                "--binary" => o.binary = Some(value.into()),
                "--watch" => {
                    let secs: u64 = value
                        .trim_end_matches('s')
                        .parse()
                        .map_err(|_| format!("--watch {value}: expected seconds, e.g. 10s"))?;
                    o.watch = Some(std::time::Duration::from_secs(secs.max(1)));
                }
                "--exclude" => {
                    o.exclude_namespaces = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(o)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub binary: Option<PathBuf>,
    pub conflist: PathBuf,
    /// The plugins before Weft's, by type.
    pub chained_after: Vec<String>,
    pub removed: bool,
    /// Whether anything was written (running again changes nothing).
    pub changed: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed {
            if let Some(b) = &self.binary {
                writeln!(f, "removed {}", b.display())?;
            }
            return write!(f, "removed weft-cni from {}", self.conflist.display());
        }
        if let Some(b) = &self.binary {
            writeln!(f, "installed {}", b.display())?;
        }
        write!(
            f,
            "chained into {} after {}",
            self.conflist.display(),
            self.chained_after.join(", ")
        )
    }
}

/// The node's primary network configuration: the first `.conflist` or `.conf` file by
/// name, as runtimes choose it.
pub fn primary(net_dir: &Path) -> Result<PathBuf, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(net_dir)
        .map_err(|e| format!("reading {}: {e}", net_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    files.into_iter().next().ok_or_else(|| {
        format!(
            "no network configuration in {}: the cluster's own CNI plugin must be installed first (this is retried)",
            net_dir.display()
        )
    })
}

/// `conflist` with Weft's plugin last (and only once), or without it.
pub fn chain(conflist: &Value, plugin: Option<&Value>) -> Value {
    let mut out = conflist.clone();
    let plugins: Vec<Value> = conflist["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] != PLUGIN_TYPE)
        .cloned()
        .chain(plugin.cloned())
        .collect();
    out["plugins"] = Value::Array(plugins);
    out
}

/// A single-plugin `.conf` as a list, as the spec says a conflist is.
fn as_list(conf: Value) -> Value {
    if conf.get("plugins").is_some() {
        return conf;
    }
    let mut plugin = conf.clone();
    let obj = plugin.as_object_mut().expect("checked to be an object");
    obj.remove("cniVersion");
    obj.remove("name");
    json!({
        "cniVersion": conf["cniVersion"],
        "name": conf["name"],
        "plugins": [plugin],
    })
}

pub fn install(o: &Options) -> Result<Report, String> {
    let file = primary(&o.net_dir)?;
    let text = std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let conf: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
    if !conf.is_object() {
        return Err(format!("{} is not a JSON object", file.display()));
    }
    let list = as_list(conf);
    let plugin = json!({
        "type": PLUGIN_TYPE,
        "agentSocket": o.agent_socket,
        "excludeNamespaces": o.exclude_namespaces,
    });
    let chained = chain(&list, (!o.uninstall).then_some(&plugin));
    // A `.conf` becomes a `.conflist` of the same name (and sorts the same).
    let target = if file.extension().and_then(|e| e.to_str()) == Some("conflist") {
        file.clone()
    } else {
        file.with_extension("conflist")
    };
    let mut binary = None;
    let mut changed = false;
    if o.uninstall {
        let dest = o.bin_dir.join(PLUGIN_TYPE);
        match std::fs::remove_file(&dest) {
            Ok(()) => {
                binary = Some(dest);
                changed = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing {}: {e}", dest.display())),
        }
    } else {
        let source = match &o.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?,
        };
        let dest = o.bin_dir.join(PLUGIN_TYPE);
        let program =
            std::fs::read(&source).map_err(|e| format!("reading {}: {e}", source.display()))?;
        if std::fs::read(&dest).ok().as_deref() != Some(&program[..]) {
            write_atomic(&dest, &program, 0o755)?;
            changed = true;
        }
        binary = Some(dest);
    }
    let mut bytes = serde_json::to_vec_pretty(&chained).expect("serializable");
    bytes.push(b'\n');
    if std::fs::read(&target).ok().as_deref() != Some(&bytes[..]) {
        write_atomic(&target, &bytes, 0o644)?;
        changed = true;
    }
    if target != file {
        std::fs::remove_file(&file).map_err(|e| format!("removing {}: {e}", file.display()))?;
    }
    let chained_after = chained["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] != PLUGIN_TYPE)
        .filter_map(|p| p["type"].as_str().map(str::to_owned))
        .collect();
    Ok(Report {
        binary,
        conflist: target,
        chained_after,
        removed: o.uninstall,
        changed,
    })
}

/// [`install`], then with `watch` again every so often, saying what it changed; an
/// error while watching is said and tried again.
pub fn run(o: &Options, mut say: impl FnMut(&str)) -> Result<(), String> {
    let report = install(o)?;
    say(&report.to_string());
    let Some(every) = o.watch else {
        return Ok(());
    };
    loop {
        std::thread::sleep(every);
        match install(o) {
            Ok(r) if r.changed => say(&format!("the configuration had changed; {r}")),
            Ok(_) => {}
            Err(e) => say(&format!("checking again failed: {e}")),
        }
    }
}

/// Writes whole or not at all: runtimes read these files at any moment.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.weft-tmp"));
    let err = |e: std::io::Error| format!("writing {}: {e}", path.display());
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests;
