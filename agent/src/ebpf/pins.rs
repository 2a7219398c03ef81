//! Pins and links: what is pinned, adopting a pinned link, replacing one that runs
//! other code, pinning programs, and the bpffs they live on.

use std::{io, path::Path};

use agent_common::{maps as map_names, programs as prog_names};
use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};

use super::{Attachment, Error};

/// Every map of the object. Each is pinned, so that a restarted or upgraded agent
/// shares it with the programs it adopts: an adopted program keeps the maps it was
/// loaded with, and a map the new agent created afresh would be one those programs
/// never read.
pub(super) const MAPS: [&str; 14] = [
    map_names::ENROLLED_NETNS,
    map_names::EXCLUDED_PORTS,
    map_names::ORIGINAL_DST_BY_COOKIE,
    map_names::ORIGINAL_DST_BY_SOCKET,
    map_names::DECISIONS,
    map_names::INBOUND_ADDRS,
    map_names::INBOUND_LISTENERS,
    map_names::CLIENT_LEGS,
    map_names::LOCAL_SOCKETS,
    map_names::LOCAL_FALLBACK,
    map_names::LOCAL_BUDGET,
    map_names::SETTINGS,
    map_names::DNS_ORIGINAL,
    map_names::DNS_UPSTREAM,
];

/// The programs attached to the cgroup as pinned links.
pub(super) const PROGRAMS: [&str; 7] = [
    prog_names::CONNECT4,
    prog_names::CONNECT6,
    prog_names::SOCKOPS,
    prog_names::SENDMSG4,
    prog_names::SENDMSG6,
    prog_names::RECVMSG4,
    prog_names::RECVMSG6,
];

fn program_tag(id: u32) -> Option<u64> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| p.tag())
}

/// Decides between adopting, replacing or creating the pinned link of a program that
/// is already loaded; `attach` attaches it and returns the new link.
pub(super) fn adopt_or_attach(
    name: &'static str,
    new_tag: u64,
    link_path: &Path,
    attach: impl FnOnce() -> Result<FdLink, Error>,
) -> Result<(FdLink, Attachment), Error> {
    let pin_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Pin {
        name,
        path: link_path.to_owned(),
        source,
    };
    if link_path.exists() {
        // Turning the pinned link into an fd link keeps the pin in place.
        let existing: FdLink = PinnedLink::from_pin(link_path)
            .map_err(|source| Error::Link {
                name,
                source: Box::new(source),
            })?
            .into();
        let old_tag = existing
            .info()
            .ok()
            .and_then(|info| program_tag(info.program_id()));
        if old_tag == Some(new_tag) {
            return Ok((existing, Attachment::Adopted));
        }
        // Other code (an upgrade): the new program is attached beside the old one
        // first, so that no connect goes uncaptured in between; then removing the old
        // pin and dropping its last fd detaches it.
        let link = attach()?;
        std::fs::remove_file(link_path).map_err(|e| pin_err(Box::new(e)))?;
        drop(existing);
        let pinned = link.pin(link_path).map_err(|e| pin_err(Box::new(e)))?;
        return Ok((pinned.into(), Attachment::Replaced));
    }
    let link = attach()?;
    let pinned = link.pin(link_path).map_err(|e| pin_err(Box::new(e)))?;
    Ok((pinned.into(), Attachment::Attached))
}

pub(super) fn pin_program(
    name: &'static str,
    pin: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>,
    path: &Path,
) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Pin {
                name,
                path: path.to_owned(),
                source: Box::new(source),
            });
        }
    }
    pin(path).map_err(|source| Error::Pin {
        name,
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// Mounts bpffs at `path` unless one is mounted there already.
pub(super) fn ensure_bpffs(path: &Path) -> Result<(), Error> {
    if api::mounts::is_mounted(path, "bpf") {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| Error::MountBpffs {
        path: path.to_owned(),
        source,
    })?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| {
        Error::MountBpffs {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        }
    })?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call;
    // bpffs takes no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::MountBpffs {
            path: path.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    tracing::info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::MAPS;

    /// A map left out of [`MAPS`] breaks upgrades without a sign at load time: the
    /// adopted programs read their own copy while the new agent writes another.
    #[test]
    fn every_map_of_the_object_is_pinned() {
        let object = aya_obj::Object::parse(super::super::OBJECT).expect("the embedded object");
        let in_object: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        let pinned: BTreeSet<&str> = MAPS.into_iter().collect();
        assert_eq!(in_object, pinned);
    }
}
