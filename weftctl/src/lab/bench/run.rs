//! Running a benchmark: the labs it brings up (and always takes down), mode by mode,
//! and writing the results.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use super::{
    chart::{chart_svg, headline_bars},
    l7,
    plan::{
        MESH_ENV, Mode, NOACCEL_ENV, OPEN_FILES, Options, Plan, Scenario, Suite, TUNNEL_ENV,
        Topology,
    },
    procs::raise_open_files_limit,
    report::{Host, Results, markdown, ratios, scenario_results, targets},
    scenarios::{Bench, Pods, Tools},
    store::{Store, format_number, utc_timestamp},
};
use crate::lab::{Progress, State};

/// Runs the benchmark and writes its results to `options.out`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    crate::lab::preflight()?;
    if crate::lab::leftovers()? {
        bail!(
            "a lab is up (or left over): the benchmark brings up its own and takes it down \
             after; run `weftctl lab down` first"
        );
    }
    let tools = Tools {
        sample: crate::lab::sibling("weft-sample")?,
        iperf3: ["/usr/bin/iperf3", "/usr/local/bin/iperf3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("iperf3 is missing (install it: `cargo xtask setup` does)")?,
        sockperf: Some(PathBuf::from("/usr/bin/sockperf"))
            .filter(|p| p.is_file())
            .context("sockperf is missing (install it: `cargo xtask setup` does)")?,
    };
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let open_files = raise_open_files_limit(OPEN_FILES)?;
    let plan = Plan::new(options.quick);
    let progress = Progress {
        start: Instant::now(),
    };
    let started = SystemTime::now();
    progress.say(format_args!(
        "benchmark ({}): modes {}, {} repeat(s), up to {open_files} open files per \
         process; results in {}",
        if options.quick { "quick" } else { "full" },
        options
            .modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        plan.repeats,
        options.out.display()
    ));
    for topology in Topology::ALL {
        let counts = plan.hold_counts_for(topology, open_files);
        if counts != plan.hold_counts {
            progress.say(format_args!(
                "{topology}: holding {counts:?} connections rather than {:?}: an agent may \
                 open {open_files} files here (the hard limit) and needs {} per connection",
                plan.hold_counts,
                if topology == Topology::SameNode {
                    "two"
                } else {
                    "one"
                }
            ));
        }
    }
    let mut store = Store::default();
    let profile_dir = options.out.join("profile");
    if options.profile {
        super::profile::check()?;
        std::fs::create_dir_all(&profile_dir)
            .with_context(|| format!("creating {}", profile_dir.display()))?;
    }
    let run = Run {
        plan: &plan,
        tools: &tools,
        progress: &progress,
        open_files,
        scenarios: &options.scenarios,
        profile: options.profile.then_some(profile_dir.as_path()),
    };
    let mut outcome = if options.suites.contains(&Suite::L4) {
        run.labs(&options.modes, &mut store)
    } else {
        Ok(())
    };
    let mut l7_results = None;
    if outcome.is_ok() && options.suites.contains(&Suite::L7) {
        match l7::run(&l7::Plan::new(options.quick), &tools.sample, &progress) {
            Ok(r) => l7_results = Some(r),
            Err(e) => outcome = Err(e),
        }
    }
    let results = Results {
        date: utc_timestamp(
            started
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        ),
        mode: if options.quick { "quick" } else { "full" },
        repeats: plan.repeats,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        host: Host {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        },
        git_commit: git_commit(),
        open_files_limit: open_files,
        modes: options.modes.clone(),
        incomplete: outcome.as_ref().err().map(|e| format!("{e:#}")),
        scenarios: scenario_results(&store),
        ratios: ratios(&store),
        targets: targets(&store),
        l7: l7_results,
    };
    write_results(&options.out, &results, &store)?;
    progress.say(format_args!(
        "wrote results.json, results.md and chart.svg to {}",
        options.out.display()
    ));
    for t in results
        .targets
        .iter()
        .chain(results.l7.iter().flat_map(|l| &l.goals))
    {
        println!(
            "  {:<13} {} = {} ({} {})",
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            },
            t.name,
            t.value.map_or("–".to_owned(), format_number),
            t.comparison,
            format_number(t.limit)
        );
    }
    outcome
}

pub(super) fn write_results(out: &Path, results: &Results, store: &Store) -> anyhow::Result<()> {
    let write = |name: &str, contents: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    let mut json = serde_json::to_vec_pretty(results)?;
    json.push(b'\n');
    write("results.json", &json)?;
    write("results.md", markdown(results, store).as_bytes())?;
    let subtitle = format!(
        "{} run, {} · ratio of medians over {} repeat(s) · {} build · kernel {}, {} CPUs",
        results.mode,
        results.date,
        results.repeats,
        results.profile,
        results.host.kernel,
        results.host.cpus
    );
    write(
        "chart.svg",
        chart_svg(
            "Weft: the mesh against its baselines",
            &subtitle,
            &headline_bars(store),
        )
        .as_bytes(),
    )
}

pub(super) fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// What every lab of a run shares.
pub(super) struct Run<'a> {
    pub(super) plan: &'a Plan,
    pub(super) tools: &'a Tools,
    pub(super) progress: &'a Progress,
    /// The open-files limit the lab's processes inherit.
    pub(super) open_files: u64,
    pub(super) scenarios: &'a [Scenario],
    pub(super) profile: Option<&'a Path>,
}

impl Run<'_> {
    /// Mesh and direct share a lab (direct unenrolls the pods); mesh-noaccel has its
    /// own. Each topology gets a fresh lab, so that the agents' memory is measured cold
    /// in both.
    pub(super) fn labs(&self, modes: &[Mode], store: &mut Store) -> anyhow::Result<()> {
        let first: Vec<Mode> = [Mode::Mesh, Mode::Direct]
            .into_iter()
            .filter(|m| modes.contains(m))
            .collect();
        for topology in Topology::ALL {
            if !first.is_empty() {
                self.lab(&[MESH_ENV.to_owned()], &first, topology, store)?;
            }
        }
        if modes.contains(&Mode::MeshNoaccel) {
            for topology in Topology::ALL {
                self.lab(
                    &[NOACCEL_ENV.to_owned()],
                    &[Mode::MeshNoaccel],
                    topology,
                    store,
                )?;
            }
        }
        if modes.contains(&Mode::MeshTunnel) {
            self.lab(
                &[NOACCEL_ENV.to_owned(), TUNNEL_ENV.to_owned()],
                &[Mode::MeshTunnel],
                Topology::SameNode,
                store,
            )?;
        }
        Ok(())
    }

    pub(super) fn lab(
        &self,
        agent_env: &[String],
        modes: &[Mode],
        topology: Topology,
        store: &mut Store,
    ) -> anyhow::Result<()> {
        self.progress.say(format_args!(
            "bringing the lab up for {topology} {}{}",
            modes
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(" and "),
            if agent_env.is_empty() {
                String::new()
            } else {
                format!(" (agents with {})", agent_env.join(" "))
            }
        ));
        let lab = LabGuard::up(agent_env, self.progress)?;
        let outcome = self.modes(&lab.state, modes, topology, store);
        if outcome.is_err() && !lab.ours() {
            return outcome.context("the benchmark's lab was taken down or replaced meanwhile");
        }
        outcome?;
        lab.down()
    }

    pub(super) fn modes(
        &self,
        state: &State,
        modes: &[Mode],
        topology: Topology,
        store: &mut Store,
    ) -> anyhow::Result<()> {
        tune_namespaces(state)?;
        let mut bench = Bench {
            plan: self.plan,
            tools: self.tools,
            progress: self.progress,
            state,
            pods: Pods::find(state)?,
            hold_counts: self.plan.hold_counts_for(topology, self.open_files),
            store,
            scenarios: self.scenarios,
            profile: self.profile,
        };
        for &mode in modes {
            if mode == Mode::Direct {
                bench.unenroll()?;
            }
            bench.scenarios(topology, mode)?;
        }
        Ok(())
    }
}

/// A lab that is taken down when this is dropped, unless [`LabGuard::down`] did it —
/// as long as it is still the lab this brought up: the lab is one per host, and another
/// command (a test) may have replaced it meanwhile.
pub(super) struct LabGuard<'a> {
    pub(super) progress: &'a Progress,
    pub(super) state: State,
    pub(super) up: bool,
}

impl<'a> LabGuard<'a> {
    pub(super) fn up(agent_env: &[String], progress: &'a Progress) -> anyhow::Result<Self> {
        if crate::lab::leftovers()? {
            bail!("another lab is up: the benchmark does not take down what it did not bring up");
        }
        let env = crate::lab::Env {
            agent: agent_env,
            ..crate::lab::Env::default()
        };
        crate::lab::up_with(None, env, progress)?;
        let state = State::load()?.context("the lab is up but wrote no state")?;
        Ok(LabGuard {
            progress,
            state,
            up: true,
        })
    }

    /// Is the lab that is up (if any) still this one? Its control plane runs until the
    /// lab is taken down, whoever does it.
    pub(super) fn ours(&self) -> bool {
        crate::lab::alive(self.state.controlplane_pid)
            && State::load()
                .ok()
                .flatten()
                .is_some_and(|s| s.controlplane_pid == self.state.controlplane_pid)
    }

    pub(super) fn down(mut self) -> anyhow::Result<()> {
        self.up = false;
        if !self.ours() {
            bail!("the benchmark's lab was taken down or replaced by another command");
        }
        crate::lab::down_with(self.progress)
    }
}

impl Drop for LabGuard<'_> {
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        if !self.ours() {
            self.progress
                .say("the benchmark's lab was taken down or replaced by another command");
            return;
        }
        self.progress.say("taking the lab down after the failure");
        if let Err(e) = crate::lab::down_with(self.progress) {
            self.progress.say(format_args!(
                "taking the lab down failed: {e:#}; run `weftctl lab down`"
            ));
        }
    }
}

/// Widens the ephemeral port range and lets connections reuse ports in TIME_WAIT in
/// every pod and node, so that the connection-rate runs do not run out of ports.
pub(super) fn tune_namespaces(state: &State) -> anyhow::Result<()> {
    let names = state.pods.iter().map(|p| p.netns.clone()).chain(
        state
            .topology
            .nodes
            .iter()
            .map(|n| crate::lab::node_netns(&n.name)),
    );
    for netns in names {
        crate::lab::run(Command::new("ip").args([
            "netns",
            "exec",
            &netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ]))?;
    }
    Ok(())
}
