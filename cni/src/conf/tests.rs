use std::collections::HashMap;

use super::*;

fn env(vars: &[(&str, &str)]) -> Result<Env, Error> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Env::read(|k| map.get(k).cloned())
}

#[test]
fn reads_the_runtime_variables_and_the_pod_from_cni_args() {
    let e = env(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_UID=u",
        ),
    ])
    .unwrap();
    assert_eq!(e.command, Command::Add);
    assert_eq!(e.pod_namespace.as_deref(), Some("shop"));
    assert_eq!(e.pod_name.as_deref(), Some("cart-1"));
    // DEL may come without a namespace: the runtime removed it already.
    let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc")]).unwrap();
    assert_eq!(e.netns, PathBuf::new());
    assert_eq!(e.pod_namespace, None);
}

#[test]
fn missing_or_bad_variables_are_code_4_with_the_variable() {
    for (vars, needle) in [
        (vec![], "CNI_COMMAND is not set"),
        (vec![("CNI_COMMAND", "GC")], "\"GC\" is not supported"),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0"),
            ],
            "CNI_NETNS is not set",
        ),
        (
            vec![
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_NETNS", "netns/x"),
                ("CNI_IFNAME", "eth0"),
            ],
            "not an absolute path",
        ),
        (vec![("CNI_COMMAND", "DEL")], "CNI_CONTAINERID is not set"),
    ] {
        let e = env(&vars).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT, "{vars:?}");
        assert!(e.msg.contains(needle), "{vars:?}: {}", e.msg);
    }
}

#[test]
fn configurations_are_checked_with_the_field_and_code() {
    let c = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"k8s","type":"weft-cni","agentSocket":"/run/weft/n1/admin.sock",
             "prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.5/24"}]}}"#,
    )
    .unwrap();
    assert_eq!(c.agent_socket, PathBuf::from("/run/weft/n1/admin.sock"));
    assert_eq!(c.exclude_namespaces, ["kube-system", "weft-system"]);
    // The previous result is passed on exactly.
    assert_eq!(
        c.result(),
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.244.1.5/24"}]})
    );
    let bare = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"k8s"}"#).unwrap();
    assert_eq!(bare.result(), json!({"cniVersion": "0.4.0"}));

    for (stdin, code, needle) in [
        (&b"not json"[..], code::DECODE, "not valid JSON"),
        (
            br#"{"cniVersion":"2.0.0","name":"k"}"#,
            code::INCOMPATIBLE_VERSION,
            "\"2.0.0\"",
        ),
        (br#"{"name":"k"}"#, code::INCOMPATIBLE_VERSION, "\"\""),
        (br#"{"cniVersion":"1.0.0"}"#, code::INVALID_CONFIG, "name:"),
        (
            br#"{"cniVersion":"1.0.0","name":"k","agentSocket":"rel.sock"}"#,
            code::INVALID_CONFIG,
            "agentSocket:",
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"k","prevResult":[1]}"#,
            code::INVALID_CONFIG,
            "prevResult:",
        ),
        (
            br#"{"cniVersion":"1.0.0","name":"k","excludeNamespaces":"kube-system"}"#,
            code::DECODE,
            "not valid JSON",
        ),
    ] {
        let e = NetConf::parse(stdin).unwrap_err();
        assert_eq!(e.code, code, "{}", String::from_utf8_lossy(stdin));
        assert!(
            e.msg.contains(needle),
            "{}: {}",
            String::from_utf8_lossy(stdin),
            e.msg
        );
    }
}

#[test]
fn errors_print_as_the_spec_says() {
    let e = Error::new(code::TRY_AGAIN_LATER, "agent down", "connection refused");
    assert_eq!(
        e.to_json("1.0.0"),
        json!({"cniVersion":"1.0.0","code":11,"msg":"agent down","details":"connection refused"})
    );
    assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
    assert_eq!(version_of(b"garbage"), "1.0.0");
}
