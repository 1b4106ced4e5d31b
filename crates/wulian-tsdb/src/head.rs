//! The in-memory head: every series' points, the per-device index and the last-value cache.
//!
//! Layout: tenant → device → key → [`Series`]. The nesting is the per-device index: `keys()`
//! and `latest()` touch one device's map and nothing else, and lookups borrow `&str` without
//! building owned keys. A series keeps its points in a `Vec` sorted by timestamp with unique
//! timestamps; in-order appends (the common case for telemetry) are a push, late points are a
//! binary search and an insert, a duplicate timestamp replaces the value (last write wins).
//! Each series also carries its latest point (the last-value cache), updated on every insert,
//! so that `latest()` never scans points; a late point never replaces it.
//!
//! The head is only ever mutated by the WAL writer thread (after a batch is logged) and by
//! open (snapshot load and replay); readers share it behind a `RwLock` in [`crate::Tsdb`].
//! Later work will move old points into compressed blocks; the head then holds the recent
//! window only, which is why the latest point is kept apart from the point vector.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::manifest::{Manifest, Tombstone};
use crate::rollup_store::{FileGens, LoadedRollup};
use crate::storage::LoadedFile;
use crate::value::{Point, SeriesKey, Value, ValueKind, WriteEntry, coerce};

/// The device's entry, created if needed (`None` cannot happen: it is there or inserted).
fn device_mut<'a>(
    tenants: &'a mut HashMap<String, HashMap<String, Device>>,
    tenant: &str,
    device: &str,
) -> Option<&'a mut Device> {
    let devices = if tenants.contains_key(tenant) {
        tenants.get_mut(tenant)?
    } else {
        tenants.entry(tenant.to_owned()).or_default()
    };
    Some(if devices.contains_key(device) {
        devices.get_mut(device)?
    } else {
        devices.entry(device.to_owned()).or_default()
    })
}

/// The shared copy of key name `key`.
fn intern(keys: &mut HashSet<Arc<str>>, key: &str) -> Arc<str> {
    if let Some(k) = keys.get(key) {
        return Arc::clone(k);
    }
    let k: Arc<str> = Arc::from(key);
    keys.insert(Arc::clone(&k));
    k
}

/// A value whose kind differs from its series' kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KindConflict {
    pub expected: ValueKind,
    pub actual: ValueKind,
}

/// The last-value cache of a series in 16 bytes (a [`Value`] takes 32): most series are idle
/// and hold nothing else, so this is most of their memory. Strings, rare, pay an indirection.
#[derive(Debug, Clone, PartialEq)]
enum Latest {
    F64(f64),
    I64(i64),
    Bool(bool),
    // A thin pointer: `String` or `Box<str>` would make every variant 24 bytes.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 24 for every series"
    )]
    Str(Box<String>),
}

impl Latest {
    fn new(value: Value) -> Latest {
        match value {
            Value::F64(v) => Latest::F64(v),
            Value::I64(v) => Latest::I64(v),
            Value::Bool(v) => Latest::Bool(v),
            Value::Str(s) => Latest::Str(Box::new(s)),
        }
    }

    fn value(&self) -> Value {
        match self {
            Latest::F64(v) => Value::F64(*v),
            Latest::I64(v) => Value::I64(*v),
            Latest::Bool(v) => Value::Bool(*v),
            Latest::Str(s) => Value::Str(String::clone(s)),
        }
    }

    fn kind(&self) -> ValueKind {
        match self {
            Latest::F64(_) => ValueKind::Float,
            Latest::I64(_) => ValueKind::Integer,
            Latest::Bool(_) => ValueKind::Bool,
            Latest::Str(_) => ValueKind::String,
        }
    }
}

/// One series: sorted points not yet flushed, latest point (whose variant is the kind). 40
/// bytes when idle: the point vector is boxed and absent while there are no points.
#[derive(Debug)]
pub(crate) struct Series {
    /// Identifies the series in the block files' in-memory chunk maps.
    id: u32,
    /// Points not yet flushed to block files; `None` when there are none.
    #[expect(
        clippy::box_collection,
        reason = "8 bytes instead of 24 for every idle series"
    )]
    points: Option<Box<Vec<Point>>>,
    latest_ts: i64,
    latest: Latest,
}

impl Series {
    fn new(id: u32, ts: i64, value: Value) -> Series {
        let point = Point { ts, value };
        Series {
            id,
            latest_ts: ts,
            latest: Latest::new(point.value.clone()),
            points: Some(Box::new(vec![point])),
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn kind(&self) -> ValueKind {
        self.latest.kind()
    }

    /// The latest point (the last-value cache).
    pub(crate) fn latest(&self) -> Point {
        Point {
            ts: self.latest_ts,
            value: self.latest.value(),
        }
    }

    /// All points, ascending by timestamp, unique timestamps.
    pub(crate) fn points(&self) -> &[Point] {
        self.points.as_deref().map_or(&[], Vec::as_slice)
    }

    fn points_mut(&mut self) -> &mut Vec<Point> {
        self.points.get_or_insert_with(Default::default)
    }

    /// Takes the points out, leaving none.
    fn take_points(&mut self) -> Vec<Point> {
        self.points.take().map(|b| *b).unwrap_or_default()
    }

    /// Points with `from <= ts < to`.
    pub(crate) fn range(&self, from: i64, to: i64) -> &[Point] {
        if from >= to {
            return &[];
        }
        let points = self.points();
        let start = points.partition_point(|p| p.ts < from);
        let end = points.partition_point(|p| p.ts < to);
        &points[start..end.max(start)]
    }

    /// Inserts or replaces the point at `ts`. Returns whether the point is new. The value must
    /// already have the series' kind.
    fn upsert(&mut self, ts: i64, value: Value) -> bool {
        if ts >= self.latest_ts {
            // The newest point so far (or a rewrite of it): the cache follows.
            self.latest_ts = ts;
            self.latest = Latest::new(value.clone());
        }
        let points = self.points_mut();
        match points.last_mut() {
            Some(last) if last.ts < ts => {
                points.push(Point { ts, value });
                true
            }
            Some(last) if last.ts == ts => {
                last.value = value;
                false
            }
            _ => match tail_search(points, ts) {
                Ok(i) => {
                    points[i].value = value;
                    false
                }
                Err(i) => {
                    points.insert(i, Point { ts, value });
                    true
                }
            },
        }
    }
}

/// `binary_search_by_key(&ts, |p| p.ts)`, starting from the tail: late and out-of-order points
/// land a few entries before the end, so an exponential search backwards touches a few cache
/// lines instead of probing across the whole (possibly hundreds of MB) run — most of the
/// ingest and WAL-replay time went there.
fn tail_search(points: &[Point], ts: i64) -> Result<usize, usize> {
    let n = points.len();
    // Invariant: every point from `hi` on is newer than `ts`.
    let mut hi = n;
    let mut step = 1usize;
    loop {
        let lo = n.saturating_sub(step);
        if lo == 0 || points[lo].ts <= ts {
            return match points[lo..hi].binary_search_by_key(&ts, |p| p.ts) {
                Ok(i) => Ok(lo + i),
                Err(i) => Err(lo + i),
            };
        }
        hi = lo;
        step = step.saturating_mul(2);
    }
}

/// Follows a run of one device's entries through its sorted keys. Devices send their keys in
/// the same order row after row, so the slot that followed the previous key last time is
/// tried first: one string comparison per value instead of a binary search's several.
#[derive(Debug, Default)]
pub(crate) struct KeyCursor {
    prev: Option<usize>,
    /// Slot index → the slot that came after it last time in this run.
    next: Vec<usize>,
}

impl KeyCursor {
    /// Starts a run (of another device, or after the device's keys changed).
    pub(crate) fn reset(&mut self) {
        self.prev = None;
        self.next.clear();
    }

    fn find(&mut self, map: &SeriesMap, key: &str) -> Result<usize, usize> {
        if self.next.len() != map.0.len() {
            self.next.clear();
            self.next.resize(map.0.len(), usize::MAX);
            self.prev = None;
        }
        let guess = self.prev.map_or(usize::MAX, |p| self.next[p]);
        let found = map.position_from(key, guess);
        match found {
            Ok(i) => {
                if let Some(p) = self.prev {
                    self.next[p] = i;
                }
                self.prev = Some(i);
            }
            Err(_) => self.prev = None,
        }
        found
    }
}

/// One device's series, sorted by key.
#[derive(Debug, Default)]
pub(crate) struct Device {
    series: SeriesMap,
}

/// A device's series by key: a sorted vector grown one slot at a time. Devices have a handful
/// of keys; a `BTreeMap` would allocate an 11-slot node (over 1 KB) for them, which was most of
/// the memory of an idle series. Keys are interned ([`Head::keys`]): devices of a profile share
/// one key set, so a series pays 16 bytes for its key instead of a heap string.
#[derive(Debug, Default)]
struct SeriesMap(Vec<(Arc<str>, Series)>);

impl SeriesMap {
    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// [`SeriesMap::position`], trying `guess` first (one comparison when it is right).
    fn position_from(&self, key: &str, guess: usize) -> Result<usize, usize> {
        match self.0.get(guess) {
            Some((k, _)) if **k == *key => Ok(guess),
            _ => self.position(key),
        }
    }

    fn get(&self, key: &str) -> Option<&Series> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Series> {
        self.position(key).ok().map(|i| &mut self.0[i].1)
    }

    fn insert(&mut self, key: Arc<str>, series: Series) {
        match self.position(&key) {
            Ok(i) => self.0[i].1 = series,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (key, series));
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Series)> {
        self.0.iter().map(|(k, s)| (&**k, s))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Series)> {
        self.0.iter_mut().map(|(k, s)| (&**k, s))
    }

    fn values(&self) -> impl Iterator<Item = &Series> {
        self.0.iter().map(|(_, s)| s)
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Series> {
        self.0.iter_mut().map(|(_, s)| s)
    }

    fn retain(&mut self, mut keep: impl FnMut(&str, &mut Series) -> bool) {
        self.0.retain_mut(|(k, s)| keep(k, s));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Device {
    /// The kind of the device's series `key`, if it exists, for a run of this device's
    /// entries, which `cursor` follows.
    pub(crate) fn kind_in_run(&self, key: &str, cursor: &mut KeyCursor) -> Option<ValueKind> {
        let found = cursor.find(&self.series, key);
        found.ok().map(|i| self.series.0[i].1.kind())
    }

    pub(crate) fn series(&self) -> impl Iterator<Item = (&str, &Series)> {
        self.series.iter()
    }
}

/// All series in memory, plus the state of the block files (swapped together under one lock,
/// so that a reader sees either the points before a flush or the files after it).
#[derive(Debug, Default)]
pub(crate) struct Head {
    tenants: HashMap<String, HashMap<String, Device>>,
    /// Every key name in use, shared by the series that have it. Names are never removed (a
    /// store has few distinct key names; a deleted device's keys are usually another's too).
    keys: HashSet<Arc<str>>,
    series: usize,
    points: u64,
    next_id: u32,
    /// The manifest as it will be stored by the next flush (pending tombstones included).
    pub manifest: Manifest,
    /// Open block files, ascending by generation.
    pub files: Arc<Vec<Arc<LoadedFile>>>,
    /// The files' partitions and generations, for rollup freshness (kept in step with
    /// `files` by [`Head::set_files`]).
    pub file_gens: Arc<FileGens>,
    /// Open rollup files, ascending by generation.
    pub rollups: Arc<Vec<Arc<LoadedRollup>>>,
    /// Points handed to a background flush that is still writing them: visible to queries
    /// (between the files and the head's own points) until the files replace them.
    pub frozen: Option<Arc<Frozen>>,
    frozen_points: u64,
}

/// The points of a flush in progress, by series id, each sorted with unique timestamps.
#[derive(Debug, Default)]
pub(crate) struct Frozen {
    pub points: HashMap<u32, Vec<Point>>,
}

/// One series of a frozen head, as the flush writes it.
#[derive(Debug)]
pub(crate) struct FrozenSeries {
    pub key: SeriesKey,
    pub id: u32,
    pub kind: ValueKind,
}

impl Head {
    /// Replaces the open block files (ascending by generation).
    pub(crate) fn set_files(&mut self, files: Vec<Arc<LoadedFile>>) {
        self.file_gens = Arc::new(FileGens::new(&files));
        self.files = Arc::new(files);
    }

    pub(crate) fn device(&self, tenant: &str, device: &str) -> Option<&Device> {
        self.tenants.get(tenant)?.get(device)
    }

    pub(crate) fn series(&self, key: &SeriesKey) -> Option<&Series> {
        self.device(&key.tenant, &key.device)?.series.get(&key.key)
    }

    pub(crate) fn kind(&self, key: &SeriesKey) -> Option<ValueKind> {
        self.series(key).map(Series::kind)
    }

    pub(crate) fn series_count(&self) -> usize {
        self.series
    }

    pub(crate) fn point_count(&self) -> u64 {
        self.points
    }

    pub(crate) fn device_count(&self) -> usize {
        self.tenants.values().map(HashMap::len).sum()
    }

    /// [`Head::upsert`] for a batch: a run of entries of one device looks the device up once
    /// (a device reports its keys together, so this saves two hash lookups per value on the
    /// writer thread, which every write goes through). A conflicting entry is skipped and
    /// handed to `on_conflict`.
    pub(crate) fn upsert_batch(
        &mut self,
        entries: Vec<WriteEntry>,
        mut on_conflict: impl FnMut(&SeriesKey, KindConflict),
    ) {
        let mut it = entries.into_iter().peekable();
        let mut run: Vec<WriteEntry> = Vec::new();
        let mut cursor = KeyCursor::default();
        while let Some(first) = it.next() {
            run.clear();
            run.push(first);
            while let Some(next) = it.next_if(|n| {
                n.series.device == run[0].series.device && n.series.tenant == run[0].series.tenant
            }) {
                run.push(next);
            }
            let floors = &self.manifest;
            let kept = |e: &WriteEntry| {
                !(e.ts < floors.floor
                    || floors
                        .device_floors
                        .hides(&e.series.tenant, &e.series.device, e.ts))
            };
            if !run.iter().any(kept) {
                // Below a retention floor: accepted and discarded, as `upsert` does.
                continue;
            }
            let mask: Vec<bool> = run.iter().map(kept).collect();
            let Some(d) = device_mut(
                &mut self.tenants,
                &run[0].series.tenant,
                &run[0].series.device,
            ) else {
                continue;
            };
            cursor.reset();
            for (e, keep) in run.drain(..).zip(mask) {
                if !keep {
                    continue;
                }
                let found = cursor.find(&d.series, &e.series.key).ok();
                match found.map(|i| &mut d.series.0[i].1) {
                    Some(series) => match coerce(series.kind(), e.value) {
                        Ok(value) => {
                            if series.upsert(e.ts, value) {
                                self.points += 1;
                            }
                        }
                        Err(actual) => on_conflict(
                            &e.series,
                            KindConflict {
                                expected: series.kind(),
                                actual,
                            },
                        ),
                    },
                    None => {
                        let key = intern(&mut self.keys, &e.series.key);
                        d.series
                            .insert(key, Series::new(self.next_id, e.ts, e.value));
                        self.next_id = self.next_id.wrapping_add(1);
                        self.series += 1;
                        self.points += 1;
                    }
                }
            }
        }
    }

    /// Stores one point, creating the series (with the value's kind) if needed. An integer for
    /// a float series is stored as a float; any other kind difference is refused and nothing
    /// changes.
    pub(crate) fn upsert(
        &mut self,
        key: &SeriesKey,
        ts: i64,
        value: Value,
    ) -> Result<(), KindConflict> {
        if ts < self.manifest.floor
            || self
                .manifest
                .device_floors
                .hides(&key.tenant, &key.device, ts)
        {
            // Older than the retention floor (store-wide or the device's): accepted and
            // discarded, live and at replay alike, so a dropped partition never comes back.
            return Ok(());
        }
        let id = self.next_id;
        let devices = match self.tenants.get_mut(&key.tenant) {
            Some(devices) => devices,
            None => self.tenants.entry(key.tenant.clone()).or_default(),
        };
        let device = match devices.get_mut(&key.device) {
            Some(device) => device,
            None => devices.entry(key.device.clone()).or_default(),
        };
        match device.series.get_mut(&key.key) {
            Some(series) => {
                let value = coerce(series.kind(), value).map_err(|actual| KindConflict {
                    expected: series.kind(),
                    actual,
                })?;
                if series.upsert(ts, value) {
                    self.points += 1;
                }
            }
            None => {
                device
                    .series
                    .insert(intern(&mut self.keys, &key.key), Series::new(id, ts, value));
                self.next_id = self.next_id.wrapping_add(1);
                self.series += 1;
                self.points += 1;
            }
        }
        Ok(())
    }

    /// Creates a series known from a block file (no points in memory) or updates its latest
    /// point; returns its id. Files must be fed in ascending generation order so that the
    /// newest file wins a tie on the latest timestamp.
    pub(crate) fn ensure_series(
        &mut self,
        (tenant, device, key): (&str, &str, &str),
        kind: ValueKind,
        latest: Point,
    ) -> Result<u32, KindConflict> {
        let id = self.next_id;
        let devices = match self.tenants.get_mut(tenant) {
            Some(devices) => devices,
            None => self.tenants.entry(tenant.to_string()).or_default(),
        };
        let device = match devices.get_mut(device) {
            Some(d) => d,
            None => devices.entry(device.to_string()).or_default(),
        };
        if latest.value.kind() != kind {
            return Err(KindConflict {
                expected: kind,
                actual: latest.value.kind(),
            });
        }
        match device.series.get_mut(key) {
            Some(series) => {
                if series.kind() != kind {
                    return Err(KindConflict {
                        expected: series.kind(),
                        actual: kind,
                    });
                }
                if latest.ts >= series.latest_ts {
                    series.latest_ts = latest.ts;
                    series.latest = Latest::new(latest.value);
                }
                Ok(series.id)
            }
            None => {
                device.series.insert(
                    intern(&mut self.keys, key),
                    Series {
                        id,
                        points: None,
                        latest_ts: latest.ts,
                        latest: Latest::new(latest.value),
                    },
                );
                self.next_id = self.next_id.wrapping_add(1);
                self.series += 1;
                Ok(id)
            }
        }
    }

    /// Moves every point held in memory into a frozen set for a background flush. Must not be
    /// called while another frozen set exists.
    pub(crate) fn freeze(&mut self) -> (Vec<FrozenSeries>, Arc<Frozen>) {
        let mut list = Vec::new();
        let mut frozen = Frozen::default();
        for (tenant, devices) in &mut self.tenants {
            for (device, d) in devices.iter_mut() {
                for (key, series) in d.series.iter_mut() {
                    if series.points().is_empty() {
                        series.points = None;
                        continue;
                    }
                    list.push(FrozenSeries {
                        key: SeriesKey::new(tenant.as_str(), device.as_str(), key),
                        id: series.id,
                        kind: series.kind(),
                    });
                    frozen.points.insert(series.id, series.take_points());
                }
            }
        }
        let frozen = Arc::new(frozen);
        self.frozen = Some(Arc::clone(&frozen));
        self.frozen_points = self.points;
        self.points = 0;
        (list, frozen)
    }

    /// The frozen points are in block files now.
    pub(crate) fn drop_frozen(&mut self) {
        self.frozen = None;
        self.frozen_points = 0;
    }

    /// A flush failed: the frozen points go back into the head, under the points written since
    /// (which are newer and win on equal timestamps). Series deleted since stay deleted.
    pub(crate) fn unfreeze(&mut self) {
        let Some(frozen) = self.frozen.take() else {
            return;
        };
        self.frozen_points = 0;
        for devices in self.tenants.values_mut() {
            for d in devices.values_mut() {
                for series in d.series.values_mut() {
                    let Some(old) = frozen.points.get(&series.id) else {
                        continue;
                    };
                    let mut merged: BTreeMap<i64, Value> =
                        old.iter().map(|p| (p.ts, p.value.clone())).collect();
                    for p in series.take_points() {
                        merged.insert(p.ts, p.value);
                    }
                    *series.points_mut() = merged
                        .into_iter()
                        .map(|(ts, value)| Point { ts, value })
                        .collect();
                }
            }
        }
        self.points = self
            .iter()
            .map(|(_, _, _, s)| s.points().len() as u64)
            .sum();
    }

    /// Points in memory, frozen ones included.
    pub(crate) fn memory_points(&self) -> u64 {
        self.points + self.frozen_points
    }

    /// Applies a retention floor: points older than `floor` go, and so do series whose newest
    /// point is older (they have no data left). Returns the series removed.
    pub(crate) fn apply_floor(&mut self, floor: i64) -> usize {
        self.manifest.floor = self.manifest.floor.max(floor);
        self.cut_below(|_, _| floor)
    }

    /// Applies the manifest's device floors the same way (store-wide floor included). Returns
    /// the series removed.
    pub(crate) fn apply_device_floors(&mut self) -> usize {
        let global = self.manifest.floor;
        let floors = std::mem::take(&mut self.manifest.device_floors);
        let removed = self.cut_below(|tenant, device| global.max(floors.get(tenant, device)));
        self.manifest.device_floors = floors;
        removed
    }

    /// Drops the points below each device's `floor_of(tenant, device)`, and the series left
    /// without data. Returns the series removed.
    fn cut_below(&mut self, floor_of: impl Fn(&str, &str) -> i64) -> usize {
        let (mut series_removed, mut points_removed) = (0usize, 0u64);
        self.tenants.retain(|tenant, devices| {
            devices.retain(|device, d| {
                let floor = floor_of(tenant, device);
                d.series.retain(|_, s| {
                    let cut = s.points().partition_point(|p| p.ts < floor);
                    points_removed += cut as u64;
                    if cut > 0 {
                        s.points_mut().drain(..cut);
                    }
                    if s.latest_ts < floor {
                        points_removed += s.points().len() as u64;
                        series_removed += 1;
                        false
                    } else {
                        true
                    }
                });
                !d.series.is_empty()
            });
            !devices.is_empty()
        });
        self.series -= series_removed;
        self.points -= points_removed;
        series_removed
    }

    /// Removes every series of a device and records a tombstone for its data in block files.
    /// Returns (series, points) removed from memory.
    pub(crate) fn delete_device(&mut self, tenant: &str, device: &str) -> (usize, u64) {
        let generation = self.manifest.next_generation;
        self.manifest
            .tombstones
            .retain(|t| !(t.tenant == tenant && t.device == device));
        self.manifest.tombstones.push(Tombstone {
            tenant: tenant.to_string(),
            device: device.to_string(),
            generation,
        });
        let Some(devices) = self.tenants.get_mut(tenant) else {
            return (0, 0);
        };
        let Some(removed) = devices.remove(device) else {
            return (0, 0);
        };
        if devices.is_empty() {
            self.tenants.remove(tenant);
        }
        let series = removed.series.len();
        let points: u64 = removed
            .series
            .values()
            .map(|s| s.points().len() as u64)
            .sum();
        self.series -= series;
        self.points -= points;
        (series, points)
    }

    /// Every (tenant, device) with series, in no particular order.
    pub(crate) fn devices(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tenants.iter().flat_map(|(tenant, devices)| {
            devices
                .keys()
                .map(move |device| (tenant.as_str(), device.as_str()))
        })
    }

    /// Every series with its key parts, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str, &str, &Series)> {
        self.tenants.iter().flat_map(|(tenant, devices)| {
            devices.iter().flat_map(move |(device, d)| {
                d.series
                    .iter()
                    .map(move |(key, s)| (tenant.as_str(), device.as_str(), key, s))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_search_agrees_with_binary_search() {
        let points: Vec<Point> = (0..1000)
            .map(|i| Point {
                ts: i * 3,
                value: Value::I64(i),
            })
            .collect();
        for n in [0usize, 1, 2, 7, 500, 1000] {
            let run = &points[..n];
            for ts in -2..3005 {
                assert_eq!(
                    super::tail_search(run, ts),
                    run.binary_search_by_key(&ts, |p| p.ts),
                    "n={n} ts={ts}"
                );
            }
        }
    }

    use super::*;

    fn key(k: &str) -> SeriesKey {
        SeriesKey::new("t", "d", k)
    }

    #[test]
    fn out_of_order_and_duplicates_stay_sorted_and_unique() {
        let mut head = Head::default();
        for (ts, v) in [
            (10, 1.0),
            (30, 3.0),
            (20, 2.0),
            (30, 3.5),
            (5, 0.5),
            (20, 2.5),
        ] {
            head.upsert(&key("x"), ts, Value::F64(v)).unwrap();
        }
        let s = head.series(&key("x")).unwrap();
        let got: Vec<(i64, Value)> = s.points().iter().map(|p| (p.ts, p.value.clone())).collect();
        assert_eq!(
            got,
            vec![
                (5, Value::F64(0.5)),
                (10, Value::F64(1.0)),
                (20, Value::F64(2.5)),
                (30, Value::F64(3.5)),
            ]
        );
        assert_eq!(
            s.latest(),
            Point {
                ts: 30,
                value: Value::F64(3.5)
            }
        );
        assert_eq!(head.point_count(), 4);
        assert_eq!(head.series_count(), 1);
        assert_eq!(s.range(10, 30).len(), 2);
        assert_eq!(s.range(30, 10).len(), 0);
    }

    #[test]
    fn kinds_are_enforced_and_integers_widen_to_floats() {
        let mut head = Head::default();
        head.upsert(&key("f"), 1, Value::F64(1.0)).unwrap();
        head.upsert(&key("f"), 2, Value::I64(2)).unwrap();
        assert_eq!(
            head.series(&key("f")).unwrap().latest().value,
            Value::F64(2.0)
        );
        assert_eq!(
            head.upsert(&key("f"), 3, Value::Bool(true)),
            Err(KindConflict {
                expected: ValueKind::Float,
                actual: ValueKind::Bool
            })
        );
        assert_eq!(head.point_count(), 2);
    }

    #[test]
    fn an_idle_series_is_small_and_its_cache_keeps_every_kind() {
        // The memory goal (under 200 bytes per idle series) rests on these sizes.
        assert!(std::mem::size_of::<Series>() <= 40);
        assert_eq!(std::mem::size_of::<Latest>(), 16);
        let mut head = Head::default();
        let values = [
            Value::F64(-0.0),
            Value::I64(i64::MIN),
            Value::Bool(true),
            Value::Str("héllo".into()),
        ];
        for (i, v) in values.iter().enumerate() {
            let k = SeriesKey::new("t", format!("d{i}"), "same");
            head.ensure_series(
                ("t", &k.device, "same"),
                v.kind(),
                Point {
                    ts: 5,
                    value: v.clone(),
                },
            )
            .unwrap();
            let s = head.series(&k).unwrap();
            assert_eq!(
                s.latest(),
                Point {
                    ts: 5,
                    value: v.clone()
                }
            );
            assert_eq!(s.kind(), v.kind());
            assert!(s.points().is_empty());
        }
        // One shared copy of the key name.
        assert_eq!(head.keys.len(), 1);
        // A later point replaces the cache, an older one does not.
        let k = SeriesKey::new("t", "d3", "same");
        head.upsert(&k, 9, Value::Str("new".into())).unwrap();
        head.upsert(&k, 7, Value::Str("old".into())).unwrap();
        assert_eq!(
            head.series(&k).unwrap().latest().value,
            Value::Str("new".into())
        );
        assert_eq!(head.series(&k).unwrap().points().len(), 2);
    }

    #[test]
    fn a_batch_equals_its_entries_one_by_one() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let entries: Vec<WriteEntry> = (0..3000)
            .map(|i| {
                // Runs of one device, interleaved devices, out-of-order and duplicate
                // timestamps, an integer for a float series and a refused boolean.
                let device = format!("d{}", (i / 4 + next(2)) % 5);
                let key = format!("k{}", next(3));
                let value = match next(20) {
                    0 => Value::I64(7),
                    1 if key == "k0" => Value::Bool(true),
                    _ => Value::F64(next(100) as f64),
                };
                WriteEntry {
                    series: SeriesKey::new(format!("t{}", next(2)), device, key),
                    ts: next(500) as i64,
                    value,
                }
            })
            .collect();
        let mut one = Head::default();
        let mut batch = Head::default();
        one.manifest.floor = 50;
        batch.manifest.floor = 50;
        let mut refused_one = 0;
        for e in entries.clone() {
            refused_one += usize::from(one.upsert(&e.series, e.ts, e.value).is_err());
        }
        let mut refused_batch = 0;
        batch.upsert_batch(entries, |_, _| refused_batch += 1);
        assert_eq!(refused_one, refused_batch);
        assert_eq!(one.point_count(), batch.point_count());
        assert_eq!(one.series_count(), batch.series_count());
        let mut a: Vec<_> = one
            .iter()
            .map(|(t, d, k, s)| (t, d, k, s.points().to_vec(), s.latest()))
            .collect();
        let mut b: Vec<_> = batch
            .iter()
            .map(|(t, d, k, s)| (t, d, k, s.points().to_vec(), s.latest()))
            .collect();
        a.sort_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)));
        b.sort_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)));
        assert_eq!(a, b);
        assert!(a.iter().all(|s| s.3.iter().all(|p| p.ts >= 50)));
    }

    #[test]
    fn delete_device_updates_counts() {
        let mut head = Head::default();
        head.upsert(&key("a"), 1, Value::I64(1)).unwrap();
        head.upsert(&key("b"), 1, Value::I64(1)).unwrap();
        head.upsert(&key("b"), 2, Value::I64(1)).unwrap();
        head.upsert(&SeriesKey::new("t", "other", "a"), 1, Value::I64(1))
            .unwrap();
        assert_eq!(head.delete_device("t", "d"), (2, 3));
        assert_eq!(head.series_count(), 1);
        assert_eq!(head.point_count(), 1);
        assert_eq!(head.device_count(), 1);
        assert_eq!(head.delete_device("t", "d"), (0, 0));
    }
}
