//! Gateways of Weft's classes.

use super::{Check, GATEWAY_CLASS, WAYPOINT_CLASS, port, weft_class};

/// A Gateway of Weft's: a waypoint listens with HBONE; an ingress gateway with HTTP or
/// HTTPS, HTTPS terminating TLS with a certificate from a Secret.
pub(super) fn gateway(c: &mut Check<'_>, g: &crate::model::Gateway) {
    let class = g.spec.gateway_class_name.as_str();
    if !weft_class(class) {
        c.bad(
            "spec.gatewayClassName",
            format!("{class:?}: Weft serves Gateways of class {WAYPOINT_CLASS:?} and {GATEWAY_CLASS:?} only"),
        );
        return;
    }
    if g.spec.listeners.is_empty() {
        c.bad("spec.listeners", "at least one listener is needed");
    }
    for (i, l) in g.spec.listeners.iter().enumerate() {
        let at = |f: &str| format!("spec.listeners[{i}].{f}");
        if let Err(e) = port(l.port) {
            c.bad(at("port"), e);
        }
        match (class, l.protocol.as_str()) {
            (WAYPOINT_CLASS, "HBONE") | (GATEWAY_CLASS, "HTTP" | "HTTPS") => {}
            (WAYPOINT_CLASS, p) => c.bad(
                at("protocol"),
                format!("{p:?}: a waypoint listens with protocol \"HBONE\""),
            ),
            (_, p) => c.bad(
                at("protocol"),
                format!("{p:?}: an ingress gateway listens with \"HTTP\" or \"HTTPS\""),
            ),
        }
        match (&l.tls, l.protocol.as_str()) {
            (None, "HTTPS") => c.bad(at("tls"), "an HTTPS listener needs tls.certificateRefs"),
            (Some(_), "HTTP" | "HBONE") => c.bad(at("tls"), "only an HTTPS listener has TLS"),
            (Some(t), _) => {
                if t.mode.as_deref().is_some_and(|m| m != "Terminate") {
                    c.bad(
                        at("tls.mode"),
                        format!(
                            "{:?}: only Terminate is served",
                            t.mode.as_deref().unwrap_or("")
                        ),
                    );
                }
                if t.certificate_refs.is_empty() {
                    c.bad(at("tls.certificateRefs"), "at least one Secret is needed");
                }
                for (j, r) in t.certificate_refs.iter().enumerate() {
                    if r.kind.as_deref().is_some_and(|k| k != "Secret") {
                        c.bad(
                            at(&format!("tls.certificateRefs[{j}].kind")),
                            "only Secrets hold certificates",
                        );
                    }
                }
            }
            (None, _) => {}
        }
    }
}
