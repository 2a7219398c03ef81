//! From Kubernetes objects to the model: a pure function, so that what a cluster holds
//! becomes the same documents a local folder would, and every later step (validation,
//! translation, distribution) is shared. Pods become `Workload`s (address, node,
//! service account, labels); pods that cannot be in the mesh — not scheduled yet, no
//! address, or on the host's network — are left out. The watches that feed this arrive
//! with the Kubernetes source.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;

use crate::model::{
    self, Document, IntOrString, Metadata, Object, Origin, ServicePort, ServiceSpec, WorkloadSpec,
};

fn metadata(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Metadata {
    Metadata {
        name: m.name.clone().unwrap_or_default(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone().unwrap_or_default(),
        annotations: BTreeMap::new(),
    }
}

fn origin(kind: &str, m: &Metadata, index: usize) -> Origin {
    Origin {
        source: format!(
            "kubernetes {kind} {}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name
        ),
        index,
    }
}

/// The model documents of a cluster's Namespaces, Pods and Services.
pub fn documents(
    namespaces: &[core::Namespace],
    pods: &[core::Pod],
    services: &[core::Service],
) -> Vec<Document> {
    let mut out = Vec::new();
    for ns in namespaces {
        let m = metadata(&ns.metadata);
        out.push(Document {
            origin: origin("Namespace", &m, out.len() + 1),
            object: Object::Namespace(model::Namespace { metadata: m }),
        });
    }
    for pod in pods {
        let Some(spec) = &pod.spec else { continue };
        if spec.host_network == Some(true) {
            continue;
        }
        let Some(node) = spec.node_name.clone() else {
            continue;
        };
        let addresses: Vec<String> = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
            .unwrap_or_default();
        if addresses.is_empty() {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let m = metadata(&pod.metadata);
        out.push(Document {
            origin: origin("Pod", &m, out.len() + 1),
            object: Object::Workload(model::Workload {
                api_version: "weft.dev/v1alpha1".to_owned(),
                kind: "Workload".to_owned(),
                metadata: m,
                spec: WorkloadSpec {
                    service_account: spec
                        .service_account_name
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                    node,
                    addresses,
                },
            }),
        });
    }
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let m = metadata(&svc.metadata);
        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: i64::from(p.port),
                target_port: p.target_port.as_ref().map(|t| match t {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                        IntOrString::Int(i64::from(*n))
                    }
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => {
                        IntOrString::String(s.clone())
                    }
                }),
                protocol: p.protocol.clone(),
            })
            .collect();
        out.push(Document {
            origin: origin("Service", &m, out.len() + 1),
            object: Object::Service(model::Service {
                metadata: m,
                spec: ServiceSpec {
                    cluster_ip: spec.cluster_ip.clone(),
                    cluster_ips: spec.cluster_ips.clone().unwrap_or_default(),
                    ports,
                    selector: spec.selector.clone().unwrap_or_default(),
                },
            }),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> core::Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pods_become_workloads_and_the_rest_validates() {
        let namespaces: Vec<core::Namespace> = vec![
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "shop", "labels": {"weft.dev/mesh": "enabled"}},
            }))
            .unwrap(),
        ];
        let pods = vec![
            pod(serde_json::json!({
                "metadata": {"name": "cart-1", "namespace": "shop", "labels": {"app": "cart"}},
                "spec": {"nodeName": "node-1", "serviceAccountName": "cart", "containers": []},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.3"}, {"ip": "fd00::3"}]},
            })),
            // Not scheduled yet.
            pod(serde_json::json!({
                "metadata": {"name": "pending", "namespace": "shop"},
                "spec": {"containers": []},
            })),
            // On the host's network: never in the mesh.
            pod(serde_json::json!({
                "metadata": {"name": "host", "namespace": "shop"},
                "spec": {"nodeName": "node-1", "hostNetwork": true, "containers": []},
                "status": {"podIPs": [{"ip": "192.0.2.1"}]},
            })),
            // Finished.
            pod(serde_json::json!({
                "metadata": {"name": "job", "namespace": "shop"},
                "spec": {"nodeName": "node-1", "containers": []},
                "status": {"phase": "Succeeded", "podIPs": [{"ip": "10.244.1.9"}]},
            })),
        ];
        let services: Vec<core::Service> = vec![
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "cart", "namespace": "shop"},
                "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "cart"},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }))
            .unwrap(),
        ];
        let docs = documents(&namespaces, &pods, &services);
        assert_eq!(docs.len(), 3, "{docs:#?}");
        let Object::Workload(w) = &docs[1].object else {
            panic!("{:?}", docs[1])
        };
        assert_eq!(w.spec.node, "node-1");
        assert_eq!(w.spec.service_account, "cart");
        assert_eq!(w.spec.addresses, vec!["10.244.1.3", "fd00::3"]);
        assert!(crate::validate::validate(&docs).is_empty());
        // And the translation downstream sees an enrolled workload behind the Service.
        let res = crate::resources::translate(&docs, "cluster.local");
        let api::proto::config::resource::Body::Service(s) =
            &res[&("Service".into(), "shop".into(), "cart".into())]
        else {
            panic!()
        };
        assert_eq!(s.endpoints.len(), 1);
        assert!(s.endpoints[0].enrolled);
    }
}
