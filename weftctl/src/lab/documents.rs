//! The documents that describe the lab to its control plane, in the kinds it reads:
//! Kubernetes `Namespace` and `Service`, Weft's `Workload` for workloads that are not
//! Kubernetes pods, and for each waypoint its `Gateway` (class `weft-waypoint`) and the
//! Service named like it; Services bound to a waypoint carry `weft.dev/use-waypoint`.
//! Pods are written once before their CNI ADD (without addresses, so that the node's
//! agent knows them when the CNI plugin asks) and again with their addresses.
//! Written to `controlplane/config/lab.yaml`, again whenever waypoints change.

use serde_json::json;

use super::{PodState, run_dir, topology::Topology};

const USE_WAYPOINT_LABEL: &str = "weft.dev/use-waypoint";

pub fn write(topology: &Topology, pods: &[PodState]) -> anyhow::Result<()> {
    let mut docs = Vec::new();
    for ns in &topology.namespaces {
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": ns.name, "labels": ns.labels },
        }));
    }
    for svc in &topology.services {
        let mut labels = serde_json::Map::new();
        if let Some(w) = topology
            .waypoints
            .iter()
            .find(|w| w.namespace == svc.namespace && w.services.contains(&svc.name))
        {
            labels.insert(USE_WAYPOINT_LABEL.to_owned(), json!(w.name));
        }
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": svc.name, "namespace": svc.namespace, "labels": labels },
            "spec": {
                "clusterIP": svc.vip.to_string(),
                "selector": svc.selector,
                "ports": svc.ports.iter().map(|p| json!({
                    "name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": "TCP",
                })).collect::<Vec<_>>(),
            },
        }));
    }
    for w in &topology.waypoints {
        // An ingress gateway listens with HTTP and HTTPS, a waypoint with HBONE; each
        // has a Service of its name in front of its pod.
        let (class, listeners, ports) = if w.ingress {
            (
                "weft-gateway",
                json!([
                    { "name": "http", "port": super::ingress::HTTP_PORT, "protocol": "HTTP" },
                    { "name": "https", "port": super::ingress::HTTPS_PORT, "protocol": "HTTPS",
                      "tls": { "mode": "Terminate",
                               "certificateRefs": [{ "kind": "Secret", "name": format!("{}-tls", w.name) }] } },
                ]),
                json!([
                    { "name": "http", "port": 80, "targetPort": super::ingress::HTTP_PORT, "protocol": "TCP" },
                    { "name": "https", "port": 443, "targetPort": super::ingress::HTTPS_PORT, "protocol": "TCP" },
                ]),
            )
        } else {
            (
                "weft-waypoint",
                json!([{ "name": "mesh", "port": 15008, "protocol": "HBONE" }]),
                json!([{ "name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP" }]),
            )
        };
        docs.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": { "name": w.name, "namespace": w.namespace },
            "spec": { "gatewayClassName": class, "listeners": listeners },
        }));
        docs.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": w.name, "namespace": w.namespace },
            "spec": {
                "clusterIP": w.vip.to_string(),
                "selector": { super::topology::GATEWAY_NAME_LABEL: w.name },
                "ports": ports,
            },
        }));
    }
    // Every pod of the topology is scheduled; those created have their address, the
    // others (their sandbox is being made) none yet, as the API server has pods.
    for pod in &topology.pods {
        let addresses: Vec<String> = pods
            .iter()
            .filter(|p| p.pod.key() == pod.key())
            .map(|p| p.ip.to_string())
            .collect();
        docs.push(json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "Workload",
            "metadata": { "name": pod.name, "namespace": pod.namespace, "labels": pod.labels },
            "spec": {
                "serviceAccount": pod.service_account,
                "node": pod.node,
                "addresses": addresses,
            },
        }));
    }
    let mut text = String::from(
        "# Written by `weftctl lab`: the lab's namespaces, services, workloads and waypoints.\n",
    );
    for doc in docs {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(&doc)?);
    }
    // Whole or not at all: the control plane never reads half a file.
    let dir = run_dir().join("controlplane/config");
    let tmp = dir.join(".lab.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("lab.yaml"))?;
    Ok(())
}
