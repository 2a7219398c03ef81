//! Which workload identities run on which node, from the local configuration folder's
//! `Workload` documents. Read again whenever a file in the folder changes; the
//! configuration issue's full model replaces this reader.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use api::identity::Identity;

#[derive(Debug, serde::Deserialize)]
struct Document {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: WorkloadSpec,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkloadSpec {
    #[serde(default)]
    service_account: String,
    #[serde(default)]
    node: String,
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Node name → the identities of the workloads on it.
#[derive(Debug)]
pub struct Registry {
    dir: Option<PathBuf>,
    trust_domain: String,
    state: Mutex<(Fingerprint, BTreeMap<String, BTreeSet<Identity>>)>,
}

impl Registry {
    /// A registry fed by `dir` (no folder: no workloads).
    pub fn new(dir: Option<PathBuf>, trust_domain: &str) -> Self {
        Registry {
            dir,
            trust_domain: trust_domain.to_owned(),
            state: Mutex::new((Vec::new(), BTreeMap::new())),
        }
    }

    /// Whether `identity` belongs to a workload on `node`.
    pub fn allows(&self, node: &str, identity: &Identity) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = &self.dir {
            let now = fingerprint(dir);
            if now != state.0 {
                state.1 = load(dir, &self.trust_domain);
                state.0 = now;
            }
        }
        state.1.get(node).is_some_and(|ids| ids.contains(identity))
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn fingerprint(dir: &Path) -> Fingerprint {
    yaml_files(dir)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, modified, len)
        })
        .collect()
}

fn load(dir: &Path, trust_domain: &str) -> BTreeMap<String, BTreeSet<Identity>> {
    use serde::Deserialize as _;
    let mut map: BTreeMap<String, BTreeSet<Identity>> = BTreeMap::new();
    for file in yaml_files(dir) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let doc = match Document::deserialize(doc) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(file = %file.display(), document = i, error = %e, "skipping a document");
                    continue;
                }
            };
            if doc.kind != "Workload" {
                continue;
            }
            let sa = if doc.spec.service_account.is_empty() {
                "default"
            } else {
                &doc.spec.service_account
            };
            match Identity::new(trust_domain, &doc.metadata.namespace, sa) {
                Ok(id) if !doc.spec.node.is_empty() => {
                    map.entry(doc.spec.node).or_default().insert(id);
                }
                Ok(_) => {
                    tracing::warn!(file = %file.display(), workload = %doc.metadata.name, "workload without a node")
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), workload = %doc.metadata.name, error = %e, "workload with an invalid identity")
                }
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_workloads_and_follows_changes() {
        let dir = std::env::temp_dir().join(format!("weft-registry-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
             apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: cart-1, namespace: shop}\n\
             spec: {serviceAccount: cart, node: node-1, addresses: [10.0.0.1]}\n",
        )
        .unwrap();
        let r = Registry::new(Some(dir.clone()), "cluster.local");
        let cart: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert!(r.allows("node-1", &cart));
        assert!(!r.allows("node-2", &cart));

        std::fs::write(
            dir.join("b.yaml"),
            "kind: Workload\nmetadata: {name: cart-2, namespace: shop}\n\
             spec: {serviceAccount: cart, node: node-2}\n",
        )
        .unwrap();
        assert!(r.allows("node-2", &cart));
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        assert!(!r.allows("node-2", &cart));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
