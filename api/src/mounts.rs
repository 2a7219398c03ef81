//! What is mounted where, from `/proc/self/mountinfo`: the agent, the lab and the tests
//! all need the cgroup v2 and bpffs mount points, which differ between hosts (pure v2
//! at `/sys/fs/cgroup`, hybrid at `/sys/fs/cgroup/unified`).

use std::path::PathBuf;

/// One mount: where, and which file system type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fs_type: String,
}

/// The mounts this process sees (empty if mountinfo cannot be read).
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// The mount point of the cgroup v2 hierarchy, if one is mounted.
pub fn cgroup2() -> Option<PathBuf> {
    mounts()
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.point)
}

/// Whether a file system of `fs_type` is mounted exactly at `point`.
pub fn is_mounted(point: &std::path::Path, fs_type: &str) -> bool {
    mounts()
        .iter()
        .any(|m| m.fs_type == fs_type && m.point == point)
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            // Optional fields end with a lone "-", followed by the fs type.
            let fs_type = fields.skip_while(|f| *f != "-").nth(1)?;
            Some(Mount {
                point: unescape(point),
                fs_type: fs_type.to_owned(),
            })
        })
        .collect()
}

/// Mount points in mountinfo escape space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|oct| std::str::from_utf8(oct).ok())
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_and_bpf_mounts() {
        let text = "\
25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 30 0:25 / /sys/fs/bpf rw,relatime - bpf bpf rw
29 30 0:26 / /mnt/with\\040space rw - ext4 /dev/vda rw";
        let mounts = parse_mountinfo(text);
        let find = |fs: &str| {
            mounts
                .iter()
                .find(|m| m.fs_type == fs)
                .unwrap()
                .point
                .clone()
        };
        assert_eq!(find("cgroup2"), PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(find("bpf"), PathBuf::from("/sys/fs/bpf"));
        assert_eq!(mounts[4].point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn this_host_has_a_cgroup2_hierarchy() {
        // Weft needs one; every machine it runs or is tested on has it.
        assert!(cgroup2().is_some());
    }
}
