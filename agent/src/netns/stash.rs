//! TCP sockets made ahead of need in a namespace, so that a connection to an
//! application does not wait for the namespace's worker thread (two thread hand-offs
//! and their wake-ups) each time: the worker makes a batch when the stash runs low.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use socket2::{Domain, Socket};

/// Below this many sockets of a family, a batch is made.
pub(super) const LOW: usize = 4;
/// Sockets made at a time.
pub(super) const BATCH: usize = 8;

#[derive(Debug, Default)]
pub(super) struct Stash {
    v4: Family,
    v6: Family,
}

#[derive(Debug, Default)]
struct Family {
    sockets: Mutex<Vec<Socket>>,
    refilling: AtomicBool,
}

impl Stash {
    fn family(&self, domain: Domain) -> &Family {
        if domain == Domain::IPV6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    pub(super) fn take(&self, domain: Domain) -> Option<Socket> {
        self.family(domain)
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    /// Whether a batch should be made now; `true` once until [`Stash::refilled`].
    pub(super) fn begin_refill(&self, domain: Domain) -> bool {
        let family = self.family(domain);
        let low = family
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            < LOW;
        low && !family.refilling.swap(true, Ordering::AcqRel)
    }

    /// A batch arrived (or failed: `sockets` empty).
    pub(super) fn refilled(&self, domain: Domain, sockets: Vec<Socket>) {
        let family = self.family(domain);
        family
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(sockets);
        family.refilling.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use socket2::{Protocol, Type};

    use super::*;

    fn socket() -> Socket {
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap()
    }

    #[test]
    fn one_refill_at_a_time_and_only_when_low() {
        let stash = Stash::default();
        assert!(stash.take(Domain::IPV4).is_none());
        assert!(stash.begin_refill(Domain::IPV4));
        assert!(!stash.begin_refill(Domain::IPV4), "one batch at a time");
        assert!(stash.begin_refill(Domain::IPV6), "each family its own");
        stash.refilled(Domain::IPV4, (0..BATCH).map(|_| socket()).collect());
        assert!(!stash.begin_refill(Domain::IPV4), "not low");
        for _ in 0..=BATCH - LOW {
            assert!(stash.take(Domain::IPV4).is_some());
        }
        assert!(stash.begin_refill(Domain::IPV4), "low again");
        // A failed batch ends the refill too.
        stash.refilled(Domain::IPV4, Vec::new());
        assert!(stash.begin_refill(Domain::IPV4));
    }
}
