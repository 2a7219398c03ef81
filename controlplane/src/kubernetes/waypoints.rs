//! The waypoint controller: for each Gateway of class `weft-waypoint` (and, in gateway
//! mode, `weft-gateway`: `waypoints/ingress.rs`) it applies what
//! runs the waypoint — a ServiceAccount (the waypoint's identity), a ConfigMap with the
//! mesh's root certificates (how its pods trust the control plane), a Deployment of
//! `weft-waypoint` and a Service named like the Gateway (where agents send the traffic
//! bound to it) — all owned by the Gateway, so that Kubernetes deletes them with it.
//! Objects are applied server-side (field manager `weft-controlplane`), so applying
//! again is harmless and a changed Gateway changes them. The Gateway's status gets the
//! conditions `Accepted` and `Programmed` for its generation, and the Service's address.
//! A Gateway without the one listener a waypoint has (`HBONE` on 15008) is not
//! accepted, and nothing is created for it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The class whose Gateways this controller runs.
pub use crate::validate::WAYPOINT_CLASS as CLASS;
pub const FIELD_MANAGER: &str = "weft-controlplane";
/// The label a waypoint's pods carry (Gateway API's), and select by.
pub const GATEWAY_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
const HBONE_PORT: u16 = 15008;

/// What every waypoint's pods get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image with `weft-waypoint` in it.
    pub image: String,
    /// `host:port` of the control plane's gRPC (15012), as pods reach it.
    pub controlplane: String,
    pub trust_domain: String,
    /// The mesh's root certificates, PEM.
    pub roots_pem: String,
    /// The audience of the projected token the waypoint authenticates with.
    pub token_audience: String,
}

mod ingress;

fn is_ingress(gateway: &DynamicObject) -> bool {
    super::class_of(gateway) == Some(crate::validate::GATEWAY_CLASS)
}

/// Why a Gateway is not taken.
fn refusal(gateway: &DynamicObject) -> Option<String> {
    if is_ingress(gateway) {
        return ingress::refusal(gateway);
    }
    let listeners = gateway.data.pointer("/spec/listeners")?.as_array();
    let hbone = listeners.into_iter().flatten().any(|l| {
        l["protocol"].as_str() == Some("HBONE") && l["port"].as_u64() == Some(HBONE_PORT.into())
    });
    (!hbone).then(|| format!("a waypoint listens with protocol HBONE on port {HBONE_PORT}"))
}

fn owner(gateway: &DynamicObject) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": gateway.metadata.name,
        "uid": gateway.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn meta(gateway: &DynamicObject, name: &str) -> Value {
    let gw = gateway.metadata.name.clone().unwrap_or_default();
    json!({
        "name": name,
        "namespace": gateway.metadata.namespace,
        "labels": {GATEWAY_LABEL: gw, "app.kubernetes.io/managed-by": FIELD_MANAGER},
        "ownerReferences": [owner(gateway)],
    })
}

/// The objects that run the waypoint of `gateway`, in the order they are applied.
pub fn objects(gateway: &DynamicObject, s: &Settings) -> Vec<Value> {
    let mut objects = waypoint_objects(gateway, s);
    if is_ingress(gateway) {
        ingress::adapt(&mut objects, gateway);
    }
    objects
}

fn waypoint_objects(gateway: &DynamicObject, s: &Settings) -> Vec<Value> {
    let (namespace, name) = super::key_of(gateway);
    let roots = format!("{name}-weft-roots");
    let pod_labels = json!({GATEWAY_LABEL: name, "weft.dev/mesh": "disabled"});
    // No audience named: the API server's own.
    let mut token = json!({"expirationSeconds": 3600, "path": "token"});
    if !s.token_audience.is_empty() {
        token["audience"] = s.token_audience.clone().into();
    }
    let env = |pairs: &[(&str, &str)]| -> Vec<Value> {
        pairs
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect()
    };
    vec![
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": meta(gateway, &name),
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(gateway, &roots),
            "data": {"roots.pem": s.roots_pem},
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(gateway, &name),
            "spec": {
                "selector": {"matchLabels": {GATEWAY_LABEL: name}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [{
                            "name": "waypoint",
                            "image": s.image,
                            "command": ["weft-waypoint"],
                            "env": env(&[
                                ("WEFT_WAYPOINT_NAMESPACE", &namespace),
                                ("WEFT_WAYPOINT_NAME", &name),
                                ("WEFT_SERVICE_ACCOUNT", &name),
                                ("WEFT_TRUST_DOMAIN", &s.trust_domain),
                                ("WEFT_CONTROLPLANE", &s.controlplane),
                                ("WEFT_CONTROLPLANE_CA", "/var/run/weft/roots/roots.pem"),
                                ("WEFT_TOKEN_FILE", "/var/run/weft/token/token"),
                            ]),
                            "ports": [
                                {"name": "hbone", "containerPort": HBONE_PORT},
                                {"name": "metrics", "containerPort": 15020},
                                {"name": "readiness", "containerPort": 15021},
                            ],
                            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}},
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "roots", "mountPath": "/var/run/weft/roots", "readOnly": true},
                                {"name": "token", "mountPath": "/var/run/weft/token", "readOnly": true},
                            ],
                        }],
                        "volumes": [
                            {"name": "roots", "configMap": {"name": roots}},
                            {"name": "token", "projected": {"sources": [{"serviceAccountToken": token}]}},
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(gateway, &name),
            "spec": {
                "selector": {GATEWAY_LABEL: name},
                "ports": [{"name": "hbone", "port": HBONE_PORT, "targetPort": HBONE_PORT, "appProtocol": "hbone"}],
            },
        }),
    ]
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
    })
}

/// Applies what runs the waypoint of `gateway` and writes the Gateway's status.
pub async fn reconcile(
    client: &Client,
    gateway: &DynamicObject,
    settings: &Settings,
) -> Result<(), kube::Error> {
    let (namespace, name) = super::key_of(gateway);
    let generation = gateway.metadata.generation.unwrap_or(0);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let status = match refusal(gateway) {
        Some(why) => json!({
            "conditions": [
                condition("Accepted", false, "Invalid", &why, generation),
                condition("Programmed", false, "Invalid", &why, generation),
            ],
        }),
        None => {
            let mut address = None;
            for object in objects(gateway, settings) {
                let ar = super::api_resource(&object);
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &ar);
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let applied = api.patch(&name, &params, &Patch::Apply(&object)).await?;
                if ar.kind == "Service" {
                    address = applied.data.pointer("/spec/clusterIP").cloned();
                }
            }
            let addresses: Vec<Value> = address
                .into_iter()
                .map(|ip| json!({"type": "IPAddress", "value": ip}))
                .collect();
            json!({
                "addresses": addresses,
                "conditions": [
                    condition("Accepted", true, "Accepted", "run by the Weft control plane", generation),
                    condition("Programmed", true, "Programmed", "its Deployment and Service are applied", generation),
                ],
            })
        }
    };
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &namespace,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "Gateway",
        )),
    );
    let patch = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "status": status,
    });
    gateways
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Reconciles the waypoint Gateways of each snapshot `gateways` sends, until it closes.
/// A Gateway whose reconciling failed is tried again after a wait (doubling from
/// 0.5 s to 30 s) or with the next snapshot, whichever comes first.
pub async fn run(
    client: Client,
    settings: Settings,
    mut gateways: watch::Receiver<Vec<Arc<DynamicObject>>>,
    mut leading: watch::Receiver<bool>,
) {
    let mut applied = Applied::default();
    let mut wait = Duration::from_millis(500);
    loop {
        // A follower writes nothing; a new leader reconciles every Gateway again.
        if !*leading.borrow_and_update() {
            applied = Applied::default();
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
        }
        let snapshot = gateways.borrow_and_update().clone();
        applied.retain(snapshot.iter().map(|g| &**g));
        let todo: Vec<DynamicObject> = applied
            .changed(snapshot.iter().map(|g| &**g))
            .into_iter()
            .cloned()
            .collect();
        let mut failed = false;
        for g in &todo {
            let name = format!(
                "{}/{}",
                g.metadata.namespace.as_deref().unwrap_or_default(),
                g.metadata.name.as_deref().unwrap_or_default()
            );
            match reconcile(&client, g, &settings).await {
                Ok(()) => {
                    applied.done(g);
                    tracing::info!(gateway = %name, "waypoint reconciled");
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!(gateway = %name, error = %e, "reconciling the waypoint failed; trying again");
                }
            }
        }
        if failed {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = gateways.changed() => if changed.is_err() { return },
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        } else {
            wait = Duration::from_millis(500);
            tokio::select! {
                changed = gateways.changed() => if changed.is_err() { return },
                changed = leading.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// What was last applied for each Gateway (its uid, generation and the settings'
/// roots), so that a snapshot of the cluster reconciles only what changed.
#[derive(Debug, Default)]
pub struct Applied {
    by_gateway: BTreeMap<(String, String), (String, i64)>,
}

impl Applied {
    /// The Gateways of class `weft-waypoint` and `weft-gateway` among `gateways` that
    /// need reconciling.
    pub fn changed<'g>(
        &self,
        gateways: impl IntoIterator<Item = &'g DynamicObject>,
    ) -> Vec<&'g DynamicObject> {
        gateways
            .into_iter()
            .filter(|g| super::class_of(g).is_some_and(crate::validate::weft_class))
            .filter(|g| self.by_gateway.get(&super::key_of(g)) != Some(&version(g)))
            .collect()
    }

    pub fn done(&mut self, gateway: &DynamicObject) {
        self.by_gateway
            .insert(super::key_of(gateway), version(gateway));
    }

    /// Forgets Gateways that are gone (Kubernetes deletes what they owned).
    pub fn retain<'g>(&mut self, gateways: impl IntoIterator<Item = &'g DynamicObject>) {
        let live: Vec<(String, String)> = gateways.into_iter().map(super::key_of).collect();
        self.by_gateway.retain(|k, _| live.contains(k));
    }
}

fn version(g: &DynamicObject) -> (String, i64) {
    (
        g.metadata.uid.clone().unwrap_or_default(),
        g.metadata.generation.unwrap_or(0),
    )
}

#[cfg(test)]
mod tests;
