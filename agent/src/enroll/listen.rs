//! The listeners an enrollment opens in its pod's namespace: bound there, or taken
//! over from the previous agent (`handoff.rs`) when it had them.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsFd as _, OwnedFd},
    sync::Arc,
};

use socket2::{Domain, SockAddr};
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

use super::{Enrolled, Error};
use crate::{
    handoff::{Inherited, Key},
    netns::Netns,
};

/// A listener's address and a duplicate of its descriptor (for the inbound sockhash).
pub(super) type ListenerFd = (SocketAddr, OwnedFd);

impl Enrolled {
    /// Opens the resolver's UDP sockets (`127.0.0.1` and `::1`, port 15053) in the
    /// namespace and serves them; `true` when at least one is open.
    pub(super) async fn resolve(
        &mut self,
        resolver: &Arc<crate::dns::Resolver>,
        namespace: &str,
        inherited: &Inherited,
    ) -> Result<bool, Error> {
        let mut any = false;
        for ip in [
            IpAddr::from(Ipv4Addr::LOCALHOST),
            Ipv6Addr::LOCALHOST.into(),
        ] {
            let addr = SocketAddr::new(ip, agent_common::DNS_PORT);
            let err = |source| Error::Listen {
                path: self.netns.path().to_owned(),
                addr,
                source,
            };
            let key = Key::udp(self.netns.cookie(), addr);
            let bound = match inherited.take(&key) {
                Some(fd) => {
                    let socket = std::net::UdpSocket::from(fd);
                    socket.set_nonblocking(true).map_err(err)?;
                    Some(UdpSocket::from_std(socket).map_err(err)?)
                }
                None => crate::dns::server::bind(&self.netns, addr)
                    .await
                    .map_err(err)?,
            };
            let Some(socket) = bound else { continue };
            self.keep(key, socket.as_fd().try_clone_to_owned().map_err(err)?);
            self.listeners.push(addr);
            let (netns, namespace) = (Arc::clone(&self.netns), namespace.to_owned());
            self.accept_tasks.push(tokio::spawn(
                Arc::clone(resolver).serve_udp(netns, namespace, socket),
            ));
            any = true;
        }
        Ok(any)
    }

    /// Listens on `port` over IPv4 and IPv6 (loopback or any address) and starts a
    /// task on each listener. A namespace without IPv6 gets the IPv4 listener only.
    pub(super) async fn listen_pair(
        &mut self,
        port: u16,
        loopback: bool,
        inherited: &Inherited,
        spawn: impl Fn(TcpListener) -> JoinHandle<()>,
    ) -> Result<Vec<ListenerFd>, Error> {
        let (v4, v6): (IpAddr, IpAddr) = if loopback {
            (Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into())
        } else {
            (Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into())
        };
        let mut out = Vec::new();
        for addr in [SocketAddr::new(v4, port), SocketAddr::new(v6, port)] {
            let listener = match listen(&self.netns, addr, inherited).await {
                Ok(l) => l,
                // A namespace without IPv6 has no ::1; IPv6 connections cannot be made
                // from it either.
                Err(Error::Listen { source, .. })
                    if addr.is_ipv6()
                        && matches!(
                            source.raw_os_error(),
                            Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                        ) =>
                {
                    tracing::info!(netns = %self.netns.path().display(), port, "no IPv6; IPv4 only");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let dup = || {
                listener
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| Error::Listen {
                        path: self.netns.path().to_owned(),
                        addr,
                        source,
                    })
            };
            out.push((addr, dup()?));
            let kept = dup()?;
            self.keep(Key::tcp(self.netns.cookie(), addr), kept);
            self.listeners.push(addr);
            self.accept_tasks.push(spawn(listener));
        }
        Ok(out)
    }

    /// Keeps a duplicate of a listening socket, for a successor to take.
    fn keep(&mut self, key: Key, fd: OwnedFd) {
        self.sockets.push((key, fd));
    }
}

async fn listen(
    netns: &Netns,
    addr: SocketAddr,
    inherited: &Inherited,
) -> Result<TcpListener, Error> {
    let err = |source| Error::Listen {
        path: netns.path().to_owned(),
        addr,
        source,
    };
    if let Some(fd) = inherited.take(&Key::tcp(netns.cookie(), addr)) {
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true).map_err(err)?;
        return TcpListener::from_std(listener).map_err(err);
    }
    let domain = Domain::for_address(addr);
    let socket = netns.socket(domain).await?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&SockAddr::from(addr)).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}
