//! The node cleanup `weftctl uninstall` runs once on every node, as a DaemonSet: its
//! init containers take Weft's capture out of the kernel (`weft-agent uninstall`:
//! unpinning detaches the programs) and `weft-cni` out of the node's CNI configuration
//! (`weft-cni install --uninstall`); its main container then waits, so that the
//! DaemonSet's readiness says the work is done on each node. It runs in the node's
//! network, so it needs no CNI itself.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{
            Capabilities, Container, PodSpec, PodTemplateSpec, SecurityContext, Toleration,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use super::{
    Values,
    agent::{host_path, mount},
    env_var, field_env, labels, meta,
};

pub const NAME: &str = "weft-node-cleanup";

fn container(v: &Values, name: &str, command: &[&str], caps: &[&str]) -> Container {
    Container {
        name: name.into(),
        image: Some(v.image.clone()),
        image_pull_policy: Some(v.image_pull_policy.clone()),
        command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(caps.iter().map(|s| (*s).to_owned()).collect()),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

pub fn daemon_set(v: &Values) -> DaemonSet {
    let node_name = field_env("WEFT_NODE_NAME", "spec.nodeName");
    let mut capture = container(
        v,
        "remove-capture",
        &["weft-agent", "uninstall"],
        &["BPF", "SYS_ADMIN", "DAC_OVERRIDE"],
    );
    capture.env = Some(vec![
        node_name,
        env_var("WEFT_BPFFS", "/sys/fs/bpf"),
        env_var("WEFT_STATE_DIR", "/var/lib/weft/agent"),
    ]);
    capture.volume_mounts = Some(vec![
        mount("bpffs", "/sys/fs/bpf", false, None),
        mount("state", "/var/lib/weft/agent", false, None),
    ]);
    let mut cni = container(
        v,
        "remove-cni",
        &[
            "weft-cni",
            "install",
            "--uninstall",
            "--bin-dir",
            "/host/opt/cni/bin",
            "--net-dir",
            "/host/etc/cni/net.d",
        ],
        &["DAC_OVERRIDE", "FOWNER"],
    );
    cni.volume_mounts = Some(vec![
        mount("cni-bin", "/host/opt/cni/bin", false, None),
        mount("cni-conf", "/host/etc/cni/net.d", false, None),
    ]);
    let mut done = container(v, "done", &["weft-cni", "pause"], &[]);
    done.resources = Some(super::idle_resources());
    DaemonSet {
        metadata: meta(NAME, Some(&v.namespace)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(NAME)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(NAME)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]),
                    init_containers: Some(vec![capture, cni]),
                    containers: vec![done],
                    volumes: Some(vec![
                        host_path("bpffs", "/sys/fs/bpf", "DirectoryOrCreate"),
                        host_path("state", "/var/lib/weft/agent", "DirectoryOrCreate"),
                        host_path("cni-bin", &v.agent.cni_bin_dir, "DirectoryOrCreate"),
                        host_path("cni-conf", &v.agent.cni_conf_dir, "DirectoryOrCreate"),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}
