//! One HTTP GET from inside a lab namespace: how `weftctl` reads what a waypoint serves
//! on its pod's address (ejections, metrics), since the lab's addresses are reachable
//! only from inside the lab.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// One GET inside the network namespace at `netns` (a pod's, where a waypoint serves
/// 15020); the body of a 200.
pub fn get_in_netns(
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
