//! Per-connection publish rate limit: token buckets for messages and payload bytes per second.
//!
//! Each bucket holds one second's worth of its rate (the allowed burst) and refills
//! continuously. A client that publishes faster is disconnected (MQTT 5.0: 0x96 Message rate
//! too high) rather than slowed down, so one noisy device cannot take the broker's time.

use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: u64) -> Option<Bucket> {
        (rate > 0).then_some(Bucket {
            rate: rate as f64,
            tokens: rate as f64,
        })
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.rate);
    }
}

/// Limits of one connection; 0 = unlimited.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    last: Instant,
}

impl RateLimiter {
    pub(crate) fn new(messages_per_sec: u32, bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            messages: Bucket::new(u64::from(messages_per_sec)),
            bytes: Bucket::new(bytes_per_sec),
            last: Instant::now(),
        }
    }

    /// Takes one message of `bytes` payload bytes; false when over the limit.
    pub(crate) fn allow(&mut self, bytes: usize) -> bool {
        if self.messages.is_none() && self.bytes.is_none() {
            return true;
        }
        let now = Instant::now();
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut ok = true;
        if let Some(m) = &mut self.messages {
            m.refill(secs);
            ok &= m.tokens >= 1.0;
        }
        if let Some(b) = &mut self.bytes {
            b.refill(secs);
            ok &= b.tokens >= bytes as f64;
        }
        if ok {
            if let Some(m) = &mut self.messages {
                m.tokens -= 1.0;
            }
            if let Some(b) = &mut self.bytes {
                b.tokens -= bytes as f64;
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_and_bursts() {
        let mut r = RateLimiter::new(0, 0);
        assert!((0..10_000).all(|_| r.allow(1000)));
        let mut r = RateLimiter::new(3, 0);
        assert!(r.allow(1) && r.allow(1) && r.allow(1));
        assert!(!r.allow(1));
        let mut r = RateLimiter::new(0, 10);
        assert!(r.allow(6));
        assert!(!r.allow(6));
        assert!(r.allow(4));
    }
}
