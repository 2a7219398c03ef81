//! What `weftctl status` and `weftctl check --cluster` read of an installed mesh: the
//! control plane's Deployment and pods (and, through the API server's pod proxy, each
//! replica's `/debug/status`: its configuration version and the agents and waypoints
//! subscribed to it), the agent DaemonSet and its pods, the nodes, the namespaces in the
//! mesh, the waypoints, the published roots and the webhook's CA bundle.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    admissionregistration::v1::ValidatingWebhookConfiguration,
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Namespace, Node, Pod},
};
use kube::{Api, Client, api::ListParams};
use serde::Serialize;

use crate::install::{ROOTS_CONFIG_MAP, agent, controlplane};

/// One control plane replica.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    pub pod: String,
    pub ready: bool,
    /// Its configuration version (none: its status could not be read).
    pub version: Option<u64>,
    /// Documents it refused, as `source: path: reason`.
    pub problems: Vec<String>,
    /// Why its status could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A subscriber (agent by node, waypoint by `namespace/name`) of one replica.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber {
    pub name: String,
    pub kind: String,
    pub replica: String,
    pub connected: bool,
    pub acked: Option<u64>,
    /// The replica's version: the subscriber is current when it acked it.
    pub current: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nacked: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentPod {
    pub pod: String,
    pub node: String,
    pub ready: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Waypoint {
    /// `namespace/name` of its Gateway.
    pub name: String,
    pub programmed: bool,
    /// The Programmed condition's message, when not programmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub namespace: String,
    /// The control plane's image (the mesh's version is its tag).
    pub image: Option<String>,
    pub controlplane_desired: i32,
    pub controlplane_ready: i32,
    pub replicas: Vec<Replica>,
    pub agents_desired: i32,
    pub agents_ready: i32,
    pub agents: Vec<AgentPod>,
    pub nodes: Vec<String>,
    pub subscribers: Vec<Subscriber>,
    pub enrolled_namespaces: Vec<String>,
    pub waypoints: Vec<Waypoint>,
    /// When the first of the published roots expires (seconds since the epoch); none
    /// when `weft-roots` is missing or unreadable.
    pub roots_not_after: Option<u64>,
    pub webhook_ca_bundle: bool,
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn selector(app: &str) -> ListParams {
    ListParams::default().labels(&format!("app.kubernetes.io/name={app}"))
}

/// The earliest expiry of the certificates in `pem`.
pub fn earliest_expiry(pem: &str) -> Option<u64> {
    let mut rest = pem.as_bytes();
    let mut earliest: Option<u64> = None;
    while let Ok((left, block)) = x509_parser::pem::parse_x509_pem(rest) {
        let cert = block.parse_x509().ok()?;
        let at = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
        earliest = Some(earliest.map_or(at, |e: u64| e.min(at)));
        if left.len() == rest.len() {
            break;
        }
        rest = left;
    }
    earliest
}

/// Reads one replica's `/debug/status` through the API server.
async fn replica_status(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:15014/proxy/debug/status");
    let text = client
        .request_text(http::Request::get(&path).body(Vec::new())?)
        .await?;
    Ok(serde_json::from_str(&text)?)
}

pub async fn read(client: &Client, namespace: &str) -> anyhow::Result<View> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let cp = deployments.get_opt(controlplane::NAME).await?;
    let ds = daemon_sets.get_opt(agent::NAME).await?;
    if cp.is_none() && ds.is_none() {
        anyhow::bail!(
            "Weft is not installed in namespace {namespace} (no Deployment {} nor DaemonSet {}): run `weftctl install`",
            controlplane::NAME,
            agent::NAME
        );
    }
    let image = cp
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    let (controlplane_desired, controlplane_ready) = cp
        .as_ref()
        .map(|d| {
            (
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    let (agents_desired, agents_ready) = ds
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .map(|s| (s.desired_number_scheduled, s.number_ready))
        .unwrap_or((0, 0));

    let mut replicas = Vec::new();
    let mut subscribers = Vec::new();
    for p in pods.list(&selector(controlplane::NAME)).await?.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let ready = pod_ready(&p);
        let mut replica = Replica {
            pod: name.clone(),
            ready,
            version: None,
            problems: Vec::new(),
            error: None,
        };
        match replica_status(client, namespace, &name).await {
            Ok(status) => {
                let version = status["version"].as_u64();
                replica.version = version;
                replica.problems = status["problems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["text"].as_str().map(str::to_owned))
                    .collect();
                for (sub, s) in status["subscribers"].as_object().into_iter().flatten() {
                    let acked = s["acked"].as_u64();
                    subscribers.push(Subscriber {
                        name: sub.clone(),
                        kind: s["kind"].as_str().unwrap_or("agent").to_owned(),
                        replica: name.clone(),
                        connected: s["connected"].as_bool().unwrap_or(false),
                        acked,
                        current: acked.is_some() && acked == version,
                        nacked: s["nacked"]["reason"].as_str().map(str::to_owned),
                    });
                }
            }
            Err(e) => replica.error = Some(format!("{e:#}")),
        }
        replicas.push(replica);
    }
    let agents = pods
        .list(&selector(agent::NAME))
        .await?
        .items
        .iter()
        .map(|p| AgentPod {
            pod: p.metadata.name.clone().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            ready: pod_ready(p),
        })
        .collect();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let enrolled_namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels("weft.dev/mesh=enabled"))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let waypoints = gateways(client).await?;
    let roots_not_after = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(ROOTS_CONFIG_MAP)
        .await?
        .and_then(|c| c.data)
        .and_then(|d| d.get("roots.pem").cloned())
        .and_then(|pem| earliest_expiry(&pem));
    let webhook_ca_bundle = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get_opt(controlplane::NAME)
        .await?
        .and_then(|w| w.webhooks)
        .is_some_and(|hooks| {
            hooks.iter().all(|h| {
                h.client_config
                    .ca_bundle
                    .as_ref()
                    .is_some_and(|b| !b.0.is_empty())
            })
        });
    Ok(View {
        namespace: namespace.to_owned(),
        image,
        controlplane_desired,
        controlplane_ready,
        replicas,
        agents_desired,
        agents_ready,
        agents,
        nodes,
        subscribers,
        enrolled_namespaces,
        waypoints,
        roots_not_after,
        webhook_ca_bundle,
    })
}

/// The Gateways of class `weft-waypoint` (none when the Gateway API is not served).
async fn gateways(client: &Client) -> anyhow::Result<Vec<Waypoint>> {
    let path = "/apis/gateway.networking.k8s.io/v1/gateways";
    let list: serde_json::Value = match client
        .request_text(http::Request::get(path).body(Vec::new())?)
        .await
    {
        Ok(text) => serde_json::from_str(&text)?,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for g in list["items"].as_array().into_iter().flatten() {
        if g["spec"]["gatewayClassName"] != ::controlplane::kubernetes::waypoints::CLASS {
            continue;
        }
        let conditions: BTreeMap<&str, &serde_json::Value> = g["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["type"].as_str()?, c)))
            .collect();
        let programmed = conditions
            .get("Programmed")
            .is_some_and(|c| c["status"] == "True");
        out.push(Waypoint {
            name: format!(
                "{}/{}",
                g["metadata"]["namespace"].as_str().unwrap_or_default(),
                g["metadata"]["name"].as_str().unwrap_or_default()
            ),
            programmed,
            reason: (!programmed).then(|| {
                conditions
                    .get("Programmed")
                    .and_then(|c| c["message"].as_str())
                    .unwrap_or("no Programmed condition yet")
                    .to_owned()
            }),
        });
    }
    Ok(out)
}
