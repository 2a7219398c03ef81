//! The Kubernetes source: what the watches hold, translated (`kubernetes.rs`) and
//! validated as a set with the same validation as the local source. An object with a
//! problem does not replace its last good version: that stays in force (an object
//! that never was good is not taken), and the problem is logged once and kept for
//! status until the object is fixed or deleted. Last good versions are kept in memory:
//! after a restart, the cluster itself is read again.

use std::{collections::BTreeMap, time::Duration};

use super::{Cluster, documents, watch::Watches};
use crate::{
    model::{Document, Problem},
    source::keep_last_good,
};

#[derive(Debug, Default)]
pub struct KubernetesSource {
    /// The documents in force, by object (`kubernetes Kind namespace/name`).
    good: BTreeMap<String, Vec<Document>>,
    problems: Vec<Problem>,
}

impl KubernetesSource {
    /// The problems of the objects that are not in force (in their latest version).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Takes what the cluster holds now and returns the configuration in force: every
    /// good object, and for each bad one its last good version, if it had one.
    pub fn reload(&mut self, cluster: &Cluster) -> Vec<Document> {
        let mut problems = Vec::new();
        let mut candidate = BTreeMap::new();
        for (object, translated) in documents(cluster) {
            match translated {
                Ok(doc) => {
                    candidate.insert(object, vec![doc]);
                }
                Err(found) => {
                    problems.extend(found);
                    if let Some(old) = self.good.get(&object) {
                        candidate.insert(object, old.clone());
                    }
                }
            }
        }
        let found = keep_last_good(&mut candidate, &self.good, |p| p.origin.source.clone());
        for p in found {
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
        for p in &problems {
            if !self.problems.contains(p) {
                tracing::warn!(problem = %p, "configuration refused; the last good version stays in force");
            }
        }
        for p in &self.problems {
            if !problems.contains(p) {
                tracing::info!(problem = %p, "configuration problem gone");
            }
        }
        self.problems = problems;
        self.good = candidate;
        self.good.values().flatten().cloned().collect()
    }
}

/// Follows the cluster: after each change (once a burst of changes has settled for
/// `settle`) what is good is handed to `apply` with the problems of the rest and the
/// snapshot it came from.
pub async fn follow(
    mut watches: Watches,
    mut source: KubernetesSource,
    settle: Duration,
    mut apply: impl FnMut(Vec<Document>, &[Problem], &Cluster),
) {
    while watches.changed().await {
        tokio::time::sleep(settle).await;
        watches.settled();
        let cluster = watches.snapshot();
        let docs = source.reload(&cluster);
        apply(docs, source.problems(), &cluster);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube::core::DynamicObject;

    use super::*;
    use crate::model::Object;

    fn arc<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(json).unwrap())
    }

    fn policy(principal: &str) -> Arc<DynamicObject> {
        arc(serde_json::json!({
            "apiVersion": "security.weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"rules": [{"from": [{"source": {"principals": [principal]}}]}]},
        }))
    }

    fn cluster(policies: Vec<Arc<DynamicObject>>) -> Cluster {
        Cluster {
            namespaces: vec![arc(serde_json::json!({"metadata": {"name": "shop"}}))],
            authorization_policies: policies,
            ..Cluster::default()
        }
    }

    fn principals(docs: &[Document]) -> Vec<String> {
        docs.iter()
            .filter_map(|d| match &d.object {
                Object::AuthorizationPolicy(p) => {
                    Some(p.spec.rules[0].from[0].source.principals[0].clone())
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_bad_object_keeps_its_last_good_version() {
        let mut source = KubernetesSource::default();
        let good = "cluster.local/ns/shop/sa/frontend";
        let docs = source.reload(&cluster(vec![policy(good)]));
        assert_eq!(principals(&docs), vec![good]);
        assert!(source.problems().is_empty());

        // Invalid in meaning: refused with its field path; the good one stays.
        let docs = source.reload(&cluster(vec![policy(
            "spiffe://cluster.local/ns/shop/sa/x",
        )]));
        assert_eq!(principals(&docs), vec![good]);
        let p = &source.problems()[0];
        assert_eq!(p.origin.source, "kubernetes AuthorizationPolicy shop/cart");
        assert_eq!(p.path, "spec.rules[0].from[0].source.principals[0]");

        // Not even of the right shape: refused too, with the path of the wrong field.
        let mut shapeless = (*policy(good)).clone();
        shapeless.data["spec"]["action"] = "MAYBE".into();
        let docs = source.reload(&cluster(vec![Arc::new(shapeless)]));
        assert_eq!(principals(&docs), vec![good]);
        assert_eq!(source.problems()[0].path, "spec.action");

        // Fixed: the new version is in force, the problems are gone.
        let fixed = "cluster.local/ns/shop/sa/checkout";
        let docs = source.reload(&cluster(vec![policy(fixed)]));
        assert_eq!(principals(&docs), vec![fixed]);
        assert!(source.problems().is_empty());

        // Deleted: gone, whatever its last good version was.
        let docs = source.reload(&cluster(vec![]));
        assert!(principals(&docs).is_empty());
    }

    #[test]
    fn an_object_that_never_was_good_is_not_taken() {
        let mut source = KubernetesSource::default();
        let docs = source.reload(&cluster(vec![policy("not a principal/x")]));
        assert!(principals(&docs).is_empty());
        assert_eq!(docs.len(), 1, "the namespace is in force: {docs:?}");
        assert_eq!(source.problems().len(), 1, "{:?}", source.problems());
    }
}
