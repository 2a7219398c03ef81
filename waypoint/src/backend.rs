//! The backends of a rule (or a mirror): a Service, a port, and a weight that decides
//! the share of requests it gets among the rule's backends.

use api::proto::config as wire;
use dataplane::discovery::Key;

/// A backend Service of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub service: Key,
    pub port: u16,
    pub weight: u32,
}

impl Backend {
    pub fn from_wire(b: &wire::BackendRef) -> Result<Self, String> {
        Ok(Backend {
            service: ("Service".to_owned(), b.namespace.clone(), b.name.clone()),
            port: u16::try_from(b.port).map_err(|_| format!("{} is not a port", b.port))?,
            weight: b.weight,
        })
    }
}

/// One of `backends` by weight (`None` when every weight is 0 or there is none).
pub fn weighted(backends: &[Backend]) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut draw = rand::random_range(0..total);
    backends.iter().find(|b| {
        let w = u64::from(b.weight);
        if draw < w {
            true
        } else {
            draw -= w;
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("Service".into(), "shop".into(), "cart".into())
    }

    #[test]
    fn weights_split_within_bounds() {
        let backends = [
            Backend {
                service: key(),
                port: 80,
                weight: 90,
            },
            Backend {
                service: ("Service".into(), "shop".into(), "cart-v2".into()),
                port: 80,
                weight: 10,
            },
            Backend {
                service: ("Service".into(), "shop".into(), "never".into()),
                port: 80,
                weight: 0,
            },
        ];
        let mut v2 = 0;
        for _ in 0..10_000 {
            let b = weighted(&backends).unwrap();
            assert_ne!(b.service.2, "never");
            if b.service.2 == "cart-v2" {
                v2 += 1;
            }
        }
        // 1000 expected; 5 standard deviations is 150.
        assert!((850..=1150).contains(&v2), "{v2}");
        assert!(weighted(&backends[2..]).is_none());
    }
}
