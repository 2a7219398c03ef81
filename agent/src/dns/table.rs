//! The names the agent answers for itself: mesh services (their virtual IPs) and the
//! hosts of external services (their configured addresses).
//!
//! The agent is authoritative for the cluster domain: a name in it that the table does
//! not hold does not exist. Names outside it that the table does not hold go to the
//! pod's own resolver.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use super::wire::{Record, RecordData, TYPE_A, TYPE_AAAA, TYPE_ANY};

/// The TTL of every record the table answers with, in seconds.
pub const TTL: u32 = 30;

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Answer NOERROR with these records, named `name` (the question's name,
    /// lower-cased). No records means the name exists without an address of the asked
    /// type (NODATA).
    Answer { name: String, records: Vec<Record> },
    /// Answer NXDOMAIN, authoritatively: the name is in the cluster domain and the table
    /// does not hold it.
    NxDomain,
    /// Ask the pod's upstream resolver.
    Forward,
}

/// Names and their addresses.
///
/// Names are text as in [`super::wire`]: dotted, without a trailing dot, compared
/// without regard to ASCII case.
#[derive(Debug, Clone)]
pub struct Table {
    cluster_domain: String,
    exact: HashMap<String, Vec<IpAddr>>,
    /// Wildcards by the suffix after their `*.`.
    wildcards: HashMap<String, Vec<IpAddr>>,
    /// Every name that has a held name or wildcard below it.
    ancestors: HashSet<String>,
}

impl Table {
    /// A table for `cluster_domain` (such as `cluster.local`) holding `names`: full names
    /// such as `cart.shop.svc.cluster.local` or `api.example.com`, or wildcards such as
    /// `*.example.com`, which match names with one or more labels more in front. Names
    /// are lower-cased and one trailing dot is dropped. A name given more than once has
    /// the addresses of every mention, each once.
    ///
    /// With an empty cluster domain the table is authoritative for nothing: it never
    /// answers [`Lookup::NxDomain`] and does not expand short names.
    pub fn new(
        cluster_domain: &str,
        names: impl IntoIterator<Item = (String, Vec<IpAddr>)>,
    ) -> Self {
        let mut table = Table {
            cluster_domain: normalize(cluster_domain),
            exact: HashMap::new(),
            wildcards: HashMap::new(),
            ancestors: HashSet::new(),
        };
        for (name, addrs) in names {
            let name = normalize(&name);
            let (map, owner) = match name.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => {
                    table.ancestors.insert(suffix.to_owned());
                    (&mut table.wildcards, suffix.to_owned())
                }
                _ => (&mut table.exact, name.clone()),
            };
            table.ancestors.extend(suffixes(&owner).map(str::to_owned));
            let held = map.entry(owner).or_default();
            for addr in addrs {
                if !held.contains(&addr) {
                    held.push(addr);
                }
            }
        }
        table
    }

    /// What to answer a pod in `pod_namespace` asking for `name` (text form, any case)
    /// with type `qtype`. The caller checks the class: the table holds class IN data.
    ///
    /// In order:
    /// 1. A held name answers with its addresses of the asked type: A, AAAA, or both
    ///    for ANY. Other types get no records (NODATA).
    /// 2. A short name is expanded the way a pod's search list would: `cart` as
    ///    `cart.<pod_namespace>.svc.<cluster domain>`, `cart.shop` as
    ///    `cart.shop.svc.<cluster domain>`. When the expanded name is held (or matches
    ///    a wildcard), its addresses answer, under the name asked.
    /// 3. A wildcard matching the name answers; the longest matching suffix wins.
    /// 4. A name equal to or under the cluster domain is [`Lookup::NxDomain`], unless a
    ///    held name is below it: then it exists without addresses (NODATA). The search
    ///    list expansions stub resolvers try, such as
    ///    `api.example.com.shop.svc.cluster.local`, end here, so stubs move on at once.
    /// 5. Anything else is [`Lookup::Forward`].
    pub fn lookup(&self, name: &str, qtype: u16, pod_namespace: &str) -> Lookup {
        let name = normalize(name);
        let found = self
            .exact
            .get(&name)
            .or_else(|| self.expand(&name, pod_namespace))
            .or_else(|| self.wildcard(&name));
        if let Some(addrs) = found {
            let records = records(&name, addrs, qtype);
            return Lookup::Answer { name, records };
        }
        if !self.in_cluster_domain(&name) {
            return Lookup::Forward;
        }
        if self.ancestors.contains(&name) {
            return Lookup::Answer {
                name,
                records: Vec::new(),
            };
        }
        Lookup::NxDomain
    }

    /// The addresses of a held name or of the wildcard matching it.
    fn find(&self, name: &str) -> Option<&Vec<IpAddr>> {
        self.exact.get(name).or_else(|| self.wildcard(name))
    }

    /// The addresses of the most specific wildcard matching `name`.
    fn wildcard(&self, name: &str) -> Option<&Vec<IpAddr>> {
        suffixes(name).find_map(|suffix| self.wildcards.get(suffix))
    }

    /// The addresses of the service a short name (one or two labels) stands for.
    fn expand(&self, name: &str, pod_namespace: &str) -> Option<&Vec<IpAddr>> {
        if name.is_empty() || self.cluster_domain.is_empty() {
            return None;
        }
        let domain = &self.cluster_domain;
        let expanded = match suffixes(name).count() {
            0 if !pod_namespace.is_empty() => {
                let namespace = pod_namespace.to_ascii_lowercase();
                format!("{name}.{namespace}.svc.{domain}")
            }
            1 => format!("{name}.svc.{domain}"),
            _ => return None,
        };
        self.find(&expanded)
    }

    /// Whether `name` is the cluster domain or under it.
    fn in_cluster_domain(&self, name: &str) -> bool {
        let domain = self.cluster_domain.as_str();
        !domain.is_empty() && (name == domain || suffixes(name).any(|s| s == domain))
    }
}

/// The records of `addrs` that answer `qtype`, named `name`.
fn records(name: &str, addrs: &[IpAddr], qtype: u16) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|addr| match (addr, qtype) {
            (IpAddr::V4(v4), TYPE_A | TYPE_ANY) => Some(RecordData::A(*v4)),
            (IpAddr::V6(v6), TYPE_AAAA | TYPE_ANY) => Some(RecordData::Aaaa(*v6)),
            _ => None,
        })
        .map(|data| Record {
            name: name.to_owned(),
            ttl: TTL,
            data,
        })
        .collect()
}

/// `name` lower-cased, without one trailing dot (an escaped dot stays).
fn normalize(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if dot_positions(&name)
        .last()
        .is_some_and(|&dot| dot + 1 == name.len())
    {
        name.pop();
    }
    name
}

/// The byte offsets of the dots that separate labels (not those escaped inside one).
fn dot_positions(name: &str) -> Vec<usize> {
    let mut dots = Vec::new();
    let mut escaped = false;
    for (i, byte) in name.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if byte == b'.' {
            dots.push(i);
        }
    }
    dots
}

/// The proper suffixes of `name` that are names, longest first: `b.c` and `c` for
/// `a.b.c`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    dot_positions(name)
        .into_iter()
        .filter_map(move |dot| name.get(dot + 1..))
}

#[cfg(test)]
mod tests;
