//! From Kubernetes objects to the model: pure functions, so that what a cluster holds
//! becomes the same documents a local folder would, and every later step (validation,
//! last-good, translation, distribution) is shared.
//!
//! - Pods become `Workload`s (address, node, service account, labels); pods that cannot
//!   be in the mesh — not scheduled yet, no address, finished, or on the host's network
//!   — are left out.
//! - Namespaces, Services and EndpointSlices keep their shape. Only the slices of
//!   Services that exist are taken (the slice controller may briefly lead or lag).
//! - The Gateway API kinds and Weft's CRDs arrive as the API server sends them and are
//!   parsed like a file's documents, so a bad object is refused with its field path.
//!   Gateways of other classes than `weft-waypoint` belong to other controllers and are
//!   left out, and so are routes none of whose parents is Weft's (a waypoint Gateway or
//!   a Service); a route's parents that are other controllers' Gateways are dropped.
//!
//! The watches that feed this are in `kubernetes/watch.rs`; `kubernetes/source.rs` keeps
//! the last good version of each object.

pub mod leader;
pub mod publish;
pub mod source;
pub mod watch;
pub mod waypoints;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::{
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr},
};
use kube::core::DynamicObject;

use crate::{
    model::{
        self, Document, EndpointConditions, IntOrString, Metadata, Object, ObjectReference, Origin,
        Problem, ServicePort, ServiceSpec, WorkloadSpec,
    },
    validate::weft_class,
};

/// What the watches hold, kind by kind.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub namespaces: Vec<Arc<core::Namespace>>,
    pub pods: Vec<Arc<core::Pod>>,
    pub services: Vec<Arc<core::Service>>,
    pub endpoint_slices: Vec<Arc<discovery::EndpointSlice>>,
    pub gateways: Vec<Arc<DynamicObject>>,
    pub http_routes: Vec<Arc<DynamicObject>>,
    pub grpc_routes: Vec<Arc<DynamicObject>>,
    pub authorization_policies: Vec<Arc<DynamicObject>>,
    pub peer_authentications: Vec<Arc<DynamicObject>>,
    pub workloads: Vec<Arc<DynamicObject>>,
    pub traffic_filters: Vec<Arc<DynamicObject>>,
    pub backend_policies: Vec<Arc<DynamicObject>>,
    pub external_services: Vec<Arc<DynamicObject>>,
}

/// Each object of the cluster that Weft reads, by the name of its source (`kubernetes
/// Kind namespace/name`): its document, or why it cannot be one.
pub type Objects = BTreeMap<String, Result<Document, Vec<Problem>>>;

/// The source name of a Kubernetes object, as problems and status show it.
/// The API resource a manifest (`apiVersion`, `kind`) is of.
pub fn api_resource(manifest: &serde_json::Value) -> kube::core::ApiResource {
    let api_version = manifest["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = manifest["kind"].as_str().unwrap_or_default();
    kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, kind))
}

pub fn source_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("kubernetes {kind} {ns}/{name}"),
        None => format!("kubernetes {kind} {name}"),
    }
}

fn metadata(m: &ObjectMeta) -> Metadata {
    Metadata {
        name: m.name.clone().unwrap_or_default(),
        namespace: m.namespace.clone(),
        labels: m.labels.clone().unwrap_or_default(),
        // Only the annotations Weft reads.
        annotations: m
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() == crate::resources::LOAD_BALANCER_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn document(kind: &str, object: Object) -> (String, Document) {
    let m = object.metadata();
    let source = source_name(kind, m.namespace.as_deref(), &m.name);
    let origin = Origin {
        source: source.clone(),
        index: 1,
    };
    (source, Document { origin, object })
}

/// A Namespace as it is.
pub fn namespace(ns: &core::Namespace) -> Document {
    let metadata = metadata(&ns.metadata);
    document(
        "Namespace",
        Object::Namespace(model::Namespace { metadata }),
    )
    .1
}

/// A Pod's `Workload`, if the pod can be in the mesh. A pod scheduled to a node but
/// not given an address yet is a Workload without addresses: its node's agent needs its
/// service account when the CNI plugin asks about it, before it has an address.
pub fn workload(pod: &core::Pod) -> Option<Document> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let node = spec.node_name.clone()?;
    let status = pod.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let addresses: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    let object = Object::Workload(model::Workload {
        api_version: "weft.dev/v1alpha1".to_owned(),
        kind: "Workload".to_owned(),
        metadata: metadata(&pod.metadata),
        spec: WorkloadSpec {
            service_account: spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            node,
            addresses,
        },
    });
    Some(document("Pod", object).1)
}

/// A Service as Weft reads it.
pub fn service(svc: &core::Service) -> Document {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: i64::from(p.port),
            target_port: p.target_port.as_ref().map(|t| match t {
                intstr::IntOrString::Int(n) => IntOrString::Int(i64::from(*n)),
                intstr::IntOrString::String(s) => IntOrString::String(s.clone()),
            }),
            protocol: p.protocol.clone(),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    let object = Object::Service(model::Service {
        metadata: metadata(&svc.metadata),
        spec: ServiceSpec {
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips.unwrap_or_default(),
            ports,
            selector: spec.selector.unwrap_or_default(),
        },
    });
    document("Service", object).1
}

/// An EndpointSlice as Weft reads it.
pub fn endpoint_slice(slice: &discovery::EndpointSlice) -> Document {
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| model::Endpoint {
            addresses: e.addresses.clone(),
            conditions: EndpointConditions {
                ready: e.conditions.as_ref().and_then(|c| c.ready),
            },
            node_name: e.node_name.clone(),
            target_ref: e.target_ref.as_ref().map(|t| ObjectReference {
                kind: t.kind.clone(),
                namespace: t.namespace.clone(),
                name: t.name.clone(),
            }),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .map(|p| model::EndpointPort {
            name: p.name.clone(),
            port: p.port.map(i64::from),
            protocol: p.protocol.clone(),
        })
        .collect();
    let object = Object::EndpointSlice(model::EndpointSlice {
        metadata: metadata(&slice.metadata),
        address_type: slice.address_type.clone(),
        endpoints,
        ports,
    });
    document("EndpointSlice", object).1
}

/// Parses a Gateway API or Weft object of `kind` (a kind of [`model::KINDS`]) the way a
/// document of a file is parsed: unknown fields and wrong values are refused with their
/// field path.
pub fn custom(kind: &str, object: &DynamicObject) -> Result<Document, Vec<Problem>> {
    let namespace = object.metadata.namespace.as_deref();
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let source = source_name(kind, namespace, name);
    let origin = Origin {
        source: source.clone(),
        index: 1,
    };
    let problem = |path: String, reason: String| {
        vec![Problem {
            origin: origin.clone(),
            object: Some(match namespace {
                Some(ns) => format!("{kind} {ns}/{name}"),
                None => format!("{kind} {name}"),
            }),
            path,
            reason,
        }]
    };
    let Some((api_version, _)) = model::KINDS.iter().find(|(_, k)| *k == kind) else {
        return Err(problem("kind".to_owned(), format!("unknown kind {kind:?}")));
    };
    let mut value = serde_json::to_value(object)
        .map_err(|e| problem(String::new(), format!("cannot be read: {e}")))?;
    if let Some(fields) = value.as_object_mut() {
        // The watch says what the object is; the API server's own fields are not Weft's.
        fields.insert("apiVersion".to_owned(), (*api_version).into());
        fields.insert("kind".to_owned(), kind.into());
        if let Some(meta) = fields.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
    }
    without_defaults(kind, &mut value);
    let value = serde_yaml_ng::to_value(&value)
        .map_err(|e| problem(String::new(), format!("cannot be read: {e}")))?;
    let object = model::documents::from_value(kind, value).map_err(|(p, r)| problem(p, r))?;
    Ok(Document { origin, object })
}

/// Removes the values the API server fills in for fields Weft does not implement, where
/// they mean what leaving them out means (a Gateway listener's `allowedRoutes` defaults
/// to routes of the Gateway's own namespace, as a waypoint's do). The admission webhook
/// reads objects this way too.
pub(crate) fn without_defaults(kind: &str, value: &mut serde_json::Value) {
    if kind != "Gateway" {
        return;
    }
    let same_namespace = serde_json::json!({"namespaces": {"from": "Same"}});
    let listeners = value
        .pointer_mut("/spec/listeners")
        .and_then(|l| l.as_array_mut());
    for listener in listeners.into_iter().flatten() {
        if let Some(fields) = listener.as_object_mut()
            && fields.get("allowedRoutes") == Some(&same_namespace)
        {
            fields.remove("allowedRoutes");
        }
    }
}

pub(crate) fn class_of(gateway: &DynamicObject) -> Option<&str> {
    gateway
        .data
        .pointer("/spec/gatewayClassName")
        .and_then(|c| c.as_str())
}

pub(crate) fn key_of(object: &DynamicObject) -> (String, String) {
    (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    )
}

/// Which controller a route's parent belongs to.
#[derive(Debug, PartialEq, Eq)]
enum Parent {
    /// A waypoint Gateway or a Service (a mesh route, GAMMA).
    Weft,
    /// A Gateway of another class.
    Foreign,
    /// A Gateway that does not exist (validation says so), or a kind Weft does not know.
    Unknown,
}

fn parent(
    parent: &serde_json::Value,
    route_namespace: &str,
    weft: &BTreeSet<(String, String)>,
    foreign: &BTreeSet<(String, String)>,
) -> Parent {
    let field = |f: &str| parent.get(f).and_then(|v| v.as_str());
    let kind = field("kind").unwrap_or("Gateway");
    let group = field("group").unwrap_or(match kind {
        "Service" => "",
        _ => "gateway.networking.k8s.io",
    });
    let key = (
        field("namespace").unwrap_or(route_namespace).to_owned(),
        field("name").unwrap_or_default().to_owned(),
    );
    match (group, kind) {
        ("" | "core", "Service") => Parent::Weft,
        ("gateway.networking.k8s.io", "Gateway") if weft.contains(&key) => Parent::Weft,
        ("gateway.networking.k8s.io", "Gateway") if foreign.contains(&key) => Parent::Foreign,
        _ => Parent::Unknown,
    }
}

/// A route of Weft's, without its other controllers' parents; `None` for a route that
/// is not Weft's.
fn weft_route(
    route: &DynamicObject,
    weft: &BTreeSet<(String, String)>,
    foreign: &BTreeSet<(String, String)>,
) -> Option<DynamicObject> {
    let namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let parents = route
        .data
        .pointer("/spec/parentRefs")
        .and_then(|p| p.as_array())?;
    let kinds: Vec<Parent> = parents
        .iter()
        .map(|p| parent(p, namespace, weft, foreign))
        .collect();
    if !kinds.contains(&Parent::Weft) {
        return None;
    }
    let mut route = route.clone();
    if kinds.contains(&Parent::Foreign)
        && let Some(list) = route
            .data
            .pointer_mut("/spec/parentRefs")
            .and_then(|p| p.as_array_mut())
    {
        let mut kinds = kinds.iter();
        list.retain(|_| kinds.next() != Some(&Parent::Foreign));
    }
    Some(route)
}

/// The documents of a cluster: every object Weft reads, translated or refused.
pub fn documents(cluster: &Cluster) -> Objects {
    let mut out = Objects::new();
    let mut put = |doc: Document| {
        out.insert(doc.origin.source.clone(), Ok(doc));
    };
    for ns in &cluster.namespaces {
        put(namespace(ns));
    }
    for pod in &cluster.pods {
        if let Some(doc) = workload(pod) {
            put(doc);
        }
    }
    let mut services = BTreeSet::new();
    for svc in &cluster.services {
        let doc = service(svc);
        let m = doc.object.metadata();
        services.insert((m.namespace.clone().unwrap_or_default(), m.name.clone()));
        put(doc);
    }
    for slice in &cluster.endpoint_slices {
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(model::SERVICE_NAME_LABEL));
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        if owner.is_some_and(|svc| services.contains(&(ns, svc.clone()))) {
            put(endpoint_slice(slice));
        }
    }
    let (weft, foreign): (Vec<_>, Vec<_>) = cluster
        .gateways
        .iter()
        .partition(|g| class_of(g).is_some_and(weft_class));
    let weft_keys: BTreeSet<(String, String)> = weft.iter().map(|g| key_of(g)).collect();
    let foreign_keys: BTreeSet<(String, String)> = foreign.iter().map(|g| key_of(g)).collect();
    let mut put_custom = |kind: &str, object: &DynamicObject| {
        let translated = custom(kind, object);
        let source = source_name(
            kind,
            object.metadata.namespace.as_deref(),
            object.metadata.name.as_deref().unwrap_or_default(),
        );
        out.insert(source, translated);
    };
    for gateway in weft {
        put_custom("Gateway", gateway);
    }
    for (kind, routes) in [
        ("HTTPRoute", &cluster.http_routes),
        ("GRPCRoute", &cluster.grpc_routes),
    ] {
        for route in routes {
            if let Some(route) = weft_route(route, &weft_keys, &foreign_keys) {
                put_custom(kind, &route);
            }
        }
    }
    for (kind, objects) in [
        ("AuthorizationPolicy", &cluster.authorization_policies),
        ("PeerAuthentication", &cluster.peer_authentications),
        ("Workload", &cluster.workloads),
        ("TrafficFilter", &cluster.traffic_filters),
        ("BackendPolicy", &cluster.backend_policies),
        ("ExternalService", &cluster.external_services),
    ] {
        for object in objects {
            put_custom(kind, object);
        }
    }
    out
}

#[cfg(test)]
mod tests;
