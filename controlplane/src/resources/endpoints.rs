//! Which workloads stand behind a Service: its EndpointSlices' ready endpoints, each
//! matched to a workload by its target or its address.

use std::collections::BTreeMap;

use api::proto::config as wire;

use crate::model::{Document, EndpointSlice, Metadata, Object, SERVICE_NAME_LABEL};

/// The EndpointSlices of each Service, by `(namespace, service name)`.
pub(super) fn slices_by_service(docs: &[Document]) -> BTreeMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut out: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for d in docs {
        if let Object::EndpointSlice(e) = &d.object
            && let Some(service) = e.metadata.labels.get(SERVICE_NAME_LABEL)
        {
            let ns = e.metadata.namespace.as_deref().unwrap_or_default();
            out.entry((ns, service.as_str())).or_default().push(e);
        }
    }
    out
}

/// Workloads by name and by address, to find the workload behind an endpoint.
pub(super) struct WorkloadIndex<'a> {
    by_name: BTreeMap<(&'a str, &'a str), usize>,
    by_address: BTreeMap<&'a str, usize>,
}

impl<'a> WorkloadIndex<'a> {
    pub(super) fn new(workloads: &'a [(&'a Metadata, wire::Workload)]) -> Self {
        let mut index = WorkloadIndex {
            by_name: BTreeMap::new(),
            by_address: BTreeMap::new(),
        };
        for (i, (m, w)) in workloads.iter().enumerate() {
            let ns = m.namespace.as_deref().unwrap_or_default();
            index.by_name.insert((ns, m.name.as_str()), i);
            for a in &w.addresses {
                index.by_address.entry(a.as_str()).or_insert(i);
            }
        }
        index
    }

    /// The workloads (indexes) behind the ready endpoints of a Service's EndpointSlices,
    /// each once. An endpoint is its workload when it refers to it (a Pod or Workload
    /// target of that name) or else shares an address with it; an endpoint that is no
    /// workload (a host-network pod, an address outside the cluster) has no identity and
    /// is not distributed.
    pub(super) fn behind(&self, slices: &[&EndpointSlice], namespace: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for slice in slices {
            if slice.address_type == "FQDN" {
                continue;
            }
            for e in &slice.endpoints {
                if e.conditions.ready == Some(false) {
                    continue;
                }
                let by_target = e.target_ref.as_ref().and_then(|t| {
                    let kind = t.kind.as_deref()?;
                    if kind != "Pod" && kind != "Workload" {
                        return None;
                    }
                    let ns = t.namespace.as_deref().unwrap_or(namespace);
                    self.by_name.get(&(ns, t.name.as_deref()?)).copied()
                });
                let found = by_target.or_else(|| {
                    e.addresses
                        .iter()
                        .find_map(|a| self.by_address.get(a.as_str()).copied())
                });
                if let Some(i) = found
                    && seen.insert(i)
                {
                    out.push(i);
                }
            }
        }
        out
    }
}
