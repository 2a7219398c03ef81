//! The control plane's objects: its ServiceAccount and RBAC (exactly what Kubernetes
//! mode calls: the watched kinds, TokenReview, its CA Secret, the waypoint
//! controller's applies), its Deployment, Service (15012 gRPC, 15017 webhook, 15014
//! metrics), PodDisruptionBudget and the ValidatingWebhookConfiguration of Weft's and
//! the Gateway API's kinds.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        admissionregistration::v1::{
            RuleWithOperations, ServiceReference, ValidatingWebhook,
            ValidatingWebhookConfiguration, WebhookClientConfig,
        },
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodSpec,
            PodTemplateSpec, Probe, SecurityContext, Service, ServiceAccount, ServicePort,
            ServiceSpec, TCPSocketAction, Volume, VolumeMount,
        },
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
        rbac::v1::{
            ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
        },
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{Values, env_var, field_env, labels, meta};

/// The control plane's name: its Deployment, Service, RBAC, and the webhook
/// configuration it writes its CA bundle into under that name.
pub const NAME: &str = ::controlplane::kubernetes::publish::WEBHOOK;
/// The root CA's Secret (`WEFT_CA_SECRET`'s default).
pub const CA_SECRET: &str = "weft-root-ca";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(owned(groups)),
        resources: Some(owned(resources)),
        verbs: owned(verbs),
        ..PolicyRule::default()
    }
}

/// The ClusterRole's rules: list and watch of every kind Kubernetes mode watches,
/// TokenReview, and the waypoint controller's server-side applies.
pub fn cluster_rules() -> Vec<PolicyRule> {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in ::controlplane::kubernetes::watch::Kind::ALL {
        let r = kind.api_resource();
        by_group.entry(r.group).or_default().push(r.plural);
    }
    let mut rules: Vec<PolicyRule> = by_group
        .into_iter()
        .map(|(group, resources)| {
            let resources: Vec<&str> = resources.iter().map(String::as_str).collect();
            rule(&[&group], &resources, &["list", "watch"])
        })
        .collect();
    rules.push(rule(
        &["authentication.k8s.io"],
        &["tokenreviews"],
        &["create"],
    ));
    rules.push(rule(
        &[""],
        &["serviceaccounts", "configmaps", "services"],
        &["create", "patch"],
    ));
    rules.push(rule(&["apps"], &["deployments"], &["create", "patch"]));
    // The webhook's CA bundle, written at start.
    let mut webhook = rule(
        &["admissionregistration.k8s.io"],
        &["validatingwebhookconfigurations"],
        &["patch"],
    );
    webhook.resource_names = Some(vec![NAME.into()]);
    rules.push(webhook);
    rules.push(rule(
        &["gateway.networking.k8s.io"],
        &["gateways/status"],
        &["patch"],
    ));
    rules
}

fn subject(v: &Values) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: NAME.into(),
        namespace: Some(v.namespace.clone()),
        ..Subject::default()
    }
}

/// The ServiceAccount and what it may do.
pub fn rbac(
    v: &Values,
) -> (
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
) {
    let account = ServiceAccount {
        metadata: meta(NAME, Some(&v.namespace)),
        ..ServiceAccount::default()
    };
    let cluster_role = ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(cluster_rules()),
        ..ClusterRole::default()
    };
    let cluster_binding = ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![subject(v)]),
    };
    // Kubernetes cannot limit `create` to a name; `get` is limited to the Secret.
    let mut get_secret = rule(&[""], &["secrets"], &["get"]);
    get_secret.resource_names = Some(vec![CA_SECRET.into()]);
    // The leader election's Lease: created once, then read and renewed by name.
    let mut hold_lease = rule(&["coordination.k8s.io"], &["leases"], &["get", "update"]);
    hold_lease.resource_names = Some(vec![::controlplane::kubernetes::leader::LEASE.into()]);
    let role = Role {
        metadata: meta(NAME, Some(&v.namespace)),
        rules: Some(vec![
            rule(&[""], &["secrets"], &["create"]),
            get_secret,
            rule(&["coordination.k8s.io"], &["leases"], &["create"]),
            hold_lease,
        ]),
    };
    let binding = RoleBinding {
        metadata: meta(NAME, Some(&v.namespace)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: NAME.into(),
        },
        subjects: Some(vec![subject(v)]),
    };
    (account, cluster_role, cluster_binding, role, binding)
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        ..ContainerPort::default()
    }
}

/// The address pods reach the control plane's gRPC at.
pub fn address(v: &Values) -> String {
    format!("{NAME}.{}.svc:15012", v.namespace)
}

pub fn deployment(v: &Values) -> Deployment {
    let ns = &v.namespace;
    let serving = format!("{NAME},{NAME}.{ns},{NAME}.{ns}.svc,localhost");
    let mut env = vec![
        env_var("WEFT_CP_SOURCE", "kubernetes"),
        // Who this replica is in leader election.
        field_env("WEFT_CP_POD_NAME", "metadata.name"),
        env_var("WEFT_CP_NAMESPACE", ns.clone()),
        env_var("WEFT_TRUST_DOMAIN", v.trust_domain.clone()),
        env_var("WEFT_CERT_LIFETIME", v.controlplane.cert_lifetime.clone()),
        env_var("WEFT_CP_SERVING_NAMES", serving),
        env_var("WEFT_CP_ADDRESS", address(v)),
        env_var("WEFT_CP_WAYPOINT_IMAGE", v.image.clone()),
        env_var("WEFT_CP_STATE_DIR", "/var/lib/weft/controlplane"),
        env_var("WEFT_LOG_FORMAT", v.log_format.clone()),
    ];
    if v.prometheus.enabled {
        // The service graph's rates.
        env.push(env_var("WEFT_CP_PROMETHEUS", super::prometheus::url(v)));
    }
    let container = Container {
        name: "controlplane".into(),
        image: Some(v.image.clone()),
        image_pull_policy: Some(v.image_pull_policy.clone()),
        command: Some(vec!["weft-controlplane".into()]),
        env: Some(env),
        ports: Some(vec![
            port("grpc", 15012),
            port("webhook", 15017),
            port("metrics", 15014),
        ]),
        // Serving starts once every watched kind is listed.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(15012),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/metrics".into()),
                port: IntOrString::Int(15014),
                ..HTTPGetAction::default()
            }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        resources: Some(super::resources(&v.controlplane.resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "state".into(),
            mount_path: "/var/lib/weft/controlplane".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    Deployment {
        metadata: meta(NAME, Some(ns)),
        spec: Some(DeploymentSpec {
            replicas: Some(v.controlplane.replicas),
            selector: LabelSelector {
                match_labels: Some(labels(NAME)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(labels(NAME)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "state".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn service(v: &Values) -> Service {
    let p = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(NAME, Some(&v.namespace)),
        spec: Some(ServiceSpec {
            selector: Some(labels(NAME)),
            ports: Some(vec![
                p("grpc", 15012),
                p("webhook", 15017),
                p("metrics", 15014),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn disruption_budget(v: &Values) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(NAME, Some(&v.namespace)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels(NAME)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The admission webhook for Weft's kinds and the Gateway API's routes. Its CA bundle
/// is the mesh's root, which the control plane writes in at start.
pub fn webhook(v: &Values) -> ValidatingWebhookConfiguration {
    let rules = [
        (
            "weft.dev",
            vec![
                "workloads",
                "trafficfilters",
                "backendpolicies",
                "externalservices",
            ],
        ),
        (
            "security.weft.dev",
            vec!["authorizationpolicies", "peerauthentications"],
        ),
        (
            "gateway.networking.k8s.io",
            vec!["gateways", "httproutes", "grpcroutes"],
        ),
    ]
    .into_iter()
    .map(|(group, resources)| RuleWithOperations {
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec!["*".into()]),
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        resources: Some(resources.into_iter().map(str::to_owned).collect()),
        scope: Some("Namespaced".into()),
    })
    .collect();
    ValidatingWebhookConfiguration {
        metadata: meta(NAME, None),
        webhooks: Some(vec![ValidatingWebhook {
            name: ::controlplane::kubernetes::publish::WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            // The control plane away must not stop the cluster's writes.
            failure_policy: Some("Ignore".into()),
            timeout_seconds: Some(5),
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: NAME.into(),
                    namespace: v.namespace.clone(),
                    path: Some("/validate".into()),
                    port: Some(15017),
                }),
                ..WebhookClientConfig::default()
            },
            rules: Some(rules),
            ..ValidatingWebhook::default()
        }]),
    }
}
