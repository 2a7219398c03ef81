//! The resolver that enrolled pods' DNS is sent to: a UDP socket on `127.0.0.1:15053`
//! (and `[::1]:15053`) inside each pod's namespace, and TCP port 53 from the outbound
//! listener. Mesh names are answered from the configuration in force; the rest goes to
//! the server the pod asked (recorded by the kernel per namespace), or to
//! `WEFT_DNS_UPSTREAM` when none is known, from a socket of the pod's namespace that
//! the capture programs leave alone.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use socket2::Domain;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};

use super::{
    table::{Lookup, Table},
    wire,
};
use crate::{ebpf::Capture, mesh::Mesh, netns::Netns};

/// How long an upstream server has to answer before the pod gets SERVFAIL (stub
/// resolvers wait 5 s before they try again; this lets them move on sooner).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a DNS-over-TCP client may stay silent before the connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The largest UDP answer the resolver sends to a client that advertised more.
const UDP_MAX: usize = wire::ADVERTISED_UDP_SIZE as usize;

/// Settings of the agent's DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `cluster.local`: the resolver is authoritative for names under it.
    pub cluster_domain: String,
    /// Where names the mesh does not know go when the pod's own server is unknown.
    pub upstream: Option<SocketAddr>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    /// `mesh` (answered from the configuration), `nxdomain`, `forwarded`, `servfail`,
    /// `formerr`, `notimp`.
    pub answer: &'static str,
    /// `udp` or `tcp`.
    pub transport: &'static str,
}

/// What the resolver counts (`weft_agent_dns_queries_total`).
#[derive(Debug, Default)]
pub struct Metrics {
    pub queries: Family<AnswerLabels, Counter>,
}

/// The resolver of one agent, shared by every enrolled pod.
#[derive(Debug)]
pub struct Resolver {
    settings: Settings,
    mesh: Arc<Mesh>,
    capture: Arc<Capture>,
    pub metrics: Arc<Metrics>,
    /// The names of the configuration version it was built from.
    table: Mutex<(u64, Arc<Table>)>,
}

/// What to do with one message.
enum Outcome {
    Reply(Vec<u8>),
    Forward,
    Drop,
}

impl Resolver {
    pub fn new(
        settings: Settings,
        mesh: Arc<Mesh>,
        capture: Arc<Capture>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let table = Table::new(&settings.cluster_domain, std::iter::empty());
        Resolver {
            settings,
            mesh,
            capture,
            metrics,
            table: Mutex::new((u64::MAX, Arc::new(table))),
        }
    }

    /// The names of the configuration in force: each Service as
    /// `<name>.<namespace>.svc.<cluster domain>`, and the hosts of ExternalServices,
    /// rebuilt when the version changes.
    fn table(&self) -> Arc<Table> {
        let view = self.mesh.view();
        let mut cached = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != view.config.version {
            let domain = &self.settings.cluster_domain;
            // Keys are (kind, namespace, name). An ExternalService's hosts resolve to
            // its addresses too.
            let names = view.config.services.iter().flat_map(|(key, s)| {
                let addresses: Vec<IpAddr> = s.addresses.clone();
                let hosts = s.external.iter().flat_map(|x| x.hosts.iter());
                std::iter::once(format!("{}.{}.svc.{domain}", key.2, key.1))
                    .chain(hosts.cloned())
                    .map(move |name| (name, addresses.clone()))
            });
            *cached = (view.config.version, Arc::new(Table::new(domain, names)));
        }
        Arc::clone(&cached.1)
    }

    fn count(&self, answer: &'static str, transport: &'static str) {
        self.metrics
            .queries
            .get_or_create(&AnswerLabels { answer, transport })
            .inc();
    }

    /// Answers from what the mesh knows, or says the message must be forwarded.
    fn local(&self, message: &[u8], namespace: &str, transport: &'static str) -> Outcome {
        let query = match wire::parse_query(message) {
            Ok(q) => q,
            Err(wire::Error::NotAQuery { .. }) => return Outcome::Drop,
            Err(e) => {
                let (rcode, answer) = match e {
                    wire::Error::NotImplemented { .. } => (wire::RCODE_NOTIMP, "notimp"),
                    _ => (wire::RCODE_FORMERR, "formerr"),
                };
                tracing::debug!(reason = e.reason(), "refused a DNS message");
                self.count(answer, transport);
                return match wire::error_response(message, rcode) {
                    Some(r) => Outcome::Reply(r),
                    None => Outcome::Drop,
                };
            }
        };
        if query.qclass != wire::CLASS_IN {
            return Outcome::Forward;
        }
        let max_len = match transport {
            "tcp" => wire::TCP_LIMIT,
            _ => query.edns.map_or(wire::UDP_PLAIN_LIMIT, |e| {
                usize::from(e.udp_size).clamp(wire::UDP_PLAIN_LIMIT, UDP_MAX)
            }),
        };
        match self.table().lookup(&query.name, query.qtype, namespace) {
            Lookup::Answer { records, .. } => {
                self.count("mesh", transport);
                Outcome::Reply(wire::response(
                    &query,
                    wire::RCODE_NOERROR,
                    &records,
                    true,
                    max_len,
                ))
            }
            Lookup::NxDomain => {
                self.count("nxdomain", transport);
                Outcome::Reply(wire::response(
                    &query,
                    wire::RCODE_NXDOMAIN,
                    &[],
                    true,
                    max_len,
                ))
            }
            Lookup::Forward => Outcome::Forward,
        }
    }

    /// The server the namespace asked last, else the configured one.
    fn upstream(&self, netns: &Netns) -> Option<SocketAddr> {
        self.capture
            .dns_upstream(netns.cookie())
            .or(self.settings.upstream)
    }

    fn servfail(&self, message: &[u8], transport: &'static str) -> Option<Vec<u8>> {
        self.count("servfail", transport);
        wire::error_response(message, wire::RCODE_SERVFAIL)
    }

    /// One query over UDP to the upstream server, from the pod's namespace.
    async fn forward_udp(&self, netns: &Netns, message: &[u8]) -> Option<Vec<u8>> {
        let Some(upstream) = self.upstream(netns) else {
            return self.servfail(message, "udp");
        };
        match udp_exchange(netns, upstream, message).await {
            Ok(answer) => {
                self.count("forwarded", "udp");
                Some(answer)
            }
            Err(e) => {
                tracing::debug!(%upstream, error = %e, "upstream DNS failed");
                self.servfail(message, "udp")
            }
        }
    }

    /// Serves a pod's UDP socket until the task is aborted (unenrollment).
    pub async fn serve_udp(
        self: Arc<Self>,
        netns: Arc<Netns>,
        namespace: String,
        socket: UdpSocket,
    ) {
        // Names of the mesh are answered from the configuration: none before it.
        self.mesh.configured().await;
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, client) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let message = &buf[..n];
            match self.local(message, &namespace, "udp") {
                Outcome::Reply(answer) => {
                    let _ = socket.send_to(&answer, client).await;
                }
                Outcome::Drop => {}
                Outcome::Forward => {
                    let (this, socket, netns) =
                        (Arc::clone(&self), Arc::clone(&socket), Arc::clone(&netns));
                    let message = message.to_vec();
                    tokio::spawn(async move {
                        if let Some(answer) = this.forward_udp(&netns, &message).await {
                            let _ = socket.send_to(&answer, client).await;
                        }
                    });
                }
            }
        }
    }

    /// Serves DNS over one TCP connection a pod opened to `server` port 53 (captured
    /// like any other): each message answered from the mesh or relayed to `server`
    /// over one upstream connection, opened when first needed.
    pub async fn serve_tcp(
        &self,
        netns: &Netns,
        namespace: &str,
        mut client: TcpStream,
        server: SocketAddr,
    ) -> std::io::Result<()> {
        let mut upstream: Option<TcpStream> = None;
        loop {
            // A client that says nothing for a while is done (RFC 7766 asks servers to
            // close idle connections).
            let message = match tokio::time::timeout(TCP_IDLE, read_framed(&mut client)).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) | Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
            };
            let answer = match self.local(&message, namespace, "tcp") {
                Outcome::Reply(a) => Some(a),
                Outcome::Drop => None,
                Outcome::Forward => {
                    let relayed = async {
                        if upstream.is_none() {
                            upstream = Some(
                                crate::netns::connect_marked(netns, server, UPSTREAM_TIMEOUT)
                                    .await
                                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?,
                            );
                        }
                        let up = upstream.as_mut().expect("just connected");
                        write_framed(up, &message).await?;
                        read_framed(up)
                            .await?
                            .ok_or_else(|| std::io::Error::other("upstream closed"))
                    };
                    match tokio::time::timeout(UPSTREAM_TIMEOUT, relayed).await {
                        Ok(Ok(a)) => {
                            self.count("forwarded", "tcp");
                            Some(a)
                        }
                        _ => {
                            upstream = None;
                            self.servfail(&message, "tcp")
                        }
                    }
                }
            };
            if let Some(answer) = answer {
                write_framed(&mut client, &answer).await?;
            }
        }
    }
}

/// The resolver's UDP socket at `addr` in `netns`; `None` for `::1` in a namespace
/// without IPv6.
pub async fn bind(netns: &Netns, addr: SocketAddr) -> std::io::Result<Option<UdpSocket>> {
    let socket = netns
        .udp_socket(Domain::for_address(addr))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    match socket.bind(&addr.into()) {
        Ok(()) => {}
        Err(e)
            if addr.is_ipv6()
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
                ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    // Room for a burst of queries while the runtime is busy elsewhere: at 10,000 a
    // second the kernel's default (about 200 datagrams) lasts 20 ms. The agent may
    // pass the system's limit (it has CAP_NET_ADMIN); else it takes what it is given.
    if force_recv_buffer(&socket, RECV_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(RECV_BUFFER as usize);
    }
    UdpSocket::from_std(socket.into()).map(Some)
}

/// The resolver socket's receive buffer.
const RECV_BUFFER: i32 = 4 << 20;

/// Sets a socket's receive buffer to `bytes`, past the system's limit (`SO_RCVBUFFORCE`,
/// which needs CAP_NET_ADMIN).
pub fn force_recv_buffer(socket: &impl std::os::fd::AsRawFd, bytes: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt on an open socket, with a pointer to an int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends `message` to `upstream` from a new marked socket in `netns` and waits for the
/// answer with the same id.
async fn udp_exchange(
    netns: &Netns,
    upstream: SocketAddr,
    message: &[u8],
) -> std::io::Result<Vec<u8>> {
    let domain = if upstream.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = netns
        .udp_socket(domain)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    socket.set_mark(agent_common::AGENT_SOCKET_MARK)?;
    let socket = UdpSocket::from_std(socket.into())?;
    socket.connect(upstream).await?;
    socket.send(message).await?;
    let id = wire::message_id(message);
    let mut buf = vec![0u8; 65_535];
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let n = socket.recv(&mut buf).await?;
            if wire::message_id(&buf[..n]) == id {
                return Ok(buf[..n].to_vec());
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
}

/// One DNS message over TCP (a two-byte length, then the message); `None` at a clean
/// end of the stream.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a DNS message over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
