//! `deploy/controlplane-rbac.yaml` grants the control plane what Kubernetes mode uses:
//! list and watch of every kind it watches, TokenReview creation, and the CA Secret.

use std::path::Path;

use controlplane::kubernetes::watch::Kind;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize as _;

struct Manifest {
    cluster_role: ClusterRole,
    cluster_binding: ClusterRoleBinding,
    role: Role,
    binding: RoleBinding,
}

fn manifest() -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controlplane-rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .collect();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} in {}", path.display()))
            .clone()
    };
    Manifest {
        cluster_role: serde_yaml_ng::from_value(of("ClusterRole")).unwrap(),
        cluster_binding: serde_yaml_ng::from_value(of("ClusterRoleBinding")).unwrap(),
        role: serde_yaml_ng::from_value(of("Role")).unwrap(),
        binding: serde_yaml_ng::from_value(of("RoleBinding")).unwrap(),
    }
}

fn allows(
    rules: &[PolicyRule],
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == v);
    rules.iter().any(|r| {
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb)
            && match (&r.resource_names, name) {
                (None, _) => true,
                (Some(names), Some(name)) => names.iter().any(|n| n == name),
                (Some(_), None) => false,
            }
    })
}

#[test]
fn the_control_plane_may_watch_every_kind_it_watches() {
    let m = manifest();
    let rules = m.cluster_role.rules.unwrap_or_default();
    for kind in Kind::ALL {
        let r = kind.api_resource();
        for verb in ["list", "watch"] {
            assert!(
                allows(&rules, &r.group, &r.plural, verb, None),
                "the ClusterRole does not allow {verb} of {}.{} ({kind:?})",
                r.plural,
                r.group
            );
        }
    }
    assert!(allows(
        &rules,
        "authentication.k8s.io",
        "tokenreviews",
        "create",
        None
    ));
}

#[test]
fn the_waypoint_controller_may_apply_what_it_applies() {
    use controlplane::kubernetes::waypoints;
    let m = manifest();
    let rules = m.cluster_role.rules.unwrap_or_default();
    let gateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "w", "namespace": "shop", "uid": "u"},
        "spec": {"gatewayClassName": "weft-waypoint", "listeners": []},
    }))
    .unwrap();
    let settings = waypoints::Settings {
        image: "i".into(),
        controlplane: "cp:15012".into(),
        trust_domain: "cluster.local".into(),
        roots_pem: String::new(),
        token_audience: "weft".into(),
    };
    let objects = waypoints::objects(&gateway, &settings);
    assert_eq!(objects.len(), 4);
    for o in objects {
        let r = controlplane::kubernetes::api_resource(&o);
        // Server-side apply: a patch, which creates what is not there yet.
        for verb in ["create", "patch"] {
            assert!(
                allows(&rules, &r.group, &r.plural, verb, None),
                "the ClusterRole does not allow {verb} of {}.{}",
                r.plural,
                r.group
            );
        }
    }
    assert!(allows(
        &rules,
        "gateway.networking.k8s.io",
        "gateways/status",
        "patch",
        None
    ));
    // What it publishes at start: the roots' ConfigMap, the webhook's CA bundle.
    assert!(allows(&rules, "", "configmaps", "patch", None));
    let hooks = "validatingwebhookconfigurations";
    let group = "admissionregistration.k8s.io";
    assert!(allows(
        &rules,
        group,
        hooks,
        "patch",
        Some("weft-controlplane")
    ));
    assert!(!allows(
        &rules,
        group,
        hooks,
        "patch",
        Some("someone-elses")
    ));
}

#[test]
fn the_control_plane_elects_its_leader_with_one_lease() {
    let m = manifest();
    let rules = m.role.rules.unwrap_or_default();
    let lease = controlplane::kubernetes::leader::LEASE;
    let group = "coordination.k8s.io";
    assert!(allows(&rules, group, "leases", "create", None));
    for verb in ["get", "update"] {
        assert!(allows(&rules, group, "leases", verb, Some(lease)), "{verb}");
        assert!(
            !allows(&rules, group, "leases", verb, Some("someone-elses")),
            "{verb} of other Leases is not needed"
        );
    }
}

#[test]
fn the_control_plane_keeps_its_root_in_one_secret() {
    let m = manifest();
    let rules = m.role.rules.unwrap_or_default();
    assert_eq!(m.role.metadata.namespace.as_deref(), Some("weft-system"));
    assert!(allows(&rules, "", "secrets", "create", None));
    assert!(allows(&rules, "", "secrets", "get", Some("weft-root-ca")));
    assert!(
        !allows(&rules, "", "secrets", "get", Some("someone-elses")),
        "reading other Secrets is not needed"
    );
    for (role, subjects) in [
        (
            &m.cluster_binding.role_ref.name,
            &m.cluster_binding.subjects,
        ),
        (&m.binding.role_ref.name, &m.binding.subjects),
    ] {
        assert_eq!(role, "weft-controlplane");
        let subject = &subjects.as_ref().unwrap()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", "weft-controlplane", Some("weft-system"))
        );
    }
}
