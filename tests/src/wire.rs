//! Tools for looking at and speaking the wire in tests: running code inside a network
//! namespace, capturing packets with an `AF_PACKET` socket, workload certificates
//! signed by a CA on disk, and a raw HTTP/2 client that can send what a well-behaved
//! one never would.

use std::{
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// Runs `f` on a new thread that has entered the network namespace at `path`; every
/// socket `f` creates lives there.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with an open namespace file.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the thread in the namespace panicked")
}

/// What a packet capture saw of TCP over IPv4.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub frames: u64,
    /// Frames to or from port 15008, and their TCP payload bytes.
    pub hbone_frames: u64,
    pub hbone_payload: u64,
    /// Payloads on 15008 that start with a TLS application-data record header.
    pub tls_records: u64,
    /// Frames whose payload holds the marker, with their ports.
    pub marker_frames: Vec<(u16, u16)>,
    /// Other TCP frames: (ports) → (frames, payload bytes).
    pub other: std::collections::BTreeMap<(u16, u16), (u64, u64)>,
}

/// A packet capture on every interface of one namespace, until stopped.
pub struct PacketCapture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Captured>>,
}

impl PacketCapture {
    /// Starts capturing in the namespace at `netns`, looking for `marker` in payloads.
    pub fn start(netns: &Path, marker: &[u8]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let marker = marker.to_vec();
        let file = std::fs::File::open(netns).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: a plain socket(2) call; the fd is owned right away.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: `fd` is a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let size: libc::c_int = 256 << 20;
            // SAFETY: `size` is valid for the size passed. Root may exceed rmem_max.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: `tv` is valid for the size passed.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            let _ = ready_tx.send(());
            let mut file = std::fs::File::from(fd);
            let mut seen = Captured::default();
            let mut buf = vec![0u8; 70_000];
            // After the stop, what is still queued is read too, until the socket is
            // quiet for a moment.
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        if flag.load(Ordering::Acquire) {
                            break;
                        }
                        continue;
                    }
                    Err(e) => panic!("capture: {e}"),
                };
                inspect(&buf[..n], &marker, &mut seen);
            }
            seen
        });
        ready_rx.recv().expect("capture started");
        PacketCapture {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Captured {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().expect("capture thread")
    }
}

impl Drop for PacketCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn inspect(frame: &[u8], marker: &[u8], seen: &mut Captured) {
    seen.frames += 1;
    // Ethernet, IPv4, TCP.
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if ip[9] != 6 || ip.len() < ihl + 20 || total < ihl + 20 {
        return;
    }
    let tcp = &ip[ihl..total];
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let off = usize::from(tcp[12] >> 4) * 4;
    let payload = tcp.get(off..).unwrap_or_default();
    if sport == 15008 || dport == 15008 {
        seen.hbone_frames += 1;
        seen.hbone_payload += payload.len() as u64;
        if payload.starts_with(&[0x17, 0x03, 0x03]) {
            seen.tls_records += 1;
        }
    } else {
        let e = seen.other.entry((sport, dport)).or_default();
        e.0 += 1;
        e.1 += payload.len() as u64;
    }
    if !marker.is_empty() && payload.windows(marker.len()).any(|w| w == marker) {
        seen.marker_frames.push((sport, dport));
    }
}

/// A workload certificate and key (PEM) for `identity` (a `spiffe://` URI), signed by
/// the CA whose certificate and key are PEM files.
pub fn workload_cert(ca_cert: &Path, ca_key: &Path, identity: &str) -> (String, String) {
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_key).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca_cert).unwrap(), key).unwrap();
    leaf(&issuer, identity)
}

/// A new self-signed CA (certificate PEM, and an issuer to sign with).
pub fn new_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    (pem, rcgen::Issuer::new(params, key))
}

/// A workload leaf for `identity` signed by `issuer`.
pub fn leaf(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, identity: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().unwrap())];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// What became of one stream of a raw HTTP/2 exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// A response header block whose first field is the static-table `:status 200`.
    Ok200,
    /// Some other response header block (its first bytes, HPACK-encoded).
    Headers(Vec<u8>),
    /// `RST_STREAM` with this error code.
    Reset(u32),
}

/// Frame types and flags of RFC 9113.
pub mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    pub const REFUSED_STREAM: u32 = 0x7;
}

/// Encodes one frame.
pub fn encode_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK header block of literal fields without indexing (no Huffman coding).
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// HEADERS (and CONTINUATION frames when the block is larger than 16 KiB).
pub fn headers_frames(stream: u32, block: &[u8], end_stream: bool) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.chunks(16_000).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut flags = if last { frame::END_HEADERS } else { 0 };
        let kind = if i == 0 {
            if end_stream {
                flags |= frame::END_STREAM;
            }
            frame::HEADERS
        } else {
            frame::CONTINUATION
        };
        out.extend(encode_frame(kind, flags, stream, chunk));
    }
    out
}

/// Reads frames from `io` until every stream in `streams` has an outcome, the peer
/// sends GOAWAY, or the connection ends; answers SETTINGS and PING on the way.
pub fn read_outcomes(
    io: &mut (impl io::Read + io::Write),
    streams: &[u32],
) -> (std::collections::BTreeMap<u32, StreamOutcome>, Option<u32>) {
    let mut outcomes = std::collections::BTreeMap::new();
    let mut goaway = None;
    while streams.iter().any(|s| !outcomes.contains_key(s)) {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).is_err() {
            break;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if io.read_exact(&mut payload).is_err() {
            break;
        }
        match kind {
            frame::SETTINGS if flags & frame::ACK == 0 => {
                let _ = io.write_all(&encode_frame(frame::SETTINGS, frame::ACK, 0, &[]));
            }
            frame::PING if flags & frame::ACK == 0 => {
                let _ = io.write_all(&encode_frame(frame::PING, frame::ACK, 0, &payload));
            }
            frame::HEADERS => {
                let outcome = if payload.first() == Some(&0x88) {
                    StreamOutcome::Ok200
                } else {
                    StreamOutcome::Headers(payload.iter().take(8).copied().collect())
                };
                outcomes.entry(stream).or_insert(outcome);
            }
            frame::RST_STREAM if payload.len() >= 4 => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                outcomes.entry(stream).or_insert(StreamOutcome::Reset(code));
            }
            frame::GOAWAY if payload.len() >= 8 => {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
                break;
            }
            _ => {}
        }
    }
    (outcomes, goaway)
}

/// Reads frames until the peer's SETTINGS arrive, and ACKs them.
pub fn await_settings(io: &mut (impl io::Read + io::Write)) {
    loop {
        let mut head = [0u8; 9];
        io.read_exact(&mut head).expect("a frame");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).expect("a frame payload");
        if head[3] == frame::SETTINGS && head[4] & frame::ACK == 0 {
            io.write_all(&encode_frame(frame::SETTINGS, frame::ACK, 0, &[]))
                .expect("SETTINGS ACK");
            io.flush().expect("flush");
            return;
        }
    }
}

/// The client connection preface and an empty SETTINGS frame.
pub fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(encode_frame(frame::SETTINGS, 0, 0, &[]));
    out
}

/// Waits until `f` holds, checking every 50 ms, for at most `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where a raw HBONE client connects and as whom: the address, the PEM roots, the
/// identity the server must have, and the client's certificate and key (if any).
#[derive(Debug, Clone)]
pub struct HboneTarget {
    pub addr: std::net::SocketAddr,
    pub roots: String,
    pub server_identity: String,
    pub client: Option<(String, String)>,
}

/// From inside `netns`: connects to `target` with mutual TLS and ALPN h2, sends one
/// HEADERS frame of `fields` on stream 1 and returns what came back on it and the
/// GOAWAY's error code if any; an error when the connection itself failed (a refused
/// client certificate, say).
pub fn one_stream(
    netns: &Path,
    target: &HboneTarget,
    fields: Vec<(String, String)>,
    end_stream: bool,
) -> io::Result<(Option<StreamOutcome>, Option<u32>)> {
    let target = target.clone();
    in_netns(netns, move || {
        let creds = target
            .client
            .as_ref()
            .map(|(c, k)| (c.as_str(), k.as_str()));
        let mut tls = tls_connect(
            target.addr,
            &target.roots,
            "cluster.local",
            &target.server_identity,
            creds,
        )?;
        let f: Vec<(&str, &str)> = fields
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        tls.write_all(&headers_frames(1, &header_block(&f), end_stream))?;
        tls.flush()?;
        let (out, goaway) = read_outcomes(&mut tls, &[1]);
        Ok((out.get(&1).cloned(), goaway))
    })
}

/// A blocking TLS client stream from rustls, for the raw HTTP/2 client.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A TLS 1.3 client configuration with ALPN h2, presenting `client` (certificate and
/// key PEM) if given, and checking that the server is `server_identity` under
/// `roots_pem`.
pub fn client_config(
    roots_pem: &str,
    trust_domain: &str,
    server_identity: &str,
    client: Option<(&str, &str)>,
) -> io::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(roots_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let bundle = api::tls::SharedBundle::new(
        api::tls::TrustBundle::new(trust_domain, roots).map_err(io::Error::other)?,
    );
    let verifier = Arc::new(api::tls::SpiffeServerVerifier::new(
        bundle,
        server_identity.parse().map_err(io::Error::other)?,
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(io::Error::other)?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(io::Error::other)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(io::Error::other)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects with [`client_config`] to `addr`, completes the handshake and sends the
/// HTTP/2 preface.
pub fn tls_connect(
    addr: std::net::SocketAddr,
    roots_pem: &str,
    trust_domain: &str,
    server_identity: &str,
    client: Option<(&str, &str)>,
) -> io::Result<TlsStream> {
    use rustls_pki_types::ServerName;
    let config = client_config(roots_pem, trust_domain, server_identity, client)?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake to completion, so that a refused client certificate shows up
    // here (TLS 1.3 reports it after the client's Finished, on the first read).
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    tls.write_all(&preface())?;
    tls.flush()?;
    Ok(tls)
}
