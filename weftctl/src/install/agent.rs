//! The node agent's objects: its ServiceAccount (it calls no Kubernetes API itself; the
//! control plane checks its projected token by TokenReview) and its DaemonSet — on
//! every node (it tolerates every taint), in the node's network (its metrics on the
//! node's address), with only the capabilities eBPF, capture and entering pod network
//! namespaces need, and the host's bpffs, cgroup tree and network namespaces mounted.
//! Its init container installs `weft-cni` into the node's CNI folders, chained after
//! the cluster's own plugin, asking this agent's socket; a small second container
//! keeps it there.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, HTTPGetAction, HostPathVolumeSource,
            PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource, SecurityContext,
            ServiceAccount, ServiceAccountTokenProjection, Toleration, Volume, VolumeMount,
            VolumeProjection,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{ROOTS_CONFIG_MAP, Values, controlplane, env_var, field_env, labels, meta};

pub const NAME: &str = "weft-agent";

/// The agent's admin socket, at the same path on the host, where `weft-cni` (run by
/// the node's container runtime) asks it; its namespace record is written beside it.
pub const AGENT_SOCKET: &str = "/var/run/weft/agent.sock";

pub fn service_account(v: &Values) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(NAME, Some(&v.namespace)),
        ..ServiceAccount::default()
    }
}

pub(super) fn host_path(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Volume::default()
    }
}

pub(super) fn mount(
    name: &str,
    path: &str,
    read_only: bool,
    propagation: Option<&str>,
) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        mount_propagation: propagation.map(str::to_owned),
        ..VolumeMount::default()
    }
}

/// A count, or a percentage, as Kubernetes takes them.
fn amount(value: &str) -> IntOrString {
    match value.parse::<i32>() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(value.to_owned()),
    }
}

pub fn daemon_set(v: &Values) -> DaemonSet {
    let node_name = field_env("WEFT_NODE_NAME", "spec.nodeName");
    let container = Container {
        name: "agent".into(),
        image: Some(v.image.clone()),
        image_pull_policy: Some(v.image_pull_policy.clone()),
        command: Some(vec!["weft-agent".into()]),
        env: Some(vec![
            node_name,
            env_var("WEFT_TRUST_DOMAIN", &v.trust_domain),
            env_var("WEFT_CONTROLPLANE", controlplane::address(v)),
            env_var("WEFT_CONTROLPLANE_CA", "/var/run/weft/roots/roots.pem"),
            env_var("WEFT_NODE_TOKEN_FILE", "/var/run/weft/token/token"),
            env_var("WEFT_CGROUP", "/sys/fs/cgroup"),
            env_var("WEFT_BPFFS", "/sys/fs/bpf"),
            env_var("WEFT_STATE_DIR", "/var/lib/weft/agent"),
            env_var("WEFT_ADMIN_SOCKET", AGENT_SOCKET),
            env_var("WEFT_SOCKMAP", if v.agent.sockmap { "on" } else { "off" }),
            env_var(
                "WEFT_CLIENT_ADDRESS",
                if v.agent.client_address { "on" } else { "off" },
            ),
            env_var("WEFT_LOG_FORMAT", &v.log_format),
        ]),
        // No declared ports: on the host network each would be a host port, and the
        // surge pod of an update could not be placed beside the running one. The
        // metrics port (15020) is found by Prometheus from the pod's labels.
        ports: None,
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".into()),
                port: IntOrString::Int(15021),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(super::resources(&v.agent.resources)),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                // eBPF programs and maps; capture and steering; entering pod network
                // namespaces (setns) and bpffs pins; raising the memlock limit.
                add: Some(
                    ["BPF", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE", "PERFMON"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("bpffs", "/sys/fs/bpf", false, None),
            mount("cgroup", "/sys/fs/cgroup", true, None),
            // Pod network namespaces appear here after the agent started.
            mount("netns", "/var/run/netns", true, Some("HostToContainer")),
            mount("state", "/var/lib/weft/agent", false, None),
            mount("run", "/var/run/weft", false, None),
            mount("roots", "/var/run/weft/roots", true, None),
            mount("token", "/var/run/weft/token", true, None),
        ]),
        ..Container::default()
    };
    let install_cni = Container {
        name: "install-cni".into(),
        image: Some(v.image.clone()),
        image_pull_policy: Some(v.image_pull_policy.clone()),
        command: Some(
            [
                "weft-cni",
                "install",
                "--bin-dir",
                "/host/opt/cni/bin",
                "--net-dir",
                "/host/etc/cni/net.d",
                "--agent-socket",
                AGENT_SOCKET,
                "--exclude",
                &format!("kube-system,{}", v.namespace),
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        resources: Some(super::resources(&v.agent.resources)),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            // Writes root-owned files on the host; no capability beyond that.
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(vec!["DAC_OVERRIDE".into(), "CHOWN".into(), "FOWNER".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("cni-bin", "/host/opt/cni/bin", false, None),
            mount("cni-conf", "/host/etc/cni/net.d", false, None),
        ]),
        ..Container::default()
    };
    // And keeps it there: a primary plugin that writes its configuration again (on
    // its own upgrade, say) drops Weft's entry, which this puts back within 10 s.
    let mut keep_cni = install_cni.clone();
    keep_cni.name = "cni".into();
    if let Some(command) = keep_cni.command.as_mut() {
        command.extend(["--watch".to_owned(), "10s".to_owned()]);
    }
    keep_cni.resources = Some(super::idle_resources());
    let token = Volume {
        name: "token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some("weft".into()),
                    expiration_seconds: Some(3600),
                    path: "token".into(),
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    };
    let roots = Volume {
        name: "roots".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: ROOTS_CONFIG_MAP.into(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    DaemonSet {
        metadata: meta(NAME, Some(&v.namespace)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(NAME)),
                ..LabelSelector::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                // A surge pod takes the running agent's listeners (hitless; see
                // the agent's `upgrade.rs`) before the old pod drains and goes.
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_surge: Some(amount(&v.agent.max_surge)),
                    max_unavailable: Some(amount(&v.agent.max_unavailable)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(NAME)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    host_pid: Some(false),
                    priority_class_name: Some("system-node-critical".into()),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]),
                    init_containers: Some(vec![install_cni]),
                    containers: vec![container, keep_cni],
                    volumes: Some(vec![
                        host_path("bpffs", "/sys/fs/bpf", "DirectoryOrCreate"),
                        host_path("cgroup", "/sys/fs/cgroup", "Directory"),
                        host_path("netns", "/var/run/netns", "DirectoryOrCreate"),
                        host_path("state", "/var/lib/weft/agent", "DirectoryOrCreate"),
                        host_path("run", "/var/run/weft", "DirectoryOrCreate"),
                        host_path("cni-bin", &v.agent.cni_bin_dir, "DirectoryOrCreate"),
                        host_path("cni-conf", &v.agent.cni_conf_dir, "DirectoryOrCreate"),
                        roots,
                        token,
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    }
}
