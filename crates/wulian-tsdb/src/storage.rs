//! Block storage: loading the manifest's files at open, reading a series across head and
//! files, flushing the head into per-partition block files, compaction and retention.
//!
//! Precedence for one timestamp (last write wins): the head over any file, a newer file
//! (higher generation) over an older one. Flush, compaction and retention all run on the
//! writer thread, so the head they see cannot change under them; they publish their result
//! (new files, the cleared head) under the head's write lock in one step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::block::{self, BlockFile, BlockWriter, ChunkMeta, SeriesData};
use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::head::{Frozen, FrozenSeries, Head};
use crate::manifest::{FileEntry, Manifest};
use crate::query::{self, PartialBucket, Widths};
use crate::rollup::RollupMeta;
use crate::rollup_store::{self, LoadedRollup, RollupSet};
use crate::value::{Point, SeriesKey, ValueKind};

pub(crate) const BLOCKS_DIR: &str = "blocks";

/// An open block file and where each series' chunk is in it.
#[derive(Debug)]
pub(crate) struct LoadedFile {
    pub bf: BlockFile,
    pub entry: FileEntry,
    /// (series id, chunk), sorted by id. Entries of deleted series stay until compaction; no
    /// live series has their id.
    pub chunks: Vec<(u32, ChunkMeta)>,
    /// Index entries left out at open because they lie below their device's retention floor
    /// (an enforcement stored the floor but had not yet rewritten this file): the next
    /// enforcement rewrites or deletes the file.
    pub hidden_at_open: usize,
}

impl LoadedFile {
    pub(crate) fn chunk(&self, id: u32) -> Option<&ChunkMeta> {
        self.chunks
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .map(|i| &self.chunks[i].1)
    }
}

/// The partition `[start, end)` a timestamp falls in.
pub(crate) fn partition_of(ts: i64, partition_ms: i64) -> (i64, i64) {
    let start = ts - ts.rem_euclid(partition_ms);
    (start, start.saturating_add(partition_ms))
}

/// Opens every file the manifest names, creates the series they hold in `head` (kind and
/// latest point, no points in memory), and deletes files the manifest does not name.
pub(crate) fn load(dir: &Path, manifest: Manifest, head: &mut Head) -> Result<()> {
    let blocks_dir = dir.join(BLOCKS_DIR);
    let named: HashSet<String> = manifest
        .files
        .iter()
        .map(|f| block::file_name(f.generation))
        .collect();
    for entry in fs::read_dir(&blocks_dir).map_err(Error::io("list block files"))? {
        let entry = entry.map_err(Error::io("list block files"))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !named.contains(&name) {
            tracing::info!(file = %entry.path().display(), "Removing a block file the manifest does not name (interrupted flush or compaction).");
            fs::remove_file(entry.path()).map_err(Error::io("remove a leftover block file"))?;
        }
    }
    let tombstones: HashMap<(&str, &str), u64> = manifest
        .tombstones
        .iter()
        .map(|t| ((t.tenant.as_str(), t.device.as_str()), t.generation))
        .collect();
    let mut entries = manifest.files.clone();
    entries.sort_by_key(|f| f.generation);
    let mut files = Vec::with_capacity(entries.len());
    for entry in entries {
        let path = blocks_dir.join(block::file_name(entry.generation));
        let (bf, index) = BlockFile::open(&path, entry.generation)?;
        let index = index.entries().map_err(|e| bf.corrupt(0, e.0))?;
        if bf.partition != entry.partition {
            return Err(Error::Corrupt {
                file: path,
                offset: 16,
                reason: format!(
                    "partition {:?} in the file, {:?} in the manifest",
                    bf.partition, entry.partition
                ),
            });
        }
        let mut chunks = Vec::with_capacity(index.len());
        let mut hidden_at_open = 0;
        for e in index {
            let hidden = tombstones
                .get(&(e.tenant, e.device))
                .is_some_and(|g| *g > entry.generation);
            if hidden || e.meta.max_ts < manifest.floor {
                continue;
            }
            if manifest
                .device_floors
                .hides(e.tenant, e.device, e.meta.max_ts)
            {
                hidden_at_open += 1;
                continue;
            }
            let latest = Point {
                ts: e.meta.max_ts,
                value: e.last,
            };
            let id = head
                .ensure_series((e.tenant, e.device, e.key), e.kind, latest)
                .map_err(|c| Error::Corrupt {
                    file: path.clone(),
                    offset: e.meta.offset,
                    reason: format!(
                        "series {}/{}/{} holds {} values here and {} values in an older file",
                        e.tenant, e.device, e.key, c.actual, c.expected
                    ),
                })?;
            chunks.push((id, e.meta));
        }
        chunks.sort_by_key(|(id, _)| *id);
        files.push(Arc::new(LoadedFile {
            bf,
            entry,
            chunks,
            hidden_at_open,
        }));
    }
    head.rollups = Arc::new(rollup_store::load(dir, &manifest)?);
    head.manifest = manifest;
    head.set_files(files);
    Ok(())
}

/// What a query needs of one series, copied out under the read lock so that the files can be
/// read without holding it.
pub(crate) struct SeriesView {
    pub kind: ValueKind,
    /// `None` for a series known only from rollups (its raw data was dropped by retention).
    id: Option<u32>,
    head_points: Vec<Point>,
    frozen_points: Vec<Point>,
    files: Arc<Vec<Arc<LoadedFile>>>,
    /// Usable, visible rollups of this series overlapping the range, ascending by generation.
    rollups: Vec<RollupSource>,
    /// The series' retention floor: the store-wide one or its device's, if higher.
    floor: i64,
    from: i64,
    to: i64,
}

/// One rollup file holding the series.
struct RollupSource {
    file: Arc<LoadedRollup>,
    level: usize,
    meta: RollupMeta,
}

impl SeriesView {
    /// `None` for a series that is neither in the head nor in any visible rollup.
    pub(crate) fn new(
        head: &Head,
        key: &SeriesKey,
        from: i64,
        to: i64,
        widths: Widths,
    ) -> Option<SeriesView> {
        let hidden_below = head
            .manifest
            .tombstones
            .iter()
            .find(|t| t.tenant == key.tenant && t.device == key.device)
            .map_or(0, |t| t.generation);
        let visible = |r: &LoadedRollup| r.entry.generation >= hidden_below;
        let floor = head
            .manifest
            .floor
            .max(head.manifest.device_floors.get(&key.tenant, &key.device));
        let Some(s) = head.series(key) else {
            // Only rollups may be left: the kind is the newest visible rollup's.
            let kind = head
                .rollups
                .iter()
                .rev()
                .filter(|r| visible(r))
                .find_map(|r| r.rf.meta(key).map(|m| m.kind))?;
            return Some(SeriesView {
                kind,
                id: None,
                head_points: Vec::new(),
                frozen_points: Vec::new(),
                files: Arc::clone(&head.files),
                rollups: rollup_sources(head, key, kind, (from, to), floor, widths, &visible),
                floor,
                from,
                to,
            });
        };
        let frozen_points = head
            .frozen
            .as_ref()
            .and_then(|f| f.points.get(&s.id()))
            .map(|pts| {
                let a = pts.partition_point(|p| p.ts < from);
                let b = pts.partition_point(|p| p.ts < to);
                pts[a..b.max(a)].to_vec()
            })
            .unwrap_or_default();
        Some(SeriesView {
            kind: s.kind(),
            id: Some(s.id()),
            head_points: s.range(from, to).to_vec(),
            frozen_points,
            files: Arc::clone(&head.files),
            rollups: rollup_sources(head, key, s.kind(), (from, to), floor, widths, &visible),
            floor,
            from,
            to,
        })
    }

    pub(crate) fn points(self, limit: Option<usize>) -> Result<Vec<Point>> {
        self.points_between(self.from, self.to, limit)
    }

    /// The canonical bucket summaries of the range (see `query::partials`), read from fresh
    /// rollups where they give the same answer for less work: whole rollup buckets inside
    /// the range, in partitions where the series has no unflushed points, and either the raw
    /// data is gone (retention) or the rollup has fewer buckets than the raw chunks points.
    /// Everything else is computed from the raw points.
    /// Also returns how many rollup frames were read.
    pub(crate) fn partials(
        &self,
        interval_ms: i64,
        widths: Widths,
    ) -> Result<(Vec<PartialBucket>, u64)> {
        let Some(level) = query::level_for(interval_ms, widths) else {
            let points = self.points_between(self.from, self.to, None)?;
            return Ok((query::partial_aggregate(&points, interval_ms), 0));
        };
        let width = widths[level];
        // Whole level buckets inside the range.
        let a = self
            .from
            .checked_add((width - self.from.rem_euclid(width)) % width)
            .unwrap_or(i64::MAX);
        let b = self.to - self.to.rem_euclid(width);
        let mut pieces: Vec<PartialBucket> = Vec::new();
        let mut cursor = self.from;
        let mut reads = 0;
        for (part, source) in self.pick_rollups(level, widths) {
            let seg = (part.0.max(a), part.1.min(b));
            if seg.0 >= seg.1 || seg.0 < cursor {
                continue;
            }
            let mut buckets = source.file.rf.read(&source.meta)?;
            reads += 1;
            buckets.retain(|x| x.ts >= seg.0 && x.ts < seg.1);
            if source.level < level {
                buckets = query::fold_partials(&buckets, widths[level]);
            }
            if seg.0 > cursor {
                let raw = self.points_between(cursor, seg.0, None)?;
                pieces.extend(query::level_partials(&raw, level, widths));
            }
            pieces.extend(buckets);
            cursor = seg.1;
        }
        if cursor < self.to {
            let raw = self.points_between(cursor, self.to, None)?;
            pieces.extend(query::level_partials(&raw, level, widths));
        }
        Ok((query::fold_partials(&pieces, interval_ms), reads))
    }

    /// For each partition in the range, the rollup to read at `level`, if one is worth it
    /// (see `partials`). Ascending by partition.
    fn pick_rollups(&self, level: usize, widths: Widths) -> Vec<((i64, i64), &RollupSource)> {
        let mut parts: Vec<(i64, i64)> = self
            .rollups
            .iter()
            .map(|r| r.file.entry.partition)
            .collect();
        parts.sort_unstable();
        parts.dedup();
        let in_memory = |p: (i64, i64)| {
            [&self.head_points, &self.frozen_points].iter().any(|v| {
                let i = v.partition_point(|x| x.ts < p.0);
                v.get(i).is_some_and(|x| x.ts < p.1)
            })
        };
        let mut out = Vec::new();
        for part in parts {
            if in_memory(part) {
                continue;
            }
            let at = |l: usize| {
                self.rollups
                    .iter()
                    .find(|r| r.level == l && r.file.entry.partition == part)
            };
            // A coarse bucket folded from fine ones is exact only if no coarse bucket crosses
            // the partition's edges.
            let fine_tiles = level == 0
                || (part.0.rem_euclid(widths[1]) == 0 && part.1.rem_euclid(widths[1]) == 0);
            let Some(source) = at(level).or_else(|| at(0).filter(|_| fine_tiles)) else {
                continue;
            };
            let raw_gone = part.1 <= self.floor;
            if !raw_gone {
                let raw: u64 = match self.id {
                    Some(id) => self
                        .files
                        .iter()
                        .filter(|f| rollup_store::overlaps(f.entry.partition, part))
                        .filter_map(|f| f.chunk(id))
                        .map(|c| u64::from(c.count))
                        .sum(),
                    None => 0,
                };
                if u64::from(source.meta.buckets) >= raw && raw > 0 {
                    continue;
                }
            }
            out.push((part, source));
        }
        out
    }

    /// The merged points with `from <= ts < to` (within the view's range), ascending, unique
    /// timestamps. With a `limit`, the partitions are read in time order and reading stops
    /// once more than `limit` points are known (so the caller can tell that the answer was
    /// truncated).
    fn points_between(&self, from: i64, to: i64, limit: Option<usize>) -> Result<Vec<Point>> {
        let from = from.max(self.from).max(self.floor);
        let to = to.min(self.to);
        if from >= to {
            return Ok(Vec::new());
        }
        let mut cands: Vec<(&LoadedFile, &ChunkMeta)> = Vec::new();
        for f in self.files.iter() {
            if f.entry.max_ts < from || f.entry.min_ts >= to {
                continue;
            }
            if let Some(id) = self.id
                && let Some(meta) = f.chunk(id)
                && meta.max_ts >= from
                && meta.min_ts < to
            {
                cands.push((f, meta));
            }
        }
        // Windows: one per partition (time order) when a limit may stop early and the
        // partitions do not overlap; otherwise one window over everything.
        let mut windows: Vec<(i64, i64)> = cands.iter().map(|(f, _)| f.entry.partition).collect();
        windows.sort_unstable();
        windows.dedup();
        let per_partition =
            limit.is_some() && windows.windows(2).all(|w| w[0].1 <= w[1].0) && !windows.is_empty();
        if !per_partition {
            windows = vec![(from, to)];
        }
        let slice = |v: &[Point], a: i64, b: i64| -> Vec<Point> {
            let start = v.partition_point(|p| p.ts < a);
            let end = v.partition_point(|p| p.ts < b);
            v[start..end.max(start)].to_vec()
        };
        let memory = |a: i64, b: i64| -> Vec<Vec<Point>> {
            vec![
                slice(&self.frozen_points, a, b),
                slice(&self.head_points, a, b),
            ]
        };
        let mut out: Vec<Point> = Vec::new();
        let mut cursor = from;
        for &(w_start, w_end) in &windows {
            let (a, b) = (w_start.max(from), w_end.min(to));
            if a > cursor {
                out.extend(merge(memory(cursor, a)));
            }
            let mut runs = Vec::new();
            for (f, meta) in &cands {
                if per_partition && f.entry.partition != (w_start, w_end) {
                    continue;
                }
                runs.push(f.bf.read_chunk_range(meta, self.kind, a, b)?);
            }
            runs.extend(memory(a, b));
            out.extend(merge(runs));
            cursor = cursor.max(b);
            if limit.is_some_and(|l| out.len() > l) {
                return Ok(out);
            }
        }
        if cursor < to {
            out.extend(merge(memory(cursor, to)));
        }
        Ok(out)
    }
}

/// The usable rollups holding `key` (of `kind`) whose partition overlaps `range`, at a width
/// of this store's levels, visible past the device's tombstone. Usable: fresh, or of a
/// partition below the series' retention `floor` — the series' raw data there is gone and it
/// cannot change any more (writes below the floor are discarded), so its entry is still exact
/// while a late write of another series makes the file stale until the next rebuild.
fn rollup_sources(
    head: &Head,
    key: &SeriesKey,
    kind: ValueKind,
    range: (i64, i64),
    floor: i64,
    widths: Widths,
    visible: &dyn Fn(&LoadedRollup) -> bool,
) -> Vec<RollupSource> {
    head.rollups
        .iter()
        .filter(|r| rollup_store::overlaps(r.entry.partition, range) && visible(r))
        .filter(|r| r.entry.partition.1 <= floor || head.file_gens.is_fresh(&r.entry))
        .filter_map(|r| {
            let level = rollup_store::level_of(r.entry.width, widths)?;
            let meta = r.rf.meta(key).filter(|m| m.kind == kind)?;
            Some(RollupSource {
                file: Arc::clone(r),
                level,
                meta: meta.clone(),
            })
        })
        .collect()
}

/// Merges sorted runs; for equal timestamps the later run wins.
pub(crate) fn merge(parts: Vec<Vec<Point>>) -> Vec<Point> {
    let non_empty: Vec<Vec<Point>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    if non_empty.len() <= 1 {
        return non_empty.into_iter().next().unwrap_or_default();
    }
    // Runs that do not overlap (the common case: one partition file each) just concatenate.
    let disjoint = non_empty
        .windows(2)
        .all(|w| w[0].last().map(|p| p.ts) < w[1].first().map(|p| p.ts));
    if disjoint {
        return non_empty.into_iter().flatten().collect();
    }
    let mut map = BTreeMap::new();
    for run in non_empty {
        for p in run {
            map.insert(p.ts, p.value);
        }
    }
    map.into_iter()
        .map(|(ts, value)| Point { ts, value })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fault injection (tests): stop a flush or compaction after a given step, as a crash would.

/// Steps of a flush or a compaction after which a test can make the engine stop.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// The WAL was rotated; no block file written yet.
    FlushAfterRotate,
    /// Block files written and fsynced; the manifest not yet replaced.
    FlushAfterBlocks,
    /// The manifest replaced; the memory not yet updated and the WAL not yet cut.
    FlushAfterManifest,
    /// The merged file written; the manifest not yet replaced.
    CompactAfterWrite,
    /// The manifest replaced; the old files not yet deleted.
    CompactAfterManifest,
    /// Retention by policy: the device floors stored with the partitions rewritten; the
    /// partitions whose every series expired not yet deleted, the head not yet cut.
    RetentionAfterRewrite,
}

static FAULTS: Mutex<Vec<(PathBuf, FaultPoint)>> = Mutex::new(Vec::new());

/// Arms a fault for the store at `dir`: the next time the writer reaches `point`, the flush or
/// compaction fails there and the writer refuses all further writes (as if the process had
/// died). For crash tests only.
#[doc(hidden)]
pub fn inject_fault(dir: &Path, point: FaultPoint) {
    FAULTS.lock().push((dir.to_path_buf(), point));
}

pub(crate) fn check_fault(dir: &Path, point: FaultPoint) -> Result<()> {
    let mut faults = FAULTS.lock();
    if let Some(i) = faults.iter().position(|(d, p)| d == dir && *p == point) {
        faults.remove(i);
        return Err(Error::Io {
            context: "injected fault",
            source: std::io::Error::other(format!("{point:?}")),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Flush and compaction

/// Tombstones that can still hide something: those newer than some block or rollup file.
pub(crate) fn gc_tombstones(manifest: &mut Manifest) {
    let oldest = manifest
        .files
        .iter()
        .map(|f| f.generation)
        .chain(manifest.rollups.iter().map(|r| r.generation))
        .min();
    manifest
        .tombstones
        .retain(|t| oldest.is_some_and(|g| g < t.generation));
}

/// Writes one block file; `series` pairs each series' id with its data, sorted by key.
fn write_partition(
    blocks_dir: &Path,
    generation: u64,
    partition: (i64, i64),
    series: &[(u32, SeriesData<'_>)],
) -> Result<Arc<LoadedFile>> {
    let mut w = BlockWriter::create(blocks_dir, generation, partition)?;
    let mut chunks = Vec::with_capacity(series.len());
    for (id, data) in series {
        if let Some(meta) = w.add(data)? {
            chunks.push((*id, meta));
        }
    }
    open_written(blocks_dir, generation, partition, w, chunks)
}

/// Finishes a writer and opens the file it wrote, with the given chunk map.
fn open_written(
    blocks_dir: &Path,
    generation: u64,
    partition: (i64, i64),
    w: BlockWriter,
    mut chunks: Vec<(u32, ChunkMeta)>,
) -> Result<Arc<LoadedFile>> {
    let written = w.finish()?;
    let path = blocks_dir.join(block::file_name(generation));
    let file = fs::File::open(&path).map_err(Error::io("open a block file"))?;
    chunks.sort_by_key(|(id, _)| *id);
    Ok(Arc::new(LoadedFile {
        bf: BlockFile {
            path,
            file,
            partition,
            version: block::VERSION,
        },
        entry: FileEntry {
            generation,
            partition,
            bytes: written.bytes,
            points: written.points,
            min_ts: written.min_ts,
            max_ts: written.max_ts,
        },
        chunks,
        hidden_at_open: 0,
    }))
}

/// A frozen head and the generations reserved for its files: what a background flush writes.
pub(crate) struct FlushJob {
    series: Vec<FrozenSeries>,
    frozen: Arc<Frozen>,
    /// Partitions touched, ascending, each with its file's generation and the rollup levels
    /// to write with it (only for a partition that had no block file: then the flushed points
    /// are the whole partition).
    partitions: Vec<((i64, i64), u64, Vec<usize>)>,
    widths: Widths,
    dir: PathBuf,
}

/// What a flush wrote.
pub(crate) struct Flushed {
    pub files: Vec<Arc<LoadedFile>>,
    pub rollups: Vec<Arc<LoadedRollup>>,
}

/// Freezes the head's points and reserves one generation per partition they touch. Runs on
/// the writer thread under the write lock; the head must have no frozen set.
pub(crate) fn prepare_flush(
    dir: &Path,
    head: &mut Head,
    partition_ms: i64,
    widths: Widths,
) -> FlushJob {
    let (mut series, frozen) = head.freeze();
    series.sort_by(|a, b| a.key.cmp(&b.key));
    let mut parts: BTreeMap<(i64, i64), ()> = BTreeMap::new();
    for pts in frozen.points.values() {
        let mut rest = &pts[..];
        while let Some(first) = rest.first() {
            let part = partition_of(first.ts, partition_ms);
            parts.insert(part, ());
            rest = &rest[rest.partition_point(|p| p.ts < part.1)..];
        }
    }
    let partitions = parts
        .into_keys()
        .map(|part| {
            let generation = head.manifest.next_generation;
            head.manifest.next_generation += 1;
            // A partition that has rollups but no file lost its raw data to retention (all
            // of it, or a device's): its rollups hold what the raw data no longer does, so a
            // flush must not replace them; they go stale and the background rebuild merges
            // the new points with what they carry (see `CompactJob::write`).
            let fresh = !head
                .files
                .iter()
                .any(|f| rollup_store::overlaps(f.entry.partition, part))
                && !head.rollups.iter().any(|r| {
                    rollup_store::overlaps(r.entry.partition, part)
                        && rollup_store::level_of(r.entry.width, widths).is_some()
                });
            let levels = if fresh {
                rollup_store::levels_for(part, widths, head.manifest.rollup_floors)
            } else {
                Vec::new()
            };
            (part, generation, levels)
        })
        .collect();
    FlushJob {
        series,
        frozen,
        partitions,
        widths,
        dir: dir.to_path_buf(),
    }
}

impl FlushJob {
    /// Writes the block files (fsynced, directory fsynced). Runs on the flush thread.
    pub(crate) fn write(&self) -> Result<Flushed> {
        let blocks_dir = self.dir.join(BLOCKS_DIR);
        let mut out = Vec::with_capacity(self.partitions.len());
        let mut rollups = Vec::new();
        for (part, generation, levels) in &self.partitions {
            let (part, generation) = (*part, *generation);
            let mut data = Vec::new();
            for s in &self.series {
                let Some(pts) = self.frozen.points.get(&s.id) else {
                    continue;
                };
                let a = pts.partition_point(|p| p.ts < part.0);
                let b = pts.partition_point(|p| p.ts < part.1);
                if a < b {
                    data.push((
                        s.id,
                        SeriesData {
                            key: &s.key,
                            kind: s.kind,
                            points: &pts[a..b],
                        },
                    ));
                }
            }
            out.push(write_partition(&blocks_dir, generation, part, &data)?);
            if !levels.is_empty() {
                let mut set = RollupSet::create(&self.dir, generation, part, levels, self.widths)?;
                for (_, d) in &data {
                    set.add(d.key, d.kind, d.points)?;
                }
                rollups.extend(set.finish(&self.dir)?);
            }
        }
        if !out.is_empty() {
            sync_dir(&blocks_dir).map_err(Error::io("sync the block directory"))?;
        }
        check_fault(&self.dir, FaultPoint::FlushAfterBlocks)?;
        Ok(Flushed {
            files: out,
            rollups,
        })
    }
}

/// What a flush did.
pub(crate) struct FlushDone {
    pub files_written: usize,
    pub files_dropped: usize,
}

/// Finishes a flush whose files are written: stores the manifest (`next_segment`, the new
/// files, files below the retention floor dropped, tombstones), then drops the frozen points
/// and publishes the files in one step. The caller removes the WAL segments below
/// `next_segment` afterwards.
pub(crate) fn install_flush(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    flushed: Flushed,
    next_segment: u64,
    widths: Widths,
) -> Result<FlushDone> {
    let blocks_dir = dir.join(BLOCKS_DIR);
    let new_files = flushed.files;
    let (mut manifest, old_files, old_gens, old_rollups) = {
        let head = head_lock.read();
        (
            head.manifest.clone(),
            Arc::clone(&head.files),
            Arc::clone(&head.file_gens),
            Arc::clone(&head.rollups),
        )
    };
    let floor = manifest.floor;
    let (kept, dropped): (Vec<Arc<LoadedFile>>, Vec<Arc<LoadedFile>>) = old_files
        .iter()
        .cloned()
        .partition(|f| f.entry.max_ts >= floor);
    let (mut rollups, mut rollups_dropped) = rollup_store::updated_list(
        &old_rollups,
        &flushed.rollups,
        None,
        manifest.rollup_floors,
        widths,
    );
    // A stale rollup of a partition whose raw data goes now would look fresh afterwards
    // (no newer file left): it goes too (retention rebuilds rollups first, so this happens
    // only when that rebuild failed).
    let (stale, fresh): (Vec<_>, Vec<_>) = rollups.into_iter().partition(|r| {
        !old_gens.is_fresh(&r.entry)
            && dropped
                .iter()
                .any(|f| rollup_store::overlaps(f.entry.partition, r.entry.partition))
    });
    rollups = fresh;
    rollups_dropped.extend(stale);
    manifest.rollups = rollups.iter().map(|r| r.entry.clone()).collect();
    let mut files: Vec<Arc<LoadedFile>> = kept;
    files.extend(new_files.iter().cloned());
    files.sort_by_key(|f| f.entry.generation);
    manifest.files = files.iter().map(|f| f.entry.clone()).collect();
    manifest.next_segment = next_segment;
    gc_tombstones(&mut manifest);
    manifest.store(dir)?;
    check_fault(dir, FaultPoint::FlushAfterManifest)?;
    {
        let mut head = head_lock.write();
        head.drop_frozen();
        head.manifest = manifest;
        head.set_files(files);
        head.rollups = Arc::new(rollups);
    }
    remove_files(&blocks_dir, &dropped);
    rollup_store::remove_files(dir, &rollups_dropped);
    Ok(FlushDone {
        files_written: new_files.len(),
        files_dropped: dropped.len(),
    })
}

fn remove_files(blocks_dir: &Path, files: &[Arc<LoadedFile>]) {
    if files.is_empty() {
        return;
    }
    for f in files {
        if let Err(error) = fs::remove_file(&f.bf.path) {
            // Harmless: open deletes files the manifest does not name.
            tracing::warn!(%error, file = %f.bf.path.display(), "Removing a block file failed.");
        }
    }
    if let Err(error) = sync_dir(blocks_dir) {
        tracing::warn!(%error, "Syncing the block directory failed.");
    }
}

/// A compaction to run on the compaction thread: the files of one partition, the live series
/// (as of the start) and the generation reserved for the merged file. It must start while no
/// flush is in flight, so that every file written later gets a higher generation than the
/// merged one (newer data keeps its precedence). A **rollup rebuild** is the same job with
/// `rewrite` off: it reads and merges the partition the same way but writes only its rollups.
///
/// Per-device retention: the merged file leaves out each series' points below its device's
/// floor (a retention rewrite is this job on a partition with expired series), while the
/// rollups get every point above the store-wide floor, and, for series that have no raw data
/// left in the partition, their entries of the partition's previous rollups (carried forward):
/// rollups outlive raw data, so they must not be recomputed from raw data alone once a device's
/// data is gone.
pub(crate) struct CompactJob {
    dir: PathBuf,
    part: (i64, i64),
    group: Vec<Arc<LoadedFile>>,
    /// Live series, sorted by key, with their id, kind and retention floor.
    series: Vec<(SeriesKey, u32, ValueKind, i64)>,
    generation: u64,
    /// The store-wide retention floor.
    floor: i64,
    rewrite: bool,
    levels: Vec<usize>,
    widths: Widths,
    /// The partition's newest rollup per level written, when some device's raw data in the
    /// partition may be gone (the partition is below the highest device floor).
    carry_from: Vec<(usize, Arc<LoadedRollup>)>,
    /// (tenant, device, generation) of the tombstones, to leave deleted devices' entries out.
    tombstones: Vec<(String, String, u64)>,
}

/// Picks the first partition with at least `min_files` files (at least 2) and reserves a
/// generation for the merged file. `None` if no partition qualifies. Writer thread.
pub(crate) fn prepare_compaction(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    min_files: usize,
    widths: Widths,
) -> Option<CompactJob> {
    let min_files = min_files.max(2);
    let mut head = head_lock.write();
    let mut counts: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    for f in head.files.iter() {
        *counts.entry(f.entry.partition).or_default() += 1;
    }
    let (&part, _) = counts.iter().find(|(_, n)| **n >= min_files)?;
    Some(job_for(dir, &mut head, part, true, widths, None))
}

/// Picks a partition whose rollups are missing or stale and that no longer receives the
/// newest data (not the latest partition), skipping `skip`; reserves a generation. A
/// partition with several files is compacted (which writes its rollups), one with a single
/// file gets a rollup rebuild. Writer thread.
pub(crate) fn prepare_rollup_rebuild(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    widths: Widths,
    skip: &HashSet<(i64, i64)>,
) -> Option<CompactJob> {
    // Only the writer thread changes the head, so what the read lock shows still holds when
    // the write lock is taken to reserve the generation.
    let (part, n) = {
        let head = head_lock.read();
        let parts = head.file_gens.partitions();
        let newest = parts.last()?.0.0;
        let rollups = rollup_store::newest_rollups(&head.manifest);
        let floors = head.manifest.rollup_floors;
        parts.into_iter().find(|(p, _)| {
            p.0 < newest
                && !skip.contains(p)
                && rollup_store::needs_rebuild(*p, &rollups, &head.file_gens, widths, floors)
        })?
    };
    let mut head = head_lock.write();
    Some(job_for(dir, &mut head, part, n > 1, widths, None))
}

/// A rollup rebuild of `part` computing the levels above `floors` (retention: before the
/// partition's raw data goes). `None` if it needs none. Writer thread.
pub(crate) fn prepare_rollups_for(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    part: (i64, i64),
    widths: Widths,
    floors: [i64; 2],
) -> Option<CompactJob> {
    let mut head = head_lock.write();
    let rollups = rollup_store::newest_rollups(&head.manifest);
    if !rollup_store::needs_rebuild(part, &rollups, &head.file_gens, widths, floors) {
        return None;
    }
    Some(job_for(dir, &mut head, part, false, widths, Some(floors)))
}

fn job_for(
    dir: &Path,
    head: &mut Head,
    part: (i64, i64),
    rewrite: bool,
    widths: Widths,
    floors: Option<[i64; 2]>,
) -> CompactJob {
    let group: Vec<Arc<LoadedFile>> = head
        .files
        .iter()
        .filter(|f| f.entry.partition == part)
        .cloned()
        .collect();
    let global = head.manifest.floor;
    let device_floors = &head.manifest.device_floors;
    let mut series: Vec<(SeriesKey, u32, ValueKind, i64)> = head
        .iter()
        .map(|(t, d, k, s)| {
            let floor = global.max(device_floors.get(t, d));
            (SeriesKey::new(t, d, k), s.id(), s.kind(), floor)
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let generation = head.manifest.next_generation;
    head.manifest.next_generation += 1;
    let floors = floors.unwrap_or(head.manifest.rollup_floors);
    let levels = rollup_store::levels_for(part, widths, floors);
    let carry_from: Vec<(usize, Arc<LoadedRollup>)> = if part.1 <= device_floors.max() {
        levels
            .iter()
            .filter_map(|&l| {
                head.rollups
                    .iter()
                    .filter(|r| r.entry.partition == part && r.entry.width == widths[l])
                    .max_by_key(|r| r.entry.generation)
                    .map(|r| (l, Arc::clone(r)))
            })
            .collect()
    } else {
        Vec::new()
    };
    let tombstones = if carry_from.is_empty() {
        Vec::new()
    } else {
        head.manifest
            .tombstones
            .iter()
            .map(|t| (t.tenant.clone(), t.device.clone(), t.generation))
            .collect()
    };
    CompactJob {
        dir: dir.to_path_buf(),
        part,
        group,
        series,
        generation,
        floor: global,
        rewrite,
        levels,
        widths,
        carry_from,
        tombstones,
    }
}

/// A retention rewrite of `part` (see `CompactJob`): merges the partition's files into one
/// without the points below their device's floor, and writes its rollups at the levels above
/// `floors`. Writer thread.
pub(crate) fn prepare_rewrite(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    part: (i64, i64),
    widths: Widths,
    floors: [i64; 2],
) -> CompactJob {
    let mut head = head_lock.write();
    job_for(dir, &mut head, part, true, widths, Some(floors))
}

/// Deletes the block files of `parts` whole (per-device retention: every series in them
/// expired; their rollups were brought up to date first and stay): manifest first, then
/// memory, then the files. A stale rollup of such a partition goes too (its rebuild failed:
/// once no newer file is left it would look fresh). Returns the files deleted. Writer thread.
pub(crate) fn install_drop(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    parts: &[(i64, i64)],
) -> Result<usize> {
    let (mut manifest, files, gens, old_rollups) = {
        let head = head_lock.read();
        (
            head.manifest.clone(),
            Arc::clone(&head.files),
            Arc::clone(&head.file_gens),
            Arc::clone(&head.rollups),
        )
    };
    let (dropped, kept): (Vec<Arc<LoadedFile>>, Vec<Arc<LoadedFile>>) = files
        .iter()
        .cloned()
        .partition(|f| parts.contains(&f.entry.partition));
    if dropped.is_empty() {
        return Ok(0);
    }
    let (stale, rollups): (Vec<_>, Vec<_>) = old_rollups.iter().cloned().partition(|r| {
        !gens.is_fresh(&r.entry)
            && parts
                .iter()
                .any(|p| rollup_store::overlaps(*p, r.entry.partition))
    });
    manifest.files = kept.iter().map(|f| f.entry.clone()).collect();
    manifest.rollups = rollups.iter().map(|r| r.entry.clone()).collect();
    gc_tombstones(&mut manifest);
    manifest.store(dir)?;
    {
        let mut head = head_lock.write();
        head.manifest = manifest;
        head.set_files(kept);
        head.rollups = Arc::new(rollups);
    }
    remove_files(&dir.join(BLOCKS_DIR), &dropped);
    rollup_store::remove_files(dir, &stale);
    Ok(dropped.len())
}

/// The outcome of a compaction's file writing: the merged file (none if nothing was left),
/// the files it replaces, and the partition's new rollups.
pub(crate) struct Compacted {
    merged: Option<Arc<LoadedFile>>,
    replaced: Vec<Arc<LoadedFile>>,
    rollups: Vec<Arc<LoadedRollup>>,
    part: (i64, i64),
    generation: u64,
}

impl Compacted {
    /// How many block files it replaces.
    pub(crate) fn replaced(&self) -> usize {
        self.replaced.len()
    }
}

impl CompactJob {
    pub(crate) fn part(&self) -> (i64, i64) {
        self.part
    }

    /// The entries to carry forward from the partition's previous rollups: series in them
    /// that have no chunk in the partition's files any more (their device's raw data was
    /// dropped by retention) and are not hidden by a tombstone. By key, each with its
    /// (level, file, entry) sources. A previous rollup that cannot be listed is skipped with a
    /// warning (its damaged entries were unreadable anyway).
    #[allow(clippy::type_complexity)]
    fn carried(&self) -> Vec<(SeriesKey, Vec<(usize, Arc<LoadedRollup>, RollupMeta)>)> {
        if self.carry_from.is_empty() {
            return Vec::new();
        }
        let tombstones: HashMap<(&str, &str), u64> = self
            .tombstones
            .iter()
            .map(|(t, d, g)| ((t.as_str(), d.as_str()), *g))
            .collect();
        let has_raw = |key: &SeriesKey| match self.series.binary_search_by(|s| s.0.cmp(key)) {
            Ok(i) => {
                let id = self.series[i].1;
                self.group.iter().any(|f| f.chunk(id).is_some())
            }
            Err(_) => false,
        };
        let mut out: BTreeMap<SeriesKey, Vec<(usize, Arc<LoadedRollup>, RollupMeta)>> =
            BTreeMap::new();
        for (level, r) in &self.carry_from {
            let listed = match r.rf.series() {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(%error, file = %r.rf.bf.path.display(), "Listing a rollup file failed; its entries are not carried forward.");
                    continue;
                }
            };
            for (key, meta) in listed {
                let deleted = tombstones
                    .get(&(key.tenant.as_str(), key.device.as_str()))
                    .is_some_and(|g| *g > r.entry.generation);
                if deleted || has_raw(&key) {
                    continue;
                }
                out.entry(key)
                    .or_default()
                    .push((*level, Arc::clone(r), meta));
            }
        }
        out.into_iter().collect()
    }

    /// Writes the merged file and the rollups, one series at a time (read its chunks, merge
    /// with newer file wins, append). Compaction thread.
    pub(crate) fn write(self) -> Result<Compacted> {
        let blocks_dir = self.dir.join(BLOCKS_DIR);
        let mut w = if self.rewrite {
            Some(BlockWriter::create(
                &blocks_dir,
                self.generation,
                self.part,
            )?)
        } else {
            None
        };
        let mut set = RollupSet::create(
            &self.dir,
            self.generation,
            self.part,
            &self.levels,
            self.widths,
        )?;
        let mut chunks = Vec::new();
        let mut carried = self.carried().into_iter().peekable();
        for (key, id, kind, floor) in &self.series {
            while let Some((k, sources)) = carried.next_if(|(k, _)| k < key) {
                set.add_carried(&k, &sources)?;
            }
            let mut runs = Vec::new();
            for f in &self.group {
                if let Some(meta) = f.chunk(*id) {
                    let mut pts = f.bf.read_chunk(meta, *kind)?;
                    pts.retain(|p| p.ts >= self.floor);
                    runs.push(pts);
                }
            }
            if runs.is_empty() {
                continue;
            }
            let points = merge(runs);
            // The rollups summarise every point; the block file keeps those at or above the
            // series' own floor.
            let kept = &points[points.partition_point(|p| p.ts < *floor)..];
            let data = SeriesData {
                key,
                kind: *kind,
                points: kept,
            };
            if let Some(w) = &mut w
                && !kept.is_empty()
                && let Some(meta) = w.add(&data)?
            {
                chunks.push((*id, meta));
            }
            set.add(key, *kind, &points)?;
        }
        for (k, sources) in carried {
            set.add_carried(&k, &sources)?;
        }
        let (merged, rollups) = match w {
            Some(w) if chunks.is_empty() && set.is_empty() => {
                // Nothing live is left in the partition: no file, no rollups.
                drop((w, set));
                (None, Vec::new())
            }
            Some(w) if chunks.is_empty() => {
                // Every series' raw data here is gone (retention), their summaries stay.
                drop(w);
                (None, set.finish(&self.dir)?)
            }
            Some(w) => {
                let f = open_written(&blocks_dir, self.generation, self.part, w, chunks)?;
                sync_dir(&blocks_dir).map_err(Error::io("sync the block directory"))?;
                (Some(f), set.finish(&self.dir)?)
            }
            None => (None, set.finish(&self.dir)?),
        };
        check_fault(&self.dir, FaultPoint::CompactAfterWrite)?;
        Ok(Compacted {
            merged,
            replaced: if self.rewrite { self.group } else { Vec::new() },
            rollups,
            part: self.part,
            generation: self.generation,
        })
    }
}

/// Replaces the compacted files by the merged one and the partition's older rollups by the
/// new ones: manifest first, then memory, then the old files are deleted. Writer thread.
/// Files flushed since the compaction started stay.
pub(crate) fn install_compaction(
    dir: &Path,
    head_lock: &parking_lot::RwLock<Head>,
    done: Compacted,
    widths: Widths,
) -> Result<()> {
    let (mut manifest, files, old_rollups) = {
        let head = head_lock.read();
        (
            head.manifest.clone(),
            Arc::clone(&head.files),
            Arc::clone(&head.rollups),
        )
    };
    let gone: HashSet<u64> = done.replaced.iter().map(|f| f.entry.generation).collect();
    let mut new_list: Vec<Arc<LoadedFile>> = files
        .iter()
        .filter(|f| !gone.contains(&f.entry.generation))
        .cloned()
        .collect();
    if let Some(f) = &done.merged {
        new_list.push(Arc::clone(f));
    }
    new_list.sort_by_key(|f| f.entry.generation);
    let (rollups, rollups_dropped) = rollup_store::updated_list(
        &old_rollups,
        &done.rollups,
        Some((done.part, done.generation)),
        manifest.rollup_floors,
        widths,
    );
    manifest.files = new_list.iter().map(|f| f.entry.clone()).collect();
    manifest.rollups = rollups.iter().map(|r| r.entry.clone()).collect();
    gc_tombstones(&mut manifest);
    manifest.store(dir)?;
    check_fault(dir, FaultPoint::CompactAfterManifest)?;
    {
        let mut head = head_lock.write();
        head.manifest = manifest;
        head.set_files(new_list);
        head.rollups = Arc::new(rollups);
    }
    remove_files(&dir.join(BLOCKS_DIR), &done.replaced);
    rollup_store::remove_files(dir, &rollups_dropped);
    Ok(())
}
