//! Network namespaces of enrolled pods.
//!
//! A socket belongs to the network namespace of the thread that created it, for its
//! whole life. The agent therefore keeps one small thread per enrolled namespace that
//! has entered it with `setns` and does nothing but create sockets there; everything
//! else (bind, listen, connect, I/O) happens on the async runtime, whose threads never
//! change namespace. `setns` on a runtime thread would move every task that later runs
//! on it.

use std::{
    fs::File,
    io,
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::mpsc,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

pub mod client_address;
mod stash;

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
/// `SO_NETNS_COOKIE` from `<asm-generic/socket.h>` (Linux 5.14).
const SO_NETNS_COOKIE: libc::c_int = 71;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a network namespace ({what})")]
    NotNetns { path: PathBuf, what: &'static str },
    #[error("entering {path} failed: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating a socket in {path} failed: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the cookie of {path} failed: {source}")]
    Cookie {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the worker thread of {path} is gone")]
    WorkerGone { path: PathBuf },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Open { .. } => "netns_open",
            Error::NotNetns { .. } => "not_netns",
            Error::Enter { .. } => "netns_enter",
            Error::Socket { .. } => "socket",
            Error::Cookie { .. } => "netns_cookie",
            Error::WorkerGone { .. } => "netns_worker_gone",
        }
    }
}

/// The identity of a namespace independent of the path used to name it: its nsfs inode.
pub type NetnsId = u64;

/// Opens `path` and checks that it is a network namespace; returns it with its id.
pub fn open(path: &Path) -> Result<(File, NetnsId), Error> {
    let file = File::open(path).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the file's namespace type;
    // the fd is valid for the call.
    let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if ty < 0 {
        return Err(Error::NotNetns {
            path: path.to_owned(),
            what: "not a namespace file",
        });
    }
    if ty != libc::CLONE_NEWNET {
        return Err(Error::NotNetns {
            path: path.to_owned(),
            what: "a namespace of another type",
        });
    }
    let id = file
        .metadata()
        .map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?
        .ino();
    Ok((file, id))
}

#[derive(Debug)]
enum Request {
    Socket {
        domain: Domain,
        reply: oneshot::Sender<io::Result<Socket>>,
    },
    /// [`stash::BATCH`] TCP sockets.
    Sockets {
        domain: Domain,
        reply: oneshot::Sender<io::Result<Vec<Socket>>>,
    },
    Udp {
        domain: Domain,
        reply: oneshot::Sender<io::Result<Socket>>,
    },
    Addresses {
        reply: oneshot::Sender<io::Result<Vec<IpAddr>>>,
    },
    /// Installs (`true`) or removes the routing of [`client_address`].
    ClientAddress {
        install: bool,
        reply: oneshot::Sender<io::Result<()>>,
    },
}

/// A handle on an entered network namespace: creates sockets inside it.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    id: NetnsId,
    cookie: u64,
    requests: mpsc::Sender<Request>,
    stash: std::sync::Arc<stash::Stash>,
}

impl Netns {
    /// Opens the namespace at `path`, starts its worker thread and reads its cookie.
    /// The thread ends when the handle is dropped.
    pub async fn enter(path: &Path) -> Result<Self, Error> {
        let (file, id) = open(path)?;
        let (requests, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name(format!("netns-{id}"))
            .spawn(move || worker(file, thread_path, ready_tx, rx))
            .map_err(|source| Error::Enter {
                path: path.to_owned(),
                source,
            })?;
        ready_rx
            .await
            .map_err(|_| Error::WorkerGone {
                path: path.to_owned(),
            })?
            .map_err(|source| Error::Enter {
                path: path.to_owned(),
                source,
            })?;
        let mut netns = Netns {
            path: path.to_owned(),
            id,
            cookie: 0,
            requests,
            stash: std::sync::Arc::default(),
        };
        // Asked of the worker, not the stash: a namespace entered for one question
        // (`addresses_of`) makes no sockets ahead.
        let probe = netns
            .ask(|reply| Request::Socket {
                domain: Domain::IPV4,
                reply,
            })
            .await?;
        netns.cookie = netns_cookie(&probe).map_err(|source| Error::Cookie {
            path: path.to_owned(),
            source,
        })?;
        Ok(netns)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> NetnsId {
        self.id
    }

    /// The kernel's cookie for this namespace, as `bpf_get_netns_cookie` sees it.
    pub fn cookie(&self) -> u64 {
        self.cookie
    }

    /// A new non-blocking TCP socket inside the namespace.
    pub async fn socket(&self, domain: Domain) -> Result<Socket, Error> {
        let socket = match self.stash.take(domain) {
            Some(socket) => socket,
            None => self.ask(|reply| Request::Socket { domain, reply }).await?,
        };
        self.refill(domain);
        Ok(socket)
    }

    /// Asks the worker for a batch of sockets when the stash runs low, without waiting.
    fn refill(&self, domain: Domain) {
        if !self.stash.begin_refill(domain) {
            return;
        }
        let (reply, rx) = oneshot::channel();
        let stash = std::sync::Arc::clone(&self.stash);
        if self
            .requests
            .send(Request::Sockets { domain, reply })
            .is_err()
        {
            stash.refilled(domain, Vec::new());
            return;
        }
        tokio::spawn(async move {
            let sockets = match rx.await {
                Ok(Ok(sockets)) => sockets,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "making sockets ahead failed");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            stash.refilled(domain, sockets);
        });
    }

    /// A new non-blocking UDP socket inside the namespace.
    pub async fn udp_socket(&self, domain: Domain) -> Result<Socket, Error> {
        self.ask(|reply| Request::Udp { domain, reply }).await
    }

    /// The addresses of the namespace's interfaces, except loopback and IPv6
    /// link-local ones: the pod's own addresses.
    pub async fn addresses(&self) -> Result<Vec<IpAddr>, Error> {
        self.ask(|reply| Request::Addresses { reply }).await
    }

    /// Sets the namespace up so that the agent's legs to the application can leave
    /// from the client's address (see [`client_address`]).
    pub async fn install_client_address(&self) -> Result<(), Error> {
        self.ask(|reply| Request::ClientAddress {
            install: true,
            reply,
        })
        .await
    }

    /// Undoes [`Netns::install_client_address`].
    pub async fn remove_client_address(&self) -> Result<(), Error> {
        self.ask(|reply| Request::ClientAddress {
            install: false,
            reply,
        })
        .await
    }

    /// Sends a request to the namespace's worker thread and waits for its answer.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<io::Result<T>>) -> Request,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::WorkerGone {
            path: self.path.clone(),
        };
        self.requests.send(request(reply)).map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|source| Error::Socket {
                path: self.path.clone(),
                source,
            })
    }
}

/// The addresses of the namespace at `path` (see [`Netns::addresses`]), entered for the
/// question only.
pub async fn addresses_of(path: &Path) -> Result<Vec<IpAddr>, Error> {
    Netns::enter(path).await?.addresses().await
}

/// `getifaddrs` in the calling thread's namespace.
fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` receives a list that is freed below with `freeifaddrs`.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list `getifaddrs` returned, not freed yet.
        let entry = unsafe { &*cur };
        cur = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr whose family says
        // which structure it is.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: the family is AF_INET, so this is a `sockaddr_in`.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: the family is AF_INET6, so this is a `sockaddr_in6`.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: `head` came from `getifaddrs` and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

fn worker(
    file: File,
    path: PathBuf,
    ready: oneshot::Sender<io::Result<()>>,
    requests: mpsc::Receiver<Request>,
) {
    // SAFETY: setns on this thread only; `file` is an open namespace file.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let _ = ready.send(Err(io::Error::last_os_error()));
        return;
    }
    drop(file);
    if ready.send(Ok(())).is_err() {
        return;
    }
    tracing::debug!(netns = %path.display(), "netns worker started");
    while let Ok(request) = requests.recv() {
        match request {
            Request::Socket { domain, reply } => {
                let _ = reply.send(tcp_socket(domain));
            }
            Request::Sockets { domain, reply } => {
                let sockets = (0..stash::BATCH).map(|_| tcp_socket(domain)).collect();
                let _ = reply.send(sockets);
            }
            Request::Udp { domain, reply } => {
                let socket = Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP));
                let _ = reply.send(socket);
            }
            Request::Addresses { reply } => {
                let _ = reply.send(interface_addresses());
            }
            Request::ClientAddress { install, reply } => {
                let _ = reply.send(if install {
                    client_address::install()
                } else {
                    client_address::remove()
                });
            }
        }
    }
    tracing::debug!(netns = %path.display(), "netns worker stopped");
}

/// A non-blocking TCP socket in the calling thread's namespace.
fn tcp_socket(domain: Domain) -> io::Result<Socket> {
    Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))
}

/// The cookie of the namespace a socket lives in.
pub fn netns_cookie(socket: &impl std::os::fd::AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes passed; the kernel
    // writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The cookie of the namespace this thread is in (used for the agent's own namespace).
pub fn current_cookie() -> io::Result<u64> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    netns_cookie(&s)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Socket(#[from] Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
}

impl ConnectError {
    /// The error as an HBONE dial failure towards `peer`.
    pub fn into_hbone(self, peer: std::net::SocketAddr) -> dataplane::hbone::Error {
        use dataplane::hbone::Error as H;
        match self {
            ConnectError::Socket(e) => H::Socket {
                reason: e.reason(),
                source: io::Error::other(e),
            },
            ConnectError::Io(source) => H::Connect { peer, source },
            ConnectError::Timeout => H::ConnectTimeout { peer },
        }
    }
}

/// A TCP connection from inside `netns`, marked as the agent's so that no capture
/// program touches it.
pub async fn connect_marked(
    netns: &Netns,
    dst: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, ConnectError> {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = netns.socket(domain).await?;
    socket.set_mark(agent_common::AGENT_SOCKET_MARK)?;
    socket.set_tcp_nodelay(true)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(timeout, socket.connect(dst)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// The agent's leg to the application at `dst`, from inside `netns`: from the
/// client's address when `client` gives one of `dst`'s family (the namespace set up
/// with [`Netns::install_client_address`]), announced in `CLIENT_LEGS` while it
/// connects so that the inbound capture lets it through, and returned with the
/// [`Leg`](crate::ebpf::Leg) to keep while the connection is open; else like
/// [`connect_marked`].
pub async fn connect_app<'l>(
    netns: &Netns,
    client: Option<(IpAddr, &'l crate::ebpf::ClientLegs)>,
    dst: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Result<(tokio::net::TcpStream, Option<crate::ebpf::Leg<'l>>), ConnectError> {
    let client = client
        .map(|(ip, legs)| (ip.to_canonical(), legs))
        .filter(|(ip, _)| {
            ip.is_ipv4() == dst.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified()
        });
    let Some((client, legs)) = client else {
        return Ok((connect_marked(netns, dst, timeout).await?, None));
    };
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = netns.socket(domain).await?;
    client_address::bind_as(&socket, client)?;
    socket.set_tcp_nodelay(true)?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("a bound socket without an address"))?;
    let mut leg = legs.begin(bound, dst)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    let stream = match tokio::time::timeout(timeout, socket.connect(dst)).await {
        Ok(r) => r?,
        Err(_) => return Err(ConnectError::Timeout),
    };
    leg.connected();
    Ok((stream, Some(leg)))
}

/// [`connect_marked`] to a peer agent's HBONE port, trying again while it is refused,
/// within the same `timeout`. A refused connect carried nothing, and an enrolled pod
/// has no HBONE listener only while its agent restarts (a crash), so the connection
/// waits for the new agent rather than failing.
pub async fn connect_hbone(
    netns: &Netns,
    dst: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match connect_marked(netns, dst, left).await {
            Err(ConnectError::Io(e))
                if e.kind() == io::ErrorKind::ConnectionRefused
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::debug!(%dst, "HBONE connect refused; the peer's agent may be restarting");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}
