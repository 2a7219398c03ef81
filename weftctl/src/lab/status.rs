//! `weftctl lab status`: what runs, what the control plane refused, and the pods,
//! services and waypoints.

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use super::{RUN_DIR, State, alive, netns_path, run_dir};

pub fn status() -> anyhow::Result<()> {
    let Some(state) = State::load()? else {
        println!("no lab is up (start one with `weftctl lab up`)");
        return Ok(());
    };
    let mut out = String::new();
    writeln!(
        out,
        "control plane: {} (pid {}, log {}/logs/controlplane.log)\n",
        if alive(state.controlplane_pid) {
            "running"
        } else {
            "DOWN"
        },
        state.controlplane_pid,
        RUN_DIR
    )?;
    writeln!(
        out,
        "service graph: {} (from the host: weftctl lab graph){}\n",
        super::graph::url(&state, "/graph")?,
        if state.observability.is_some() {
            ""
        } else {
            "; traffic shows with lab up --observability"
        }
    )?;
    if let Some(pid) = state.dns_pid {
        writeln!(
            out,
            "upstream DNS: {}:53 {} (dnsmasq, pid {pid})\n",
            super::dns::address(&state.topology)?,
            if alive(pid) { "running" } else { "DOWN" },
        )?;
    }
    if let Some(pid) = state.external_pid {
        writeln!(
            out,
            "external server: {} (nginx, HTTP :{} and HTTPS :{}, pid {pid}) {}\n",
            super::external::address(&state.topology)?,
            super::external::HTTP_PORT,
            super::external::HTTPS_PORT,
            if alive(pid) { "running" } else { "DOWN" },
        )?;
    }
    if let Some(o) = &state.observability {
        writeln!(
            out,
            "prometheus: {} {} (pid {}, log {}; reach it from the lab's namespaces)\n",
            o.url(),
            if alive(o.pid) { "running" } else { "DOWN" },
            o.pid,
            o.log.display()
        )?;
    }
    // Configuration files the control plane refused (the last good version is in force).
    let cp_status = run_dir().join("controlplane/state/status.json");
    if let Ok(text) = std::fs::read_to_string(&cp_status)
        && let Ok(status) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let problems = status["problems"].as_array().cloned().unwrap_or_default();
        writeln!(
            out,
            "configuration version {}: {}",
            status["version"],
            if problems.is_empty() {
                "every file is in force".to_owned()
            } else {
                format!(
                    "{} problems (the last good versions stay in force):",
                    problems.len()
                )
            }
        )?;
        for p in problems {
            writeln!(out, "  {}", p["text"].as_str().unwrap_or_default())?;
        }
        writeln!(out)?;
    }
    // Certificates by pod namespace path, from the agents.
    let mut certs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for a in &state.agents {
        if let Ok(r) = api::admin::Client::new(&a.admin_socket).get("/v1/enrollments")
            && let Ok(list) = serde_json::from_value::<Vec<api::admin::Enrollment>>(r.body)
        {
            for e in list {
                certs.insert(e.netns, e.certificate.unwrap_or_else(|| "-".to_owned()));
            }
        }
    }
    writeln!(
        out,
        "{:<10} {:<14} {:<8} {:>9} {:>10} {:>12}",
        "NODE", "UNDERLAY", "AGENT", "ENROLLED", "ACCEPTED", "REDIRECTED"
    )?;
    for a in &state.agents {
        let node = state.topology.nodes.iter().find(|n| n.name == a.node);
        let stats = api::admin::Client::new(&a.admin_socket)
            .get("/v1/stats")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body);
        let field = |f: &dyn Fn(&serde_json::Value) -> Option<u64>| {
            stats
                .as_ref()
                .and_then(f)
                .map_or("-".to_owned(), |v| v.to_string())
        };
        writeln!(
            out,
            "{:<10} {:<14} {:<8} {:>9} {:>10} {:>12}",
            a.node,
            node.map(|n| n.address.to_string()).unwrap_or_default(),
            if alive(a.pid) { "running" } else { "DOWN" },
            field(&|s| s["enrolled_namespaces"].as_u64()),
            field(&|s| s["outbound"]["accepted"].as_u64()),
            field(&|s| s["decisions"]["redirected"].as_u64()),
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<22} {:<8} {:<14} {:<10} {:<12} APP",
        "POD", "NODE", "IP", "MESH", "CERTIFICATE"
    )?;
    for p in &state.pods {
        writeln!(
            out,
            "{:<22} {:<8} {:<14} {:<10} {:<12} {}",
            p.pod.key(),
            p.pod.node,
            p.ip,
            p.pod.mesh_role(),
            certs.get(&netns_path(&p.netns)).map_or("-", String::as_str),
            if alive(p.app_pid) { "running" } else { "DOWN" }
        )?;
    }
    if !state.topology.services.is_empty() {
        writeln!(out)?;
        writeln!(out, "{:<22} {:<14} PORTS", "SERVICE", "VIP")?;
        for s in &state.topology.services {
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|p| format!("{}→{}", p.port, p.target_port))
                .collect();
            writeln!(
                out,
                "{:<22} {:<14} {}",
                format!("{}/{}", s.namespace, s.name),
                s.vip,
                ports.join(", ")
            )?;
        }
    }
    if !state.topology.waypoints.is_empty() {
        writeln!(out)?;
        out.push_str(&super::waypoints::table(&state)?);
    }
    print!("{out}");
    Ok(())
}
