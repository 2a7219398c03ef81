//! Local rate limits: a token bucket per rule (a TrafficFilter's `rateLimit`) and one
//! for the whole waypoint (`WEFT_WAYPOINT_RATE_LIMIT`). A request takes a token or is
//! answered 429 with `retry-after`, the seconds until the next token. A rule's bucket
//! outlives configuration changes that leave its limit as it was.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A rule's limit: `requests` per `interval`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub interval: Duration,
    pub burst: u32,
}

/// A route's buckets, by rule index, with the limit each was made for.
type RouteBuckets = HashMap<usize, (Limit, Arc<TokenBucket>)>;

/// The buckets of the rules, by route name and rule index.
#[derive(Debug, Default)]
pub struct Buckets {
    by_route: Mutex<HashMap<String, RouteBuckets>>,
}

impl Buckets {
    /// A token from the bucket of rule `index` of route `route`.
    pub fn take(&self, (route, index): (&str, usize), limit: Limit) -> Result<(), Duration> {
        let bucket = {
            let mut map = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
            if !map.contains_key(route) {
                map.insert(route.to_owned(), HashMap::new());
            }
            let rules = map.get_mut(route).expect("inserted above");
            match rules.get(&index) {
                Some((l, b)) if *l == limit => Arc::clone(b),
                _ => {
                    let b = Arc::new(TokenBucket::new(
                        limit.requests,
                        limit.interval,
                        limit.burst,
                    ));
                    rules.insert(index, (limit, Arc::clone(&b)));
                    b
                }
            }
        };
        bucket.take()
    }

    /// Forgets full buckets: taken again, they would start full anyway.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut map = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        for rules in map.values_mut() {
            rules.retain(|_, (_, b)| !b.full_at(now));
        }
        map.retain(|_, rules| !rules.is_empty());
    }
}

#[derive(Debug)]
pub struct TokenBucket {
    /// Tokens gained per second.
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `requests` per `interval`, up to `burst` at once; starts full.
    pub fn new(requests: u32, interval: Duration, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(requests.max(1)) / interval.as_secs_f64().max(0.001),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token at `now`, or says how long until there is one.
    pub fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let gained = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + gained).min(self.burst);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn full_at(&self, now: Instant) -> bool {
        let (tokens, last) = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate >= self.burst
    }
}

/// `retry-after` in whole seconds, rounded up, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_gives_its_burst_then_its_rate() {
        let b = TokenBucket::new(100, Duration::from_secs(1), 10);
        let t0 = Instant::now();
        assert!((0..10).all(|_| b.take_at(t0).is_ok()));
        let wait = b.take_at(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        // Offered 300 per second for 5 s after the burst is spent: 100 per second pass.
        let mut passed = 0;
        for i in 1..=1500u64 {
            let now = t0 + Duration::from_micros(i * 3333);
            passed += usize::from(b.take_at(now).is_ok());
        }
        assert!((498..=500).contains(&passed), "{passed}");
        // Idle, it fills up to its burst and no more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| b.take_at(later).is_ok()).count(), 10);
    }

    #[test]
    fn a_rule_keeps_its_bucket_while_its_limit_stays() {
        let buckets = Buckets::default();
        let limit = Limit {
            requests: 1,
            interval: Duration::from_secs(60),
            burst: 1,
        };
        assert!(buckets.take(("HTTPRoute shop/cart", 0), limit).is_ok());
        assert!(buckets.take(("HTTPRoute shop/cart", 0), limit).is_err());
        assert!(
            buckets.take(("HTTPRoute shop/cart", 1), limit).is_ok(),
            "another rule"
        );
        buckets.sweep();
        assert!(
            buckets.take(("HTTPRoute shop/cart", 0), limit).is_err(),
            "kept: not full"
        );
        let changed = Limit { burst: 2, ..limit };
        assert!(
            buckets.take(("HTTPRoute shop/cart", 0), changed).is_ok(),
            "a new limit"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(10)), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
        assert_eq!(retry_after(Duration::from_millis(2100)), 3);
        assert_eq!(retry_after(Duration::ZERO), 1);
    }
}
