//! ExternalServices as the data path takes them: a Service whose endpoints are its
//! addresses (outside the mesh), with its hosts, bound to its egress gateway like a
//! Service to its waypoint, and how that gateway speaks TLS to it.

use api::proto::config::{self as wire, ServicePort, resource::Body};

use super::{Key, key};
use crate::model::ExternalService;

/// Its endpoints carry an identity named after the ExternalService, for telemetry
/// only: they are not in the mesh, so nothing verifies it.
pub(super) fn translate(e: &ExternalService, trust_domain: &str) -> (Key, Body) {
    let ns = e.metadata.namespace.as_deref().unwrap_or_default();
    let s = &e.spec;
    let ports = s
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port as u32,
            target_port: p.target_port.unwrap_or(p.port) as u32,
            protocol: match p.protocol.as_str() {
                "HTTP" => "http",
                _ => "tcp",
            }
            .to_owned(),
        })
        .collect();
    let endpoints = s
        .addresses
        .iter()
        .map(|a| wire::Endpoint {
            workload: format!("{ns}/{}", e.metadata.name),
            addresses: vec![a.clone()],
            identity: format!("spiffe://{trust_domain}/ns/{ns}/sa/{}", e.metadata.name),
            enrolled: false,
            node: String::new(),
        })
        .collect();
    let tls = s.tls.as_ref().map(|t| wire::TlsOrigination {
        sni: t
            .sni
            .clone()
            .or_else(|| {
                s.hosts
                    .first()
                    .map(|h| h.trim_start_matches("*.").to_owned())
            })
            .unwrap_or_default(),
        ca_pem: t.ca_certificates.clone(),
    });
    (
        key("Service", &e.metadata),
        Body::Service(wire::Service {
            addresses: s.addresses.clone(),
            ports,
            endpoints,
            waypoint: s.egress_gateway.clone().unwrap_or_default(),
            load_balancer: String::new(),
            backend: None,
            external: Some(wire::External {
                hosts: s.hosts.clone(),
                tls,
            }),
        }),
    )
}
