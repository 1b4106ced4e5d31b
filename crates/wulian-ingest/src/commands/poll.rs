//! Commands for devices that fetch them: request/response transports (CoAP) cannot be pushed
//! to, so a command for such a device waits here until the device's next request carries it
//! back ("delivery on the next uplink").
//!
//! A device counts as *polling* once it has made a request over such a transport within
//! [`POLLER_TTL_MS`]; only then is a command that no MQTT subscription took kept here rather
//! than finished at once as `undelivered`, so MQTT devices keep their immediate answer.
//! Everything is bounded: polling devices, and commands queued per device.

use std::collections::{HashMap, VecDeque};

/// How long a device keeps counting as polling after its last request. NB-IoT devices sleep
/// for hours between uplinks; a day covers the usual reporting intervals.
pub const POLLER_TTL_MS: i64 = 24 * 3600 * 1000;
/// Polling devices remembered at once; beyond it, idle ones are forgotten first.
pub const MAX_POLLERS: usize = 200_000;
/// Commands queued per device; one more is `undelivered`.
pub const MAX_QUEUED_PER_DEVICE: usize = 32;

type DeviceKey = (String, String);

/// One queued command: its id and the JSON body the device receives.
struct Queued {
    id: String,
    body: String,
}

#[derive(Default)]
pub(super) struct PollQueues {
    /// (tenant, device) → last request (ms).
    pollers: HashMap<DeviceKey, i64>,
    queued: HashMap<DeviceKey, VecDeque<Queued>>,
}

/// What [`PollQueues::take`] hands out: commands that fit, and commands that never can.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Taken {
    /// (id, JSON body), oldest first.
    pub fits: Vec<(String, String)>,
    /// Ids of commands whose body alone exceeds the budget.
    pub too_large: Vec<String>,
}

impl PollQueues {
    /// Records a request of the device at `now`. Returns false when the table is full of
    /// devices seen within the TTL (the device is then treated as not polling).
    pub fn note(&mut self, tenant: &str, device: &str, now: i64) -> bool {
        let key = (tenant.to_string(), device.to_string());
        if let Some(seen) = self.pollers.get_mut(&key) {
            *seen = now;
            return true;
        }
        if self.pollers.len() >= MAX_POLLERS {
            // Rare (only at capacity), so a full scan is acceptable here.
            self.pollers
                .retain(|_, seen| now.saturating_sub(*seen) < POLLER_TTL_MS);
            if self.pollers.len() >= MAX_POLLERS {
                return false;
            }
        }
        self.pollers.insert(key, now);
        true
    }

    /// Queues a command for a polling device. False when the device is not polling (never
    /// seen, or not within the TTL) or its queue is full.
    pub fn queue(&mut self, tenant: &str, device: &str, id: &str, body: String, now: i64) -> bool {
        let key = (tenant.to_string(), device.to_string());
        let polling = self
            .pollers
            .get(&key)
            .is_some_and(|seen| now.saturating_sub(*seen) < POLLER_TTL_MS);
        if !polling {
            return false;
        }
        let queue = self.queued.entry(key).or_default();
        if queue.len() >= MAX_QUEUED_PER_DEVICE {
            return false;
        }
        queue.push_back(Queued {
            id: id.to_string(),
            body,
        });
        true
    }

    /// Removes the device's queued commands, oldest first, while they fit in `budget` bytes
    /// as a JSON array; the rest stay queued for the next request. A command that alone
    /// exceeds `ceiling` (the largest budget there ever is) is removed and reported in
    /// `too_large`.
    pub fn take(&mut self, tenant: &str, device: &str, budget: usize, ceiling: usize) -> Taken {
        let key = (tenant.to_string(), device.to_string());
        let mut taken = Taken::default();
        let Some(queue) = self.queued.get_mut(&key) else {
            return taken;
        };
        // "[" + bodies joined by "," + "]".
        let mut used = 2;
        while let Some(next) = queue.front() {
            if 2 + next.body.len() > ceiling {
                if let Some(big) = queue.pop_front() {
                    taken.too_large.push(big.id);
                }
                continue;
            }
            let cost = next.body.len() + usize::from(!taken.fits.is_empty());
            if used + cost > budget {
                break;
            }
            used += cost;
            if let Some(q) = queue.pop_front() {
                taken.fits.push((q.id, q.body));
            }
        }
        if queue.is_empty() {
            self.queued.remove(&key);
        }
        taken
    }

    /// Drops a command from its device's queue. True when it was still queued (never fetched).
    pub fn remove(&mut self, tenant: &str, device: &str, id: &str) -> bool {
        let key = (tenant.to_string(), device.to_string());
        let Some(queue) = self.queued.get_mut(&key) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|q| q.id != id);
        let removed = queue.len() != before;
        if queue.is_empty() {
            self.queued.remove(&key);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_polling_devices_get_queued_commands() {
        let mut q = PollQueues::default();
        assert!(!q.queue("t", "d", "c-1", "{}".into(), 1000));
        assert!(q.note("t", "d", 1000));
        assert!(q.queue("t", "d", "c-1", "{}".into(), 2000));
        // Another tenant's device of the same id is another device.
        assert!(!q.queue("u", "d", "c-2", "{}".into(), 2000));
        // Past the TTL the device no longer counts as polling.
        assert!(!q.queue("t", "d", "c-3", "{}".into(), 1000 + POLLER_TTL_MS));
    }

    #[test]
    fn take_respects_the_budget_and_order() {
        let mut q = PollQueues::default();
        q.note("t", "d", 0);
        for (id, body) in [("a", "{\"n\":1}"), ("b", "{\"n\":22}"), ("c", "{\"n\":3}")] {
            assert!(q.queue("t", "d", id, body.to_string(), 1));
        }
        // [{"n":1},{"n":22}] is 18 bytes: a and b fit, c waits.
        let taken = q.take("t", "d", 18, 100);
        let ids: Vec<_> = taken.fits.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(taken.too_large.is_empty());
        let taken = q.take("t", "d", 18, 100);
        assert_eq!(taken.fits, vec![("c".to_string(), "{\"n\":3}".to_string())]);
        assert_eq!(q.take("t", "d", 18, 100), Taken::default());
    }

    #[test]
    fn oversized_commands_are_reported_not_kept() {
        let mut q = PollQueues::default();
        q.note("t", "d", 0);
        q.queue("t", "d", "big", "x".repeat(100), 1);
        q.queue("t", "d", "small", "{}".into(), 1);
        // A smaller budget this time keeps it queued; only the ceiling makes it undeliverable.
        let taken = q.take("t", "d", 10, 200);
        assert_eq!(taken, Taken::default());
        let taken = q.take("t", "d", 10, 50);
        assert_eq!(taken.too_large, vec!["big".to_string()]);
        assert_eq!(taken.fits.len(), 1);
    }

    #[test]
    fn queues_and_pollers_are_bounded() {
        let mut q = PollQueues::default();
        q.note("t", "d", 0);
        for i in 0..MAX_QUEUED_PER_DEVICE {
            assert!(q.queue("t", "d", &format!("c-{i}"), "{}".into(), 1));
        }
        assert!(!q.queue("t", "d", "one-more", "{}".into(), 1));
        assert!(q.remove("t", "d", "c-0"));
        assert!(!q.remove("t", "d", "c-0"));

        let mut q = PollQueues::default();
        for i in 0..MAX_POLLERS {
            q.note("t", &i.to_string(), 0);
        }
        assert!(!q.note("t", "new", 1), "full of recent pollers");
        assert!(
            q.note("t", "new", POLLER_TTL_MS + 1),
            "idle ones are forgotten"
        );
    }
}
