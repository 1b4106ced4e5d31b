//! Per-peer request rate: a token bucket per IP address (a device behind a carrier NAT shares
//! its address with others, so the default leaves room). Bounded: at most `max_peers` buckets;
//! idle peers (full buckets) are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often a full table is swept for idle peers at most; between sweeps, new peers of a
/// full table are refused.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_peers: usize,
    buckets: HashMap<IpAddr, Bucket>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    /// `rate` requests per second (0: unlimited) with bursts of up to `burst`.
    pub fn new(rate: u32, burst: u32, max_peers: usize) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(rate).max(1)),
            max_peers: max_peers.max(1),
            buckets: HashMap::new(),
            last_sweep: None,
        }
    }

    /// Takes one request's token. Err(seconds until one is available) when over the rate.
    pub fn admit(&mut self, peer: IpAddr, now: Instant) -> Result<(), u32> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= self.max_peers {
            self.sweep(now);
            if self.buckets.len() >= self.max_peers {
                return Err(1);
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / rate).ceil();
            // At most a few seconds for any positive rate; the cast cannot truncate in practice.
            Err(wait.clamp(1.0, f64::from(u32::MAX)) as u32)
        }
    }

    /// Drops the buckets of peers idle long enough to be full again.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn bursts_then_the_rate() {
        let mut r = RateLimiter::new(2, 4, 10);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(r.admit(ip(1), t0), Ok(()));
        }
        assert_eq!(r.admit(ip(1), t0), Err(1));
        // Another peer has its own bucket.
        assert_eq!(r.admit(ip(2), t0), Ok(()));
        // Half a second at 2/s refills one token.
        assert_eq!(r.admit(ip(1), t0 + Duration::from_millis(500)), Ok(()));
        assert!(r.admit(ip(1), t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut r = RateLimiter::new(0, 0, 1);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert_eq!(r.admit(ip((i % 250) as u8), t0), Ok(()));
        }
    }

    #[test]
    fn the_peer_table_is_bounded() {
        let mut r = RateLimiter::new(1, 1, 2);
        let t0 = Instant::now();
        assert!(r.admit(ip(1), t0).is_ok());
        assert!(r.admit(ip(2), t0).is_ok());
        // Both busy: a third peer is refused until one is idle.
        assert!(r.admit(ip(3), t0).is_err());
        assert!(r.admit(ip(3), t0 + Duration::from_secs(5)).is_ok());
        assert!(r.buckets.len() <= 2);
    }
}
