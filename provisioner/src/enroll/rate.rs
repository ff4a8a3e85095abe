//! Per-source rate limiting of enrollment attempts: a token bucket per IP
//! address, in a bounded map (the least recently used source is forgotten when
//! it is full, which can only make a limit more lenient, never lock anyone out).
//!
//! Pure: `now` comes in as an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests allowed at once.
    pub burst: u32,
    /// Requests per second refilled.
    pub per_sec: f64,
    /// Sources remembered.
    pub sources: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `source`; false when it has none left.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.limit.sources {
            // Forget the source that has been quiet longest (likely full again).
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let limit = self.limit;
        let b = self.buckets.entry(source).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limit.per_sec).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_source() {
        let mut r = RateLimiter::new(RateLimit {
            burst: 3,
            per_sec: 2.0,
            sources: 2,
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t0)), "burst of 3");
        assert!(!r.allow(a, t0), "4th refused");
        assert!(r.allow(b, t0), "another source has its own bucket");
        assert!(
            r.allow(a, t0 + Duration::from_millis(500)),
            "one token after 0.5 s at 2/s"
        );
        assert!(!r.allow(a, t0 + Duration::from_millis(500)));
        let c: IpAddr = [10, 0, 0, 3].into();
        assert!(
            r.allow(c, t0 + Duration::from_secs(1)),
            "full map forgets the quietest"
        );
        assert!(r.buckets.len() <= 2);
    }
}
