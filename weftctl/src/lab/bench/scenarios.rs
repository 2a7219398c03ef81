//! The L4 scenarios, run in one lab and mode: throughput, request/response latency,
//! connection rate and held connections.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    plan::{
        BANDWIDTH, CLIENT_POD, CONNRATE, CONNRATE_CONCURRENCY, CPU_PER_1K, CPU_PER_GB,
        CROSS_NODE_POD, HOLD_TIMEOUT, IPERF_PORT, MEM_CLIENT, MEM_NODE, MEM_SERVER, MESSAGE_SIZE,
        Mode, PERCENTILES, PROBE_P99, Plan, RATE, RR, SAME_NODE_POD, Scenario, THROUGHPUT,
        Topology, concurrency_scenario,
    },
    procs::{
        Running, agent_rss_kib, clock_ticks_per_second, cpu_ticks, in_netns, listening, run_within,
    },
    profile::Recording,
    store::Store,
};
use crate::lab::{AgentState, ECHO_PORT, PodState, Progress, State, in_pod, netns_path};

/// The programs the scenarios run in the pods.
pub(super) struct Tools {
    pub(super) sample: PathBuf,
    pub(super) iperf3: PathBuf,
    pub(super) sockperf: PathBuf,
}

/// The benchmark's pods and their nodes' agents.
pub(super) struct Pods<'s> {
    pub(super) client: &'s PodState,
    pub(super) same_node: &'s PodState,
    pub(super) cross_node: &'s PodState,
    pub(super) client_agent: &'s AgentState,
    pub(super) cross_agent: &'s AgentState,
}

impl<'s> Pods<'s> {
    pub(super) fn find(state: &'s State) -> anyhow::Result<Self> {
        let client = state.pod(CLIENT_POD)?;
        let same_node = state.pod(SAME_NODE_POD)?;
        let cross_node = state.pod(CROSS_NODE_POD)?;
        anyhow::ensure!(
            client.pod.node == same_node.pod.node && client.pod.node != cross_node.pod.node,
            "the benchmark needs {CLIENT_POD} and {SAME_NODE_POD} on one node and \
             {CROSS_NODE_POD} on another"
        );
        let agent = |pod: &PodState| {
            state
                .agents
                .iter()
                .find(|a| a.node == pod.pod.node)
                .with_context(|| format!("no agent on {}", pod.pod.node))
        };
        Ok(Pods {
            client,
            same_node,
            cross_node,
            client_agent: agent(client)?,
            cross_agent: agent(cross_node)?,
        })
    }

    pub(super) fn server(&self, topology: Topology) -> &'s PodState {
        match topology {
            Topology::CrossNode => self.cross_node,
            Topology::SameNode => self.same_node,
        }
    }

    /// The agents whose memory a held connection costs, with what they are to it.
    pub(super) fn agents(&self, topology: Topology) -> Vec<(&'static str, &'s AgentState)> {
        match topology {
            Topology::CrossNode => vec![
                (MEM_CLIENT, self.client_agent),
                (MEM_SERVER, self.cross_agent),
            ],
            Topology::SameNode => vec![(MEM_NODE, self.client_agent)],
        }
    }
}

pub(super) struct Bench<'a> {
    pub(super) plan: &'a Plan,
    pub(super) tools: &'a Tools,
    pub(super) progress: &'a Progress,
    pub(super) state: &'a State,
    pub(super) pods: Pods<'a>,
    /// Idle connections to hold, smallest first.
    pub(super) hold_counts: Vec<u32>,
    pub(super) store: &'a mut Store,
    /// The L4 scenarios to run.
    pub(super) scenarios: &'a [Scenario],
    /// Where the agents' profiles go, when they are recorded.
    pub(super) profile: Option<&'a Path>,
}

impl Bench<'_> {
    /// Takes the benchmark's pods out of the mesh.
    pub(super) fn unenroll(&self) -> anyhow::Result<()> {
        for pod in [self.pods.client, self.pods.same_node, self.pods.cross_node] {
            let agent = self
                .state
                .agents
                .iter()
                .find(|a| a.node == pod.pod.node)
                .with_context(|| format!("no agent on {}", pod.pod.node))?;
            let r =
                api::admin::Client::new(&agent.admin_socket).unenroll(&netns_path(&pod.netns))?;
            if r.status != 200 {
                bail!(
                    "unenrolling {} failed: {}",
                    pod.pod.key(),
                    r.error_message()
                );
            }
        }
        self.progress
            .say("unenrolled the benchmark's pods: their traffic goes direct");
        Ok(())
    }

    pub(super) fn record(
        &mut self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        metric: &str,
        unit: &str,
        value: f64,
    ) {
        self.store
            .push(scenario, topology, mode, metric, unit, value);
    }

    pub(super) fn say(
        &self,
        scenario: &str,
        topology: Topology,
        mode: Mode,
        repeat: u32,
        what: impl std::fmt::Display,
    ) {
        self.progress.say(format_args!(
            "{scenario} {topology} {mode} {repeat}/{}: {what}",
            self.plan.repeats
        ));
    }

    pub(super) fn scenarios(&mut self, topology: Topology, mode: Mode) -> anyhow::Result<()> {
        for scenario in Scenario::ALL {
            // The tunnel mode is there for the same-node fast path's own figures.
            let wanted = self.scenarios.contains(&scenario)
                && !(mode == Mode::MeshTunnel && scenario == Scenario::Concurrency);
            if !wanted {
                continue;
            }
            let recording = match self.profile {
                Some(dir) if mode.in_mesh() => Some(Recording::start(
                    dir,
                    &format!("{}-{topology}-{mode}", scenario.name()),
                    &self.state.agents,
                )?),
                _ => None,
            };
            for repeat in 1..=self.plan.repeats {
                match scenario {
                    Scenario::Throughput => self.throughput(topology, mode, repeat)?,
                    Scenario::Rr => {
                        self.rr(topology, mode, repeat)?;
                        self.sockperf(topology, mode, repeat)?;
                    }
                    Scenario::Connrate => self.connrate(topology, mode, repeat)?,
                    Scenario::Concurrency => {
                        for count in self.hold_counts.clone() {
                            self.concurrency(topology, mode, count, repeat)?;
                        }
                    }
                }
            }
            if let Some(recording) = recording {
                let report = recording.finish()?;
                self.progress
                    .say(format_args!("profile: {}", report.display()));
            }
        }
        Ok(())
    }

    pub(super) fn in_pod(&self, pod: &PodState, program: &Path, args: &[String]) -> Command {
        in_pod(&pod.cgroup, &netns_path(&pod.netns), program, args)
    }

    pub(super) fn sample(&self, pod: &PodState, args: &[String]) -> Command {
        self.in_pod(pod, &self.tools.sample, args)
    }

    /// The agents' CPU time so far, in seconds.
    pub(super) fn agents_cpu(&self) -> anyhow::Result<f64> {
        let mut ticks = 0;
        for a in &self.state.agents {
            let path = format!("/proc/{}/stat", a.pid);
            let stat = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {path} (is the agent of {} up?)", a.node))?;
            ticks += cpu_ticks(&stat).with_context(|| format!("parsing {path}"))?;
        }
        Ok(ticks as f64 / clock_ticks_per_second()?)
    }

    /// Connections the agents accepted so far, when they say.
    pub(super) fn accepted(&self) -> Option<u64> {
        let stats = crate::lab::agent_stats(self.state);
        (stats.len() == self.state.agents.len())
            .then(|| {
                stats
                    .values()
                    .map(|s| s["outbound"]["accepted"].as_u64())
                    .sum()
            })
            .flatten()
    }

    /// Checks that traffic went through the agents exactly when it should have.
    pub(super) fn check_path(&self, mode: Mode, before: Option<u64>) -> anyhow::Result<()> {
        let (Some(before), Some(after)) = (before, self.accepted()) else {
            self.progress
                .say("warning: the agents' stats are unavailable; the path is not checked");
            return Ok(());
        };
        if mode.in_mesh() && after == before {
            bail!("{mode}: the agents accepted no connection: the traffic is not in the mesh");
        }
        if !mode.in_mesh() && after != before {
            bail!(
                "direct: the agents accepted {} connections: the pods are still in the mesh",
                after - before
            );
        }
        Ok(())
    }

    pub(super) fn throughput(
        &mut self,
        topology: Topology,
        mode: Mode,
        repeat: u32,
    ) -> anyhow::Result<()> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        let (gbits, bytes, cpu) = loop {
            match self.iperf(topology) {
                Ok(v) => break v,
                Err(e) if attempt < ATTEMPTS => {
                    self.say(
                        THROUGHPUT,
                        topology,
                        mode,
                        repeat,
                        format_args!("retrying: {e:#}"),
                    );
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e.context(format!("throughput {topology} {mode}"))),
            }
        };
        self.record(THROUGHPUT, topology, mode, BANDWIDTH, "Gbit/s", gbits);
        let mut what = format!("{gbits:.2} Gbit/s");
        if mode.in_mesh() && bytes > 0.0 {
            let per_gb = cpu / (bytes / 1e9);
            self.record(THROUGHPUT, topology, mode, CPU_PER_GB, "s/GB", per_gb);
            let _ = write!(what, ", agents {per_gb:.2} CPU s/GB");
        }
        self.say(THROUGHPUT, topology, mode, repeat, what);
        Ok(())
    }

    /// `program` started in the `server` pod, once it listens on `port`; killed when
    /// the returned process is dropped.
    pub(super) fn listening_server(
        &self,
        server: &PodState,
        program: &Path,
        args: &[&str],
        port: u16,
        what: &str,
    ) -> anyhow::Result<Running> {
        let mut cmd = self.in_pod(server, program, &strings(args));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let running = Running::spawn(&mut cmd, &format!("the {what} server"))?;
        let pid = running.child.id();
        let netns = netns_path(&server.netns);
        crate::lab::wait_for(
            &format!("{what} to listen in {}", server.pod.key()),
            Duration::from_secs(10),
            || in_netns(pid, &netns) && listening(pid, port),
        )?;
        Ok(running)
    }

    /// One iperf3 run: Gbit/s received, bytes received, and the agents' CPU seconds.
    pub(super) fn iperf(&self, topology: Topology) -> anyhow::Result<(f64, f64, f64)> {
        let server = self.pods.server(topology);
        let mut iperf_server = self.listening_server(
            server,
            &self.tools.iperf3,
            &["-s", "-1", "-p", &IPERF_PORT.to_string()],
            IPERF_PORT,
            "iperf3",
        )?;
        let secs = self.plan.iperf_secs;
        let cpu_before = self.agents_cpu()?;
        let out = run_within(
            &mut self.in_pod(
                self.pods.client,
                &self.tools.iperf3,
                &strings(&[
                    "-c",
                    &server.ip.to_string(),
                    "-p",
                    &IPERF_PORT.to_string(),
                    "-t",
                    &secs.to_string(),
                    "-J",
                ]),
            ),
            Duration::from_secs(u64::from(secs) + 30),
            "the iperf3 client",
        )?;
        let cpu = self.agents_cpu()? - cpu_before;
        // The server serves one client (`-1`) and exits; it is killed if it does not.
        let _ = iperf_server.wait_within(Duration::from_secs(5));
        let report: Value = serde_json::from_str(&out).context("parsing iperf3's report")?;
        let received = &report["end"]["sum_received"];
        let bits = received["bits_per_second"]
            .as_f64()
            .context("iperf3's report has no end.sum_received.bits_per_second")?;
        let bytes = received["bytes"].as_f64().unwrap_or_default();
        Ok((bits / 1e9, bytes, cpu))
    }

    pub(super) fn rr(&mut self, topology: Topology, mode: Mode, repeat: u32) -> anyhow::Result<()> {
        let before = self.accepted();
        let v = self.run_rr(topology, self.plan.rr_count)?;
        self.check_path(mode, before)?;
        let percentiles = PERCENTILES
            .into_iter()
            .map(|(metric, field)| Ok((metric, field_f64(&v, field)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.record_percentiles(RR, (topology, mode, repeat), &percentiles, "");
        Ok(())
    }

    /// Records round-trip percentiles (µs) of `scenario` and says them, followed by
    /// `more`.
    pub(super) fn record_percentiles(
        &mut self,
        scenario: &str,
        (topology, mode, repeat): (Topology, Mode, u32),
        percentiles: &[(&str, f64)],
        more: &str,
    ) {
        let mut what = Vec::new();
        for &(metric, value) in percentiles {
            self.record(scenario, topology, mode, metric, "µs", value);
            what.push(format!("{metric} {value:.0}"));
        }
        self.say(
            scenario,
            topology,
            mode,
            repeat,
            format_args!("{} µs{more}", what.join(", ")),
        );
    }

    pub(super) fn run_rr(&self, topology: Topology, count: u32) -> anyhow::Result<Value> {
        let server = self.pods.server(topology);
        let out = run_within(
            &mut self.sample(
                self.pods.client,
                &strings(&[
                    "rr",
                    "--connect",
                    &format!("{}:{ECHO_PORT}", server.ip),
                    "--count",
                    &count.to_string(),
                    "--size",
                    &MESSAGE_SIZE.to_string(),
                ]),
            ),
            Duration::from_secs(120),
            "weft-sample rr",
        )?;
        serde_json::from_str(&out).with_context(|| format!("parsing rr's answer {out:?}"))
    }

    pub(super) fn connrate(
        &mut self,
        topology: Topology,
        mode: Mode,
        repeat: u32,
    ) -> anyhow::Result<()> {
        let server = self.pods.server(topology);
        let secs = self.plan.connrate_secs;
        let cpu_before = self.agents_cpu()?;
        let out = run_within(
            &mut self.sample(
                self.pods.client,
                &strings(&[
                    "connrate",
                    "--connect",
                    &format!("{}:{ECHO_PORT}", server.ip),
                    "--duration-secs",
                    &secs.to_string(),
                    "--max-count",
                    &self.plan.connrate_max.to_string(),
                    "--concurrency",
                    &CONNRATE_CONCURRENCY.to_string(),
                    "--size",
                    &MESSAGE_SIZE.to_string(),
                ]),
            ),
            Duration::from_secs(u64::from(secs) + 60),
            "weft-sample connrate",
        )?;
        let cpu = self.agents_cpu()? - cpu_before;
        let v: Value =
            serde_json::from_str(&out).with_context(|| format!("parsing connrate's {out:?}"))?;
        let rate = field_f64(&v, "per_sec")?;
        let count = field_f64(&v, "count")?;
        self.record(CONNRATE, topology, mode, RATE, "conn/s", rate);
        for (metric, field) in PERCENTILES {
            self.record(
                CONNRATE,
                topology,
                mode,
                metric,
                "µs",
                field_f64(&v, field)?,
            );
        }
        let mut what = format!(
            "{rate:.0} conn/s, p99 {:.0} µs, {} errors",
            field_f64(&v, "p99_us")?,
            field_f64(&v, "errors")?
        );
        if mode.in_mesh() && count > 0.0 {
            let per_1k = cpu / (count / 1000.0);
            self.record(CONNRATE, topology, mode, CPU_PER_1K, "CPU s", per_1k);
            let _ = write!(what, ", agents {per_1k:.3} CPU s per 1,000");
        }
        self.say(CONNRATE, topology, mode, repeat, what);
        Ok(())
    }

    /// Holds `count` idle connections from the client to the server, measures what
    /// they cost the agents and the latency of a probe meanwhile, then lets them go.
    pub(super) fn concurrency(
        &mut self,
        topology: Topology,
        mode: Mode,
        count: u32,
        repeat: u32,
    ) -> anyhow::Result<()> {
        let scenario = concurrency_scenario(count);
        let server = self.pods.server(topology);
        let agents = self.pods.agents(topology);
        let rss_before = agents
            .iter()
            .map(|(_, a)| agent_rss_kib(a))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        let mut cmd = self.sample(
            self.pods.client,
            &strings(&[
                "hold",
                "--connect",
                &format!("{}:{ECHO_PORT}", server.ip),
                "--count",
                &count.to_string(),
                "--timeout-secs",
                &HOLD_TIMEOUT.as_secs().to_string(),
            ]),
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut hold = Running::spawn(&mut cmd, "weft-sample hold")?;
        let stderr = hold.collect_stderr();
        let stdout = hold.child.stdout.take().context("hold's stdout")?;
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let opened = match line_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if !line.trim().is_empty() => line,
            _ => {
                hold.kill();
                let why = stderr.join().unwrap_or_default();
                bail!(
                    "holding {count} connections ({topology} {mode}) failed: {}",
                    why.trim()
                );
            }
        };
        let opened: Value =
            serde_json::from_str(&opened).with_context(|| format!("parsing hold's {opened:?}"))?;
        // Let the agents settle before reading their memory.
        std::thread::sleep(Duration::from_secs(1));
        let rss_after = agents
            .iter()
            .map(|(_, a)| agent_rss_kib(a))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        let probe = self.run_rr(topology, self.plan.probe_count)?;
        // The end of its standard input lets the holder go.
        drop(hold.child.stdin.take());
        let status = hold.wait_within(Duration::from_secs(30))?;
        if !status.success() {
            bail!(
                "weft-sample hold failed ({status}): {}",
                stderr.join().unwrap_or_default().trim()
            );
        }
        let p99 = field_f64(&probe, "p99_us")?;
        self.record(&scenario, topology, mode, PROBE_P99, "µs", p99);
        let mut what = format!(
            "{} open in {:.1} s, probe p99 {p99:.0} µs",
            count,
            opened["open_secs"].as_f64().unwrap_or_default()
        );
        // Memory freed when connections close stays with the agent's allocator and is
        // reused by the next run: only the first repeat sees a cold agent.
        if mode.in_mesh() && repeat == 1 {
            for (((metric, _), before), after) in agents.iter().zip(&rss_before).zip(&rss_after) {
                let per_conn = (*after as f64 - *before as f64) / f64::from(count);
                self.record(&scenario, topology, mode, metric, "KiB", per_conn);
                let _ = write!(what, ", {metric}: {per_conn:.1} KiB");
            }
        }
        self.say(&scenario, topology, mode, repeat, what);
        Ok(())
    }
}

pub(super) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

pub(super) fn field_f64(v: &Value, field: &str) -> anyhow::Result<f64> {
    v[field]
        .as_f64()
        .with_context(|| format!("no number {field:?} in {v}"))
}
