//! The one values file of an installation: a typed configuration with documented
//! defaults. A file gives only what it changes; an unknown or wrong field is refused
//! with its path.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Values {
    /// Where Weft's own workloads run.
    pub namespace: String,
    /// The image with every Weft binary (`weft-controlplane`, `weft-agent`,
    /// `weft-waypoint`).
    pub image: String,
    pub image_pull_policy: String,
    /// The SPIFFE trust domain of the mesh.
    pub trust_domain: String,
    pub controlplane: ControlPlane,
    pub agent: Agent,
    /// `text` or `json`.
    pub log_format: String,
    pub prometheus: Prometheus,
}

/// A Prometheus of the mesh's own, in Weft's namespace: it scrapes the control plane,
/// every agent and every waypoint, and the service graph reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Prometheus {
    pub enabled: bool,
    pub image: String,
    /// How long samples are kept (`--storage.tsdb.retention.time`).
    pub retention: String,
    pub scrape_interval: String,
    pub resources: Resources,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus {
            enabled: false,
            image: "quay.io/prometheus/prometheus:v3.5.0".into(),
            retention: "2d".into(),
            scrape_interval: "15s".into(),
            resources: Resources {
                cpu_request: "100m".into(),
                memory_request: "256Mi".into(),
                memory_limit: "1Gi".into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    pub replicas: i32,
    pub resources: Resources,
    /// Workload certificates' lifetime (a duration: `24h`).
    pub cert_lifetime: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Agent {
    pub resources: Resources,
    /// Nodes whose new agent starts beside the running one in a rolling update (a
    /// number or a percentage): it takes the old one's listeners and the old one
    /// drains, so no connection drops.
    pub max_surge: String,
    /// Nodes whose agent is stopped before its successor starts (a number or a
    /// percentage): their pods' new connections are refused meanwhile.
    pub max_unavailable: String,
    /// Same-node acceleration with sockmap (`WEFT_SOCKMAP`).
    pub sockmap: bool,
    /// Applications see the original client's address as the peer of a mesh
    /// connection (`WEFT_CLIENT_ADDRESS`).
    pub client_address: bool,
    /// The node's CNI plugin folder, where `weft-cni` is installed (k3s and some
    /// distributions use other paths).
    pub cni_bin_dir: String,
    /// The node's CNI network configuration folder; its first file gets `weft-cni`.
    pub cni_conf_dir: String,
}

/// Requests and limits of a container (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            namespace: "weft-system".into(),
            image: format!("ghcr.io/weft-mesh/weft:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            trust_domain: "cluster.local".into(),
            controlplane: ControlPlane::default(),
            agent: Agent::default(),
            log_format: "text".into(),
            prometheus: Prometheus::default(),
        }
    }
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            replicas: 2,
            resources: Resources {
                cpu_request: "100m".into(),
                memory_request: "128Mi".into(),
                memory_limit: "512Mi".into(),
            },
            cert_lifetime: "24h".into(),
        }
    }
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            resources: Resources {
                cpu_request: "100m".into(),
                memory_request: "64Mi".into(),
                memory_limit: "512Mi".into(),
            },
            max_surge: "10%".into(),
            max_unavailable: "0".into(),
            sockmap: false,
            client_address: true,
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        ControlPlane::default().resources
    }
}

impl Values {
    /// Values from a YAML document (only what it changes).
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let values: Values = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            format!("{path}: {}", e.into_inner())
        })?;
        values.check()?;
        Ok(values)
    }

    /// What the types do not say: names, counts, quantities.
    pub fn check(&self) -> Result<(), String> {
        api::names::dns_label(&self.namespace).map_err(|e| format!("namespace: {e}"))?;
        if self.image.is_empty() || self.image.contains(char::is_whitespace) {
            return Err(format!("image: {:?} is not an image reference", self.image));
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err(format!(
                "imagePullPolicy: {:?} is not Always, IfNotPresent or Never",
                self.image_pull_policy
            ));
        }
        let p = &self.prometheus;
        if p.image.is_empty() || p.image.contains(char::is_whitespace) {
            return Err(format!(
                "prometheus.image: {:?} is not an image reference",
                p.image
            ));
        }
        for (field, value) in [
            ("prometheus.retention", &p.retention),
            ("prometheus.scrapeInterval", &p.scrape_interval),
        ] {
            let digits = value.trim_end_matches(['s', 'm', 'h', 'd']);
            if digits.is_empty()
                || digits.len() + 1 != value.len()
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(format!(
                    "{field}: {value:?} is not a duration like 15s, 1h or 2d"
                ));
            }
        }
        if !(1..=9).contains(&self.controlplane.replicas) {
            return Err(format!(
                "controlplane.replicas: {} is not between 1 and 9",
                self.controlplane.replicas
            ));
        }
        for (field, dir) in [
            ("agent.cniBinDir", &self.agent.cni_bin_dir),
            ("agent.cniConfDir", &self.agent.cni_conf_dir),
        ] {
            if !dir.starts_with('/') {
                return Err(format!("{field}: {dir:?} is not an absolute path"));
            }
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return Err(format!(
                "logFormat: {:?} is not text or json",
                self.log_format
            ));
        }
        let quantity = |field: &str, q: &str| {
            let number = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &q[number.len()..];
            let ok = !number.is_empty()
                && number.parse::<f64>().is_ok_and(|n| n > 0.0)
                && ["", "m", "Ki", "Mi", "Gi", "k", "M", "G"].contains(&unit);
            if ok {
                Ok(())
            } else {
                Err(format!("{field}: {q:?} is not a Kubernetes quantity"))
            }
        };
        for (who, r) in [
            ("controlplane", &self.controlplane.resources),
            ("agent", &self.agent.resources),
        ] {
            quantity(&format!("{who}.resources.cpuRequest"), &r.cpu_request)?;
            quantity(&format!("{who}.resources.memoryRequest"), &r.memory_request)?;
            quantity(&format!("{who}.resources.memoryLimit"), &r.memory_limit)?;
        }
        // Each a count or a percentage; Kubernetes refuses both at zero.
        let amount =
            |field: &str, value: &str| match value.strip_suffix('%') {
                Some(p) => p.parse::<u32>().ok().filter(|p| *p <= 100).ok_or_else(|| {
                    format!("agent.{field}: {value:?} is not a count or a percentage")
                }),
                None => value.parse::<u32>().map_err(|_| {
                    format!("agent.{field}: {value:?} is not a count or a percentage")
                }),
            };
        let surge = amount("maxSurge", &self.agent.max_surge)?;
        let unavailable = amount("maxUnavailable", &self.agent.max_unavailable)?;
        if surge == 0 && unavailable == 0 {
            return Err(
                "agent.maxUnavailable: 0 with agent.maxSurge 0 would update no node".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changes_only_what_it_names_and_bad_fields_are_named() {
        let v = Values::from_yaml("agent: {sockmap: true}\ncontrolplane: {replicas: 2}\n").unwrap();
        assert!(v.agent.sockmap);
        assert_eq!(v.controlplane.replicas, 2);
        assert_eq!(v.namespace, "weft-system");
        for (text, field) in [
            ("agent: {sockmapp: true}", "agent"),
            ("controlplane: {replicas: 0}", "controlplane.replicas"),
            (
                "agent: {resources: {memoryLimit: lots}}",
                "agent.resources.memoryLimit",
            ),
            ("agent: {maxUnavailable: none}", "agent.maxUnavailable"),
            ("agent: {maxSurge: 120%}", "agent.maxSurge"),
            (
                "agent: {maxSurge: 0, maxUnavailable: 0%}",
                "agent.maxUnavailable",
            ),
            ("namespace: Weft", "namespace"),
            ("imagePullPolicy: Sometimes", "imagePullPolicy"),
        ] {
            let e = Values::from_yaml(text).unwrap_err();
            assert!(e.starts_with(field), "{text}: {e}");
        }
    }
}
