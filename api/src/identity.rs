//! SPIFFE identities of workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<sa>`.

use std::{fmt, str::FromStr};

/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{uri:?} does not start with spiffe://")]
    Scheme { uri: String },
    #[error("{uri:?}: {part} {value:?} is invalid: {reason}")]
    Part {
        uri: String,
        part: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{uri:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape { uri: String },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Scheme { .. } => "spiffe_scheme",
            Error::Part { .. } => "spiffe_part",
            Error::Shape { .. } => "spiffe_shape",
        }
    }
}

/// A workload identity. Construct it with [`Identity::new`] or by parsing; every
/// part is checked, so a value of this type is always a valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, Error> {
        let uri = || format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}");
        check_trust_domain(trust_domain).map_err(|reason| Error::Part {
            uri: uri(),
            part: "trust domain",
            value: trust_domain.to_owned(),
            reason,
        })?;
        for (part, value) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            check_path_segment(value).map_err(|reason| Error::Part {
                uri: uri(),
                part,
                value: value.to_owned(),
                reason,
            })?;
        }
        Ok(Identity {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// `<trust-domain>/ns/<namespace>/sa/<service-account>`: how policies name it.
    pub fn unprefixed(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Trust domains are lowercase letters, digits, `.`, `-` and `_` (SPIFFE ID spec).
fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("empty");
    }
    if td.len() > 255 {
        return Err("longer than 255 bytes");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("only lowercase letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

/// Path segments are letters, digits, `.`, `-` and `_`, and not `.` or `..`.
fn check_path_segment(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s == "." || s == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("only letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

impl Identity {
    /// Parses the form without the scheme that policies use:
    /// `<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn from_str_unprefixed(s: &str) -> Result<Self, Error> {
        format!("spiffe://{s}").parse()
    }
}

impl FromStr for Identity {
    type Err = Error;

    fn from_str(uri: &str) -> Result<Self, Error> {
        let rest = uri.strip_prefix("spiffe://").ok_or_else(|| Error::Scheme {
            uri: uri.to_owned(),
        })?;
        let shape = || Error::Shape {
            uri: uri.to_owned(),
        };
        let (td, path) = rest.split_once('/').ok_or_else(shape)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => Identity::new(td, ns, sa).map_err(|e| match e {
                Error::Part {
                    part,
                    value,
                    reason,
                    ..
                } => Error::Part {
                    uri: uri.to_owned(),
                    part,
                    value,
                    reason,
                },
                other => other,
            }),
            _ => Err(shape()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(
            Identity::new(DEFAULT_TRUST_DOMAIN, "shop", "cart").unwrap(),
            id
        );
    }

    #[test]
    fn refuses_what_is_not_a_workload_id() {
        for (uri, reason) in [
            ("https://cluster.local/ns/a/sa/b", "spiffe_scheme"),
            ("spiffe://cluster.local", "spiffe_shape"),
            ("spiffe://cluster.local/ns/a", "spiffe_shape"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "spiffe_shape"),
            ("spiffe://cluster.local/sa/b/ns/a", "spiffe_shape"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "spiffe_part"),
            ("spiffe://cluster.local/ns/a b/sa/b", "spiffe_part"),
            ("spiffe://cluster.local/ns/../sa/b", "spiffe_part"),
            ("spiffe://cluster.local/ns/a/sa/", "spiffe_part"),
            ("spiffe://cluster.local/ns/a/sa/b\0", "spiffe_part"),
            ("spiffe:///ns/a/sa/b", "spiffe_part"),
        ] {
            let e = uri.parse::<Identity>().unwrap_err();
            assert_eq!(e.reason(), reason, "{uri}: {e}");
        }
    }

    #[test]
    fn errors_name_the_part() {
        let e = "spiffe://cluster.local/ns/a b/sa/b"
            .parse::<Identity>()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"spiffe://cluster.local/ns/a b/sa/b\": namespace \"a b\" is invalid: only letters, digits, '.', '-' and '_' are allowed"
        );
    }
}
