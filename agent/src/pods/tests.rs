use std::collections::BTreeMap;

use super::*;
use crate::discovery::Workload;

fn config(namespaces: &[(&str, bool)], pods: &[(&str, &str, bool)]) -> Config {
    let workloads = pods
        .iter()
        .map(|(ns, name, enrolled)| {
            (
                ("Workload".to_owned(), (*ns).to_owned(), (*name).to_owned()),
                Workload {
                    identity: api::identity::Identity::new("cluster.local", ns, "cart").unwrap(),
                    node: "node-1".into(),
                    addresses: Vec::new(),
                    enrolled: *enrolled,
                    waypoint: None,
                    labels: BTreeMap::new(),
                },
            )
        })
        .collect();
    Config {
        version: 3,
        workloads,
        namespaces: namespaces
            .iter()
            .map(|(n, e)| ((*n).to_owned(), *e))
            .collect(),
        ..Config::default()
    }
}

#[test]
fn a_pod_of_an_enrolled_namespace_joins_with_its_service_account() {
    let c = config(&[("shop", true)], &[("shop", "cart-1", true)]);
    assert_eq!(
        decide(&c, "shop", "cart-1"),
        Want::Mesh(WorkloadRef {
            namespace: "shop".into(),
            name: "cart-1".into(),
            service_account: "cart".into(),
        })
    );
}

#[test]
fn namespaces_without_the_label_and_pods_that_opt_out_stay_outside() {
    let c = config(
        &[("shop", true), ("legacy", false)],
        &[("shop", "batch", false), ("legacy", "billing-1", false)],
    );
    let outside = |ns, pod| match decide(&c, ns, pod) {
        Want::Outside(reason) => reason,
        other => panic!("{ns}/{pod}: {other:?}"),
    };
    assert_eq!(
        outside("legacy", "billing-1"),
        "namespace legacy is not in the mesh"
    );
    // A namespace the configuration does not name is not in the mesh either.
    assert_eq!(outside("other", "x"), "namespace other is not in the mesh");
    assert!(outside("shop", "batch").contains("opts out"));
}

#[test]
fn without_a_configuration_or_the_pod_the_answer_is_not_known_yet() {
    let none = Config::default();
    assert!(
        matches!(decide(&none, "shop", "cart-1"), Want::Unknown(r) if r.contains("no configuration"))
    );
    let c = config(&[("shop", true)], &[]);
    assert!(matches!(decide(&c, "shop", "cart-9"), Want::Unknown(r) if r.contains("shop/cart-9")));
    // An unenrolled namespace needs no Workload to answer.
    let c = config(&[("legacy", false)], &[]);
    assert!(matches!(decide(&c, "legacy", "x"), Want::Outside(_)));
}
