//! `weftctl waypoint ejections`: which endpoints a waypoint's outlier detection has
//! ejected now, read from the waypoint's `GET /ejections` on 15020 (inside its pod's
//! network namespace).

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// One GET inside the network namespace at `netns`; the body.
pub(super) fn get_in_netns(
    netns: std::path::PathBuf,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<String> {
    let file = std::fs::File::open(&netns).with_context(|| netns.display().to_string())?;
    let path = path.to_owned();
    std::thread::spawn(move || -> anyhow::Result<String> {
        // SAFETY: setns on this short-lived thread only, with an open namespace file.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "entering the pod's network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: waypoint\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP answer")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{addr} answered {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_owned())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the request thread panicked"))?
}

/// Prints the endpoints waypoint `namespace/name` has ejected, one per line.
pub fn print(waypoint: &str) -> anyhow::Result<()> {
    let state = super::running_lab()?;
    let Some(pod) = state
        .pods
        .iter()
        .find(|p| p.pod.waypoint && p.pod.key() == waypoint)
    else {
        bail!("the lab has no waypoint {waypoint} (see `weftctl waypoint list`)");
    };
    let body = get_in_netns(
        super::netns_path(&pod.netns),
        SocketAddr::from((pod.ip, 15020)),
        "/ejections",
    )?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&body).with_context(|| format!("the waypoint's answer {body:?}"))?;
    if list.is_empty() {
        println!("{waypoint}: no endpoint is ejected");
        return Ok(());
    }
    println!(
        "{:<24} {:<16} {:>6} {:>12}",
        "SERVICE", "ENDPOINT", "TIMES", "BACK IN"
    );
    for e in list {
        let ms = e["remaining_ms"].as_u64().unwrap_or(0);
        println!(
            "{:<24} {:<16} {:>6} {:>11.1}s",
            e["service"].as_str().unwrap_or("?"),
            e["address"].as_str().unwrap_or("?"),
            e["times"].as_u64().unwrap_or(0),
            ms as f64 / 1000.0
        );
    }
    Ok(())
}
