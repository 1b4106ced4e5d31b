//! Sliding time windows per (rule, device) for `avg/min/max/sum/count(x, '5m')`.
//!
//! A window covers the samples whose message timestamp is in `(latest − window, latest]`,
//! where `latest` is the newest timestamp seen for that device. Samples arriving out of order
//! are inserted in place; samples already older than the window are dropped.
//!
//! Bounds (see [`WindowLimits`]): at most `max_samples_per_window` samples per buffer (the
//! oldest go first, so a very chatty device's aggregate covers its most recent samples), at
//! most `max_devices` devices with state per tenant (a new device first evicts idle devices,
//! then the least recently seen one), and devices not seen for `idle_ttl_ms` (or the longest
//! window, if longer) are swept.
//!
//! The engine keeps all of a device's rule states together in one [`DeviceSlot`], so a message
//! finds the state of every rule of its tenant with one map lookup.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// Memory bounds of window and alarm state. Worst case per tenant: `max_devices × windows
/// of the tenant's rules × max_samples_per_window × 16 bytes` (defaults, one window: 10 000 ×
/// 1 000 × 16 B = 160 MB, reached only if every device sends more than 1 000 samples per
/// window; a device sending every 10 s for a 5 minute window keeps 30 samples, 480 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowLimits {
    /// Samples kept per window and device; past it the oldest go.
    pub max_samples_per_window: usize,
    /// Devices with state per tenant (enforced per shard of the state map, so approximately).
    pub max_devices: usize,
    /// Devices not heard from for this long (or the longest window, if longer) are forgotten.
    pub idle_ttl_ms: i64,
}

impl Default for WindowLimits {
    fn default() -> Self {
        WindowLimits {
            max_samples_per_window: 1_000,
            max_devices: 10_000,
            idle_ttl_ms: 3_600_000,
        }
    }
}

/// What a window holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Summary {
    /// Non-null samples (what `count` returns).
    pub count: u64,
    pub numeric_count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// One buffer's samples, ordered by timestamp. Non-numeric samples (only possible when the
/// buffer feeds `count` alone) are stored as NaN.
#[derive(Debug, Default)]
struct Buffer {
    samples: VecDeque<(i64, f64)>,
}

impl Buffer {
    fn push(&mut self, ts: i64, value: Option<f64>, window_ms: i64, cap: usize) {
        let v = value.unwrap_or(f64::NAN);
        match self.samples.back() {
            Some(&(last, _)) if ts < last => {
                let at = self.samples.partition_point(|&(t, _)| t <= ts);
                self.samples.insert(at, (ts, v));
            }
            _ => self.samples.push_back((ts, v)),
        }
        let newest = self.samples.back().map_or(ts, |s| s.0);
        let horizon = newest.saturating_sub(window_ms);
        while self.samples.front().is_some_and(|&(t, _)| t <= horizon) {
            self.samples.pop_front();
        }
        while self.samples.len() > cap.max(1) {
            self.samples.pop_front();
        }
    }

    fn summary(&self) -> Summary {
        let mut s = Summary {
            count: self.samples.len() as u64,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Summary::default()
        };
        for &(_, v) in &self.samples {
            if v.is_nan() {
                continue;
            }
            s.numeric_count += 1;
            s.sum += v;
            s.min = s.min.min(v);
            s.max = s.max.max(v);
        }
        s
    }
}

/// Per-device state of one rule: its window buffers and what the WHERE clause said last
/// (for alarms that clear when the condition turns false).
///
/// The first buffer is held inline: most rules have one window, and every message touches
/// this state, so one pointer less to chase is one cache miss less per rule on ingest.
#[derive(Debug, Default)]
pub(crate) struct DeviceState {
    first: Buffer,
    more: Vec<Buffer>,
    pub last_match: Option<bool>,
}

/// A device id as a map key, stored inline when short (device ids usually are) so that a
/// lookup compares bytes in the map's own memory instead of following a pointer.
#[derive(Debug, Clone)]
enum DeviceKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

const INLINE_KEY: usize = 22;

impl DeviceKey {
    fn new(id: &str) -> DeviceKey {
        let b = id.as_bytes();
        if b.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..b.len()].copy_from_slice(b);
            DeviceKey::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            DeviceKey::Heap(b.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            DeviceKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            DeviceKey::Heap(b) => b,
        }
    }
}

// Hash and equality are those of the bytes, as `Borrow<[u8]>` requires.
impl Hash for DeviceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for DeviceKey {}

impl Borrow<[u8]> for DeviceKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl DeviceState {
    /// Adds a sample (`None` value = non-numeric, counted only) and returns the summary.
    pub(crate) fn push(
        &mut self,
        buffer: usize,
        ts: i64,
        value: Option<Option<f64>>,
        window_ms: i64,
        cap: usize,
    ) -> Summary {
        let b = match buffer.checked_sub(1) {
            None => &mut self.first,
            Some(i) => {
                if self.more.len() <= i {
                    self.more.resize_with(i + 1, Buffer::default);
                }
                &mut self.more[i]
            }
        };
        match value {
            Some(v) => b.push(ts, v, window_ms, cap),
            // A null sample adds nothing, but time still moves the window.
            None => {
                let newest = b.samples.back().map_or(ts, |s| s.0.max(ts));
                let horizon = newest.saturating_sub(window_ms);
                while b.samples.front().is_some_and(|&(t, _)| t <= horizon) {
                    b.samples.pop_front();
                }
            }
        }
        b.summary()
    }
}

/// One device's states for all the stateful rules of its tenant, each under the rule's state
/// id (which changes when the rule's SQL does, so stale state is never reused).
#[derive(Debug, Default)]
pub(crate) struct DeviceSlot {
    generation: u64,
    rules: Vec<(u64, DeviceState)>,
}

impl DeviceSlot {
    /// Drops the states of rules that are gone, once per change of the tenant's rule set.
    pub(crate) fn prune(&mut self, generation: u64, live: &[u64]) {
        if self.generation != generation {
            self.generation = generation;
            self.rules.retain(|(id, _)| live.contains(id));
        }
    }

    /// The state of one rule, created empty if needed. A linear scan: a tenant has few
    /// stateful rules and they sit next to each other in memory.
    pub(crate) fn state(&mut self, id: u64) -> &mut DeviceState {
        let at = match self.rules.iter().position(|(r, _)| *r == id) {
            Some(at) => at,
            None => {
                self.rules.push((id, DeviceState::default()));
                self.rules.len() - 1
            }
        };
        &mut self.rules[at].1
    }

    pub(crate) fn has(&self, id: u64) -> bool {
        self.rules.iter().any(|(r, _)| *r == id)
    }
}

/// Devices' states, bounded in count and swept when idle.
#[derive(Debug)]
pub(crate) struct DeviceMap<V> {
    devices: HashMap<DeviceKey, (i64, V)>,
    calls_since_sweep: u32,
}

impl<V> Default for DeviceMap<V> {
    fn default() -> Self {
        DeviceMap {
            devices: HashMap::new(),
            calls_since_sweep: 0,
        }
    }
}

/// How often (in lookups) a map sweeps idle devices even when not at its cap.
const SWEEP_EVERY: u32 = 4_096;

impl<V: Default> DeviceMap<V> {
    /// The device's state, created if needed within `max_devices` (always `Some`; an
    /// `Option` only because a lookup after the insert is how we avoid allocating per
    /// message). `now_ms` is wall time, used only for idleness.
    pub(crate) fn get(
        &mut self,
        device_id: &str,
        now_ms: i64,
        ttl_ms: i64,
        max_devices: usize,
    ) -> Option<&mut V> {
        self.calls_since_sweep += 1;
        if self.calls_since_sweep >= SWEEP_EVERY {
            self.calls_since_sweep = 0;
            self.sweep(now_ms, ttl_ms);
        }
        // One hash and no allocation for a known device: this runs for every message.
        let key = device_id.as_bytes();
        if !self.devices.contains_key(key) {
            if self.devices.len() >= max_devices.max(1) {
                self.sweep(now_ms, ttl_ms);
            }
            if self.devices.len() >= max_devices.max(1) {
                let oldest = self
                    .devices
                    .iter()
                    .min_by_key(|(_, (touched, _))| *touched)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.devices.remove(&k);
                }
            }
            self.devices
                .insert(DeviceKey::new(device_id), (now_ms, V::default()));
        }
        let (touched, v) = self.devices.get_mut(key)?;
        *touched = now_ms;
        Some(v)
    }

    fn sweep(&mut self, now_ms: i64, ttl_ms: i64) {
        let cutoff = now_ms.saturating_sub(ttl_ms);
        self.devices.retain(|_, (touched, _)| *touched > cutoff);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.devices.values().map(|(_, v)| v)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_inline_and_heap_agree_with_bytes() {
        let mut map = DeviceMap::<DeviceState>::default();
        let long = "a-device-id-longer-than-twenty-two-bytes";
        for id in ["d1", "", long, "exactly-22-bytes-long!"] {
            map.get(id, 0, 1_000, 10).unwrap().last_match = Some(true);
        }
        assert_eq!(map.len(), 4);
        assert!(matches!(DeviceKey::new(long), DeviceKey::Heap(_)));
        assert!(matches!(
            DeviceKey::new("exactly-22-bytes-long!"),
            DeviceKey::Inline { .. }
        ));
        for id in ["d1", "", long, "exactly-22-bytes-long!"] {
            assert_eq!(
                map.get(id, 0, 1_000, 10).unwrap().last_match,
                Some(true),
                "{id}"
            );
        }
        assert_eq!(map.get("d2", 0, 1_000, 10).unwrap().last_match, None);
    }

    #[test]
    fn slots_keep_one_state_per_rule_and_prune_dead_rules() {
        let mut slot = DeviceSlot::default();
        slot.state(7).last_match = Some(true);
        slot.state(9).last_match = Some(false);
        assert_eq!(slot.state(7).last_match, Some(true));
        assert!(slot.has(9));
        slot.prune(1, &[7]);
        assert!(slot.has(7) && !slot.has(9));
        assert_eq!(slot.state(9).last_match, None, "a new rule starts empty");
        // Same generation: no second pruning pass.
        slot.prune(1, &[7]);
        assert!(slot.has(9));
    }

    #[test]
    fn several_buffers_are_independent() {
        let mut d = DeviceState::default();
        d.push(0, 1, Some(Some(1.0)), 10_000, 10);
        d.push(2, 1, Some(Some(5.0)), 10_000, 10);
        assert_eq!(d.push(1, 2, Some(Some(7.0)), 10_000, 10).sum, 7.0);
        assert_eq!(d.push(0, 2, None, 10_000, 10).sum, 1.0);
        assert_eq!(d.push(2, 2, None, 10_000, 10).sum, 5.0);
    }

    fn push(d: &mut DeviceState, ts: i64, v: f64) -> Summary {
        d.push(0, ts, Some(Some(v)), 10_000, 100)
    }

    #[test]
    fn window_slides_with_message_time() {
        let mut d = DeviceState::default();
        assert_eq!(push(&mut d, 1_000, 10.0).count, 1);
        let s = push(&mut d, 5_000, 20.0);
        assert_eq!((s.count, s.sum, s.min, s.max), (2, 30.0, 10.0, 20.0));
        // At 11 000 the sample of 1 000 is exactly one window old and leaves.
        let s = push(&mut d, 11_000, 30.0);
        assert_eq!((s.count, s.sum, s.min, s.max), (2, 50.0, 20.0, 30.0));
        // A late sample inside the window is kept, one outside it is dropped.
        let s = push(&mut d, 6_000, 40.0);
        assert_eq!((s.count, s.max), (3, 40.0));
        let s = push(&mut d, 500, 99.0);
        assert_eq!((s.count, s.max), (3, 40.0));
    }

    #[test]
    fn null_samples_count_nothing_but_move_time() {
        let mut d = DeviceState::default();
        push(&mut d, 0, 1.0);
        let s = d.push(0, 20_000, None, 10_000, 100);
        assert_eq!(s.count, 0);
    }

    #[test]
    fn cap_keeps_the_newest_samples() {
        let mut d = DeviceState::default();
        for i in 0..10 {
            d.push(0, i, Some(Some(i as f64)), 10_000, 3);
        }
        let s = d.push(0, 10, Some(Some(10.0)), 10_000, 3);
        assert_eq!((s.count, s.min, s.max), (3, 8.0, 10.0));
    }

    #[test]
    fn device_cap_evicts_idle_then_least_recent() {
        let mut map = DeviceMap::<DeviceState>::default();
        map.get("a", 0, 1_000, 2);
        map.get("b", 500, 1_000, 2);
        // "a" is idle at 1 200 (ttl 1 000), "b" is not.
        map.get("c", 1_200, 1_000, 2);
        assert_eq!(map.len(), 2);
        assert!(map.devices.contains_key(&b"b"[..]) && map.devices.contains_key(&b"c"[..]));
        // Nobody idle: the least recently seen ("b") goes.
        map.get("d", 1_300, 1_000, 2);
        assert!(map.devices.contains_key(&b"c"[..]) && map.devices.contains_key(&b"d"[..]));
    }
}
