//! The lab's upstream DNS server: Debian's `dnsmasq` in a namespace of its own on the
//! underlay (`.4`, port 53, UDP and TCP), outside the mesh, standing for the cluster's
//! resolver and the world beyond it. It knows a few names of its own (below); agents
//! forward to it what the mesh does not answer (`WEFT_DNS_UPSTREAM`), and lab pods
//! address it as their resolver.

use std::{net::Ipv4Addr, time::Duration};

use super::{alive, build, cgroup_root, in_pod, launch, netns_path, run_dir, topology, wait_for};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// Names the lab's DNS server answers: `(name, IPv4 address)`. `many.example.com` has
/// 40 addresses: its answer does not fit in 512 bytes, so UDP answers are truncated and
/// clients ask again over TCP.
pub fn records() -> Vec<(String, Ipv4Addr)> {
    let mut out = vec![
        ("api.example.com".to_owned(), Ipv4Addr::new(203, 0, 113, 10)),
        ("www.example.org".to_owned(), Ipv4Addr::new(203, 0, 113, 20)),
    ];
    for i in 1..=40 {
        out.push((
            "many.example.com".to_owned(),
            Ipv4Addr::new(198, 51, 100, i),
        ));
    }
    out
}

pub fn netns() -> String {
    format!("{}-dns", super::PREFIX)
}

/// The server's address: the underlay's `.4`.
pub fn address(t: &topology::Topology) -> anyhow::Result<Ipv4Addr> {
    let net: topology::Ipv4Net = t.underlay.parse().map_err(anyhow::Error::msg)?;
    Ok(net.host(4))
}

/// Starts the server; returns its pid. Everything it needs is on its command line (no
/// configuration file, no host files, no upstream of its own).
pub(super) fn start(t: &topology::Topology) -> anyhow::Result<u32> {
    anyhow::ensure!(
        std::path::Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: `cargo xtask setup` installs Debian's dnsmasq"
    );
    let address = address(t)?;
    build::on_underlay(t, &netns(), "dns", address)?;
    let log = run_dir().join("logs/dnsmasq.log");
    let mut args = vec![
        "--keep-in-foreground".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        "--no-poll".to_owned(),
        "--bind-interfaces".to_owned(),
        format!("--listen-address={address}"),
        "--port=53".to_owned(),
        "--user=root".to_owned(),
        "--pid-file".to_owned(),
        "--log-facility=-".to_owned(),
        "--log-queries".to_owned(),
        "--cache-size=0".to_owned(),
    ];
    for (name, ip) in records() {
        args.push(format!("--host-record={name},{ip}"));
    }
    let cmd = in_pod(
        &cgroup_root()?.join("system"),
        &netns_path(&netns()),
        std::path::Path::new(DNSMASQ),
        &args,
    );
    let pid = launch(cmd, &log)?;
    wait_for(
        &format!("dnsmasq (log: {})", log.display()),
        Duration::from_secs(10),
        || alive(pid) && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started")),
    )?;
    Ok(pid)
}
