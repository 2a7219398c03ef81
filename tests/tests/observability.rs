//! `weftctl lab up --observability`: a real Prometheus in the lab scrapes the control
//! plane, every agent and every waypoint, follows waypoints as they come and go, and
//! holds the mesh's metrics.

use std::time::Duration;

use serde_json::Value;
use tests::{
    lab::{Lab, sa},
    weftctl,
    wire::eventually,
};
use weftctl::lab;

/// `(job, health)` of every active target.
fn targets(lab: &Lab) -> Vec<(String, String)> {
    let t = lab.prometheus("/api/v1/targets");
    let mut out: Vec<(String, String)> = t["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                a["health"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn up(job: &str, n: usize) -> Vec<(String, String)> {
    vec![(job.to_owned(), "up".to_owned()); n]
}

fn expect(controlplane: usize, agents: usize, waypoints: usize) -> Vec<(String, String)> {
    let mut v = up("agents", agents);
    v.extend(up("controlplane", controlplane));
    v.extend(up("waypoints", waypoints));
    v
}

/// The value of an instant query's single sample (summed).
fn query(lab: &Lab, promql: &str) -> Option<f64> {
    let q = lab.prometheus_query(promql);
    let result = q["data"]["result"].as_array()?;
    let mut sum = None;
    for r in result {
        let v: f64 = r["value"][1].as_str()?.parse().ok()?;
        sum = Some(sum.unwrap_or(0.0) + v);
    }
    sum
}

#[test]
fn prometheus_scrapes_the_whole_mesh_and_follows_waypoints() {
    let mut lab = Lab::up_with(lab::topology::DEFAULT, &["--observability"], &[], &[]);
    let status = weftctl(&["lab", "status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("prometheus: http://10.250.0.3:9090 running"),
        "{text}"
    );
    eventually(Duration::from_secs(20), "every target up", || {
        targets(&lab) == expect(1, 2, 1)
    });

    // Metrics of each kind are there; traffic shows.
    eventually(Duration::from_secs(10), "the agents' enrollments", || {
        query(&lab, "sum(weft_agent_enrolled_namespaces)") == Some(4.0)
    });
    assert!(query(&lab, "weft_controlplane_config_version").is_some());
    let cart = lab.ip("shop/cart-2");
    lab.echo_ok("shop/frontend-1", sa(cart, 7000), 2000, &[]);
    eventually(
        Duration::from_secs(10),
        "the connection in Prometheus",
        || {
            query(&lab, "sum(weft_agent_outbound_connections_accepted_total)")
                .is_some_and(|n| n >= 1.0)
        },
    );

    // A new waypoint is scraped once it runs, and no longer once deleted.
    let out = weftctl(&[
        "waypoint",
        "apply",
        "-n",
        "shop",
        "--name",
        "cart-v1-waypoint",
        "--for",
        "cart-v1",
    ]);
    assert!(out.status.success(), "{out:?}");
    lab.reload();
    eventually(Duration::from_secs(20), "the new waypoint scraped", || {
        targets(&lab) == expect(1, 2, 2)
    });
    let out = weftctl(&[
        "waypoint",
        "delete",
        "-n",
        "shop",
        "--name",
        "cart-v1-waypoint",
    ]);
    assert!(out.status.success(), "{out:?}");
    eventually(
        Duration::from_secs(20),
        "the deleted waypoint dropped",
        || targets(&lab) == expect(1, 2, 1),
    );
}

#[test]
fn lab_top_shows_live_rates_per_workload() {
    let lab = Lab::up(lab::topology::DEFAULT, &[], &[]);
    // One connection per request: from the mesh to cart-1 (through cart-v1's VIP), and
    // in plaintext from outside the mesh straight to cart-2.
    let cart_v1 = "10.96.0.11:80".to_owned();
    let cart_2 = format!("{}:8080", lab.ip("shop/cart-2"));
    let _mesh = tests::Process::spawn(&mut tests::lab::sample_command(
        "shop/frontend-1",
        &["spread", "--connect", &cart_v1, "--count", "20000"],
    ));
    let _plain = tests::Process::spawn(&mut tests::lab::sample_command(
        "legacy/billing-1",
        &["spread", "--connect", &cart_2, "--count", "20000"],
    ));
    std::thread::sleep(Duration::from_millis(500));
    let out = weftctl(&[
        "lab",
        "top",
        "--interval",
        "1",
        "--count",
        "1",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |w: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["workload"] == w)
            .unwrap_or_else(|| panic!("no {w} in {rows}"))
            .clone()
    };
    let mesh = row("shop/cart-1");
    assert!(
        mesh["connectionsPerSecond"].as_f64().unwrap() > 10.0,
        "{mesh}"
    );
    assert_eq!(mesh["mtlsShare"], 1.0, "{mesh}");
    assert!(mesh["bytesInPerSecond"].as_f64().unwrap() > 0.0, "{mesh}");
    let plain = row("shop/cart-2");
    assert!(
        plain["connectionsPerSecond"].as_f64().unwrap() > 10.0,
        "{plain}"
    );
    assert_eq!(plain["mtlsShare"], 0.0, "{plain}");
    // For a person: a table.
    let out = weftctl(&["lab", "top", "--interval", "1", "--count", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("WORKLOAD"), "{text}");
    assert!(text.contains("shop/cart-1"), "{text}");

    // The access log of each: who came, and how.
    let logs = |pod: &str| {
        let out = weftctl(&["lab", "logs", "--access", pod]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mesh = logs("shop/cart-1");
    assert!(
        mesh.lines()
            .any(|l| l.contains("src_workload=shop/frontend-1")
                && l.contains("security=\"mutual_tls\"")),
        "{mesh}"
    );
    let plain = logs("shop/cart-2");
    assert!(
        plain.lines().any(|l| l.contains("src_workload=legacy/billing-1")
            && l.contains("security=\"none\"")),
        "{plain}"
    );
    assert!(
        plain.lines().all(|l| l.contains("shop/cart-2")),
        "a line about another pod: {plain}"
    );
}
