use super::*;

fn problems(text: &str) -> Vec<String> {
    parse("t.yaml", text).unwrap_err().problems
}

#[test]
fn default_topology_is_valid_and_has_the_promised_shape() {
    let t = parse("default", DEFAULT).unwrap();
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.namespaces.len(), 2);
    assert_eq!(t.services.len(), 4);
    for node in &t.nodes {
        assert!(t.pods.iter().filter(|p| p.node == node.name).count() >= 3);
    }
    assert_eq!(t.waypoints.len(), 1);
    assert_eq!(t.waypoints[0].services, ["cart"]);
    let pod = t.pods.iter().find(|p| p.waypoint).unwrap();
    assert_eq!(pod.key(), "shop/cart-waypoint");
    assert!(!pod.enrolled);
    assert!(t.pods.iter().any(|p| p.enrolled));
    assert!(t.pods.iter().any(|p| !p.enrolled));
    assert_eq!(t.nodes[1].address, Ipv4Addr::new(10, 250, 0, 11));
}

const BASE: &str = "
nodes:
  - {name: a, podSubnet: 10.244.1.0/24}
  - {name: b, podSubnet: 10.244.2.0/24}
namespaces:
  - {name: ns, labels: {weft.dev/mesh: enabled}}
pods:
  - {name: p1, namespace: ns, node: a, labels: {app: x, weft.dev/mesh: disabled}}
  - {name: p2, namespace: ns, node: b, labels: {app: x}}
services:
  - {name: s, namespace: ns, vip: 10.96.0.1, selector: {app: x}, ports: [{name: e, port: 7, targetPort: 7}]}
";

#[test]
fn pods_can_opt_out() {
    let t = parse("t", BASE).unwrap();
    assert!(!t.pods[0].enrolled);
    assert!(t.pods[1].enrolled);
    assert_eq!(t.pods[0].service_account, "default");
}

#[test]
fn unknown_node_is_named_with_its_field() {
    let p = problems(&BASE.replace("node: b", "node: z"));
    assert_eq!(p, vec!["pods[1].node: unknown node \"z\""]);
}

#[test]
fn duplicate_pod_is_refused() {
    let p = problems(&BASE.replace("name: p2", "name: p1"));
    assert_eq!(p, vec!["pods[1].name: duplicate pod ns/p1"]);
}

#[test]
fn overlapping_subnets_are_refused() {
    let p = problems(&BASE.replace("10.244.2.0/24", "10.244.1.128/25"));
    assert_eq!(
        p,
        vec!["nodes[1].podSubnet: 10.244.1.128/25 overlaps nodes[0].podSubnet (10.244.1.0/24)"]
    );
    let p = problems(&BASE.replace("10.244.2.0/24", "10.96.4.0/24"));
    assert_eq!(
        p,
        vec!["nodes[1].podSubnet: 10.96.4.0/24 overlaps serviceSubnet (10.96.0.0/16)"]
    );
}

#[test]
fn yaml_errors_name_the_line() {
    let p = problems("nodes:\n  - {name: a, podSubnet: 10.244.1.0/24\nnamespaces: []\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("line 3, column "), "{p:?}");
    let p = problems(&BASE.replace(
        "podSubnet: 10.244.2.0/24",
        "podSubnet: 10.244.2.0/24, zone: x",
    ));
    assert!(p[0].contains("unknown field `zone`"), "{p:?}");
    assert!(p[0].starts_with("line 4, column"), "{p:?}");
}

#[test]
fn many_problems_are_reported_at_once() {
    let bad = BASE
        .replace("vip: 10.96.0.1", "vip: 10.1.0.1")
        .replace("{app: x}, ports", "{app: y}, ports")
        .replace("port: 7,", "port: 70000,")
        .replace("name: ns, labels", "name: Ns, labels");
    let p = problems(&bad);
    assert!(
        p.contains(&"services[0].vip: 10.1.0.1 is outside serviceSubnet 10.96.0.0/16".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(&"services[0].ports[0].port: 70000 is not a port".to_owned()),
        "{p:?}"
    );
    assert!(
        p.contains(
            &"namespaces[0].name: \"Ns\" may hold only lowercase letters, digits and '-'"
                .to_owned()
        ),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("pods[0].namespace: unknown namespace")),
        "{p:?}"
    );
}

#[test]
fn waypoints_are_checked() {
    let with = |w: &str| format!("{BASE}waypoints:\n  - {w}\n");
    let t = parse(
        "t",
        &with("{name: wp, namespace: ns, node: a, vip: 10.96.0.9, services: [s]}"),
    )
    .unwrap();
    assert_eq!(t.pods.last().unwrap().labels[GATEWAY_NAME_LABEL], "wp");
    let p = problems(&with(
        "{name: p1, namespace: ns, node: z, vip: 10.96.0.1, services: [nope]}",
    ));
    assert_eq!(
        p,
        vec![
            "waypoints[0].node: unknown node \"z\"",
            "waypoints[0].name: ns/p1 is also a pod's name",
            "waypoints[0].vip: 10.96.0.1 is used by another service",
            "waypoints[0].services[0]: no service ns/nope in the topology",
        ]
    );
}

#[test]
fn cidrs_are_checked() {
    assert_eq!(
        "10.0.0.0/8".parse::<Ipv4Net>().unwrap().capacity(),
        (1 << 24) - 2
    );
    assert!(
        "10.0.0.1/8"
            .parse::<Ipv4Net>()
            .unwrap_err()
            .contains("host bits")
    );
    assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
    assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
    let a: Ipv4Net = "10.244.0.0/16".parse().unwrap();
    assert!(a.overlaps(&"10.244.3.0/24".parse().unwrap()));
    assert!(!a.overlaps(&"10.245.0.0/24".parse().unwrap()));
}
