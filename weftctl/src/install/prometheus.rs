//! The optional Prometheus of an installation (`prometheus.enabled` in the values): a
//! Deployment in Weft's namespace that finds the mesh's pods through the API server
//! (the control plane, every agent, every waypoint: the pods' `metrics` ports) and
//! scrapes them; the control plane's service graph reads it (`WEFT_CP_PROMETHEUS`).

use serde_json::{Value, json};

use super::{Values, labels};

pub const NAME: &str = "weft-prometheus";
pub const PORT: u16 = 9090;

/// Where the control plane reaches it.
pub fn url(v: &Values) -> String {
    format!("http://{NAME}.{}.svc:{PORT}", v.namespace)
}

/// The scrape configuration: pods of Weft (`app.kubernetes.io/part-of: weft`) and
/// waypoints (`gateway.networking.k8s.io/gateway-name`), on their port named `metrics`
/// (the agents on 15020).
pub fn config(v: &Values) -> String {
    CONFIG.replace("{interval}", &v.prometheus.scrape_interval)
}

const CONFIG: &str = r#"# Written by weftctl install.
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: weft
    kubernetes_sd_configs:
      - role: pod
    relabel_configs:
      # A port named `metrics`, or the agent's container: on the host network it
      # declares no ports (each would be a host port, in the way of an update's surge
      # pod), and serves its metrics on 15020.
      - source_labels: [__meta_kubernetes_pod_container_port_name, __meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_container_name]
        regex: "metrics;.*;.*|;weft-agent;agent"
        action: keep
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name, __meta_kubernetes_pod_ip]
        regex: "weft-agent;(.+)"
        target_label: __address__
        replacement: "$1:15020"
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_part_of, __meta_kubernetes_pod_labelpresent_gateway_networking_k8s_io_gateway_name]
        regex: "weft;.*|.*;true"
        action: keep
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        regex: weft-agent
        target_label: job
        replacement: agents
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        regex: weft-controlplane
        target_label: job
        replacement: controlplane
      - source_labels: [__meta_kubernetes_pod_labelpresent_gateway_networking_k8s_io_gateway_name]
        regex: "true"
        target_label: job
        replacement: waypoints
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
"#;

/// The objects, in the order they are applied.
pub fn objects(v: &Values) -> Vec<Value> {
    let ns = &v.namespace;
    let p = &v.prometheus;
    let meta = |name: &str| json!({"name": name, "namespace": ns, "labels": labels(NAME)});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME)}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels(NAME)},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels(NAME)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(NAME),
            "data": {"prometheus.yml": config(v)},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(NAME),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels(NAME)},
                "template": {
                    "metadata": {"labels": labels(NAME)},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "fsGroup": 65534},
                        "containers": [{
                            "name": "prometheus",
                            "image": p.image,
                            "imagePullPolicy": v.image_pull_policy,
                            "args": [
                                "--config.file=/etc/prometheus/prometheus.yml",
                                "--storage.tsdb.path=/prometheus",
                                format!("--storage.tsdb.retention.time={}", p.retention),
                                format!("--web.listen-address=:{PORT}"),
                            ],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {"httpGet": {"path": "/-/ready", "port": PORT}, "periodSeconds": 5},
                            "resources": super::resources(&p.resources),
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/prometheus"},
                                {"name": "data", "mountPath": "/prometheus"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(NAME),
            "spec": {
                "selector": labels(NAME),
                "ports": [{"name": "http", "port": PORT, "targetPort": PORT}],
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real `promtool` (Debian's `prometheus` package) accepts the configuration:
    /// its globals, relabelling rules and their expressions. Debian builds Prometheus
    /// without Kubernetes discovery, so for the check the pod discovery is swapped for
    /// a file of targets, which takes the same relabelling.
    #[test]
    fn promtool_accepts_the_scrape_configuration() {
        let dir = std::env::temp_dir().join(format!("weft-promtool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("prometheus.yml");
        let text = config(&Values::default());
        let discovery = "    kubernetes_sd_configs:\n      - role: pod\n";
        assert!(text.contains(discovery));
        let checked = text.replace(
            discovery,
            "    file_sd_configs:\n      - files: [pods.json]\n",
        );
        std::fs::write(&file, checked).unwrap();
        let out = std::process::Command::new("promtool")
            .args(["check", "config", "--syntax-only"])
            .arg(&file)
            .output()
            .expect("promtool runs (cargo xtask setup installs it)");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn objects_are_off_by_default_and_complete_when_on() {
        let off = super::super::render(&Values::default());
        assert!(!off.iter().any(|o| o["metadata"]["name"] == NAME));
        let mut v = Values::default();
        v.prometheus.enabled = true;
        let on = super::super::render(&v);
        let kinds: Vec<&str> = on
            .iter()
            .filter(|o| o["metadata"]["name"] == NAME)
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Service"
            ]
        );
        // The control plane's graph reads it.
        let cp = on
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "weft-controlplane")
            .unwrap();
        let env = &cp["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "WEFT_CP_PROMETHEUS"
                    && e["value"] == "http://weft-prometheus.weft-system.svc:9090"),
            "{env}"
        );
    }

    #[test]
    fn bad_durations_are_refused_with_their_field() {
        let e = Values::from_yaml("prometheus: {retention: two days}").unwrap_err();
        assert!(e.starts_with("prometheus.retention:"), "{e}");
        let e = Values::from_yaml("prometheus: {scrapeInterval: 15}").unwrap_err();
        assert!(e.starts_with("prometheus.scrapeInterval:"), "{e}");
        assert!(Values::from_yaml("prometheus: {enabled: true, retention: 7d}").is_ok());
    }
}
