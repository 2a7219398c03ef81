//! Egress: a namespace with `REGISTRY_ONLY` reaches only what the mesh knows; an
//! `ExternalService` makes a server outside the cluster known (its host answered by the
//! agents' DNS, its connections counted) and sends its traffic through an egress
//! waypoint that originates TLS to it. The server is the lab's nginx on the underlay
//! (`10.250.0.5`), in a namespace of its own outside the mesh.

use std::time::Duration;

use tests::{lab::Lab, wire::eventually};
use weftctl::lab;

/// The default topology with `shop` REGISTRY_ONLY and an egress waypoint in it.
fn topology() -> String {
    let t = lab::topology::DEFAULT.replace(
        "      weft.dev/mesh: enabled\n",
        "      weft.dev/mesh: enabled\n      weft.dev/outbound-policy: REGISTRY_ONLY\n",
    );
    format!("{t}  - name: egress\n    namespace: shop\n    node: node-2\n    vip: 10.96.0.41\n")
}

fn external_service() -> String {
    let ca = std::fs::read_to_string(lab::ingress::ca_file()).unwrap();
    let ca: String = ca.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: ExternalService
metadata: {{name: api, namespace: shop}}
spec:
  hosts: [api.example.com]
  addresses: [10.250.0.5]
  ports: [{{name: http, port: 80, protocol: HTTP, targetPort: 443}}]
  egressGateway: egress
  tls:
    caCertificates: |
{ca}"
    )
}

fn get(lab: &Lab, pod: &str, to: &str) -> Result<String, String> {
    let out = lab.sample(pod, &["get", "--connect", to]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn failures(lab: &Lab, node: &str, reason: &str) -> f64 {
    let line = format!("weft_agent_outbound_failures_total{{reason=\"{reason}\"}} ");
    lab.metrics(node)
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn registry_only_namespaces_reach_external_services_through_the_egress_waypoint_in_tls() {
    let lab = Lab::up(&topology(), &[], &[]);
    let outside = "10.250.0.5:8080";

    // Outside the mesh's registry: refused for shop (REGISTRY_ONLY), not for legacy.
    let refused = get(&lab, "shop/frontend-1", outside);
    assert!(refused.is_err(), "{refused:?}");
    assert!(failures(&lab, "node-1", "registry_only") >= 1.0);
    let plain = get(&lab, "legacy/billing-1", outside).unwrap();
    assert!(plain.contains("scheme=http tls= "), "{plain}");

    // The ExternalService makes it known, behind the egress waypoint.
    lab.apply_and_wait(
        "api-external",
        &external_service(),
        &["node-1", "node-2"],
        &["shop/egress"],
    );

    // Its host resolves to its address, from the agent.
    let dns = lab.sample_json(
        "shop/frontend-1",
        &[
            "dns",
            "--server",
            "10.250.0.4:53",
            "--name",
            "api.example.com",
        ],
    );
    assert_eq!(dns["answers"][0]["a"], "10.250.0.5", "{dns}");
    assert_eq!(dns["aa"], true, "{dns}");

    // Plain HTTP from the application; HTTPS from the egress waypoint to the server,
    // verified against the CA the ExternalService names.
    let mut answer = String::new();
    eventually(Duration::from_secs(10), "the egress path", || {
        match get(&lab, "shop/frontend-1", "10.250.0.5:80") {
            Ok(a) => {
                answer = a;
                true
            }
            Err(_) => false,
        }
    });
    assert!(
        answer.contains("scheme=https tls=TLSv1.3 sni=api.example.com"),
        "{answer}"
    );
    // Only its declared ports are known.
    assert!(get(&lab, "shop/frontend-1", outside).is_err());

    // Counted: by the client's agent as a connection to the ExternalService (in mutual
    // TLS, to the waypoint), and by the waypoint as a request.
    let agent = lab.metrics("node-1");
    assert!(
        agent
            .lines()
            .any(|l| l.starts_with("weft_tcp_connections_opened_total{")
                && l.contains("reporter=\"source\"")
                && l.contains("destination_service=\"shop/api\"")
                && l.contains("connection_security_policy=\"mutual_tls\"")),
        "{agent}"
    );
    let waypoint = lab.pod_metrics("shop/egress");
    assert!(
        waypoint
            .lines()
            .any(|l| l.starts_with("weft_requests_total{")
                && l.contains("destination_service=\"shop/api\"")
                && l.contains("response_code=\"200\"")),
        "{waypoint}"
    );
}
