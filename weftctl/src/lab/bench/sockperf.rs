//! The round trip measured by sockperf (`sockperf ping-pong --tcp`), a second opinion
//! on `weft-sample rr`: the same pods, the same message size, a tool that is not ours.

use std::time::Duration;

use anyhow::Context as _;

use super::{
    plan::{MESSAGE_SIZE, Mode, RR_SOCKPERF, SOCKPERF_PORT, Topology},
    procs::run_within,
    scenarios::{Bench, strings},
};

/// The percentiles sockperf prints, as the benchmark names them.
const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "50.000"),
    ("p90", "90.000"),
    ("p99", "99.000"),
    ("p99.9", "99.900"),
];

/// The round-trip percentiles (µs) of a `sockperf ping-pong --full-rtt` report, in the
/// order of [`PERCENTILES`], and the number of observations.
pub fn parse(report: &str) -> anyhow::Result<(Vec<(&'static str, f64)>, u64)> {
    let observations = report
        .lines()
        .find_map(|l| {
            let rest = l.split("Total ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .context("sockperf printed no observation count")?;
    let mut out = Vec::new();
    for (name, quantile) in PERCENTILES {
        let needle = format!("percentile {quantile} =");
        let value = report
            .lines()
            .find_map(|l| l.split(&needle).nth(1)?.trim().parse::<f64>().ok())
            .with_context(|| format!("sockperf printed no {name} ({needle:?})"))?;
        out.push((name, value));
    }
    Ok((out, observations))
}

impl Bench<'_> {
    /// A sockperf server in the server pod, a ping-pong client in the client pod.
    pub(super) fn sockperf(
        &mut self,
        topology: Topology,
        mode: Mode,
        repeat: u32,
    ) -> anyhow::Result<()> {
        let server = self.pods.server(topology);
        let ip = server.ip.to_string();
        let port = SOCKPERF_PORT.to_string();
        // Killed when dropped: the server would run forever.
        let sockperf_server = self.listening_server(
            server,
            &self.tools.sockperf,
            &["server", "--tcp", "-i", &ip, "-p", &port],
            SOCKPERF_PORT,
            "sockperf",
        )?;
        let before = self.accepted();
        let secs = self.plan.sockperf_secs;
        let report = run_within(
            &mut self.in_pod(
                self.pods.client,
                &self.tools.sockperf,
                &strings(&[
                    "ping-pong",
                    "--tcp",
                    "-i",
                    &ip,
                    "-p",
                    &port,
                    "-m",
                    &MESSAGE_SIZE.to_string(),
                    "-t",
                    &secs.to_string(),
                    "--full-rtt",
                    "--no-rdtsc",
                ]),
            ),
            Duration::from_secs(u64::from(secs) + 30),
            "sockperf ping-pong",
        )?;
        drop(sockperf_server);
        self.check_path(mode, before)?;
        let (percentiles, observations) = parse(&report).with_context(|| {
            let tail: Vec<&str> = report.lines().rev().take(8).collect();
            format!("sockperf's report, last lines: {:?}", tail)
        })?;
        self.record_percentiles(
            RR_SOCKPERF,
            (topology, mode, repeat),
            &percentiles,
            &format!(" ({observations} round trips)"),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    const REPORT: &str = "\
sockperf: == version #3.7-no.git ==
sockperf: [Valid Duration] RunTime=1.556 sec; SentMessages=35617; ReceivedMessages=35617
sockperf: ====> avg-rtt=43.647 (std-dev=382.387)
sockperf: Summary: Round trip is 43.647 usec
sockperf: Total 35617 observations; each percentile contains 356.17 observations
sockperf: ---> <MAX> observation = 12004.193
sockperf: ---> percentile 99.999 = 12004.193
sockperf: ---> percentile 99.990 = 9195.904
sockperf: ---> percentile 99.900 = 7663.143
sockperf: ---> percentile 99.000 =   72.367
sockperf: ---> percentile 90.000 =   19.408
sockperf: ---> percentile 75.000 =   18.998
sockperf: ---> percentile 50.000 =   18.106
sockperf: ---> <MIN> observation =   14.421
";

    #[test]
    fn the_percentiles_and_the_count_of_a_report() {
        let (p, n) = parse(REPORT).unwrap();
        assert_eq!(n, 35_617);
        assert_eq!(
            p,
            vec![
                ("p50", 18.106),
                ("p90", 19.408),
                ("p99", 72.367),
                ("p99.9", 7663.143)
            ]
        );
    }

    #[test]
    fn a_report_without_percentiles_is_an_error() {
        let err = parse("sockperf: Total 10 observations\n").unwrap_err();
        assert!(err.to_string().contains("p50"), "{err}");
        assert!(parse("").is_err());
    }
}
