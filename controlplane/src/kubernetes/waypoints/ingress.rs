//! Ingress gateways (class `weft-gateway`): the waypoint's objects, changed for gateway
//! mode — the listeners' ports on the pod and on a `LoadBalancer` Service, the HTTPS
//! listener's Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`) mounted for
//! `WEFT_GATEWAY_TLS_CERT` and `WEFT_GATEWAY_TLS_KEY`.

use kube::api::DynamicObject;
use serde_json::{Value, json};

/// Where the HTTPS listener's Secret is mounted.
const TLS_DIR: &str = "/var/run/weft/gateway-tls";

struct Listeners {
    http: Option<u64>,
    https: Option<(u64, String)>,
}

fn listeners(gateway: &DynamicObject) -> Listeners {
    let all = gateway
        .data
        .pointer("/spec/listeners")
        .and_then(Value::as_array);
    let mut out = Listeners {
        http: None,
        https: None,
    };
    for l in all.into_iter().flatten() {
        let port = l["port"].as_u64();
        match (l["protocol"].as_str(), port) {
            (Some("HTTP"), Some(p)) if out.http.is_none() => out.http = Some(p),
            (Some("HTTPS"), Some(p)) if out.https.is_none() => {
                if let Some(secret) = l
                    .pointer("/tls/certificateRefs/0/name")
                    .and_then(Value::as_str)
                {
                    out.https = Some((p, secret.to_owned()));
                }
            }
            _ => {}
        }
    }
    out
}

/// Why an ingress Gateway is not taken.
pub(super) fn refusal(gateway: &DynamicObject) -> Option<String> {
    let l = listeners(gateway);
    (l.http.is_none() && l.https.is_none()).then(|| {
        "an ingress gateway needs an HTTP listener, or an HTTPS one with tls.certificateRefs"
            .to_owned()
    })
}

/// Changes the waypoint's Deployment and Service (`objects`) for gateway mode.
pub(super) fn adapt(objects: &mut [Value], gateway: &DynamicObject) {
    let l = listeners(gateway);
    for o in objects.iter_mut() {
        match o["kind"].as_str() {
            Some("Deployment") => {
                let pod = &mut o["spec"]["template"]["spec"];
                let c = &mut pod["containers"][0];
                let mut env = Vec::new();
                let mut ports = Vec::new();
                if let Some(p) = l.http {
                    env.push(
                        json!({"name": "WEFT_GATEWAY_HTTP_ADDR", "value": format!("0.0.0.0:{p}")}),
                    );
                    ports.push(json!({"name": "http", "containerPort": p}));
                }
                if let Some((p, secret)) = &l.https {
                    env.push(
                        json!({"name": "WEFT_GATEWAY_HTTPS_ADDR", "value": format!("0.0.0.0:{p}")}),
                    );
                    env.push(json!({"name": "WEFT_GATEWAY_TLS_CERT", "value": format!("{TLS_DIR}/tls.crt")}));
                    env.push(json!({"name": "WEFT_GATEWAY_TLS_KEY", "value": format!("{TLS_DIR}/tls.key")}));
                    ports.push(json!({"name": "https", "containerPort": p}));
                    if let Some(m) = c["volumeMounts"].as_array_mut() {
                        m.push(
                            json!({"name": "gateway-tls", "mountPath": TLS_DIR, "readOnly": true}),
                        );
                    }
                    if let Some(v) = pod["volumes"].as_array_mut() {
                        v.push(json!({"name": "gateway-tls", "secret": {"secretName": secret}}));
                    }
                }
                let c = &mut o["spec"]["template"]["spec"]["containers"][0];
                if let Some(e) = c["env"].as_array_mut() {
                    e.extend(env);
                }
                if let Some(p) = c["ports"].as_array_mut() {
                    p.extend(ports);
                }
            }
            Some("Service") => {
                let mut ports = Vec::new();
                if let Some(p) = l.http {
                    ports.push(json!({"name": "http", "port": p, "targetPort": p}));
                }
                if let Some((p, _)) = &l.https {
                    ports.push(json!({"name": "https", "port": p, "targetPort": p}));
                }
                o["spec"]["type"] = "LoadBalancer".into();
                o["spec"]["ports"] = ports.into();
            }
            _ => {}
        }
    }
}
