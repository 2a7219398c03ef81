//! nginx and HAProxy as plain reverse proxies in the proxy pod: their configurations,
//! starting them, and what they (and the waypoint) cost in CPU and memory.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use super::{BACKENDS, BODY_BYTES, HAPROXY_H1, HAPROXY_H2, NGINX_H1, NGINX_H2, PROXY_POD};
use crate::lab::{
    Progress, RUN_DIR, State,
    bench::procs::{Running, clock_ticks_per_second, cpu_ticks, listening, vm_rss_kib},
    in_pod, netns_path,
};

/// nginx as a plain reverse proxy to `backends`, on `h1` (HTTP/1.1) and `h2` (HTTP/2
/// prior knowledge), logging every request.
pub fn nginx_conf(backends: &[String], (h1, h2): (u16, u16), dir: &Path) -> String {
    let servers: String = backends
        .iter()
        .map(|b| format!("        server {b};\n"))
        .collect();
    let d = dir.display();
    format!(
        "worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/nginx-access.log;
    keepalive_requests 1000000;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    upstream backends {{
{servers}        keepalive 64;
    }}
    server {{
        listen {h1};
        listen {h2} http2;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
    )
}

/// HAProxy as a plain reverse proxy to `backends`, on `h1` and `h2`, logging every
/// request to its standard output.
pub fn haproxy_conf(backends: &[String], (h1, h2): (u16, u16)) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server b{i} {b}\n"))
        .collect();
    format!(
        "global
    nbthread 2
    maxconn 8000
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend h1
    bind :{h1}
    default_backend backends
frontend h2
    bind :{h2} proto h2
    default_backend backends
backend backends
    balance roundrobin
{servers}"
    )
}

/// The CPU seconds and resident KiB of the processes of `cgroup` named `comm`.
pub(super) fn usage(cgroup: &Path, comm: &str) -> anyhow::Result<(f64, u64)> {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .with_context(|| format!("reading {}", cgroup.display()))?;
    let (mut ticks, mut rss) = (0u64, 0u64);
    let mut found = 0;
    for pid in procs.lines() {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim() != comm {
            continue;
        }
        found += 1;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        ticks += cpu_ticks(&stat).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        rss += vm_rss_kib(&status).unwrap_or(0);
    }
    if found == 0 {
        bail!("no {comm} process in {}", cgroup.display());
    }
    Ok((ticks as f64 / clock_ticks_per_second()?, rss))
}

/// Starts nginx and HAProxy in the proxy pod; they stop when the returned processes
/// are dropped.
pub(super) fn start_proxies(state: &State, progress: &Progress) -> anyhow::Result<Vec<Running>> {
    let dir = Path::new(RUN_DIR).join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("post.lua"),
        format!(
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {BODY_BYTES})\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
        ),
    )?;
    let backends: Vec<String> = BACKENDS
        .iter()
        .map(|b| Ok(format!("{}:{}", state.pod(b)?.ip, crate::lab::HTTP_PORT)))
        .collect::<anyhow::Result<_>>()?;
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(&backends, (NGINX_H1, NGINX_H2), &dir),
    )?;
    std::fs::write(
        dir.join("haproxy.cfg"),
        haproxy_conf(&backends, (HAPROXY_H1, HAPROXY_H2)),
    )?;
    let at = state.pod(PROXY_POD)?;
    let log = |name: &str| std::fs::File::create(Path::new(RUN_DIR).join("logs").join(name));
    let mut running = Vec::new();
    for (what, program, args, port, log_name) in [
        (
            "nginx",
            "/usr/sbin/nginx",
            vec![
                "-c".to_owned(),
                dir.join("nginx.conf").display().to_string(),
                "-g".to_owned(),
                "daemon off;".to_owned(),
            ],
            NGINX_H1,
            "nginx.log",
        ),
        (
            "haproxy",
            "/usr/sbin/haproxy",
            vec![
                "-db".to_owned(),
                "-f".to_owned(),
                dir.join("haproxy.cfg").display().to_string(),
            ],
            HAPROXY_H1,
            "haproxy.log",
        ),
    ] {
        if !Path::new(program).is_file() {
            bail!("{program} is missing (install it: `cargo xtask setup` does)");
        }
        let mut cmd = in_pod(
            &at.cgroup,
            &netns_path(&at.netns),
            Path::new(program),
            &args,
        );
        let file = log(log_name)?;
        cmd.stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let r = Running::spawn(&mut cmd, what)?;
        let pid = r.child.id();
        crate::lab::wait_for(what, Duration::from_secs(10), || listening(pid, port))?;
        progress.say(format_args!(
            "{what} listening in {} (pid {pid})",
            at.pod.key()
        ));
        running.push(r);
    }
    Ok(running)
}
