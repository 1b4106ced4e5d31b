//! Message deduplication (RFC 7252 §4.5): a retransmitted request (same peer, same message id
//! within EXCHANGE_LIFETIME) is not processed again — its first response is sent again, so a
//! telemetry message whose ACK was lost is stored once and a command handed out in that ACK is
//! handed out again, not lost. Bounded: when full, the oldest exchange is forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Key = (SocketAddr, u16);

#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// New: the caller processes it (and must later call `complete` or `forget`).
    New,
    /// The first copy is still being processed: drop this one (the peer will retransmit).
    InProgress,
    /// Already answered: send these bytes again.
    Answered(Vec<u8>),
}

#[derive(Debug)]
enum State {
    InProgress,
    Answered(Vec<u8>),
}

pub struct DedupCache {
    lifetime: Duration,
    capacity: usize,
    entries: HashMap<Key, (Instant, State)>,
    /// Insertion order, for expiry and eviction: (when inserted, key).
    order: VecDeque<(Instant, Key)>,
}

impl DedupCache {
    pub fn new(capacity: usize, lifetime: Duration) -> DedupCache {
        DedupCache {
            lifetime,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Looks the exchange up and, when it is new, records it as in progress. The second
    /// value counts exchanges evicted early to make room.
    pub fn check(&mut self, peer: SocketAddr, message_id: u16, now: Instant) -> (Seen, u64) {
        self.expire(now);
        let key = (peer, message_id);
        if let Some((_, state)) = self.entries.get(&key) {
            return match state {
                State::InProgress => (Seen::InProgress, 0),
                State::Answered(bytes) => (Seen::Answered(bytes.clone()), 0),
            };
        }
        let mut evicted = 0;
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some((at, old)) => {
                    if self.entries.get(&old).is_some_and(|(t, _)| *t == at) {
                        self.entries.remove(&old);
                        evicted += 1;
                    }
                }
                None => break,
            }
        }
        self.entries.insert(key, (now, State::InProgress));
        self.order.push_back((now, key));
        (Seen::New, evicted)
    }

    /// Stores the response sent for an exchange, for retransmissions.
    pub fn complete(&mut self, peer: SocketAddr, message_id: u16, response: Vec<u8>) {
        if let Some((_, state)) = self.entries.get_mut(&(peer, message_id)) {
            *state = State::Answered(response);
        }
    }

    /// Forgets an exchange that was refused before processing (so a retry is processed).
    pub fn forget(&mut self, peer: SocketAddr, message_id: u16) {
        self.entries.remove(&(peer, message_id));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < self.lifetime {
                break;
            }
            self.order.pop_front();
            // The key may have been forgotten and reused since; only drop this very entry.
            if self.entries.get(&key).is_some_and(|(t, _)| *t == at) {
                self.entries.remove(&key);
            }
        }
        // `forget` leaves stale order entries behind; keep them from outgrowing the cache.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let entries = &self.entries;
            self.order
                .retain(|(at, key)| entries.get(key).is_some_and(|(t, _)| t == at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_retransmission_gets_the_first_answer() {
        let mut c = DedupCache::new(10, Duration::from_secs(247));
        let t0 = Instant::now();
        assert_eq!(c.check(peer(1), 5, t0).0, Seen::New);
        assert_eq!(c.check(peer(1), 5, t0).0, Seen::InProgress);
        c.complete(peer(1), 5, b"ack".to_vec());
        assert_eq!(c.check(peer(1), 5, t0).0, Seen::Answered(b"ack".to_vec()));
        // Another peer's message id 5 is another exchange.
        assert_eq!(c.check(peer(2), 5, t0).0, Seen::New);
        // After the lifetime the id is new again.
        let later = t0 + Duration::from_secs(248);
        assert_eq!(c.check(peer(1), 5, later).0, Seen::New);
    }

    #[test]
    fn the_cache_is_bounded_oldest_first() {
        let mut c = DedupCache::new(3, Duration::from_secs(247));
        let t0 = Instant::now();
        for id in 0..3 {
            assert_eq!(c.check(peer(1), id, t0), (Seen::New, 0));
        }
        assert_eq!(c.check(peer(1), 3, t0), (Seen::New, 1));
        assert_eq!(c.len(), 3);
        // Id 0 was evicted; 1 is still known.
        assert_eq!(c.check(peer(1), 1, t0).0, Seen::InProgress);
        assert_eq!(c.check(peer(1), 0, t0).0, Seen::New);
    }

    #[test]
    fn forgotten_exchanges_are_processed_again() {
        let mut c = DedupCache::new(2, Duration::from_secs(247));
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(c.check(peer(1), 9, t0).0, Seen::New);
            c.forget(peer(1), 9);
        }
        // Stale order entries are swept once they pass twice the capacity.
        assert!(c.order.len() <= 2 * 2 + 1, "{}", c.order.len());
    }
}
