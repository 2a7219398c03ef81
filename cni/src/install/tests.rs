use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("weft-cni-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::create_dir_all(p.join("net.d")).unwrap();
        Dir(p)
    }
    fn options(&self) -> Options {
        let binary = self.0.join("weft-cni.src");
        std::fs::write(&binary, b"#!/bin/true\n").unwrap();
        Options {
            bin_dir: self.0.join("bin"),
            net_dir: self.0.join("net.d"),
            agent_socket: "/run/weft/node-1/admin.sock".into(),
            exclude_namespaces: vec!["kube-system".into()],
            binary: Some(binary),
            uninstall: false,
            watch: None,
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn chains_after_the_primary_plugins_once_and_comes_out_again() {
    let d = Dir::new("chain");
    let primary = d.0.join("net.d/10-flannel.conflist");
    std::fs::write(
        &primary,
        r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap"}]}"#,
    )
    .unwrap();
    // Not the first by name: left alone.
    std::fs::write(d.0.join("net.d/99-other.conflist"), "{}").unwrap();
    let o = d.options();
    let report = install(&o).unwrap();
    assert_eq!(report.conflist, primary);
    assert_eq!(report.chained_after, ["flannel", "portmap"]);
    let list = read(&primary);
    assert_eq!(list["plugins"].as_array().unwrap().len(), 3);
    assert_eq!(
        list["plugins"][2],
        json!({"type": "weft-cni", "agentSocket": "/run/weft/node-1/admin.sock", "excludeNamespaces": ["kube-system"]})
    );
    assert_eq!(list["name"], "cbr0");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.0.join("bin/weft-cni"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    // Again: the same file.
    let before = std::fs::read(&primary).unwrap();
    install(&o).unwrap();
    assert_eq!(std::fs::read(&primary).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(d.0.join("net.d/99-other.conflist")).unwrap(),
        "{}"
    );
    // Out again: the primary plugins as they were.
    let out = Options {
        uninstall: true,
        ..o
    };
    let report = install(&out).unwrap();
    assert!(report.removed);
    assert!(!d.0.join("bin/weft-cni").exists());
    // Again: nothing left to do, no error.
    install(&out).unwrap();
    assert_eq!(
        read(&primary)["plugins"],
        json!([{"type":"flannel"},{"type":"portmap"}])
    );
}

#[test]
fn a_single_plugin_conf_becomes_a_list() {
    let d = Dir::new("conf");
    std::fs::write(
        d.0.join("net.d/10-bridge.conf"),
        r#"{"cniVersion":"0.4.0","name":"br","type":"bridge","ipam":{"type":"host-local"}}"#,
    )
    .unwrap();
    let report = install(&d.options()).unwrap();
    assert_eq!(report.conflist, d.0.join("net.d/10-bridge.conflist"));
    assert!(!d.0.join("net.d/10-bridge.conf").exists());
    let list = read(&report.conflist);
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(list["name"], "br");
    assert_eq!(
        list["plugins"][0],
        json!({"type":"bridge","ipam":{"type":"host-local"}})
    );
    assert_eq!(list["plugins"][1]["type"], "weft-cni");
}

#[test]
fn without_a_primary_configuration_it_says_what_is_missing() {
    let d = Dir::new("empty");
    let e = install(&d.options()).unwrap_err();
    assert!(e.contains("no network configuration"), "{e}");
    std::fs::write(d.0.join("net.d/10-x.conflist"), "[1]").unwrap();
    let e = install(&d.options()).unwrap_err();
    assert!(e.contains("not a JSON object"), "{e}");
    assert!(
        Options::from_args(&["--bin-dir".into()])
            .unwrap_err()
            .contains("needs a value")
    );
    assert!(
        Options::from_args(&["--x".into(), "y".into()])
            .unwrap_err()
            .contains("unknown option")
    );
}

#[test]
fn a_primary_plugin_that_rewrites_its_file_gets_weft_again() {
    let d = Dir::new("rewrite");
    let primary = d.0.join("net.d/10-kindnet.conflist");
    let original =
        r#"{"cniVersion":"0.3.1","name":"kindnet","plugins":[{"type":"ptp"},{"type":"portmap"}]}"#;
    std::fs::write(&primary, original).unwrap();
    let o = d.options();
    assert!(install(&o).unwrap().changed);
    assert!(
        !install(&o).unwrap().changed,
        "nothing to do the second time"
    );
    // The primary plugin writes its file again, without Weft's entry.
    std::fs::write(&primary, original).unwrap();
    let again = install(&o).unwrap();
    assert!(again.changed);
    assert_eq!(read(&primary)["plugins"][2]["type"], "weft-cni");
    assert_eq!(
        Options::from_args(&["--watch".into(), "10s".into()])
            .unwrap()
            .watch,
        Some(std::time::Duration::from_secs(10))
    );
    assert!(Options::from_args(&["--watch".into(), "soon".into()]).is_err());
}
