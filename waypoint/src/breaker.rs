//! What a waypoint holds for each backend Service against overload: the circuit
//! breaker's counts (requests in flight and waiting, retries in flight, upstream
//! connections open) with the BackendPolicy's limits, and the retry budget. Over a limit, a
//! request is answered 503 at once (flag `UO`) and a retry is not sent.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use dataplane::discovery::{Key, Limits, MILLION, RetryBudget};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which limit turned a request or a retry away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Requests,
    Pending,
    Retries,
    Budget,
    Connections,
}

impl Overflow {
    pub fn label(self) -> &'static str {
        match self {
            Overflow::Requests => "requests",
            Overflow::Pending => "pending",
            Overflow::Retries => "retries",
            Overflow::Budget => "retry_budget",
            Overflow::Connections => "connections",
        }
    }
}

/// A count that goes down again when its guard is dropped.
#[derive(Debug)]
pub struct Held(Arc<AtomicU32>);

impl Held {
    /// One more, unless that passes `max`.
    fn take(count: &Arc<AtomicU32>, max: Option<u32>) -> Option<Held> {
        let max = max.unwrap_or(u32::MAX);
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Held(Arc::clone(count)))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's place among those in flight to its Service, for as long as it lives.
#[derive(Debug)]
pub struct Admitted {
    _permit: Option<OwnedSemaphorePermit>,
    _active: Held,
}

/// Retries are at most a share of the requests: each request adds that share of a
/// token, each retry takes a whole one; `min_retries` are always allowed on top, and
/// savings stop at what 1,000 requests add.
#[derive(Debug)]
struct Budget {
    tokens: f64,
}

/// One backend Service's counts.
#[derive(Debug)]
pub struct ServiceGuard {
    limits: Limits,
    budget_rule: Option<RetryBudget>,
    slots: Option<Arc<Semaphore>>,
    pending: Arc<AtomicU32>,
    active: Arc<AtomicU32>,
    retries: Arc<AtomicU32>,
    connections: Arc<AtomicU32>,
    budget: Mutex<Budget>,
}

impl ServiceGuard {
    fn new(limits: Limits, budget_rule: Option<RetryBudget>) -> Self {
        ServiceGuard {
            limits,
            budget_rule,
            slots: limits
                .requests
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            pending: Arc::default(),
            active: Arc::default(),
            retries: Arc::default(),
            connections: Arc::default(),
            budget: Mutex::new(Budget {
                tokens: budget_rule.map_or(0.0, |b| f64::from(b.min_retries)),
            }),
        }
    }

    /// A place among the requests in flight: at once while there is one, else waiting
    /// for one while fewer than the pending limit wait (none by default).
    pub async fn admit(&self) -> Result<Admitted, Overflow> {
        let permit = match &self.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let max_pending = self.limits.pending.unwrap_or(0);
                    let _waiting =
                        Held::take(&self.pending, Some(max_pending)).ok_or(Overflow::Requests)?;
                    Some(
                        Arc::clone(slots)
                            .acquire_owned()
                            .await
                            .map_err(|_| Overflow::Pending)?,
                    )
                }
            },
        };
        self.deposit();
        Ok(Admitted {
            _permit: permit,
            _active: Held::take(&self.active, None).expect("no limit"),
        })
    }

    fn deposit(&self) {
        if let Some(rule) = self.budget_rule {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            let share = f64::from(rule.ppm) / f64::from(MILLION);
            let cap = f64::from(rule.min_retries) + share * 1000.0;
            b.tokens = (b.tokens + share).min(cap);
        }
    }

    /// Leave for one retry, held while it is in flight.
    pub fn retry(&self) -> Result<Held, Overflow> {
        let held = Held::take(&self.retries, self.limits.retries).ok_or(Overflow::Retries)?;
        if self.budget_rule.is_some() {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if b.tokens < 1.0 {
                return Err(Overflow::Budget);
            }
            b.tokens -= 1.0;
        }
        Ok(held)
    }

    /// Leave to open one more upstream connection, held while it is open.
    pub fn connection(&self) -> Result<Held, Overflow> {
        Held::take(&self.connections, self.limits.connections).ok_or(Overflow::Connections)
    }

    /// (requests in flight, waiting, retries in flight, connections open).
    pub fn counts(&self) -> (u32, u32, u32, u32) {
        let get = |c: &AtomicU32| c.load(Ordering::Acquire);
        (
            get(&self.active),
            get(&self.pending),
            get(&self.retries),
            get(&self.connections),
        )
    }
}

/// The guards of every backend Service, made again when a Service's settings change
/// (keeping the counts of what is in flight and open, and the retry budget's savings;
/// a new request limit starts with all its places free).
#[derive(Debug, Default)]
pub struct Breakers {
    by_service: Mutex<HashMap<Key, Arc<ServiceGuard>>>,
}

impl Breakers {
    pub fn service(
        &self,
        key: &Key,
        limits: Limits,
        budget: Option<RetryBudget>,
    ) -> Arc<ServiceGuard> {
        let mut map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(g) if g.limits == limits && g.budget_rule == budget => Arc::clone(g),
            old => {
                let mut g = ServiceGuard::new(limits, budget);
                if let Some(old) = old {
                    g.pending = Arc::clone(&old.pending);
                    g.active = Arc::clone(&old.active);
                    g.retries = Arc::clone(&old.retries);
                    g.connections = Arc::clone(&old.connections);
                    let saved = old.budget.lock().unwrap_or_else(|p| p.into_inner()).tokens;
                    g.budget.get_mut().unwrap_or_else(|p| p.into_inner()).tokens = saved;
                }
                let g = Arc::new(g);
                map.insert(key.clone(), Arc::clone(&g));
                g
            }
        }
    }

    /// Forgets Services nothing is using.
    pub fn sweep(&self) {
        let mut map = self.by_service.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, g| Arc::strong_count(g) > 1 || g.counts() != (0, 0, 0, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("Service".into(), "shop".into(), "cart".into())
    }

    #[tokio::test]
    async fn requests_over_the_limit_overflow_at_once_or_wait_their_turn() {
        let breakers = Breakers::default();
        let limits = Limits {
            requests: Some(2),
            pending: Some(1),
            ..Limits::default()
        };
        let g = breakers.service(&key(), limits, None);
        let a = g.admit().await.unwrap();
        let _b = g.admit().await.unwrap();
        // One may wait; it gets the place the first gives back.
        let waiting = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit().await.map(drop) })
        };
        tokio::task::yield_now().await;
        while g.counts().1 == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(g.admit().await.unwrap_err(), Overflow::Requests);
        drop(a);
        waiting.await.unwrap().unwrap();
        assert_eq!(g.counts(), (1, 0, 0, 0));
        // The same settings keep the guard; new ones take its counts over.
        assert!(Arc::ptr_eq(&g, &breakers.service(&key(), limits, None)));
        let other = breakers.service(&key(), Limits::default(), None);
        assert!(!Arc::ptr_eq(&g, &other));
        assert_eq!(
            other.counts(),
            (1, 0, 0, 0),
            "what is in flight still counts"
        );
        assert!(other.admit().await.is_ok());
    }

    #[tokio::test]
    async fn retries_have_their_limit_and_their_budget() {
        let limited = Breakers::default().service(
            &key(),
            Limits {
                retries: Some(1),
                ..Limits::default()
            },
            None,
        );
        let first = limited.retry().unwrap();
        assert_eq!(limited.retry().unwrap_err(), Overflow::Retries);
        drop(first);
        assert!(limited.retry().is_ok());

        // 20 % of 1,000 requests plus 3: 203 retries, then none.
        let budget = RetryBudget {
            ppm: 200_000,
            min_retries: 3,
        };
        let g = Breakers::default().service(&key(), Limits::default(), Some(budget));
        let mut allowed = 0;
        for _ in 0..1000 {
            let _admitted = g.admit().await.unwrap();
            for _ in 0..3 {
                allowed += usize::from(g.retry().is_ok());
            }
        }
        assert!((200..=203).contains(&allowed), "{allowed}");
    }

    #[test]
    fn connections_have_their_limit() {
        let g = Breakers::default().service(
            &key(),
            Limits {
                connections: Some(1),
                ..Limits::default()
            },
            None,
        );
        let c = g.connection().unwrap();
        assert_eq!(g.connection().unwrap_err(), Overflow::Connections);
        drop(c);
        assert!(g.connection().is_ok());
    }
}
