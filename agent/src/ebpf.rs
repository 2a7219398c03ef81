//! Loading, attaching and pinning the kernel programs, and the maps the agent shares
//! with them.
//!
//! Everything is pinned under `<bpffs>/weft/<node>/`:
//!
//! ```text
//! maps/<MAP_NAME>    every map; a restarted agent reuses them (and their contents)
//! progs/<program>    the attached programs, for inspection
//! links/<program>    the cgroup links; a link stays attached while pinned
//! links/sk_lookup/<netns cookie>
//!                    the inbound `sk_lookup` link of each enrolled namespace
//! ```
//!
//! On start the agent loads the object it embeds and, for each program, looks for a
//! pinned link. A link whose program has the same tag as the freshly loaded one is
//! adopted as it is, so a restart never attaches a second copy; a link running other
//! code (an upgrade) is replaced, the new program attached before the old one goes.
//!
//! The cgroup programs attach as links, which the kernel runs beside any other program
//! of the cgroup (as with `BPF_F_ALLOW_MULTI`): on a node that is the cgroup
//! root, where every pod and every process that enters a pod's namespace from
//! elsewhere (`nsenter`, `ip netns exec`) is covered, beside whatever else runs there
//! (another agent's programs in the lab, another product's on a node). What they
//! capture is chosen by network namespace cookie, not by cgroup.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use agent_common::{
    Decision, EnrolledNetns, InboundAddr, InboundKey, LocalKey, OriginalDst, Setting, SocketKey,
    maps as map_names, programs as prog_names,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, SockHash},
    programs::{
        CgroupAttachMode, Program, ProgramError, SkLookup, SkMsg,
        links::{FdLink, LinkError},
    },
};

/// The compiled `agent-ebpf` object, built by `build.rs`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

mod keys;
mod legs;
mod pins;

pub use legs::{ClientLegs, Leg};

use keys::inbound_key;
pub use keys::{original_dst_addr, socket_key};
use pins::{MAPS, PROGRAMS, adopt_or_attach, ensure_bpffs, pin_program};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mounting bpffs at {path} failed: {source}")]
    MountBpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating {path} failed: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted; set WEFT_CGROUP to a cgroup v2 directory")]
    NoCgroup2,
    #[error("opening cgroup {path} failed: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "loading the eBPF object failed (if the pinned maps under {pin_dir} come from an \
         incompatible version, remove them with `weft-agent uninstall`): {source}"
    )]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object has no program {name}")]
    MissingProgram { name: &'static str },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("link of {name}: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: Box<LinkError>,
    },
    #[error("pinning {name} at {path} failed: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the eBPF object has no map {name}")]
    MissingMap { name: &'static str },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MountBpffs { .. } => "bpffs_mount",
            Error::PinDir { .. } => "pin_dir",
            Error::NoCgroup2 => "no_cgroup2",
            Error::Cgroup { .. } => "cgroup",
            Error::Load { .. } => "ebpf_load",
            Error::MissingProgram { .. } => "missing_program",
            Error::Program { .. } => "program",
            Error::Link { .. } => "link",
            Error::Pin { .. } => "pin",
            Error::MissingMap { .. } => "missing_map",
            Error::Map { .. } => "map",
        }
    }
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map {
        name,
        source: Box::new(source),
    }
}

fn prog_err(name: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |source| Error::Program {
        name,
        source: Box::new(source),
    }
}

/// Loads a program, then adopts its pinned link or attaches it to the cgroup and pins
/// link and program. `CgroupSockAddr` and `SockOps` share no trait for `attach` and
/// `take_link` in aya, hence a macro rather than a generic function.
macro_rules! load_and_attach {
    ($name:expr, $program:expr, $cgroup:expr, $link_path:expr, $prog_path:expr) => {{
        let name: &'static str = $name;
        let program = $program;
        program.load().map_err(prog_err(name))?;
        let tag = program.info().map_err(prog_err(name))?.tag();
        let (link, attachment) = adopt_or_attach(name, tag, $link_path, || {
            // Through a BPF link (`bpf_link_create`, which takes no flags here): the
            // kernel attaches a link as with BPF_F_ALLOW_MULTI, beside other programs.
            let id = program
                .attach($cgroup, CgroupAttachMode::Single)
                .map_err(prog_err(name))?;
            let link = program.take_link(id).map_err(prog_err(name))?;
            FdLink::try_from(link).map_err(|source| Error::Link {
                name,
                source: Box::new(source),
            })
        })?;
        if attachment != Attachment::Adopted {
            pin_program(name, |p| program.pin(p), $prog_path)?;
        }
        (link, attachment)
    }};
}

/// What the agent did with a program's attachment at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// No pinned link existed; the program was attached and pinned.
    Attached,
    /// A pinned link with the same program was found and kept.
    Adopted,
    /// A pinned link with other code was found; it was replaced.
    Replaced,
}

/// The loaded capture programs and the maps the agent uses.
pub struct Capture {
    pin_dir: PathBuf,
    cgroup: PathBuf,
    attachments: Vec<(&'static str, Attachment)>,
    enrolled: Mutex<HashMap<MapData, u64, EnrolledNetns>>,
    excluded_ports: Mutex<HashMap<MapData, u16, u8>>,
    original_dst: Mutex<HashMap<MapData, SocketKey, OriginalDst>>,
    decisions: PerCpuArray<MapData, u64>,
    inbound_addrs: Mutex<HashMap<MapData, InboundKey, InboundAddr>>,
    inbound_listeners: Mutex<SockHash<MapData, InboundKey>>,
    local_sockets: SockHash<MapData, LocalKey>,
    client_legs: std::sync::Arc<ClientLegs>,
    dns_upstream: Mutex<HashMap<MapData, u64, OriginalDst>>,
    accelerate: bool,
    /// Tag of the loaded `sk_lookup` program, to adopt pinned per-namespace links.
    sk_lookup_tag: u64,
    // Keeps the program fds of this load (and lets `sk_lookup` attach); the pinned
    // links keep the attached ones.
    ebpf: Mutex<Ebpf>,
    _links: Vec<FdLink>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("pin_dir", &self.pin_dir)
            .field("cgroup", &self.cgroup)
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Loads the programs, attaches them to `cgroup` (or adopts earlier attachments)
    /// and opens the shared maps.
    ///
    /// `accelerate` switches the same-node acceleration of local legs on or off for
    /// connections established from now on.
    pub fn load(
        bpffs: &Path,
        pin_dir: &Path,
        cgroup: Option<&Path>,
        accelerate: bool,
    ) -> Result<Self, Error> {
        ensure_bpffs(bpffs)?;
        for sub in ["maps", "progs", "links", "links/sk_lookup"] {
            let dir = pin_dir.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| Error::PinDir { path: dir, source })?;
        }
        let cgroup = match cgroup {
            Some(path) => path.to_owned(),
            None => api::mounts::cgroup2().ok_or(Error::NoCgroup2)?,
        };
        let cgroup_dir = File::open(&cgroup).map_err(|source| Error::Cgroup {
            path: cgroup.clone(),
            source,
        })?;

        let mut loader = EbpfLoader::new();
        for name in MAPS {
            loader.map_pin_path(name, pin_dir.join("maps").join(name));
        }
        let mut ebpf = loader.load(OBJECT).map_err(|source| Error::Load {
            pin_dir: pin_dir.to_owned(),
            source: Box::new(source),
        })?;

        let mut links = Vec::new();
        let mut attachments = Vec::new();
        for name in PROGRAMS {
            let program = ebpf
                .program_mut(name)
                .ok_or(Error::MissingProgram { name })?;
            let link_path = pin_dir.join("links").join(name);
            let prog_path = pin_dir.join("progs").join(name);
            let (link, attachment) = match program {
                Program::CgroupSockAddr(p) => {
                    load_and_attach!(name, p, &cgroup_dir, &link_path, &prog_path)
                }
                Program::SockOps(p) => {
                    load_and_attach!(name, p, &cgroup_dir, &link_path, &prog_path)
                }
                _ => return Err(Error::MissingProgram { name }),
            };
            tracing::info!(program = name, ?attachment, cgroup = %cgroup.display(), "capture program ready");
            links.push(link);
            attachments.push((name, attachment));
        }

        let sk_lookup_tag = {
            let name = prog_names::SK_LOOKUP;
            let program: &mut SkLookup = ebpf
                .program_mut(name)
                .ok_or(Error::MissingProgram { name })?
                .try_into()
                .map_err(prog_err(name))?;
            program.load().map_err(prog_err(name))?;
            pin_program(name, |p| program.pin(p), &pin_dir.join("progs").join(name))?;
            program.info().map_err(prog_err(name))?.tag()
        };

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(Error::MissingMap { name })
        };
        let enrolled = HashMap::try_from(take(&mut ebpf, map_names::ENROLLED_NETNS)?)
            .map_err(map_err(map_names::ENROLLED_NETNS))?;
        let excluded_ports = HashMap::try_from(take(&mut ebpf, map_names::EXCLUDED_PORTS)?)
            .map_err(map_err(map_names::EXCLUDED_PORTS))?;
        let original_dst = HashMap::try_from(take(&mut ebpf, map_names::ORIGINAL_DST_BY_SOCKET)?)
            .map_err(map_err(map_names::ORIGINAL_DST_BY_SOCKET))?;
        let decisions = PerCpuArray::try_from(take(&mut ebpf, map_names::DECISIONS)?)
            .map_err(map_err(map_names::DECISIONS))?;
        let inbound_addrs = HashMap::try_from(take(&mut ebpf, map_names::INBOUND_ADDRS)?)
            .map_err(map_err(map_names::INBOUND_ADDRS))?;
        let inbound_listeners = SockHash::try_from(take(&mut ebpf, map_names::INBOUND_LISTENERS)?)
            .map_err(map_err(map_names::INBOUND_LISTENERS))?;
        let local_sockets: SockHash<MapData, LocalKey> =
            SockHash::try_from(take(&mut ebpf, map_names::LOCAL_SOCKETS)?)
                .map_err(map_err(map_names::LOCAL_SOCKETS))?;
        let client_legs = HashMap::try_from(take(&mut ebpf, map_names::CLIENT_LEGS)?)
            .map_err(map_err(map_names::CLIENT_LEGS))?;
        let dns_upstream = HashMap::try_from(take(&mut ebpf, map_names::DNS_UPSTREAM)?)
            .map_err(map_err(map_names::DNS_UPSTREAM))?;
        let mut settings: Array<MapData, u32> =
            Array::try_from(take(&mut ebpf, map_names::SETTINGS)?)
                .map_err(map_err(map_names::SETTINGS))?;

        // `sk_msg` attaches to the map, not to a cgroup; the map is pinned, so the
        // attachment lasts as long as the map. Attaching again (a restart) replaces the
        // program in place.
        {
            let name = prog_names::SK_MSG;
            let program: &mut SkMsg = ebpf
                .program_mut(name)
                .ok_or(Error::MissingProgram { name })?
                .try_into()
                .map_err(prog_err(name))?;
            program.load().map_err(prog_err(name))?;
            let link = program.attach(local_sockets.fd()).map_err(prog_err(name))?;
            // The attachment belongs to the map: dropping the link would detach the
            // program, so it is kept for the life of the process, and outlives it.
            std::mem::forget(program.take_link(link).map_err(prog_err(name))?);
            pin_program(name, |p| program.pin(p), &pin_dir.join("progs").join(name))?;
        }
        settings
            .set(Setting::Accelerate as u32, u32::from(accelerate), 0)
            .map_err(map_err(map_names::SETTINGS))?;
        tracing::info!(accelerate, "same-node acceleration of local legs");

        Ok(Capture {
            pin_dir: pin_dir.to_owned(),
            cgroup,
            attachments,
            enrolled: Mutex::new(enrolled),
            excluded_ports: Mutex::new(excluded_ports),
            original_dst: Mutex::new(original_dst),
            decisions,
            inbound_addrs: Mutex::new(inbound_addrs),
            inbound_listeners: Mutex::new(inbound_listeners),
            local_sockets,
            client_legs: std::sync::Arc::new(ClientLegs::new(client_legs)),
            dns_upstream: Mutex::new(dns_upstream),
            accelerate,
            sk_lookup_tag,
            ebpf: Mutex::new(ebpf),
            _links: links,
        })
    }

    /// The map of legs from client addresses being connected (see [`ClientLegs`]).
    pub fn client_legs(&self) -> std::sync::Arc<ClientLegs> {
        std::sync::Arc::clone(&self.client_legs)
    }

    fn sk_lookup_link_path(&self, netns_cookie: u64) -> PathBuf {
        self.pin_dir
            .join("links/sk_lookup")
            .join(netns_cookie.to_string())
    }

    /// Attaches the inbound program to a namespace, or adopts the link a previous agent
    /// pinned for it. The link stays attached while pinned, also while no agent runs;
    /// [`Capture::detach_inbound`] removes the pin.
    pub fn attach_inbound(
        &self,
        netns_cookie: u64,
        netns: &File,
    ) -> Result<(FdLink, Attachment), Error> {
        let name = prog_names::SK_LOOKUP;
        adopt_or_attach(
            name,
            self.sk_lookup_tag,
            &self.sk_lookup_link_path(netns_cookie),
            || {
                let mut ebpf = lock(&self.ebpf);
                let program: &mut SkLookup = ebpf
                    .program_mut(name)
                    .ok_or(Error::MissingProgram { name })?
                    .try_into()
                    .map_err(prog_err(name))?;
                let id = program.attach(netns).map_err(prog_err(name))?;
                let link = program.take_link(id).map_err(prog_err(name))?;
                Ok(FdLink::from(link))
            },
        )
    }

    /// Removes the pin of a namespace's inbound link; it detaches when the last fd of
    /// it (the caller's) closes.
    pub fn detach_inbound(&self, netns_cookie: u64) -> Result<(), Error> {
        let path = self.sk_lookup_link_path(netns_cookie);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Pin {
                name: prog_names::SK_LOOKUP,
                path,
                source: Box::new(source),
            }),
        }
    }

    /// Namespace cookies with a pinned inbound link.
    pub fn inbound_link_cookies(&self) -> Vec<u64> {
        std::fs::read_dir(self.pin_dir.join("links/sk_lookup"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Steers inbound plaintext connections for `addr` to `listener` (the 15006
    /// listener in the namespace that owns `addr`).
    pub fn steer_inbound(
        &self,
        addr: std::net::IpAddr,
        listener: &impl std::os::fd::AsRawFd,
    ) -> Result<(), Error> {
        let key = inbound_key(addr);
        lock(&self.inbound_listeners)
            .insert(key, listener.as_raw_fd(), 0)
            .map_err(map_err(map_names::INBOUND_LISTENERS))?;
        lock(&self.inbound_addrs)
            .insert(key, InboundAddr { flags: 0, _pad: 0 }, 0)
            .map_err(map_err(map_names::INBOUND_ADDRS))
    }

    /// Stops steering inbound connections for `addr`.
    pub fn unsteer_inbound(&self, addr: std::net::IpAddr) -> Result<(), Error> {
        let key = inbound_key(addr);
        match lock(&self.inbound_addrs).remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(map_names::INBOUND_ADDRS)(e)),
        }
        match lock(&self.inbound_listeners).remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(map_names::INBOUND_LISTENERS)(e)),
        }
    }

    /// The addresses in the inbound map (which survives restarts).
    pub fn inbound_addrs(&self) -> Vec<std::net::IpAddr> {
        lock(&self.inbound_addrs)
            .keys()
            .filter_map(Result::ok)
            .map(|k| std::net::Ipv6Addr::from(k.addr).to_canonical())
            .collect()
    }

    /// Whether local legs established from now on are accelerated.
    pub fn accelerate(&self) -> bool {
        self.accelerate
    }

    /// Sockets now in the acceleration map (each open accelerated leg has two).
    pub fn local_sockets(&self) -> usize {
        self.local_sockets.keys().filter(Result::is_ok).count()
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    pub fn attachments(&self) -> &[(&'static str, Attachment)] {
        &self.attachments
    }

    /// Starts capturing connections from the namespace with this cookie.
    /// With `dns`, the namespace's DNS goes to the agent's resolver too.
    pub fn enroll(&self, netns_cookie: u64, dns: bool) -> Result<(), Error> {
        let value = EnrolledNetns {
            flags: if dns { agent_common::ENROLLED_DNS } else { 0 },
            _pad: 0,
        };
        lock(&self.enrolled)
            .insert(netns_cookie, value, 0)
            .map_err(map_err(map_names::ENROLLED_NETNS))
    }

    /// Stops capturing new connections from the namespace with this cookie.
    pub fn unenroll(&self, netns_cookie: u64) -> Result<(), Error> {
        let _ = lock(&self.dns_upstream).remove(&netns_cookie);
        match lock(&self.enrolled).remove(&netns_cookie) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(map_names::ENROLLED_NETNS)(e)),
        }
    }

    /// The cookies in the enrolled map (which survives restarts).
    pub fn enrolled_cookies(&self) -> Vec<u64> {
        lock(&self.enrolled).keys().filter_map(Result::ok).collect()
    }

    /// Makes the excluded port map hold exactly `ports`.
    pub fn set_excluded_ports(&self, ports: &BTreeSet<u16>) -> Result<(), Error> {
        let mut map = lock(&self.excluded_ports);
        let stale: Vec<u16> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|p| !ports.contains(p))
            .collect();
        for port in stale {
            match map.remove(&port) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(map_names::EXCLUDED_PORTS)(e)),
            }
        }
        for port in ports {
            map.insert(*port, 1, 0)
                .map_err(map_err(map_names::EXCLUDED_PORTS))?;
        }
        Ok(())
    }

    /// Takes the original destination recorded for a redirected connection whose client
    /// socket (the accepted socket's peer) is `peer` in the namespace `netns_cookie`.
    pub fn take_original_dst(&self, netns_cookie: u64, peer: SocketAddr) -> Option<SocketAddr> {
        let key = socket_key(netns_cookie, peer);
        let mut map = lock(&self.original_dst);
        let value = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(original_dst_addr(&value))
    }

    /// The DNS server the namespace with this cookie addressed last.
    pub fn dns_upstream(&self, netns_cookie: u64) -> Option<SocketAddr> {
        let value = lock(&self.dns_upstream).get(&netns_cookie, 0).ok()?;
        Some(original_dst_addr(&value))
    }

    /// The decision counters, summed over CPUs, indexed by [`Decision`].
    pub fn decisions(&self) -> Vec<(Decision, u64)> {
        Decision::ALL
            .iter()
            .map(|d| {
                let total = self
                    .decisions
                    .get(&(*d as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (*d, total)
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the map itself intact (the kernel
    // owns it), so a poisoned lock is safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
