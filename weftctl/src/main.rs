//! `weftctl`: Weft's command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weftctl", about = "Weft's command line", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check configuration documents (files, or folders of .yaml files) the way the
    /// control plane and its admission webhook do; reports every problem with its
    /// document and field path, and exits non-zero if there is one.
    Validate {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Install Weft on the cluster of the current kubeconfig context: the CRDs, the
    /// control plane, the node agent, the webhook and the waypoints' GatewayClass.
    Install {
        /// Print the manifests instead of applying them.
        #[arg(long)]
        dry_run: bool,
        /// A values file (YAML) changing the defaults.
        #[arg(short = 'f', long = "values")]
        values: Option<PathBuf>,
        /// The kubeconfig context (default: the current one).
        #[arg(long)]
        context: Option<String>,
    },
    /// Take Weft off the cluster: the agents, then on every node its capture and its
    /// CNI plugin, then the control plane and the rest; Weft's CRDs stay unless
    /// `--crds`.
    Uninstall {
        /// Remove Weft's CRDs too, and every document of their kinds.
        #[arg(long)]
        crds: bool,
        /// The values file it was installed with (its namespace, image, CNI folders).
        #[arg(short = 'f', long = "values")]
        values: Option<PathBuf>,
        #[arg(long)]
        context: Option<String>,
    },
    /// Check that this node can run the Weft agent: kernel, cgroup v2, bpffs, BTF,
    /// the agent's eBPF programs passing the verifier (root), the CNI folders.
    Check {
        /// The post-flight checks of the installed mesh instead (control plane ready,
        /// every node's agent connected and up to date, waypoints, certificates).
        #[arg(long)]
        cluster: bool,
        /// With `--cluster`: the namespace Weft is installed in.
        #[arg(long, default_value = "weft-system")]
        weft_namespace: String,
        #[arg(long)]
        context: Option<String>,
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        #[arg(long, default_value = "/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// `json` or `yaml` for scripts (default: a table).
        #[arg(short = 'o', long, value_enum)]
        output: Option<weftctl::output::Format>,
    },
    /// The mesh at a glance: its version, the control plane, the agent of each node,
    /// the namespaces in the mesh and the waypoints.
    Status {
        #[arg(short = 'o', long, value_enum)]
        output: Option<weftctl::output::Format>,
        #[arg(long, default_value = "weft-system")]
        weft_namespace: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// What the agent of a pod's node holds for it: its place in the mesh, identity,
    /// certificate, the policies that apply and the Services it is behind.
    ProxyConfig {
        /// `namespace/name`.
        pod: String,
        /// `json` or `yaml` for scripts.
        #[arg(short = 'o', long, value_enum)]
        output: Option<weftctl::output::Format>,
        /// The namespace Weft is installed in.
        #[arg(long, default_value = "weft-system")]
        weft_namespace: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// Live rates per workload (connections, mutual TLS, bytes, denials, requests,
    /// 5xx) from every agent's and waypoint's metrics, like `kubectl top`.
    Top {
        /// Seconds between readings.
        #[arg(long, default_value = "5")]
        interval: u64,
        /// How many times to print (0: until interrupted).
        #[arg(long, default_value = "0")]
        count: u32,
        #[arg(short = 'o', long, value_enum)]
        output: Option<weftctl::output::Format>,
        /// The namespace Weft is installed in.
        #[arg(long, default_value = "weft-system")]
        weft_namespace: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// The access log lines about a pod, from its node's agent and the waypoints.
    Logs {
        /// `namespace/name`.
        pod: String,
        /// The access log (the only log this command reads).
        #[arg(long, required = true)]
        access: bool,
        /// The namespace Weft is installed in.
        #[arg(long, default_value = "weft-system")]
        weft_namespace: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// Put a namespace's pods in the mesh (its `weft.dev/mesh` label), or take them
    /// out with `--off`.
    Enroll {
        namespace: String,
        #[arg(long)]
        off: bool,
        #[arg(long)]
        context: Option<String>,
    },
    /// A Weft cluster on this machine: nodes and pods as network namespaces (root).
    #[command(subcommand)]
    Lab(Lab),
    /// Waypoints (per-service L7 proxies) of the lab: add one or change what it
    /// serves, list them, see what they ejected, delete one.
    #[command(subcommand)]
    Waypoint(Waypoint),
}

#[derive(Subcommand)]
enum Waypoint {
    /// Create a waypoint (its Gateway, pod and Service) or, when it exists, bind it to
    /// the Services given instead of those it had.
    Apply {
        #[arg(short = 'n', long)]
        namespace: String,
        #[arg(long)]
        name: String,
        /// Services of the namespace whose traffic goes through it (comma-separated).
        #[arg(long = "for", value_delimiter = ',')]
        services: Vec<String>,
        /// The node its pod runs on (default: the first).
        #[arg(long)]
        node: Option<String>,
    },
    /// List the waypoints, where they run and what they serve.
    List,
    /// The endpoints a waypoint's outlier detection has ejected now.
    Ejections {
        /// `namespace/name` of the waypoint.
        waypoint: String,
    },
    /// Delete a waypoint: its Services go straight to their endpoints again.
    Delete {
        #[arg(short = 'n', long)]
        namespace: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum Lab {
    /// Build the lab and start the mesh in it (removes an earlier lab first).
    Up {
        /// A topology file (YAML); without it, the built-in default.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// `WEFT_…=value` for every agent (repeatable), e.g.
        /// `--agent-env WEFT_DRAIN_TIMEOUT=5s`.
        #[arg(long = "agent-env")]
        agent_env: Vec<String>,
        /// `WEFT_…=value` for the control plane (repeatable), e.g.
        /// `--controlplane-env WEFT_CERT_LIFETIME=30s`.
        #[arg(long = "controlplane-env")]
        controlplane_env: Vec<String>,
        /// `WEFT_…=value` for every waypoint (repeatable), e.g.
        /// `--waypoint-env WEFT_OTLP_ENDPOINT=http://10.244.1.2:4317`.
        #[arg(long = "waypoint-env")]
        waypoint_env: Vec<String>,
        /// Also run Prometheus (Debian's), scraping the control plane, the agents and
        /// the waypoints; `lab status` says where.
        #[arg(long)]
        observability: bool,
    },
    /// Show nodes, agents, pods and services.
    Status,
    /// Put configuration documents (routes, policies …) into the lab's control plane,
    /// after checking them with what it has; in force within a second.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Put a lab namespace's pods in the mesh (its `weft.dev/mesh` label), or take them
    /// out with `--off`; the agents enroll or unenroll its running pods.
    Enroll {
        namespace: String,
        #[arg(long)]
        off: bool,
    },
    /// What the agent of a lab pod's node holds for it (`weftctl proxy-config`).
    ProxyConfig {
        /// `namespace/name`, or the name alone when it is unique.
        pod: String,
        #[arg(short = 'o', long, value_enum)]
        output: Option<weftctl::output::Format>,
    },
    /// Live rates per workload (connections, mutual TLS, bytes, denials, requests,
    /// 5xx), from the agents' and waypoints' metrics, like `kubectl top`.
    Top {
        /// Seconds between readings.
        #[arg(long, default_value = "2")]
        interval: u64,
        /// How many times to print (0: until interrupted).
        #[arg(long, default_value = "0")]
        count: u32,
        #[arg(short = 'o', long, value_enum)]
        output: Option<weftctl::output::Format>,
    },
    /// The access log lines about a pod: the connections its node's agent carried to or
    /// from it and the requests waypoints forwarded for it or to it.
    Logs {
        /// `namespace/name`, or the name alone when it is unique.
        pod: String,
        /// The access log (the only log this command reads).
        #[arg(long, required = true)]
        access: bool,
    },
    /// The control plane's service graph: relayed to the host's loopback for a browser,
    /// or loaded by headless Chromium in the lab (`--screenshot`).
    Graph {
        /// Where the relay listens (a loopback address).
        #[arg(long, default_value = "127.0.0.1:15014")]
        listen: std::net::SocketAddr,
        /// Instead of relaying: write a PNG of the page here.
        #[arg(long)]
        screenshot: Option<PathBuf>,
        /// With --screenshot: also print the page's DOM as its scripts left it.
        #[arg(long, requires = "screenshot")]
        dom: bool,
        /// Keep to this namespace and its neighbours.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The rate window (`30s`, `1m` …).
        #[arg(long)]
        window: Option<String>,
    },
    /// Run a command in a pod: `weftctl lab exec shop/cart-1 -- weft-sample echo …`.
    Exec {
        /// `namespace/name`, or the name alone when it is unique.
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Upgrade a node's agent without dropping a connection: a new agent process
    /// takes over the listening sockets of the running one (over a Unix socket, with
    /// SCM_RIGHTS), then the old one drains its open connections and exits.
    UpgradeAgent {
        node: String,
        /// The new agent binary; by default the one beside weftctl.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Kill a node's agent (SIGKILL) and start it again, as the kubelet restarts a
    /// crashed container. Pods' new connections are refused meanwhile, never sent
    /// around the mesh.
    KillAgent { node: String },
    /// Stop the control plane (the mesh runs on without it: what agents and
    /// waypoints have keeps serving).
    StopControlplane,
    /// Start the control plane again after `stop-controlplane`; agents and waypoints
    /// resync without restarting.
    StartControlplane,
    /// Remove everything the lab created. Safe to run any number of times.
    Down,
    /// Measure the mesh against direct pod-to-pod traffic: brings up the lab (no other
    /// lab may be up), runs every scenario, takes it down, and writes results.json,
    /// results.md and chart.svg. Build in release mode first for meaningful figures.
    Bench {
        /// One repeat of shorter runs (under two minutes) instead of three full ones.
        #[arg(long)]
        quick: bool,
        /// The folder the results go to.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// The modes to run, comma-separated.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "direct,mesh,mesh-noaccel,mesh-tunnel"
        )]
        modes: Vec<weftctl::lab::bench::Mode>,
        /// The suites: `l4` (the mesh against direct connections), `l7` (the waypoint
        /// against nginx and HAProxy).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "l4,l7")]
        suites: Vec<weftctl::lab::bench::Suite>,
        /// The L4 scenarios, comma-separated.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "throughput,rr,connrate,concurrency"
        )]
        scenarios: Vec<weftctl::lab::bench::Scenario>,
        /// Record the agents with perf during each scenario of the mesh modes: reports
        /// and flame graphs in OUT/profile/.
        #[arg(long)]
        profile: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Validate { files } => {
            let (docs, problems) = controlplane::validate::files(&files);
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                println!("{} documents are valid", docs.len());
                Ok(())
            } else {
                println!("{} problems in {} documents", problems.len(), docs.len());
                std::process::exit(1);
            }
        }
        Cmd::Check {
            cluster: true,
            weft_namespace,
            context,
            output,
            ..
        } => {
            if !weftctl::status::check_cluster(output, &weft_namespace, context.as_deref())? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Status {
            output,
            weft_namespace,
            context,
        } => weftctl::status::status(output, &weft_namespace, context.as_deref()),
        Cmd::Check {
            cni_conf_dir,
            cni_bin_dir,
            bpffs,
            output,
            ..
        } => {
            let paths = agent::preflight::Paths {
                bpffs,
                cni_conf_dir,
                cni_bin_dir,
            };
            if !weftctl::check::run(&paths, output)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::ProxyConfig {
            pod,
            output,
            weft_namespace,
            context,
        } => weftctl::proxy_config::run(&pod, output, &weft_namespace, context.as_deref()),
        Cmd::Enroll {
            namespace,
            off,
            context,
        } => weftctl::enroll::run(&namespace, !off, context.as_deref()),
        Cmd::Top {
            interval,
            count,
            output,
            weft_namespace,
            context,
        } => weftctl::observe::top(
            std::time::Duration::from_secs(interval.max(1)),
            count,
            output,
            &weft_namespace,
            context.as_deref(),
        ),
        Cmd::Logs {
            pod,
            access: _,
            weft_namespace,
            context,
        } => weftctl::observe::access_log(&pod, &weft_namespace, context.as_deref()),
        Cmd::Uninstall {
            crds,
            values,
            context,
        } => weftctl::install::uninstall(values.as_deref(), crds, context.as_deref()),
        Cmd::Install {
            dry_run,
            values,
            context,
        } => weftctl::install::install(values.as_deref(), dry_run, context.as_deref()),
        Cmd::Lab(Lab::Up {
            topology,
            agent_env,
            waypoint_env,
            controlplane_env,
            observability,
        }) => weftctl::lab::up(
            topology.as_deref(),
            weftctl::lab::Env {
                agent: &agent_env,
                waypoint: &waypoint_env,
                controlplane: &controlplane_env,
            },
            observability,
        ),
        Cmd::Waypoint(Waypoint::Apply {
            namespace,
            name,
            services,
            node,
        }) => weftctl::lab::waypoints::apply(&namespace, &name, &services, node.as_deref()),
        Cmd::Waypoint(Waypoint::List) => weftctl::lab::waypoints::list(),
        Cmd::Waypoint(Waypoint::Ejections { waypoint }) => {
            weftctl::lab::ejections::print(&waypoint)
        }
        Cmd::Waypoint(Waypoint::Delete { namespace, name }) => {
            weftctl::lab::waypoints::delete(&namespace, &name)
        }
        Cmd::Lab(Lab::Status) => weftctl::lab::status(),
        Cmd::Lab(Lab::Apply { files }) => weftctl::lab::apply(&files),
        Cmd::Lab(Lab::Enroll { namespace, off }) => weftctl::lab::enroll(&namespace, !off),
        Cmd::Lab(Lab::Top {
            interval,
            count,
            output,
        }) => weftctl::lab::top::run(
            std::time::Duration::from_secs(interval.max(1)),
            count,
            output,
        ),
        Cmd::Lab(Lab::Logs { pod, access: _ }) => weftctl::lab::logs::print(&pod),
        Cmd::Lab(Lab::ProxyConfig { pod, output }) => {
            weftctl::lab::proxy_config::print(&pod, output)
        }
        Cmd::Lab(Lab::Graph {
            listen,
            screenshot,
            dom,
            namespace,
            window,
        }) => {
            let query: Vec<String> = [("namespace", namespace), ("window", window)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                .collect();
            match screenshot {
                None => weftctl::lab::graph::relay(listen),
                Some(file) => {
                    let page = weftctl::lab::graph::capture(&query.join("&"), &file, dom)?;
                    match page {
                        Some(dom) => println!("{dom}"),
                        None => println!("wrote {}", file.display()),
                    }
                    Ok(())
                }
            }
        }
        Cmd::Lab(Lab::Exec { pod, command }) => {
            let code = weftctl::lab::exec(&pod, &command)?;
            std::process::exit(code);
        }
        Cmd::Lab(Lab::UpgradeAgent { node, binary }) => {
            let done = weftctl::lab::agents::upgrade(&node, binary.as_deref())?;
            println!("{}", serde_json::to_string(&done)?);
            Ok(())
        }
        Cmd::Lab(Lab::KillAgent { node }) => {
            let done = weftctl::lab::agents::kill(&node)?;
            println!("{}", serde_json::to_string(&done)?);
            Ok(())
        }
        Cmd::Lab(Lab::StopControlplane) => {
            let pid = weftctl::lab::controlplane::stop()?;
            println!("control plane (pid {pid}) stopped");
            Ok(())
        }
        Cmd::Lab(Lab::StartControlplane) => {
            let pid = weftctl::lab::controlplane::start()?;
            println!("control plane running (pid {pid})");
            Ok(())
        }
        Cmd::Lab(Lab::Down) => weftctl::lab::down(),
        Cmd::Lab(Lab::Bench {
            quick,
            out,
            modes,
            suites,
            scenarios,
            profile,
        }) => weftctl::lab::bench::run(&weftctl::lab::bench::Options {
            quick,
            out,
            modes,
            suites,
            scenarios,
            profile,
        }),
    }
}
