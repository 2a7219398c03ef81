//! The statistics, the report and the chart: pure functions, tested on made-up figures.

use super::{
    plan::{
        BANDWIDTH, CONNRATE, MEM_CLIENT, PROBE_P99, RATE, RR, RR_SOCKPERF, THROUGHPUT,
        concurrency_scenario,
    },
    *,
};

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(summarize(&[2.0, 9.0, 4.0]), Some((2.0, 4.0, 9.0)));
    assert_eq!(summarize(&[]), None);
}

#[test]
fn ratios_need_both_figures_and_a_nonzero_baseline() {
    assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
    assert_eq!(ratio(None, Some(4.0)), None);
    assert_eq!(ratio(Some(1.0), None), None);
    assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    assert_eq!(format_ratio(0.6251), "0.63×");
    assert_eq!(format_ratio(f64::NAN), "–");
}

#[test]
fn numbers_and_cells() {
    assert_eq!(format_number(1234.4), "1234");
    assert_eq!(format_number(123.4), "123");
    assert_eq!(format_number(12.34), "12.3");
    assert_eq!(format_number(1.234), "1.23");
    assert_eq!(format_number(-3.456), "-3.46");
    assert_eq!(format_cell(&[]), "–");
    assert_eq!(format_cell(&[3.1]), "3.10");
    assert_eq!(format_cell(&[3.0, 2.0, 4.0]), "3.00 (2.00–4.00)");
}

#[test]
fn timestamps_are_utc_rfc3339() {
    assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(utc_timestamp(1_735_689_599), "2024-12-31T23:59:59Z");
}

#[test]
fn plans_fit_their_budgets() {
    let quick = Plan::new(true);
    let full = Plan::new(false);
    assert_eq!((quick.repeats, full.repeats), (1, 3));
    assert!(quick.iperf_secs < full.iperf_secs);
    for plan in [quick, full] {
        assert!(plan.hold_counts.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn held_connections_fit_the_open_files_limit() {
    let plan = Plan::new(false);
    let roomy = 1 << 20;
    assert_eq!(
        plan.hold_counts_for(Topology::SameNode, roomy),
        vec![1_000, 10_000]
    );
    assert_eq!(
        plan.hold_counts_for(Topology::CrossNode, 20_000),
        vec![1_000, 10_000]
    );
    // Same-node, the agent needs two sockets a connection.
    assert_eq!(
        plan.hold_counts_for(Topology::SameNode, 20_000),
        vec![1_000, 9_000]
    );
    assert_eq!(
        plan.hold_counts_for(Topology::SameNode, 2_500),
        vec![0_u32; 0]
    );
    assert_eq!(
        plan.hold_counts_for(Topology::CrossNode, 2_500),
        vec![1_000]
    );
}

#[test]
fn proc_parsing() {
    let stat = "4242 (weft agent) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                150 25 0 0 20 0 8 0 12345 1000000 500 18446744073709551615";
    assert_eq!(cpu_ticks(stat), Some(175));
    assert_eq!(cpu_ticks("garbage"), None);
    let status = "Name:\tweft-agent\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\n";
    assert_eq!(vm_rss_kib(status), Some(12345));
    assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                 0: 00000000:1451 00000000:0000 0A 00000000:00000000\n   \
                 1: 0100007F:1B58 0100007F:C000 01 00000000:00000000\n";
    assert!(table_listens_on(table, 5201));
    assert!(
        !table_listens_on(table, 7000),
        "7000 is established, not listening"
    );
    assert!(!table_listens_on(table, 80));
}

fn sample_store() -> Store {
    let mut store = Store::default();
    for (mode, gbits, p50) in [
        (Mode::Direct, [10.0, 12.0, 11.0], [20.0, 22.0, 21.0]),
        (Mode::Mesh, [6.0, 5.0, 7.0], [40.0, 44.0, 42.0]),
        (Mode::MeshNoaccel, [4.0, 4.0, 4.0], [60.0, 60.0, 60.0]),
    ] {
        for topology in Topology::ALL {
            for (g, p) in gbits.iter().zip(p50) {
                store.push(THROUGHPUT, topology, mode, BANDWIDTH, "Gbit/s", *g);
                store.push(RR, topology, mode, "p50", "µs", p);
            }
        }
    }
    store.push(
        CONNRATE,
        Topology::CrossNode,
        Mode::Direct,
        RATE,
        "conn/s",
        1000.0,
    );
    store.push(
        CONNRATE,
        Topology::CrossNode,
        Mode::Mesh,
        RATE,
        "conn/s",
        300.0,
    );
    for (mode, p50, p99) in [(Mode::Direct, 80.0, 120.0), (Mode::Mesh, 100.0, 200.0)] {
        store.push(RR_SOCKPERF, Topology::CrossNode, mode, "p50", "µs", p50);
        store.push(RR_SOCKPERF, Topology::CrossNode, mode, "p99", "µs", p99);
    }
    for (count, p99) in [(1_000, 100.0), (10_000, 120.0)] {
        let scenario = concurrency_scenario(count);
        store.push(
            &scenario,
            Topology::CrossNode,
            Mode::Mesh,
            PROBE_P99,
            "µs",
            p99,
        );
        store.push(
            &scenario,
            Topology::CrossNode,
            Mode::Mesh,
            MEM_CLIENT,
            "KiB",
            9.0,
        );
    }
    store
}

#[test]
fn store_keeps_series_in_order_with_their_samples() {
    let store = sample_store();
    let first = &store.series[0];
    assert_eq!(
        (first.scenario.as_str(), first.mode, first.samples.len()),
        (THROUGHPUT, Mode::Direct, 3)
    );
    assert_eq!(
        store.median(THROUGHPUT, Topology::CrossNode, Mode::Mesh, BANDWIDTH),
        Some(6.0)
    );
    let results = scenario_results(&store);
    assert_eq!(results.len(), store.series.len());
    assert_eq!(
        (results[0].min, results[0].median, results[0].max),
        (10.0, 11.0, 12.0)
    );
}

#[test]
fn ratios_and_targets_from_medians() {
    let store = sample_store();
    let rs = ratios(&store);
    let find = |topology, metric: &str, of, to| {
        rs.iter()
            .find(|r| r.topology == topology && r.metric == metric && r.of == of && r.to == to)
            .map(|r| r.value)
    };
    let mesh_direct = find(
        Topology::CrossNode,
        "throughput bandwidth",
        Mode::Mesh,
        Mode::Direct,
    );
    assert_eq!(mesh_direct, Some(6.0 / 11.0));
    assert_eq!(
        find(Topology::SameNode, "rr p50", Mode::Mesh, Mode::MeshNoaccel),
        Some(42.0 / 60.0)
    );
    // No direct connection rate same-node: no ratio.
    assert_eq!(
        find(
            Topology::SameNode,
            "connrate new connections",
            Mode::Mesh,
            Mode::Direct
        ),
        None
    );

    let ts = targets(&store);
    let target = |prefix: &str| {
        ts.iter()
            .find(|t| t.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}"))
    };
    let rr = target("same-node rr p50");
    assert_eq!((rr.value, rr.met), (Some(0.7), Some(true)));
    // 6 / 11, just short of 0.55.
    let tp = target("cross-node throughput");
    assert_eq!((tp.value, tp.met), (Some(6.0 / 11.0), Some(false)));
    // What the mesh adds: a difference of medians, in µs.
    let added = target("cross-node rr p50 (sockperf)");
    assert_eq!((added.value, added.met), (Some(20.0), Some(true)));
    let added = target("cross-node rr p99 (sockperf)");
    assert_eq!((added.value, added.met), (Some(80.0), Some(false)));
    assert_eq!(
        target("cross-node connection p50").met,
        None,
        "not measured"
    );
    let conns = target("cross-node new connections");
    assert_eq!((conns.value, conns.met), (Some(0.3), Some(false)));
    let probe = target("cross-node probe p99");
    assert_eq!((probe.value, probe.met), (Some(1.2), Some(true)));
    assert_eq!(target("same-node probe p99").met, None, "not measured");
    let memory = target("agent KiB per idle connection at 10000 (mesh, cross-node, client");
    assert_eq!((memory.value, memory.met), (Some(9.0), Some(true)));
}

/// Checks that every element is closed, in order.
fn balanced(svg: &str) -> bool {
    let mut open = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            return false;
        };
        let tag = &rest[start + 1..start + len];
        rest = &rest[start + len + 1..];
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if tag.starts_with('/') {
            if open.pop() != Some(name) {
                return false;
            }
        } else if !tag.ends_with('/') {
            open.push(name);
        }
    }
    open.is_empty()
}

#[test]
fn chart_has_a_bar_per_ratio_and_is_well_formed() {
    let store = sample_store();
    let bars = headline_bars(&store);
    let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("cross-node throughput, mesh/direct"))
    );
    assert!(
        labels
            .iter()
            .any(|l| l.starts_with("same-node rr p50, mesh/mesh-noaccel"))
    );
    assert!(labels.iter().any(|l| l.starts_with("cross-node probe p99")));
    let svg = chart_svg("Weft <bench>", "a & b", &bars);
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches(r#"class="bar""#).count(), bars.len());
    assert_eq!(
        svg.matches(r#"class="target""#).count(),
        bars.iter().filter(|b| b.target.is_some()).count()
    );
    assert!(svg.contains("Weft &lt;bench&gt;") && svg.contains("a &amp; b"));
    assert!(balanced(&svg), "{svg}");
    assert!(!balanced("<svg><g></svg>"));
    // An empty chart is still a chart.
    let empty = chart_svg("t", "s", &[]);
    assert!(empty.starts_with("<svg") && balanced(&empty));
}

#[test]
fn axis_is_round_and_covers_the_values() {
    assert_eq!(axis(1.05), (1.25, 0.25));
    assert_eq!(axis(3.2), (3.5, 0.5));
    assert_eq!(axis(12.0), (12.0, 2.0));
    assert_eq!(axis(0.0), (1.0, 0.25));
    assert_eq!(axis(f64::NAN), (1.0, 0.25));
}

#[test]
fn markdown_has_a_table_per_group_and_the_targets() {
    let store = sample_store();
    let results = Results {
        date: utc_timestamp(0),
        mode: "full",
        repeats: 3,
        profile: "release",
        host: Host {
            kernel: "6.1".to_owned(),
            cpus: 2,
        },
        git_commit: None,
        open_files_limit: 20_000,
        modes: Mode::ALL.to_vec(),
        incomplete: None,
        scenarios: scenario_results(&store),
        ratios: ratios(&store),
        targets: targets(&store),
        l7: None,
    };
    let md = markdown(&results, &store);
    assert!(md.contains("## throughput, cross-node"));
    assert!(md.contains("## rr, same-node"));
    assert!(md.contains("## concurrency 10000, cross-node"));
    assert!(md.contains(
        "| bandwidth (Gbit/s) | 11.0 (10.0–12.0) | 6.00 (5.00–7.00) | 4.00 | – | 0.55× | \
         1.50× | – |"
    ));
    assert!(md.contains("## Targets"));
    assert!(
        md.contains("| cross-node new connections/s, mesh / direct | 0.30 | ≥ 0.35 | **no** |")
    );
    assert!(!md.contains("Built without optimizations"));
    // The JSON has the fields the docs read.
    let json = serde_json::to_value(&results).expect("serializable");
    for field in [
        "date",
        "mode",
        "repeats",
        "host",
        "scenarios",
        "ratios",
        "targets",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    assert_eq!(json["scenarios"][0]["topology"], "cross-node");
    assert_eq!(json["scenarios"][0]["mode"], "direct");
}
