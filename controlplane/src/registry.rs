//! Which workload identities run on which node, from the configuration in force (the
//! source loop updates it with every accepted change).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::RwLock,
};

use api::identity::Identity;

use crate::model::{Document, Object};

#[derive(Debug, Default)]
pub struct Registry {
    by_node: RwLock<BTreeMap<String, BTreeSet<Identity>>>,
}

impl Registry {
    /// Replaces what the registry knows with the workloads of `docs`.
    pub fn update(&self, docs: &[Document], trust_domain: &str) {
        let mut map: BTreeMap<String, BTreeSet<Identity>> = BTreeMap::new();
        for d in docs {
            if let Object::Workload(w) = &d.object {
                let ns = w.metadata.namespace.as_deref().unwrap_or_default();
                match Identity::new(trust_domain, ns, &w.spec.service_account) {
                    Ok(id) => {
                        map.entry(w.spec.node.clone()).or_default().insert(id);
                    }
                    Err(e) => {
                        tracing::warn!(workload = %w.metadata.name, error = %e, "workload without a valid identity")
                    }
                }
            }
        }
        *self.by_node.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    /// Whether `identity` belongs to a workload on `node`.
    pub fn allows(&self, node: &str, identity: &Identity) -> bool {
        self.by_node
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|ids| ids.contains(identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_by_node() {
        let (docs, problems) = crate::model::parse(
            "t",
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\n\
             metadata: {name: cart-1, namespace: shop}\n\
             spec: {serviceAccount: cart, node: node-1, addresses: [10.0.0.1]}\n",
        );
        assert!(problems.is_empty());
        let r = Registry::default();
        let cart: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert!(!r.allows("node-1", &cart));
        r.update(&docs, "cluster.local");
        assert!(r.allows("node-1", &cart));
        assert!(!r.allows("node-2", &cart));
        r.update(&[], "cluster.local");
        assert!(!r.allows("node-1", &cart));
    }
}
