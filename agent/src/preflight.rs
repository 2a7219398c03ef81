//! What a node needs for the agent, checked before it is installed there
//! (`weftctl check`): a recent enough kernel, cgroup v2, bpffs, the agent's eBPF
//! programs passing the kernel's verifier (loaded and dropped again, nothing attached
//! or pinned), and the CNI folders the Weft plugin is installed into. Each check says
//! what it found and, when it fails, how to fix it.

use std::path::{Path, PathBuf};

use aya::{EbpfLoader, programs::Program};
use serde::Serialize;

/// The oldest kernel the agent's programs are for (`sk_lookup` came with 5.9; 5.10 is
/// the long-term release after it).
pub const MIN_KERNEL: (u32, u32) = (5, 10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// A failed check that is `required` stops an installation; others only warn.
    pub required: bool,
    pub found: String,
    /// What to do when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, required: bool, result: Result<String, (String, String)>) -> Self {
        match result {
            Ok(found) => Check {
                name,
                ok: true,
                required,
                found,
                fix: None,
            },
            Err((found, fix)) => Check {
                name,
                ok: false,
                required,
                found,
                fix: Some(fix),
            },
        }
    }
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct Paths {
    pub bpffs: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            bpffs: "/sys/fs/bpf".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
        }
    }
}

/// `(major, minor)` of a kernel release such as `6.1.0-18-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn kernel_release() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(text.trim().to_owned())
}

fn kernel() -> Result<String, (String, String)> {
    let release = kernel_release().unwrap_or_else(|| "unknown".into());
    match kernel_version(&release) {
        Some(v) if v >= MIN_KERNEL => Ok(release),
        _ => Err((
            release,
            format!(
                "upgrade the node's kernel to {}.{} or later",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        )),
    }
}

/// Loads every program of the agent's object (the verifier runs), then drops them.
pub fn programs_load() -> Result<String, String> {
    let mut ebpf = EbpfLoader::new()
        .load(crate::ebpf::OBJECT)
        .map_err(|e| format!("loading the object: {e}"))?;
    let mut loaded = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        let result = match program {
            Program::CgroupSockAddr(p) => p.load(),
            Program::SockOps(p) => p.load(),
            Program::SkLookup(p) => p.load(),
            Program::SkMsg(p) => p.load(),
            _ => {
                return Err(format!("{name}: a program kind the agent does not use"));
            }
        };
        result.map_err(|e| format!("{name}: {e}"))?;
        loaded.push(name.to_owned());
    }
    loaded.sort();
    Ok(format!("{} programs: {}", loaded.len(), loaded.join(", ")))
}

fn folder(path: &Path, what: &str) -> Result<String, (String, String)> {
    if path.is_dir() {
        Ok(path.display().to_string())
    } else {
        Err((
            format!("{} is not a folder", path.display()),
            format!(
                "install the cluster's CNI ({what}), or name the folder the node's runtime uses"
            ),
        ))
    }
}

/// Runs every check.
pub fn run(paths: &Paths) -> Vec<Check> {
    let cgroup = match api::mounts::cgroup2() {
        Some(p) => Ok(p.display().to_string()),
        None => Err((
            "no cgroup2 mount".to_owned(),
            "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) or mount cgroup2".to_owned(),
        )),
    };
    let bpffs = if api::mounts::is_mounted(&paths.bpffs, "bpf") {
        Ok(paths.bpffs.display().to_string())
    } else {
        Err((
            format!("no bpffs at {}", paths.bpffs.display()),
            format!("mount -t bpf bpf {}", paths.bpffs.display()),
        ))
    };
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    let btf = if btf.exists() {
        Ok(btf.display().to_string())
    } else {
        Err((
            "no /sys/kernel/btf/vmlinux".to_owned(),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y helps debugging (not required)".to_owned(),
        ))
    };
    let programs = programs_load().map_err(|e| {
        (
            e,
            "run as root (or with CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) on a kernel whose \
             verifier takes the agent's programs"
                .to_owned(),
        )
    });
    vec![
        Check::new("kernel", true, kernel()),
        Check::new("cgroup v2", true, cgroup),
        Check::new("bpffs", true, bpffs),
        Check::new("BTF", false, btf),
        Check::new("eBPF programs load", true, programs),
        Check::new(
            "CNI configuration folder",
            true,
            folder(&paths.cni_conf_dir, "its configuration"),
        ),
        Check::new(
            "CNI plugin folder",
            true,
            folder(&paths.cni_bin_dir, "its plugins"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("4.19.0-25-amd64"), Some((4, 19)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.4.0").unwrap() < MIN_KERNEL);
    }

    #[test]
    fn a_missing_folder_fails_with_its_fix() {
        let c = Check::new(
            "x",
            true,
            folder(Path::new("/nonexistent/weft"), "its plugins"),
        );
        assert!(!c.ok);
        assert!(c.fix.unwrap().contains("install the cluster's CNI"));
    }
}
