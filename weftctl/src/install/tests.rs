use std::path::Path;

use k8s_openapi::{
    api::{
        admissionregistration::v1::ValidatingWebhookConfiguration,
        apps::v1::{DaemonSet, Deployment},
        core::v1::{Namespace, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};

use super::*;

/// `object` read as type `K` and written again is the same: no field the type does not
/// know, none of the wrong type.
fn round_trips<K>(object: &Value)
where
    K: k8s_openapi::Resource + serde::Serialize + serde::de::DeserializeOwned,
{
    let typed: K = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", K::KIND, object["metadata"]["name"]));
    assert_eq!(
        &manifest(&typed),
        object,
        "{} changed in a round trip",
        K::KIND
    );
}

#[test]
fn every_object_is_valid_for_its_kubernetes_type() {
    let objects = render(&Values::default());
    let mut kinds = Vec::new();
    for o in &objects {
        let kind = o["kind"].as_str().unwrap();
        kinds.push(kind.to_owned());
        match kind {
            "CustomResourceDefinition" => round_trips::<CustomResourceDefinition>(o),
            "Namespace" => round_trips::<Namespace>(o),
            "ServiceAccount" => round_trips::<ServiceAccount>(o),
            "ClusterRole" => round_trips::<ClusterRole>(o),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(o),
            "Role" => round_trips::<Role>(o),
            "RoleBinding" => round_trips::<RoleBinding>(o),
            "Service" => round_trips::<Service>(o),
            "Deployment" => round_trips::<Deployment>(o),
            "PodDisruptionBudget" => round_trips::<PodDisruptionBudget>(o),
            "DaemonSet" => round_trips::<DaemonSet>(o),
            "ValidatingWebhookConfiguration" => round_trips::<ValidatingWebhookConfiguration>(o),
            "GatewayClass" => {
                let name = o["metadata"]["name"].as_str().unwrap();
                assert!(["weft-waypoint", "weft-gateway"].contains(&name), "{name}");
                assert!(o["spec"]["controllerName"].as_str().unwrap().contains('/'));
            }
            other => panic!("an unexpected kind {other}"),
        }
    }
    // CRDs and the namespace before what uses them.
    let first_namespaced = objects
        .iter()
        .position(|o| o["metadata"]["namespace"].is_string())
        .unwrap();
    let namespace = kinds.iter().position(|k| k == "Namespace").unwrap();
    assert!(namespace < first_namespaced);
    assert!(kinds[..6].iter().all(|k| k == "CustomResourceDefinition"));
    assert_eq!(kinds.len(), 20, "{kinds:?}");
    // And what `weftctl uninstall` applies.
    round_trips::<DaemonSet>(&super::manifest(&cleanup::daemon_set(&Values::default())));
}

#[test]
fn the_agent_runs_everywhere_with_only_what_it_needs() {
    let ds = agent::daemon_set(&Values::default());
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_pid, Some(false));
    assert_eq!(
        pod.tolerations.unwrap()[0].operator.as_deref(),
        Some("Exists")
    );
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added = caps.add.as_ref().unwrap();
    for cap in ["BPF", "NET_ADMIN", "SYS_ADMIN"] {
        assert!(added.iter().any(|a| a == cap), "{added:?}");
    }
    let env: BTreeMap<String, Option<String>> = c
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        env["WEFT_CONTROLPLANE"].as_deref(),
        Some("weft-controlplane.weft-system.svc:15012")
    );
    assert!(env.contains_key("WEFT_NODE_NAME"), "from the downward API");
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for m in [
        "/sys/fs/bpf",
        "/sys/fs/cgroup",
        "/var/run/netns",
        "/var/run/weft/roots",
    ] {
        assert!(mounts.contains(&m), "{mounts:?}");
    }

    // Before it, weft-cni goes into the node's CNI folders, asking this agent's socket
    // and leaving the cluster's and Weft's own namespaces alone.
    let init = &pod.init_containers.as_ref().unwrap()[0];
    let args = init.command.as_ref().unwrap();
    assert_eq!(args[..2], ["weft-cni", "install"]);
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name).unwrap();
        args[i + 1].as_str()
    };
    assert_eq!(
        Some(flag("--agent-socket")),
        env["WEFT_ADMIN_SOCKET"].as_deref()
    );
    assert_eq!(flag("--exclude"), "kube-system,weft-system");
    let host = |volume: &str| -> String {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| h.path.clone())
            .unwrap()
    };
    for (flag_name, volume, path) in [
        ("--bin-dir", "cni-bin", "/opt/cni/bin"),
        ("--net-dir", "cni-conf", "/etc/cni/net.d"),
    ] {
        let mounted = init
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .unwrap();
        assert_eq!(mounted.mount_path, flag(flag_name));
        assert_eq!(host(volume), path);
    }
    // The second container keeps it there.
    let keep = &pod.containers[1];
    let keep_args = keep.command.as_ref().unwrap();
    assert_eq!(keep_args[..args.len()], args[..]);
    assert_eq!(keep_args[args.len()..], ["--watch", "10s"]);
    let caps = init
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .unwrap();
    assert!(
        !caps
            .add
            .iter()
            .flatten()
            .any(|c| c == "SYS_ADMIN" || c == "BPF")
    );
}

#[test]
fn values_change_what_they_name() {
    let v = Values::from_yaml("namespace: mesh\nagent: {maxUnavailable: '2'}\n").unwrap();
    let objects = render(&v);
    for o in &objects {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(ns, "mesh", "{o}");
        }
    }
    let ds = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        2
    );
    let v = Values::from_yaml("agent: {cniBinDir: /var/lib/rancher/k3s/data/cni}\n").unwrap();
    let volumes = &render(&v)
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet")
        .unwrap()["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["hostPath"]["path"] == "/var/lib/rancher/k3s/data/cni"),
        "{volumes}"
    );
    assert_eq!(
        Values::from_yaml("agent: {cniConfDir: net.d}\n").unwrap_err(),
        "agent.cniConfDir: \"net.d\" is not an absolute path"
    );
    let hook = objects
        .iter()
        .find(|o| o["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        hook["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "mesh"
    );
}

/// `deploy/weft.yaml` (everything, default values) and `deploy/controlplane-rbac.yaml`
/// are what this code renders. To write them again:
/// `WEFT_UPDATE_DEPLOY=1 cargo test -p weftctl install`.
#[test]
fn the_deploy_folder_is_up_to_date() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let header = "# Generated by weftctl (`weftctl install --dry-run`); do not edit. See deploy/README.md.\n";
    let v = Values::default();
    for (file, objects) in [
        ("weft.yaml", render(&v)),
        ("controlplane-rbac.yaml", rbac(&v)),
    ] {
        let text = format!("{header}{}", to_yaml(&objects));
        let path = deploy.join(file);
        if std::env::var("WEFT_UPDATE_DEPLOY").is_ok_and(|u| u == "1") {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "deploy/{file} is out of date: WEFT_UPDATE_DEPLOY=1 cargo test -p weftctl install"
        );
    }
}
