//! The root kept in local mode: `<state dir>/ca/root-cert.pem` and `root-key.pem`
//! (mode 0600), created at first start.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use super::{Authority, Error, RootPem, Settings, generate_root};

fn storage(what: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Storage {
        what: what.display().to_string(),
        source,
    }
}

/// Loads the root from `dir`, creating and saving one the first time.
pub fn load_or_create(dir: &Path, settings: Settings) -> Result<(Authority, bool), Error> {
    let cert_path = dir.join("root-cert.pem");
    let key_path = dir.join("root-key.pem");
    let (root, created) = match (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        (Ok(cert), Ok(key)) => (RootPem { cert, key }, false),
        (Err(c), Err(k))
            if c.kind() == std::io::ErrorKind::NotFound
                && k.kind() == std::io::ErrorKind::NotFound =>
        {
            let root = generate_root(&settings.trust_domain)?;
            std::fs::create_dir_all(dir).map_err(storage(dir))?;
            write_private(&key_path, &root.key)?;
            write_private(&cert_path, &root.cert)?;
            (root, true)
        }
        (Err(e), _) => return Err(storage(&cert_path)(e)),
        (_, Err(e)) => return Err(storage(&key_path)(e)),
    };
    Ok((Authority::from_root(&root, settings)?, created))
}

/// Writes a file readable by its owner only, created that way (no window in which it
/// is world-readable).
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(storage(path))?;
    f.write_all(contents.as_bytes()).map_err(storage(path))
}
