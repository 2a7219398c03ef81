//! The Grafana dashboards' queries against the lab's real Prometheus: with traffic of
//! every kind in the lab (mesh connections, HTTP through the waypoint with some 503s, a
//! connection the policy denies), every panel's query returns data, and every metric a
//! panel names is one the control plane, the agents or the waypoint export.

use std::{collections::BTreeSet, time::Duration};

use tests::lab::{Lab, http_get, sa};
use weftctl::{
    dashboards::{DASHBOARDS, with_variables},
    lab,
};

/// The metric names a query uses, as exported (histograms by their family name).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("weft_") {
        let name: String = expr[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.insert(family);
    }
    out
}

#[test]
fn every_dashboard_query_has_data_from_the_lab() {
    let lab = Lab::up_with(lab::topology::DEFAULT, &["--observability"], &[], &[]);
    lab.apply("cart-callers", tests::lab::CART_CALLERS);
    // Mesh traffic, HTTP through the waypoint (some of it 503), and a denied connection.
    lab.echo_ok(
        "shop/frontend-1",
        sa(lab.ip("shop/cart-2"), 7000),
        4000,
        &[],
    );
    for (count, path) in [("20", "/"), ("5", "/status/503")] {
        let out = lab.sample(
            "shop/frontend-1",
            &[
                "http",
                "--connect",
                "10.96.0.10:80",
                "--count",
                count,
                "--path",
                path,
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let denied = lab.echo(
        "legacy/billing-1",
        sa(lab.ip("shop/cart-1"), 7000),
        100,
        &[],
    );
    assert!(denied.is_err(), "the policy lets billing in: {denied:?}");

    // Every metric a panel names is exported by something (even when it has no series
    // yet, like NACKs: its HELP line is there).
    let exported = [
        lab.metrics("node-1"),
        lab.pod_metrics("shop/cart-waypoint"),
        http_get(
            &lab::netns_path(&lab::controlplane_netns()),
            sa(
                lab::controlplane_address(&lab.state.topology).unwrap(),
                15014,
            ),
            "/metrics",
        ),
    ]
    .join("\n");
    for d in DASHBOARDS {
        for p in d.panels {
            for name in metric_names(p.expr) {
                let base = name.strip_suffix("_total").unwrap_or(&name);
                assert!(
                    exported.contains(&format!("# TYPE {base} ")),
                    "{}: {:?} uses {name}, which nothing exports",
                    d.uid,
                    p.title
                );
            }
        }
    }

    // And every query returns data.
    let variables = [("namespace", "shop"), ("workload", "cart-2")];
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let missing = loop {
        let mut missing = Vec::new();
        for d in DASHBOARDS {
            for p in d.panels {
                let expr = with_variables(p.expr, &variables);
                let answer = lab.prometheus_query(&expr);
                let results = answer["data"]["result"].as_array().map_or(0, Vec::len);
                if answer["status"] != "success" || results == 0 {
                    missing.push(format!("{} / {}: {expr} -> {answer}", d.uid, p.title));
                }
            }
        }
        if missing.is_empty() || std::time::Instant::now() >= deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(missing.is_empty(), "panels without data: {missing:#?}");
    // The denial shows as such.
    let denied =
        lab.prometheus_query("sum(weft_tcp_authorization_decisions_total{decision=\"deny\"})");
    assert!(
        denied["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v >= 1.0),
        "{denied}"
    );
}
