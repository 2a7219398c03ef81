//! The waypoint's section of `results.md`.

use std::fmt::Write as _;

use super::{Proxy, Results};
use crate::lab::bench::{format_number, format_ratio, ratio, summarize};

/// The waypoint's section of `results.md`.
pub fn markdown(results: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## The waypoint against nginx and HAProxy\n");
    let _ = writeln!(
        s,
        "Same load, same backends (`cart-1`, `cart-2`); the waypoint's path has the client \
         agent and mutual TLS on both legs on top (see `weftctl/src/lab/bench/l7.rs`). \
         Median (min–max) of the repeats.\n"
    );
    let mut scenarios: Vec<&str> = Vec::new();
    for series in &results.series {
        if !scenarios.contains(&series.scenario.as_str()) {
            scenarios.push(&series.scenario);
        }
    }
    for scenario in scenarios {
        let _ = writeln!(s, "### {scenario}\n");
        let _ = writeln!(
            s,
            "| figure | waypoint | nginx | haproxy | waypoint / nginx | waypoint / haproxy |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let mut metrics: Vec<(&str, &str)> = Vec::new();
        for series in results.series.iter().filter(|x| x.scenario == scenario) {
            if !metrics.iter().any(|(m, _)| *m == series.metric) {
                metrics.push((&series.metric, &series.unit));
            }
        }
        for (metric, unit) in metrics {
            let cell = |proxy: Proxy| {
                results
                    .series
                    .iter()
                    .find(|x| x.scenario == scenario && x.proxy == proxy && x.metric == metric)
                    .and_then(|x| summarize(&x.samples))
                    .map_or("–".to_owned(), |(lo, mid, hi)| {
                        if lo == hi {
                            format_number(mid)
                        } else {
                            format!(
                                "{} ({}–{})",
                                format_number(mid),
                                format_number(lo),
                                format_number(hi)
                            )
                        }
                    })
            };
            let ratio = |other: Proxy| {
                ratio(
                    results.median(scenario, Proxy::Waypoint, metric),
                    results.median(scenario, other, metric),
                )
                .map_or("–".to_owned(), format_ratio)
            };
            let _ = writeln!(
                s,
                "| {metric} ({unit}) | {} | {} | {} | {} | {} |",
                cell(Proxy::Waypoint),
                cell(Proxy::Nginx),
                cell(Proxy::Haproxy),
                ratio(Proxy::Nginx),
                ratio(Proxy::Haproxy)
            );
        }
        let _ = writeln!(s);
    }
    for g in &results.goals {
        let _ = writeln!(
            s,
            "- {}: {} {} {} — {}",
            g.name,
            g.value.map_or("–".to_owned(), format_number),
            g.comparison,
            format_number(g.limit),
            match g.met {
                Some(true) => "met",
                Some(false) => "missed",
                None => "not measured",
            }
        );
    }
    s
}
