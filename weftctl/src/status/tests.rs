use kube::Client;
use serde_json::{Value, json};

use super::*;

type Route = Box<dyn Fn(&str, &str) -> Option<(u16, Value)> + Send>;

/// An API server answering from `route` by path and query (404 for the rest), as many
/// requests as come.
fn cluster(route: Route) -> Client {
    let (client, mut handle) = crate::testing::cluster();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let query = req
                .uri()
                .query()
                .unwrap_or_default()
                .replace("%2F", "/")
                .replace("%3D", "=");
            send.send_response(match route(req.uri().path(), &query) {
                Some((status, body)) => crate::testing::reply(status, body),
                None => crate::testing::not_found(),
            });
        }
    });
    client
}

fn roots(days: i64) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

fn pod(name: &str, node: &str, ready: bool) -> Value {
    json!({"metadata": {"name": name, "namespace": "weft-system"},
           "spec": {"nodeName": node, "containers": []},
           "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": items})
}

struct Cluster {
    cp_ready: i32,
    agent_pods: Vec<Value>,
    status_a: Value,
    status_b: Option<Value>,
    programmed: bool,
    roots_days: i64,
    bundle: bool,
}

fn healthy() -> Cluster {
    let sub = |acked: u64| json!({"kind": "agent", "connected": true, "sent": acked, "acked": acked, "nacked": null});
    Cluster {
        cp_ready: 2,
        agent_pods: vec![
            pod("weft-agent-a", "node-1", true),
            pod("weft-agent-b", "node-2", true),
        ],
        status_a: json!({"version": 7, "problems": [], "subscribers": {
            "node-1": sub(7),
            "shop/cart-waypoint": {"kind": "waypoint", "connected": true, "sent": 7, "acked": 7, "nacked": null}}}),
        status_b: Some(json!({"version": 9, "problems": [], "subscribers": {"node-2": sub(9)}})),
        programmed: true,
        roots_days: 3650,
        bundle: true,
    }
}

fn serve(c: Cluster) -> Client {
    let roots = roots(c.roots_days);
    cluster(Box::new(move |path, query| {
        let ok = |v: Value| Some((200, v));
        match path {
            "/apis/apps/v1/namespaces/weft-system/deployments/weft-controlplane" => ok(json!({
                "metadata": {"name": "weft-controlplane"},
                "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [
                    {"name": "controlplane", "image": "ghcr.io/weft-mesh/weft:0.1.0"}]}}},
                "status": {"readyReplicas": c.cp_ready}})),
            "/apis/apps/v1/namespaces/weft-system/daemonsets/weft-agent" => ok(json!({
                "metadata": {"name": "weft-agent"},
                "spec": {"selector": {}, "template": {}},
                "status": {"desiredNumberScheduled": 2, "numberReady": c.agent_pods.len(),
                           "currentNumberScheduled": 2, "numberMisscheduled": 0}})),
            "/api/v1/namespaces/weft-system/pods" if query.contains("name=weft-controlplane") => {
                ok(list(
                    "PodList",
                    vec![
                        pod("weft-controlplane-a", "node-1", true),
                        pod("weft-controlplane-b", "node-2", c.cp_ready == 2),
                    ],
                ))
            }
            "/api/v1/namespaces/weft-system/pods" if query.contains("name=weft-agent") => {
                ok(list("PodList", c.agent_pods.clone()))
            }
            "/api/v1/namespaces/weft-system/pods/weft-controlplane-a:15014/proxy/debug/status" => {
                ok(c.status_a.clone())
            }
            "/api/v1/namespaces/weft-system/pods/weft-controlplane-b:15014/proxy/debug/status" => {
                c.status_b.clone().map(|s| (200, s))
            }
            "/api/v1/nodes" => ok(list(
                "NodeList",
                vec![
                    json!({"metadata": {"name": "node-1"}}),
                    json!({"metadata": {"name": "node-2"}}),
                ],
            )),
            "/api/v1/namespaces" => {
                assert!(
                    query.contains("labelSelector=weft.dev/mesh=enabled"),
                    "{query}"
                );
                ok(list(
                    "NamespaceList",
                    vec![json!({"metadata": {"name": "shop"}})],
                ))
            }
            "/apis/gateway.networking.k8s.io/v1/gateways" => ok(list(
                "GatewayList",
                vec![
                    json!({"metadata": {"name": "cart-waypoint", "namespace": "shop"},
                       "spec": {"gatewayClassName": "weft-waypoint"},
                       "status": {"conditions": [{"type": "Programmed",
                           "status": if c.programmed {"True"} else {"False"},
                           "message": "the Deployment has no ready replica"}]}}),
                    json!({"metadata": {"name": "edge", "namespace": "infra"},
                       "spec": {"gatewayClassName": "other"}}),
                ],
            )),
            "/api/v1/namespaces/weft-system/configmaps/weft-roots" => ok(json!({
                "metadata": {"name": "weft-roots"}, "data": {"roots.pem": roots}})),
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/weft-controlplane" => {
                ok(json!({
                "metadata": {"name": "weft-controlplane"},
                "webhooks": [{"name": "validation.weft.dev", "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": if c.bundle {json!({"caBundle": "Y2E="})} else {json!({})}}]}))
            }
            _ => None,
        }
    }))
}

fn by_name<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap()
}

#[tokio::test]
async fn a_healthy_mesh_passes_every_check_and_reads_at_a_glance() {
    let v = crate::cluster::read(&serve(healthy()), "weft-system")
        .await
        .unwrap();
    let checks = postflight(&v, now());
    for c in &checks {
        assert!(c.ok, "{c:?}");
    }
    assert_eq!(
        by_name(&checks, "agents ready").found,
        "2/2 nodes have a ready agent"
    );
    let text = human(&v, false);
    assert!(
        text.starts_with("Weft in weft-system: ghcr.io/weft-mesh/weft:0.1.0\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "2/2 ready; configuration version 7 (weft-controlplane-a), 9 (weft-controlplane-b)"
        ),
        "{text}"
    );
    assert!(
        text.contains("node-1               weft-agent-a             yes    yes        current"),
        "{text}"
    );
    assert!(text.contains("in the mesh     shop"), "{text}");
    assert!(
        text.contains("waypoints       shop/cart-waypoint (programmed)"),
        "{text}"
    );
    assert!(!text.contains("infra/edge"), "{text}");
    let yaml = output::render(Some(Format::Yaml), &v, |_| String::new());
    assert!(yaml.contains("enrolledNamespaces:\n- shop"), "{yaml}");
}

#[tokio::test]
async fn each_failure_is_named_with_its_fix() {
    let mut c = healthy();
    c.cp_ready = 1;
    c.status_b = None; // its status cannot be read
    c.agent_pods = vec![pod("weft-agent-a", "node-1", true)];
    c.status_a = json!({"version": 8, "problems": [{"text": "lab.yaml: spec.action: unknown"}], "subscribers": {
        "node-1": {"kind": "agent", "connected": true, "sent": 8, "acked": 7,
                   "nacked": {"version": 8, "reason": "Workload shop/x: bad address"}}}});
    c.programmed = false;
    c.roots_days = -1;
    c.bundle = false;
    let v = crate::cluster::read(&serve(c), "weft-system")
        .await
        .unwrap();
    let checks = postflight(&v, now());
    let failed = |name: &str| {
        let c = by_name(&checks, name);
        assert!(!c.ok, "{c:?}");
        assert!(c.fix.is_some(), "{c:?}");
        c.found.clone()
    };
    assert_eq!(failed("control plane ready"), "1/2 replicas ready");
    assert!(failed("control plane status").starts_with("weft-controlplane-b: "));
    assert!(failed("configuration").contains("lab.yaml: spec.action: unknown"));
    assert!(!by_name(&checks, "configuration").required);
    assert_eq!(failed("agents ready"), "no ready agent on node-2");
    assert_eq!(
        failed("agents up to date"),
        "node-1 refused: Workload shop/x: bad address"
    );
    assert!(
        failed("waypoints programmed")
            .contains("shop/cart-waypoint: the Deployment has no ready replica")
    );
    assert_eq!(
        failed("root certificate"),
        "the mesh's root certificate has expired"
    );
    assert_eq!(
        failed("webhook CA bundle"),
        "the ValidatingWebhookConfiguration has no CA bundle"
    );
    let table = crate::check::table(&checks, false);
    assert!(table.contains("FAIL  agents ready"), "{table}");
    assert!(
        table.contains("fix: kubectl -n weft-system describe daemonset weft-agent"),
        "{table}"
    );
}

#[tokio::test]
async fn roots_close_to_expiry_warn_and_a_missing_install_says_so() {
    let mut c = healthy();
    c.roots_days = 10;
    let v = crate::cluster::read(&serve(c), "weft-system")
        .await
        .unwrap();
    let roots = by_name(&postflight(&v, now()), "root certificate").clone();
    assert!(!roots.ok && !roots.required, "{roots:?}");
    assert!(
        ["9d", "10d"].iter().any(|d| roots
            .found
            .starts_with(&format!("the root certificate expires in {d} "))),
        "{roots:?}"
    );

    let empty = cluster(Box::new(|_, _| None));
    let e = crate::cluster::read(&empty, "weft-system")
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Weft is not installed in namespace weft-system"),
        "{e}"
    );
}
