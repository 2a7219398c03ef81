//! The lab's "outside world" for egress: Debian's nginx in a namespace of its own on
//! the underlay (`.5`), outside the mesh, standing for `api.example.com`. It answers
//! plain HTTP on 8080 and HTTPS on 443 (a certificate for `*.example.com` from the
//! lab's CA, `lab/ingress.rs`) with a line saying how it was reached, so a test sees
//! whether TLS was originated.

use std::{net::Ipv4Addr, time::Duration};

use super::{alive, build, cgroup_root, in_pod, launch, netns_path, run_dir, topology, wait_for};

const NGINX: &str = "/usr/sbin/nginx";
pub const HTTP_PORT: u16 = 8080;
pub const HTTPS_PORT: u16 = 443;

pub fn netns() -> String {
    format!("{}-external", super::PREFIX)
}

/// The server's address: the underlay's `.5`.
pub fn address(t: &topology::Topology) -> anyhow::Result<Ipv4Addr> {
    let net: topology::Ipv4Net = t.underlay.parse().map_err(anyhow::Error::msg)?;
    Ok(net.host(5))
}

fn conf(address: Ipv4Addr) -> String {
    let d = run_dir().join("external");
    let i = super::ingress::dir();
    let (d, i) = (d.display(), i.display());
    format!(
        "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {address}:{HTTP_PORT};
        listen {address}:{HTTPS_PORT} ssl;
        ssl_certificate {i}/tls.crt;
        ssl_certificate_key {i}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        default_type text/plain;
        location / {{
            return 200 \"external host=$host scheme=$scheme tls=$ssl_protocol sni=$ssl_server_name\\n\";
        }}
    }}
}}
"
    )
}

/// Starts the server; returns its pid.
pub(super) fn start(t: &topology::Topology) -> anyhow::Result<u32> {
    anyhow::ensure!(
        std::path::Path::new(NGINX).exists(),
        "{NGINX} is missing: `cargo xtask setup` installs Debian's nginx-light"
    );
    let address = address(t)?;
    super::ingress::certificates()?;
    build::on_underlay(t, &netns(), "ext", address)?;
    let dir = run_dir().join("external");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf(address))?;
    let log = run_dir().join("logs/external.log");
    let args = vec![
        "-c".to_owned(),
        file.display().to_string(),
        "-g".to_owned(),
        "daemon off;".to_owned(),
    ];
    let cmd = in_pod(
        &cgroup_root()?.join("system"),
        &netns_path(&netns()),
        std::path::Path::new(NGINX),
        &args,
    );
    let pid = launch(cmd, &log)?;
    wait_for(
        &format!("the external server (log: {})", log.display()),
        Duration::from_secs(10),
        || alive(pid) && dir.join("nginx.pid").exists(),
    )?;
    Ok(pid)
}
