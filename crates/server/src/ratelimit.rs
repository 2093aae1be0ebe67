//! Per-token request budgets: a token bucket per API token, refilled at
//! `RateLimit::per_second` up to `RateLimit::burst`. Only live tokens get a
//! bucket (the check runs after authentication), so their number is
//! bounded by the tokens that exist. The budget is per server process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token`'s budget: Ok, or how long until the
    /// next request would be allowed.
    pub fn take(&self, token: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let RateLimit { per_second, burst } = self.limit;
        // A poisoned lock only means a thread panicked mid-update; the buckets are still numbers.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up by reference: a token's bucket is made once, not on every request.
        if !buckets.contains_key(token) {
            buckets.insert(token.to_string(), Bucket { tokens: burst, at: now });
        }
        let Some(b) = buckets.get_mut(token) else {
            return Ok(());
        };
        let refill = now.duration_since(b.at).as_secs_f64() * per_second;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second.max(f64::MIN_POSITIVE)))
        }
    }

    /// Whole seconds a refused caller should wait (`Retry-After`).
    pub fn retry_after_secs(wait: Duration) -> u64 {
        wait.as_secs_f64().ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills() {
        let r = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert!(r.take("a").is_ok());
        }
        let wait = r.take("a").expect_err("the fourth request at once is over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(RateLimiter::retry_after_secs(wait), 1);
        // Another token has its own bucket.
        assert!(r.take("b").is_ok());
        std::thread::sleep(Duration::from_millis(550));
        assert!(r.take("a").is_ok(), "half a second refills one request at 2/s");
    }
}
