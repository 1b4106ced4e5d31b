//! Retention policies and what an enforcement has to do: the store-wide floor, the per-device
//! floors above it, and which partitions lose raw data whole or in part (see DESIGN.md,
//! Retention). The writer thread carries the plan out (`wal::writer`, `storage`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::head::Head;
use crate::manifest::DeviceFloors;
use crate::storage::partition_of;

/// How long raw points are kept: per device, per tenant, or by default. Lookup order device →
/// tenant → default; `None` (at any level) keeps the data forever. Applied by
/// [`crate::Tsdb::enforce_retention_policy`], a whole partition at a time per device.
///
/// Rollups are not affected: their retention is store-wide ([`crate::Config::rollup_1m_retention`],
/// [`crate::Config::rollup_1h_retention`]), and they keep answering aggregates for raw data a
/// policy dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// For devices named in neither map. `None` keeps their data forever.
    pub default: Option<Duration>,
    /// Per tenant, overriding `default`; `None` keeps the tenant's data forever.
    pub tenants: HashMap<String, Option<Duration>>,
    /// Per (tenant, device), overriding the tenant's and the default; `None` keeps forever.
    pub devices: HashMap<(String, String), Option<Duration>>,
}

impl RetentionPolicy {
    /// The same retention for every device (`None`: keep everything).
    pub fn uniform(default: Option<Duration>) -> RetentionPolicy {
        RetentionPolicy {
            default,
            ..RetentionPolicy::default()
        }
    }

    /// The retention of a device's data: its own, else its tenant's, else the default.
    pub fn retention_of(&self, tenant: &str, device: &str) -> Option<Duration> {
        if !self.devices.is_empty()
            && let Some(r) = self.devices.get(&(tenant.to_string(), device.to_string()))
        {
            return *r;
        }
        match self.tenants.get(tenant) {
            Some(r) => *r,
            None => self.default,
        }
    }

    /// The longest retention any device can have (a device named nowhere gets the default),
    /// `None` if some data is kept forever. The store-wide floor never rises above
    /// `now - longest`, so it never drops what a long retention keeps.
    pub fn longest(&self) -> Option<Duration> {
        let mut longest = self.default?;
        for r in self.tenants.values().chain(self.devices.values()) {
            longest = longest.max((*r)?);
        }
        Some(longest)
    }

    /// Whether the policy drops anything at all.
    pub(crate) fn limits_anything(&self) -> bool {
        self.default.is_some()
            || self.tenants.values().any(Option::is_some)
            || self.devices.values().any(Option::is_some)
    }
}

/// What [`crate::Tsdb::enforce_retention_policy`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Block files deleted whole: below the store-wide floor, or every series in them expired.
    pub files_deleted: usize,
    /// Partitions rewritten without the chunks of their expired series (like a compaction;
    /// their rollups are rewritten too and keep summarising the dropped series).
    pub partitions_rewritten: usize,
    /// Block files those rewrites replaced.
    pub files_rewritten: usize,
    /// Series whose raw data is all gone now (they leave `keys` and `latest`).
    pub series_dropped: usize,
    /// Partitions that should have lost raw data but could not be rewritten (a damaged chunk;
    /// logged). Their expired points stay hidden; the next call tries again.
    pub partitions_failed: usize,
    /// The store-wide floor after the call (ms; points below it are gone for every device).
    pub floor: i64,
    /// Devices with a floor of their own above the store-wide one.
    pub device_floors: usize,
}

/// The floor of a retention at `now_ms`: the start of the partition the cutoff falls in, so
/// that only whole partitions go.
pub(crate) fn floor_at(now_ms: i64, retention: Duration, partition_ms: i64) -> i64 {
    let r = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    partition_of(now_ms.saturating_sub(r).max(0), partition_ms).0
}

/// The device floors after an enforcement: for every device with data in the head or a floor
/// already, the higher of its current floor and the policy's; only those above the store-wide
/// floor `global` are kept (the others are covered by it).
pub(crate) fn device_floors(
    head: &Head,
    policy: &RetentionPolicy,
    now_ms: i64,
    partition_ms: i64,
    global: i64,
) -> DeviceFloors {
    let old = &head.manifest.device_floors;
    let mut next = DeviceFloors::default();
    let mut consider = |tenant: &str, device: &str| {
        let policy_floor = policy
            .retention_of(tenant, device)
            .map_or(i64::MIN, |r| floor_at(now_ms, r, partition_ms));
        let floor = policy_floor.max(old.get(tenant, device));
        if floor > global {
            next.insert(tenant, device, floor);
        }
    };
    for (tenant, device) in head.devices() {
        consider(tenant, device);
    }
    for (tenant, device, _) in old.iter() {
        consider(tenant, device);
    }
    next
}

/// Partitions that lose raw data to device floors (the store-wide floor's are handled by the
/// flush, as before), ascending.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Affected {
    /// Every live chunk in them is expired: their files are deleted whole.
    pub whole: Vec<(i64, i64)>,
    /// Some chunks are expired, others not: rewritten without the expired ones.
    pub rewrite: Vec<(i64, i64)>,
}

impl Affected {
    pub(crate) fn is_empty(&self) -> bool {
        self.whole.is_empty() && self.rewrite.is_empty()
    }
}

/// Sorts the files of the partitions below the highest device floor (and above `global`) by
/// what `floors` does to them. A chunk is expired when its newest point is below its series'
/// device floor; chunks of deleted series count for nothing; a file that held chunks hidden at
/// open (below a floor stored by an interrupted enforcement) counts as having expired ones.
pub(crate) fn classify(head: &Head, floors: &DeviceFloors, global: i64) -> Affected {
    if floors.is_empty() {
        return Affected::default();
    }
    let top = floors.max();
    let candidates: Vec<_> = head
        .files
        .iter()
        .filter(|f| f.entry.partition.1 <= top && f.entry.max_ts >= global)
        .collect();
    if candidates.is_empty() {
        return Affected::default();
    }
    // Every live series' floor (the store-wide one when its device has none).
    let live: HashMap<u32, i64> = head
        .iter()
        .map(|(t, d, _, s)| (s.id(), global.max(floors.get(t, d))))
        .collect();
    // partition → (some expired, some kept)
    let mut parts: BTreeMap<(i64, i64), (bool, bool)> = BTreeMap::new();
    for f in candidates {
        let state = parts.entry(f.entry.partition).or_default();
        state.0 |= f.hidden_at_open > 0;
        for (id, meta) in &f.chunks {
            match live.get(id) {
                Some(floor) if meta.max_ts < *floor => state.0 = true,
                Some(_) => state.1 = true,
                None => {}
            }
        }
    }
    let mut out = Affected::default();
    for (part, (expired, kept)) in parts {
        match (expired, kept) {
            (true, false) => out.whole.push(part),
            (true, true) => out.rewrite.push(part),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn lookup_order_and_longest() {
        let mut p = RetentionPolicy::uniform(Some(30 * DAY));
        p.tenants.insert("a".into(), Some(7 * DAY));
        p.tenants.insert("forever".into(), None);
        p.devices
            .insert(("a".into(), "sensor-1".into()), Some(2 * DAY));
        p.devices.insert(("b".into(), "keep".into()), None);
        assert_eq!(p.retention_of("a", "sensor-1"), Some(2 * DAY));
        assert_eq!(p.retention_of("a", "other"), Some(7 * DAY));
        assert_eq!(p.retention_of("b", "other"), Some(30 * DAY));
        assert_eq!(p.retention_of("b", "keep"), None);
        assert_eq!(p.retention_of("forever", "x"), None);
        assert_eq!(p.longest(), None);
        p.tenants.remove("forever");
        p.devices.remove(&("b".into(), "keep".into()));
        p.devices
            .insert(("b".into(), "long".into()), Some(90 * DAY));
        assert_eq!(p.longest(), Some(90 * DAY));
        assert!(p.limits_anything());
        assert!(!RetentionPolicy::uniform(None).limits_anything());
        assert_eq!(RetentionPolicy::uniform(None).longest(), None);
    }

    #[test]
    fn floors_are_partition_starts() {
        let day = 86_400_000;
        assert_eq!(floor_at(10 * day + 5, 3 * DAY, day), 7 * day);
        assert_eq!(floor_at(10 * day, 3 * DAY, day), 7 * day);
        assert_eq!(floor_at(day, 3 * DAY, day), 0);
    }
}
