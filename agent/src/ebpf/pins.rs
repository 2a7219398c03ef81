//! Pins and links: adopting a pinned link, replacing one that runs other code, pinning
//! programs, and the bpffs they live on.

use std::{io, path::Path};

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};

use super::{Attachment, Error};

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
