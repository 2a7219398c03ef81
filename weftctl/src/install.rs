//! What installs Weft on a cluster, built from typed Rust (k8s-openapi's types and the
//! control plane's CRD types) for one [`Values`]: the CRDs, the namespace, the control
//! plane (`install/controlplane.rs`), the node agent (`install/agent.rs`), the
//! admission webhook, the waypoints' GatewayClass and, when asked, a Prometheus
//! (`install/prometheus.rs`), in the order they are applied.
//! `weftctl install --dry-run` prints them; `deploy/weft.yaml` is them with the
//! default values (a test keeps it so).

pub mod agent;
pub mod apply;
pub mod cleanup;
pub mod controlplane;
pub mod prometheus;
pub mod uninstall;
pub mod values;

use std::collections::BTreeMap;

use ::controlplane as cp;
use k8s_openapi::{
    api::core::v1::{EnvVar, Namespace, ResourceRequirements},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};
use kube::CustomResourceExt as _;
use serde_json::{Value, json};
pub use values::Values;

/// The ConfigMap of the mesh's root certificates in Weft's namespace, which the control
/// plane writes at start and agents trust the control plane by.
pub use cp::kubernetes::publish::ROOTS_CONFIG_MAP;

/// The labels of one of Weft's workloads.
pub fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), app.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), "weft".to_owned()),
    ])
}

pub fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(name)),
        ..ObjectMeta::default()
    }
}

/// A variable of a container's environment.
pub fn env_var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// An environment variable set from the pod's own fields (the downward API), e.g.
/// `spec.nodeName`.
pub fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..EnvVar::default()
    }
}

/// What a container that mostly waits gets (the CNI keeper, the node cleanup's last
/// step).
pub fn idle_resources() -> ResourceRequirements {
    resources(&values::Resources {
        cpu_request: "1m".into(),
        memory_request: "8Mi".into(),
        memory_limit: "32Mi".into(),
    })
}

/// A container's requests and limits.
pub fn resources(r: &values::Resources) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q(&r.cpu_request)),
            ("memory".to_owned(), q(&r.memory_request)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q(&r.memory_limit))])),
        ..ResourceRequirements::default()
    }
}

/// A typed object as its manifest (with its `apiVersion` and `kind`).
fn manifest<K>(object: &K) -> Value
where
    K: k8s_openapi::Resource + serde::Serialize,
{
    let mut v = serde_json::to_value(object).expect("Kubernetes objects serialize");
    v["apiVersion"] = K::API_VERSION.into();
    v["kind"] = K::KIND.into();
    v
}

/// Weft's CRDs, from the control plane's types.
pub fn crds() -> Vec<Value> {
    use cp::model::{
        AuthorizationPolicyResource, BackendPolicyResource, ExternalServiceResource,
        PeerAuthenticationResource, TrafficFilterResource, WorkloadResource,
    };
    [
        WorkloadResource::crd(),
        AuthorizationPolicyResource::crd(),
        PeerAuthenticationResource::crd(),
        TrafficFilterResource::crd(),
        BackendPolicyResource::crd(),
        ExternalServiceResource::crd(),
    ]
    .iter()
    .map(manifest)
    .collect()
}

/// Everything, in the order it is applied.
pub fn render(v: &Values) -> Vec<Value> {
    let mut out = crds();
    out.push(manifest(&Namespace {
        metadata: ObjectMeta {
            name: Some(v.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "weft".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }));
    out.extend(rbac(v));
    out.push(manifest(&agent::service_account(v)));
    out.push(manifest(&controlplane::service(v)));
    out.push(manifest(&controlplane::deployment(v)));
    out.push(manifest(&controlplane::disruption_budget(v)));
    out.push(manifest(&agent::daemon_set(v)));
    if v.prometheus.enabled {
        out.extend(prometheus::objects(v));
    }
    out.push(manifest(&controlplane::webhook(v)));
    out.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": cp::kubernetes::waypoints::CLASS, "labels": labels("weft-waypoint")},
        "spec": {
            "controllerName": "weft.dev/waypoint-controller",
            "description": "Weft's per-service L7 proxies, run by the Weft control plane",
        },
    }));
    out.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": cp::validate::GATEWAY_CLASS, "labels": labels("weft-gateway")},
        "spec": {
            "controllerName": "weft.dev/waypoint-controller",
            "description": "Weft's ingress gateways (HTTP and HTTPS into the mesh), run by the Weft control plane",
        },
    }));
    out
}

/// The control plane's ServiceAccount and RBAC (also `deploy/controlplane-rbac.yaml`).
pub fn rbac(v: &Values) -> Vec<Value> {
    let (account, cluster_role, cluster_binding, role, binding) = controlplane::rbac(v);
    vec![
        manifest(&account),
        manifest(&cluster_role),
        manifest(&cluster_binding),
        manifest(&role),
        manifest(&binding),
    ]
}

/// Objects as a YAML stream, each after a `---`.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(o).expect("JSON values serialize as YAML"));
    }
    out
}

fn values(file: Option<&std::path::Path>) -> anyhow::Result<Values> {
    match file {
        None => Ok(Values::default()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            Values::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
    }
}

/// `weftctl install [--dry-run] [-f values.yaml] [--context C]`: prints what an
/// installation applies, or applies it with a line for each object.
pub fn install(
    values_file: Option<&std::path::Path>,
    dry_run: bool,
    context: Option<&str>,
) -> anyhow::Result<()> {
    let objects = render(&values(values_file)?);
    if dry_run {
        print!("{}", to_yaml(&objects));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::kubeconfig::client(context).await?;
        apply::apply_all(&client, &objects, |line| eprintln!("{line}")).await?;
        eprintln!("installed: {} objects", objects.len());
        Ok(())
    })
}

/// `weftctl uninstall [--crds] [-f values.yaml] [--context C]`, with a line for each
/// step.
pub fn uninstall(
    values_file: Option<&std::path::Path>,
    crds: bool,
    context: Option<&str>,
) -> anyhow::Result<()> {
    let v = values(values_file)?;
    let options = uninstall::Options {
        crds,
        poll: std::time::Duration::from_secs(2),
        timeout: std::time::Duration::from_secs(300),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::kubeconfig::client(context).await?;
        uninstall::uninstall_all(&client, &v, &options, |line| eprintln!("{line}")).await?;
        eprintln!("Weft is uninstalled");
        Ok(())
    })
}

#[cfg(test)]
mod tests;
