//! Handing listening sockets from a running agent to its successor (a hitless upgrade).
//!
//! The running agent listens on a Unix `SOCK_SEQPACKET` socket in its state folder. A
//! new agent connects to it before it opens anything; the running one then sends each
//! of its listening sockets in a message of its own, the descriptor attached with
//! `SCM_RIGHTS` and a [`Key`] saying what it is, and `end` with the count. The new agent
//! takes those sockets instead of binding new ones and, once it serves, sends `ready`.
//! Each socket stays open throughout (both processes hold it for a while), so no
//! connect attempt meets a closed port; the kernel queues what nobody accepts yet.
//!
//! What the two agents do around the exchange is `upgrade.rs`'s.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
    sync::Mutex,
    time::Duration,
};

use socket2::{Domain, SockAddr, Socket, Type};

/// The handoff socket, in the agent's state folder.
pub const SOCKET: &str = "handoff.sock";

/// The longest message: one [`Key`] as JSON.
const MAX_MESSAGE: usize = 4096;

/// What a handed socket is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// The cookie of the network namespace it lives in; 0 for the agent's own.
    pub netns: u64,
    pub kind: Kind,
    /// `ip:port`, or a Unix socket's path.
    pub addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tcp,
    Udp,
    Unix,
}

impl Key {
    pub fn tcp(netns: u64, addr: SocketAddr) -> Key {
        Key {
            netns,
            kind: Kind::Tcp,
            addr: addr.to_string(),
        }
    }

    pub fn udp(netns: u64, addr: SocketAddr) -> Key {
        Key {
            netns,
            kind: Kind::Udp,
            addr: addr.to_string(),
        }
    }

    pub fn unix(path: &Path) -> Key {
        Key {
            netns: 0,
            kind: Kind::Unix,
            addr: path.display().to_string(),
        }
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Message {
    /// Carries one descriptor.
    Socket {
        key: Key,
    },
    End {
        count: usize,
    },
    Ready,
}

/// Sockets received from the previous agent, each taken once by what binds it.
#[derive(Debug, Default)]
pub struct Inherited(Mutex<HashMap<Key, OwnedFd>>);

impl Inherited {
    pub fn take(&self, key: &Key) -> Option<OwnedFd> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key)
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes what nobody took (a pod that left between the two agents), naming it.
    pub fn close_rest(&self) -> Vec<Key> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.drain().map(|(k, _)| k).collect()
    }
}

/// The listening handoff socket of the running agent. A stale socket file (an agent
/// that crashed) is replaced.
pub fn listen(path: &Path) -> io::Result<Socket> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    socket.listen(4)?;
    Ok(socket)
}

/// One side of a handoff.
#[derive(Debug)]
pub struct Conn(Socket);

impl Conn {
    /// Connects to the running agent's handoff socket; `None` when no agent listens
    /// there (a first start, or one after a crash).
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Option<Conn>> {
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        match socket.connect(&SockAddr::unix(path)?) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ECONNREFUSED)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        Ok(Some(Conn(socket)))
    }

    /// Waits for the next successor on `listener`.
    pub fn accept(listener: &Socket, timeout: Duration) -> io::Result<Conn> {
        let (socket, _) = listener.accept()?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        Ok(Conn(socket))
    }

    /// Sends `sockets`, then `end`.
    pub fn give(&self, sockets: &[(Key, OwnedFd)]) -> io::Result<()> {
        for (key, fd) in sockets {
            let m = Message::Socket { key: key.clone() };
            send(&self.0, &to_bytes(&m), Some(fd.as_fd()))?;
        }
        let end = Message::End {
            count: sockets.len(),
        };
        send(&self.0, &to_bytes(&end), None)
    }

    /// Receives what [`Conn::give`] sent.
    pub fn receive(&self) -> io::Result<Inherited> {
        let mut sockets = HashMap::new();
        loop {
            let (bytes, fd) = recv(&self.0)?
                .ok_or_else(|| io::Error::other("the running agent closed the handoff early"))?;
            match (from_bytes(&bytes)?, fd) {
                (Message::Socket { key }, Some(fd)) => {
                    sockets.insert(key, fd);
                }
                (Message::Socket { key }, None) => {
                    return Err(io::Error::other(format!(
                        "socket {key:?} came without its descriptor"
                    )));
                }
                (Message::End { count }, _) if count == sockets.len() => {
                    return Ok(Inherited(Mutex::new(sockets)));
                }
                (Message::End { count }, _) => {
                    return Err(io::Error::other(format!(
                        "the running agent sent {} sockets but announced {count}",
                        sockets.len()
                    )));
                }
                (Message::Ready, _) => return Err(io::Error::other("unexpected `ready`")),
            }
        }
    }

    pub fn ready(&self) -> io::Result<()> {
        send(&self.0, &to_bytes(&Message::Ready), None)
    }

    /// Waits for the successor's `ready`: `Ok(false)` when it went away or never said
    /// it (within the timeout).
    pub fn wait_ready(&self) -> io::Result<bool> {
        match recv(&self.0) {
            Ok(Some((bytes, _))) => Ok(matches!(from_bytes(&bytes)?, Message::Ready)),
            Ok(None) => Ok(false),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

fn to_bytes(m: &Message) -> Vec<u8> {
    serde_json::to_vec(m).expect("a handoff message serializes")
}

fn from_bytes(bytes: &[u8]) -> io::Result<Message> {
    serde_json::from_slice(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("handoff message: {e}")))
}

/// Room for one `cmsghdr` carrying one descriptor, aligned as the kernel wants.
#[repr(C, align(8))]
struct Control([u8; 64]);

fn send(socket: &Socket, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: all-zero is a valid `msghdr`; the fields used are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw = fd.as_raw_fd();
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) };
        assert!(space as usize <= control.0.len());
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: `msg_control` points at `control`, which is large enough (asserted)
        // and aligned for `cmsghdr`; the header and the descriptor are written within.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        }
    }
    // SAFETY: `msg` points at `iov` and `control`, both alive for the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        return Err(io::Error::other("short handoff message"));
    }
    Ok(())
}

/// One message and the descriptor it carried; `None` at the end of the connection.
fn recv(socket: &Socket) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: all-zero is a valid `msghdr`; the fields used are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, alive for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: the kernel filled `control` up to `msg_controllen`; the CMSG macros walk
    // only within it, and a descriptor it passed is ours to own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::other("a handoff message was truncated"));
    }
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n as usize);
    Ok(Some((buf, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_with_their_keys_and_stay_the_same_socket() {
        let dir = std::env::temp_dir().join(format!("weft-handoff-{}", std::process::id()));
        let path = dir.join(SOCKET);
        let listener = listen(&path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let key = Key::tcp(7, addr);
        let udp_key = Key::udp(7, udp.local_addr().unwrap());

        let giver = std::thread::spawn({
            let (key, udp_key) = (key.clone(), udp_key.clone());
            let fds = [
                OwnedFd::from(tcp.try_clone().unwrap()),
                OwnedFd::from(udp.try_clone().unwrap()),
            ];
            move || {
                let conn = Conn::accept(&listener, Duration::from_secs(5)).unwrap();
                let [a, b] = fds;
                conn.give(&[(key, a), (udp_key, b)]).unwrap();
                conn.wait_ready().unwrap()
            }
        });
        let conn = Conn::connect(&path, Duration::from_secs(5))
            .unwrap()
            .expect("an agent listens");
        let inherited = conn.receive().unwrap();
        assert_eq!(inherited.len(), 2);
        let fd = inherited.take(&key).expect("the TCP listener came");
        assert!(inherited.take(&key).is_none(), "taken once");
        // The same listening socket: a connection to the old address is accepted here.
        let taken = std::net::TcpListener::from(fd);
        assert_eq!(taken.local_addr().unwrap(), addr);
        drop(tcp);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        taken.accept().unwrap();
        assert_eq!(inherited.close_rest(), vec![udp_key]);
        conn.ready().unwrap();
        assert!(giver.join().unwrap(), "the giver saw `ready`");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_running_agent_is_a_fresh_start_and_a_vanished_successor_is_not_ready() {
        let dir = std::env::temp_dir().join(format!("weft-handoff-none-{}", std::process::id()));
        let path = dir.join(SOCKET);
        assert!(
            Conn::connect(&path, Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
        // A stale socket file nobody listens on.
        let listener = listen(&path).unwrap();
        drop(listener);
        assert!(
            Conn::connect(&path, Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
        let listener = listen(&path).unwrap();
        let successor = std::thread::spawn({
            let path = path.clone();
            move || {
                let conn = Conn::connect(&path, Duration::from_secs(5))
                    .unwrap()
                    .unwrap();
                conn.receive().unwrap().len()
                // dropped without `ready`
            }
        });
        let conn = Conn::accept(&listener, Duration::from_secs(5)).unwrap();
        conn.give(&[]).unwrap();
        assert_eq!(successor.join().unwrap(), 0);
        assert!(!conn.wait_ready().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
