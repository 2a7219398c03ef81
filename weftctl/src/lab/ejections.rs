//! `weftctl waypoint ejections`: which endpoints a waypoint's outlier detection has
//! ejected now, read from the waypoint's `GET /ejections` on 15020 (inside its pod's
//! network namespace).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};

/// Prints the endpoints waypoint `namespace/name` has ejected, one per line.
pub fn print(waypoint: &str) -> anyhow::Result<()> {
    let state = super::running_lab()?;
    let Some(pod) = state
        .pods
        .iter()
        .find(|p| p.pod.waypoint && p.pod.key() == waypoint)
    else {
        bail!("the lab has no waypoint {waypoint} (see `weftctl waypoint list`)");
    };
    let body = super::get_in_netns(
        super::netns_path(&pod.netns),
        SocketAddr::from((pod.ip, 15020)),
        "/ejections",
    )?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&body).with_context(|| format!("the waypoint's answer {body:?}"))?;
    if list.is_empty() {
        println!("{waypoint}: no endpoint is ejected");
        return Ok(());
    }
    println!(
        "{:<24} {:<16} {:>6} {:>12}",
        "SERVICE", "ENDPOINT", "TIMES", "BACK IN"
    );
    for e in list {
        let ms = e["remaining_ms"].as_u64().unwrap_or(0);
        println!(
            "{:<24} {:<16} {:>6} {:>11.1}s",
            e["service"].as_str().unwrap_or("?"),
            e["address"].as_str().unwrap_or("?"),
            e["times"].as_u64().unwrap_or(0),
            ms as f64 / 1000.0
        );
    }
    Ok(())
}
