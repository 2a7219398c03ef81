//! Who is calling: node agents authenticate with a bearer token. In local mode each node
//! has a bootstrap token (a file of `node: token` lines, read again when it changes).

use std::{collections::BTreeMap, path::PathBuf, sync::Mutex, time::SystemTime};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no bearer token in the request's authorization metadata")]
    MissingToken,
    #[error("the token belongs to no node")]
    UnknownToken,
    #[error("the node token file {path} cannot be read: {detail}")]
    TokenFile { path: PathBuf, detail: String },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingToken => "missing_token",
            Error::UnknownToken => "unknown_token",
            Error::TokenFile { .. } => "token_file",
        }
    }
}

/// Node bootstrap tokens from a YAML map `node-name: token`.
#[derive(Debug)]
pub struct NodeTokens {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, BTreeMap<String, String>)>,
}

impl NodeTokens {
    pub fn new(path: PathBuf) -> Self {
        NodeTokens {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    /// The node a token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<String, Error> {
        if token.is_empty() {
            return Err(Error::MissingToken);
        }
        let file_err = |detail: String| Error::TokenFile {
            path: self.path.clone(),
            detail,
        };
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| file_err(e.to_string()))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != Some(modified) {
            let text = std::fs::read_to_string(&self.path).map_err(|e| file_err(e.to_string()))?;
            let tokens: BTreeMap<String, String> =
                serde_yaml_ng::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            *cache = (Some(modified), tokens);
        }
        // Compare every token in full, so timing says nothing about which one is close.
        let mut found = None;
        for (node, known) in &cache.1 {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(node.clone());
            }
        }
        found.ok_or(Error::UnknownToken)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (32 bytes, hex).
pub fn new_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_nodes() {
        let path = std::env::temp_dir().join(format!("weft-tokens-{}", rand::random::<u64>()));
        let (a, b) = (new_token(), new_token());
        std::fs::write(&path, format!("node-1: {a}\nnode-2: {b}\n")).unwrap();
        let t = NodeTokens::new(path.clone());
        assert_eq!(t.authenticate(&a).unwrap(), "node-1");
        assert_eq!(t.authenticate(&b).unwrap(), "node-2");
        assert_eq!(t.authenticate(&new_token()), Err(Error::UnknownToken));
        assert_eq!(t.authenticate(""), Err(Error::MissingToken));
        assert_eq!(t.authenticate(&a[..10]), Err(Error::UnknownToken));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(t.authenticate(&a).unwrap_err().reason(), "token_file");
    }
}
