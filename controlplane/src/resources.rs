//! From validated documents to the resources that are distributed: a pure function, so
//! the same translation serves every source (local folder, Kubernetes) and is tested on
//! its own. Workloads learn whether they are in the mesh (namespace label, pod opt-out)
//! and which waypoint serves them; Services get their endpoints from their
//! EndpointSlices when they have any (on Kubernetes: the ready ones), else from their
//! selector.

use std::collections::BTreeMap;

use api::proto::config::{self as wire, PolicyRule, PolicySource, ServicePort, resource::Body};

use crate::{
    model::{
        self, Action, Document, IntOrString, Metadata, MtlsMode, Object, PathMatchType,
        PathModifierType, RouteFilterType,
    },
    validate::{MESH_LABEL, OUTBOUND_POLICY_LABEL, ROOT_NAMESPACE, USE_WAYPOINT_LABEL},
};

mod endpoints;
mod external;
mod traffic;
mod units;

pub use crate::model::{LOAD_BALANCER_ANNOTATION, load_balancer};
use endpoints::{WorkloadIndex, slices_by_service};
use traffic::Traffic;
use units::{millis, number};

/// `(kind, namespace, name)`.
pub type Key = (String, String, String);

fn key(kind: &str, m: &Metadata) -> Key {
    (
        kind.to_owned(),
        m.namespace.clone().unwrap_or_default(),
        m.name.clone(),
    )
}

/// A label selector as the wire carries it (none: an empty map, which selects all).
fn selector_map(
    selector: Option<&crate::model::LabelSelector>,
) -> std::collections::HashMap<String, String> {
    selector
        .map(|s| s.match_labels.clone().into_iter().collect())
        .unwrap_or_default()
}

/// The distributed form of a set of documents.
pub fn translate(docs: &[Document], trust_domain: &str) -> BTreeMap<Key, Body> {
    let namespaces: BTreeMap<&str, &Metadata> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Namespace(n) => Some((n.metadata.name.as_str(), &n.metadata)),
            _ => None,
        })
        .collect();
    let ns_label = |ns: &str, label: &str| -> Option<String> {
        namespaces
            .get(ns)
            .and_then(|m| m.labels.get(label).cloned())
    };
    // The waypoint an object uses: its own label, else its namespace's.
    let waypoint_of = |m: &Metadata, ns: &str| -> String {
        m.labels
            .get(USE_WAYPOINT_LABEL)
            .cloned()
            .or_else(|| ns_label(ns, USE_WAYPOINT_LABEL))
            .unwrap_or_default()
    };
    let traffic = Traffic::new(docs);
    let mut out = BTreeMap::new();
    let mut workloads: Vec<(&Metadata, wire::Workload)> = Vec::new();
    for d in docs {
        if let Object::Workload(w) = &d.object {
            let ns = w.metadata.namespace.as_deref().unwrap_or_default();
            let enrolled = ns_label(ns, MESH_LABEL).as_deref() == Some("enabled")
                && w.metadata.labels.get(MESH_LABEL).map(String::as_str) != Some("disabled");
            let waypoint = waypoint_of(&w.metadata, ns);
            let body = wire::Workload {
                service_account: w.spec.service_account.clone(),
                node: w.spec.node.clone(),
                addresses: w.spec.addresses.clone(),
                labels: w.metadata.labels.clone().into_iter().collect(),
                enrolled,
                waypoint,
            };
            // One without addresses yet (a starting pod) is behind no Service.
            if !body.addresses.is_empty() {
                workloads.push((&w.metadata, body.clone()));
            }
            out.insert(key("Workload", &w.metadata), Body::Workload(body));
        }
    }
    let endpoint = |(m, w): &(&Metadata, wire::Workload)| {
        let ns = m.namespace.as_deref().unwrap_or_default();
        wire::Endpoint {
            workload: format!("{ns}/{}", m.name),
            addresses: w.addresses.clone(),
            identity: format!("spiffe://{trust_domain}/ns/{ns}/sa/{}", w.service_account),
            enrolled: w.enrolled,
            node: w.node.clone(),
        }
    };
    let slices = slices_by_service(docs);
    let index = WorkloadIndex::new(&workloads);
    for d in docs {
        match &d.object {
            Object::Service(s) => {
                let ns = s.metadata.namespace.as_deref().unwrap_or_default();
                let endpoints = match slices.get(&(ns, s.metadata.name.as_str())) {
                    Some(slices) => index
                        .behind(slices, ns)
                        .into_iter()
                        .map(|i| endpoint(&workloads[i]))
                        .collect(),
                    None if s.spec.selector.is_empty() => Vec::new(),
                    None => workloads
                        .iter()
                        .filter(|(m, _)| {
                            m.namespace.as_deref() == Some(ns)
                                && s.spec
                                    .selector
                                    .iter()
                                    .all(|(k, v)| m.labels.get(k) == Some(v))
                        })
                        .map(endpoint)
                        .collect(),
                };
                let addresses = s
                    .spec
                    .cluster_ip
                    .iter()
                    .chain(&s.spec.cluster_ips)
                    .filter(|a| *a != "None")
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let ports = s
                    .spec
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone().unwrap_or_default(),
                        port: p.port as u32,
                        target_port: match &p.target_port {
                            Some(IntOrString::Int(t)) => *t as u32,
                            // Named or absent: the same as the service port.
                            _ => p.port as u32,
                        },
                        protocol: port_protocol(p.app_protocol.as_deref(), p.name.as_deref())
                            .to_owned(),
                    })
                    .collect();
                let waypoint = waypoint_of(&s.metadata, ns);
                let annotated = s
                    .metadata
                    .annotations
                    .get(LOAD_BALANCER_ANNOTATION)
                    .and_then(|v| load_balancer(v));
                let (policy_lb, backend) = match traffic.backend(ns, &s.metadata.name) {
                    Some((lb, settings)) => (lb, Some(settings)),
                    None => (None, None),
                };
                // A BackendPolicy's load balancer wins over the annotation.
                let load_balancer = policy_lb.or(annotated).unwrap_or_default().to_owned();
                out.insert(
                    key("Service", &s.metadata),
                    Body::Service(wire::Service {
                        addresses,
                        ports,
                        endpoints,
                        waypoint,
                        load_balancer,
                        backend,
                        external: None,
                    }),
                );
            }
            Object::AuthorizationPolicy(p) => {
                let rules = p.spec.rules.iter().flat_map(policy_rules).collect();
                out.insert(
                    key("AuthorizationPolicy", &p.metadata),
                    Body::AuthorizationPolicy(wire::AuthorizationPolicy {
                        action: match p.spec.action {
                            Action::Allow => "ALLOW",
                            Action::Deny => "DENY",
                            Action::Audit => "AUDIT",
                        }
                        .to_owned(),
                        selector: selector_map(p.spec.selector.as_ref()),
                        rules,
                    }),
                );
            }
            Object::PeerAuthentication(p) => {
                out.insert(
                    key("PeerAuthentication", &p.metadata),
                    Body::PeerAuthentication(wire::PeerAuthentication {
                        mode: match p.spec.mtls.mode {
                            MtlsMode::Strict => "STRICT",
                            MtlsMode::Permissive => "PERMISSIVE",
                        }
                        .to_owned(),
                        selector: selector_map(p.spec.selector.as_ref()),
                    }),
                );
            }
            Object::HttpRoute(r) => {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                out.insert(
                    key("HTTPRoute", &r.metadata),
                    Body::HttpRoute(wire::HttpRoute {
                        parents: r.spec.parent_refs.iter().map(|p| parent(p, ns)).collect(),
                        hostnames: r.spec.hostnames.clone(),
                        rules: r
                            .spec
                            .rules
                            .iter()
                            .map(|rule| http_rule(rule, ns, &traffic))
                            .collect(),
                    }),
                );
            }
            Object::GrpcRoute(r) => {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                out.insert(
                    key("GRPCRoute", &r.metadata),
                    Body::GrpcRoute(wire::GrpcRoute {
                        parents: r.spec.parent_refs.iter().map(|p| parent(p, ns)).collect(),
                        hostnames: r.spec.hostnames.clone(),
                        rules: r
                            .spec
                            .rules
                            .iter()
                            .map(|rule| grpc_rule(rule, ns, &traffic))
                            .collect(),
                    }),
                );
            }
            Object::Namespace(n) => {
                let enrolled =
                    n.metadata.labels.get(MESH_LABEL).map(String::as_str) == Some("enabled");
                // The namespace's own, else the root namespace's: the mesh's default.
                let outbound_policy = n
                    .metadata
                    .labels
                    .get(OUTBOUND_POLICY_LABEL)
                    .cloned()
                    .or_else(|| ns_label(ROOT_NAMESPACE, OUTBOUND_POLICY_LABEL))
                    .unwrap_or_default();
                out.insert(
                    key("Namespace", &n.metadata),
                    Body::Namespace(wire::Namespace {
                        enrolled,
                        outbound_policy,
                    }),
                );
            }
            Object::ExternalService(e) => {
                let (k, body) = external::translate(e, trust_domain);
                out.insert(k, body);
            }
            Object::TrafficFilter(_)
            | Object::BackendPolicy(_)
            | Object::EndpointSlice(_)
            | Object::Workload(_)
            | Object::Gateway(_) => {}
        }
    }
    out
}

/// The wire rules of one policy rule. A rule matches when a source matches and any of
/// its operations does; an operation's conditions hold together. Operations of ports
/// alone merge into one wire rule (the ports of any of them); with L7 conditions each
/// operation is a rule of its own, with the same sources, so that a method of one
/// operation never pairs with a port of another.
fn policy_rules(r: &model::Rule) -> Vec<PolicyRule> {
    let from: Vec<PolicySource> = r
        .from
        .iter()
        .map(|f| PolicySource {
            principals: f.source.principals.clone(),
            not_principals: f.source.not_principals.clone(),
            namespaces: f.source.namespaces.clone(),
            not_namespaces: f.source.not_namespaces.clone(),
            ip_blocks: f.source.ip_blocks.clone(),
            not_ip_blocks: f.source.not_ip_blocks.clone(),
        })
        .collect();
    if r.to.len() <= 1 || !r.to.iter().any(|t| t.operation.has_l7()) {
        let mut rule =
            r.to.first()
                .map(|t| l7_conditions(&t.operation))
                .unwrap_or_default();
        rule.from = from;
        rule.ports = ports(r.to.iter().map(|t| &t.operation));
        return vec![rule];
    }
    r.to.iter()
        .map(|t| PolicyRule {
            from: from.clone(),
            ports: ports(std::iter::once(&t.operation)),
            ..l7_conditions(&t.operation)
        })
        .collect()
}

/// The L7 conditions of an operation, as a wire rule without sources or ports. Hosts
/// are compared lowercase.
fn l7_conditions(o: &model::Operation) -> PolicyRule {
    let lower = |list: &[String]| list.iter().map(|h| h.to_ascii_lowercase()).collect();
    PolicyRule {
        methods: o.methods.clone(),
        paths: o.paths.clone(),
        headers: header_conditions(o),
        hosts: lower(&o.hosts),
        not_methods: o.not_methods.clone(),
        not_paths: o.not_paths.clone(),
        not_hosts: lower(&o.not_hosts),
        ..PolicyRule::default()
    }
}

/// The protocol a Service port declares: its `appProtocol`, else the prefix of its
/// name before `-` (Istio's convention: `http`, `http-web`, `grpc-api`, `tcp-db`);
/// `""` when neither says.
pub fn port_protocol(app_protocol: Option<&str>, name: Option<&str>) -> &'static str {
    let of = |s: &str| -> Option<&'static str> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" => "http",
            "http2" | "h2c" | "kubernetes.io/h2c" => "http2",
            "grpc" | "grpc-web" => "grpc",
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => "tcp",
            _ => return None,
        })
    };
    if let Some(p) = app_protocol.and_then(of) {
        return p;
    }
    name.and_then(|n| of(n.split('-').next().unwrap_or(n)))
        .unwrap_or("")
}

/// The ports of any of `operations`.
fn ports<'a>(operations: impl Iterator<Item = &'a model::Operation>) -> Vec<u32> {
    operations
        .flat_map(|o| &o.ports)
        .filter_map(|p| match p {
            IntOrString::Int(n) => u32::try_from(*n).ok(),
            IntOrString::String(s) => s.parse().ok(),
        })
        .collect()
}

fn header_conditions(o: &model::Operation) -> Vec<wire::HeaderCondition> {
    o.headers
        .iter()
        .map(|h| wire::HeaderCondition {
            name: h.name.to_ascii_lowercase(),
            values: h.values.clone(),
        })
        .collect()
}

fn parent(p: &model::ParentRef, ns: &str) -> wire::ParentRef {
    wire::ParentRef {
        kind: p.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
        namespace: p.namespace.clone().unwrap_or_else(|| ns.to_owned()),
        name: p.name.clone(),
        port: number(p.port),
        section_name: p.section_name.clone().unwrap_or_default(),
    }
}

fn backend(b: &model::BackendRef, ns: &str) -> wire::BackendRef {
    wire::BackendRef {
        namespace: b.namespace.clone().unwrap_or_else(|| ns.to_owned()),
        name: b.name.clone(),
        port: number(b.port),
        weight: number(Some(b.weight.unwrap_or(1))),
    }
}

fn headers(list: &[model::HttpHeader]) -> Vec<wire::HttpHeader> {
    list.iter()
        .map(|h| wire::HttpHeader {
            name: h.name.to_ascii_lowercase(),
            value: h.value.clone(),
        })
        .collect()
}

fn header_modifier(m: &model::HeaderModifier) -> wire::HeaderModifier {
    wire::HeaderModifier {
        set: headers(&m.set),
        add: headers(&m.add),
        remove: m.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
    }
}

fn path_modifier(p: &model::PathModifier) -> wire::PathModifier {
    let (kind, value) = match p.type_ {
        PathModifierType::ReplaceFullPath => ("ReplaceFullPath", &p.replace_full_path),
        PathModifierType::ReplacePrefixMatch => ("ReplacePrefixMatch", &p.replace_prefix_match),
    };
    wire::PathModifier {
        r#type: kind.to_owned(),
        value: value.clone().unwrap_or_default(),
    }
}

fn filter(f: &model::RouteFilter, ns: &str) -> Option<wire::RouteFilter> {
    use wire::route_filter::Filter;
    let filter = match f.type_ {
        RouteFilterType::RequestHeaderModifier => {
            Filter::RequestHeaderModifier(header_modifier(f.request_header_modifier.as_ref()?))
        }
        RouteFilterType::ResponseHeaderModifier => {
            Filter::ResponseHeaderModifier(header_modifier(f.response_header_modifier.as_ref()?))
        }
        RouteFilterType::RequestRedirect => {
            let r = f.request_redirect.as_ref()?;
            Filter::RequestRedirect(wire::RequestRedirect {
                scheme: r.scheme.clone().unwrap_or_default(),
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().map(path_modifier),
                port: number(r.port),
                status_code: number(Some(r.status_code.unwrap_or(302))),
            })
        }
        RouteFilterType::UrlRewrite => {
            let r = f.url_rewrite.as_ref()?;
            Filter::UrlRewrite(wire::UrlRewrite {
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().map(path_modifier),
            })
        }
        // A TrafficFilter's filters are added by `filters`.
        RouteFilterType::ExtensionRef => return None,
        RouteFilterType::RequestMirror => {
            let b = &f.request_mirror.as_ref()?.backend_ref;
            Filter::RequestMirror(wire::RequestMirror {
                backend: Some(wire::BackendRef {
                    namespace: b.namespace.clone().unwrap_or_else(|| ns.to_owned()),
                    name: b.name.clone(),
                    port: number(b.port),
                    weight: 1,
                }),
            })
        }
    };
    Some(wire::RouteFilter {
        filter: Some(filter),
    })
}

/// A rule's filters, those of the TrafficFilters it names among them.
fn filters(list: &[model::RouteFilter], ns: &str, traffic: &Traffic<'_>) -> Vec<wire::RouteFilter> {
    let mut out: Vec<wire::RouteFilter> = list.iter().filter_map(|f| filter(f, ns)).collect();
    out.extend(traffic.rule_filters(ns, list));
    out
}

fn header_matches(list: &[model::HeaderMatch]) -> Vec<wire::HeaderMatch> {
    list.iter()
        .map(|h| wire::HeaderMatch {
            r#type: h.type_.clone().unwrap_or_else(|| "Exact".to_owned()),
            name: h.name.to_ascii_lowercase(),
            value: h.value.clone(),
        })
        .collect()
}

fn http_rule(rule: &model::HttpRouteRule, ns: &str, traffic: &Traffic<'_>) -> wire::HttpRouteRule {
    let timeouts = rule.timeouts.as_ref();
    wire::HttpRouteRule {
        matches: rule
            .matches
            .iter()
            .map(|m| wire::HttpRouteMatch {
                path: m.path.as_ref().map(|p| wire::HttpPathMatch {
                    r#type: match p.type_ {
                        PathMatchType::Exact => "Exact",
                        PathMatchType::PathPrefix => "PathPrefix",
                        PathMatchType::RegularExpression => "RegularExpression",
                    }
                    .to_owned(),
                    value: p.value.clone(),
                }),
                method: m.method.clone().unwrap_or_default(),
                headers: header_matches(&m.headers),
                query_params: m
                    .query_params
                    .iter()
                    .map(|q| wire::HeaderMatch {
                        r#type: q.type_.clone().unwrap_or_else(|| "Exact".to_owned()),
                        name: q.name.clone(),
                        value: q.value.clone(),
                    })
                    .collect(),
            })
            .collect(),
        filters: filters(&rule.filters, ns, traffic),
        backends: rule.backend_refs.iter().map(|b| backend(b, ns)).collect(),
        request_timeout_ms: millis(timeouts.and_then(|t| t.request.as_ref())),
        backend_request_timeout_ms: millis(timeouts.and_then(|t| t.backend_request.as_ref())),
        retry: traffic.retry(ns, rule.retry.as_ref(), &rule.filters),
    }
}

fn grpc_rule(rule: &model::GrpcRouteRule, ns: &str, traffic: &Traffic<'_>) -> wire::GrpcRouteRule {
    wire::GrpcRouteRule {
        matches: rule
            .matches
            .iter()
            .map(|m| wire::GrpcRouteMatch {
                method: m.method.as_ref().map(|g| wire::GrpcMethodMatch {
                    r#type: g.type_.clone().unwrap_or_else(|| "Exact".to_owned()),
                    service: g.service.clone().unwrap_or_default(),
                    method: g.method.clone().unwrap_or_default(),
                }),
                headers: header_matches(&m.headers),
            })
            .collect(),
        filters: filters(&rule.filters, ns, traffic),
        backends: rule.backend_refs.iter().map(|b| backend(b, ns)).collect(),
        retry: traffic.retry(ns, None, &rule.filters),
    }
}

#[cfg(test)]
mod tests;
