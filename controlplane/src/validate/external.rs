//! ExternalServices and the outbound policy label.

use std::net::IpAddr;

use super::{Check, Index, port};
use crate::model::{ExternalService, Metadata};

/// `weft.dev/outbound-policy` on a Namespace: where its pods may connect outside what
/// the mesh knows (on the root namespace: the whole mesh's default).
pub const OUTBOUND_POLICY_LABEL: &str = "weft.dev/outbound-policy";

pub(super) fn outbound_policy_label(c: &mut Check<'_>, m: &Metadata) {
    if let Some(v) = m.labels.get(OUTBOUND_POLICY_LABEL)
        && v != "ALLOW_ANY"
        && v != "REGISTRY_ONLY"
    {
        c.bad(
            format!("metadata.labels.{OUTBOUND_POLICY_LABEL}"),
            format!("{v:?}: expected \"ALLOW_ANY\" or \"REGISTRY_ONLY\""),
        );
    }
}

/// A host name, or `*.` and one.
fn host(h: &str) -> Result<(), String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{h:?} is not a host name (lowercase labels with a dot, `*.` at most in front)"
        ))
    }
}

/// PEM certificates, each one parsed.
fn certificates(pem: &str) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let mut n = 0;
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| format!("not PEM: {e}"))?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("certificate {}: {e}", n + 1))?;
        n += 1;
    }
    if n == 0 {
        return Err("expected PEM certificates (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(())
}

pub(super) fn external_service(c: &mut Check<'_>, index: &Index<'_>, e: &ExternalService) {
    let ns = e.metadata.namespace.as_deref().unwrap_or_default();
    let s = &e.spec;
    if index.services.contains(&(ns, e.metadata.name.as_str())) {
        c.bad(
            "metadata.name",
            format!(
                "a Service {ns}/{} exists: the names would be one",
                e.metadata.name
            ),
        );
    }
    if s.hosts.is_empty() {
        c.bad("spec.hosts", "at least one host is needed");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        if let Err(reason) = host(h) {
            c.bad(format!("spec.hosts[{i}]"), reason);
        }
    }
    match s.resolution.as_deref() {
        None | Some("STATIC") => {
            if s.addresses.is_empty() {
                c.bad(
                    "spec.addresses",
                    "STATIC resolution needs the service's addresses",
                );
            }
        }
        Some(other) => c.bad(
            "spec.resolution",
            format!("{other:?}: only STATIC is served (addresses given here)"),
        ),
    }
    for (i, a) in s.addresses.iter().enumerate() {
        if a.parse::<IpAddr>().is_err() {
            c.bad(
                format!("spec.addresses[{i}]"),
                format!("{a:?} is not an IP address"),
            );
        }
    }
    if s.ports.is_empty() {
        c.bad("spec.ports", "at least one port is needed");
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        match port(p.port) {
            Ok(n) if !seen.insert(n) => c.bad(at("port"), format!("port {n} is listed twice")),
            Ok(_) => {}
            Err(e) => c.bad(at("port"), e),
        }
        if let Some(t) = p.target_port
            && let Err(e) = port(t)
        {
            c.bad(at("targetPort"), e);
        }
        if !matches!(p.protocol.as_str(), "TCP" | "HTTP" | "TLS") {
            c.bad(
                at("protocol"),
                format!("{:?}: expected TCP, HTTP or TLS", p.protocol),
            );
        }
        if let Err(e) = super::dns_label(&p.name) {
            c.bad(at("name"), e);
        }
    }
    if let Some(gw) = &s.egress_gateway
        && !index.waypoints.contains(&(ns, gw.as_str()))
    {
        c.bad(
            "spec.egressGateway",
            format!(
                "no Gateway {ns}/{gw} of class {:?} is declared",
                super::WAYPOINT_CLASS
            ),
        );
    }
    if let Some(tls) = &s.tls {
        if s.egress_gateway.is_none() {
            c.bad(
                "spec.tls",
                "TLS is originated by an egress gateway: name one in spec.egressGateway",
            );
        }
        if let Some(sni) = &tls.sni
            && let Err(reason) = host(sni)
        {
            c.bad("spec.tls.sni", reason);
        }
        if let Err(reason) = certificates(&tls.ca_certificates) {
            c.bad("spec.tls.caCertificates", reason);
        }
        for (i, p) in s.ports.iter().enumerate() {
            if p.protocol != "HTTP" {
                c.bad(
                    format!("spec.ports[{i}].protocol"),
                    format!(
                        "{:?}: with TLS origination the application speaks HTTP to the port",
                        p.protocol
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn hosts_are_names_with_at_most_a_leading_wildcard() {
        for ok in ["api.example.com", "*.example.com", "a-1.b.c"] {
            assert!(host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "localhost",
            "API.example.com",
            "a.*.com",
            "*",
            "-a.com",
            "a..com",
            "",
        ] {
            assert!(host(bad).is_err(), "{bad}");
        }
    }
}
