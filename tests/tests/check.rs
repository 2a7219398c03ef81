//! `weftctl check` on this machine, for real: the kernel, cgroup v2, bpffs and the
//! agent's eBPF programs through the kernel's verifier (root), and the CNI folders.
//! It leaves nothing behind in bpffs.

use serde_json::Value;
use tests::{require_root, weftctl};

fn check(conf_dir: &str) -> (bool, Value) {
    let out = weftctl(&[
        "check",
        "--cni-conf-dir",
        conf_dir,
        "--cni-bin-dir",
        "/usr/lib/cni",
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), report)
}

fn named<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["node"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

fn bpffs_entries() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn this_node_passes_and_a_missing_cni_folder_is_named_with_its_fix() {
    require_root();
    let dir = std::env::temp_dir().join(tests::unique("cni-conf"));
    std::fs::create_dir_all(&dir).unwrap();
    let before = bpffs_entries();

    let (passed, report) = check(dir.to_str().unwrap());
    assert!(passed, "{report}");
    let programs = named(&report, "eBPF programs load");
    assert_eq!(programs["ok"], true, "{report}");
    for p in [
        "weft_connect4",
        "weft_connect6",
        "weft_sockops",
        "weft_sk_lookup",
    ] {
        assert!(
            programs["found"].as_str().unwrap().contains(p),
            "{programs}"
        );
    }
    assert_eq!(named(&report, "cgroup v2")["ok"], true);
    assert_eq!(bpffs_entries(), before, "the check left something in bpffs");

    let missing = dir.join("missing");
    let (passed, report) = check(missing.to_str().unwrap());
    assert!(!passed, "{report}");
    let cni = named(&report, "CNI configuration folder");
    assert_eq!(cni["ok"], false);
    assert!(cni["fix"].as_str().unwrap().contains("CNI"), "{cni}");
    assert_eq!(
        named(&report, "kernel")["ok"],
        true,
        "the others still pass"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
