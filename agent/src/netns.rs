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
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::mpsc,
};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

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

struct SocketRequest {
    domain: Domain,
    reply: oneshot::Sender<io::Result<Socket>>,
}

/// A handle on an entered network namespace: creates sockets inside it.
#[derive(Debug)]
pub struct Netns {
    path: PathBuf,
    id: NetnsId,
    cookie: u64,
    requests: mpsc::Sender<SocketRequest>,
}

impl std::fmt::Debug for SocketRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketRequest")
            .field("domain", &self.domain)
            .finish()
    }
}

impl Netns {
    /// Opens the namespace at `path`, starts its worker thread and reads its cookie.
    /// The thread ends when the handle is dropped.
    pub async fn enter(path: &Path) -> Result<Self, Error> {
        let (file, id) = open(path)?;
        let (requests, rx) = mpsc::channel::<SocketRequest>();
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
        };
        let probe = netns.socket(Domain::IPV4).await?;
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
        let (reply, rx) = oneshot::channel();
        let gone = || Error::WorkerGone {
            path: self.path.clone(),
        };
        self.requests
            .send(SocketRequest { domain, reply })
            .map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|source| Error::Socket {
                path: self.path.clone(),
                source,
            })
    }
}

fn worker(
    file: File,
    path: PathBuf,
    ready: oneshot::Sender<io::Result<()>>,
    requests: mpsc::Receiver<SocketRequest>,
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
    while let Ok(SocketRequest { domain, reply }) = requests.recv() {
        let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP));
        let _ = reply.send(socket);
    }
    tracing::debug!(netns = %path.display(), "netns worker stopped");
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
