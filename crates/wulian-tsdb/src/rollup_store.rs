//! The rollup files of a store: loading them at open, writing one partition's set, deciding
//! which are still valid, and replacing or dropping them in the manifest.
//!
//! Validity: a rollup file of partition P with generation G summarises the merged content of
//! the block files of P with a generation up to G. It is **fresh** (usable by queries) while
//! no block file overlapping P has a generation above G: a flush into P after G, or a file
//! written while the rollup was being computed, makes it stale until the next compaction or
//! rebuild of P writes a new one. Block files dropped by retention do not make it stale: that
//! is how rollups outlive raw data. Device tombstones hide a rollup's entries of the device
//! when the tombstone's generation is above the rollup's, as for block files.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fsutil::sync_dir;
use crate::manifest::{Manifest, RollupEntry};
use crate::query::{Widths, fold_partials, partial_aggregate};
use crate::rollup::{self, RollupFile, RollupMeta, RollupWriter};
use crate::storage::LoadedFile;
use crate::value::{Point, SeriesKey, ValueKind};

/// An open rollup file with its manifest entry.
#[derive(Debug)]
pub(crate) struct LoadedRollup {
    pub rf: RollupFile,
    pub entry: RollupEntry,
}

pub(crate) fn overlaps(a: (i64, i64), b: (i64, i64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The block files' partitions and generations, sorted by partition start, to answer "the
/// newest file overlapping this partition" in O(log n) (queries ask it for every rollup they
/// consider). Rebuilt whenever the file list changes.
#[derive(Debug, Default)]
pub(crate) struct FileGens {
    by_start: Vec<((i64, i64), u64)>,
    /// The widest partition, to bound the search (partitions differ in width only after a
    /// change of `Config::partition`).
    max_width: i64,
}

impl FileGens {
    pub(crate) fn new(files: &[Arc<LoadedFile>]) -> FileGens {
        let mut by_start: Vec<((i64, i64), u64)> = files
            .iter()
            .map(|f| (f.entry.partition, f.entry.generation))
            .collect();
        by_start.sort_unstable();
        let max_width = by_start
            .iter()
            .map(|((a, b), _)| b.saturating_sub(*a))
            .max()
            .unwrap_or(0);
        FileGens {
            by_start,
            max_width,
        }
    }

    /// The highest generation among the files overlapping `part`.
    pub(crate) fn newest(&self, part: (i64, i64)) -> Option<u64> {
        let lo = self
            .by_start
            .partition_point(|(p, _)| p.0 <= part.0.saturating_sub(self.max_width));
        let hi = self.by_start.partition_point(|(p, _)| p.0 < part.1);
        self.by_start[lo.min(hi)..hi]
            .iter()
            .filter(|(p, _)| overlaps(*p, part))
            .map(|(_, g)| *g)
            .max()
    }

    /// Whether `r` still equals the merged content of its partition's block files: no file
    /// overlapping its partition is newer.
    pub(crate) fn is_fresh(&self, r: &RollupEntry) -> bool {
        self.newest(r.partition).is_none_or(|g| g <= r.generation)
    }

    /// The partitions that have files, ascending, with their file counts.
    pub(crate) fn partitions(&self) -> Vec<((i64, i64), usize)> {
        let mut out: Vec<((i64, i64), usize)> = Vec::new();
        for (p, _) in &self.by_start {
            match out.last_mut() {
                Some((q, n)) if q == p => *n += 1,
                _ => out.push((*p, 1)),
            }
        }
        out
    }
}

/// The level (0 = fine, 1 = coarse) of a rollup width, `None` for a width this store is not
/// configured with (a file from another configuration: kept, never used).
pub(crate) fn level_of(width: i64, widths: Widths) -> Option<usize> {
    widths.iter().position(|w| *w == width)
}

/// The levels worth writing for partition `part`: those whose width tiles the partition and
/// whose retention floor is below the partition's end.
pub(crate) fn levels_for(part: (i64, i64), widths: Widths, floors: [i64; 2]) -> Vec<usize> {
    (0..2)
        .filter(|&l| {
            part.0.rem_euclid(widths[l]) == 0
                && part.1.rem_euclid(widths[l]) == 0
                && part.1 > floors[l]
        })
        .collect()
}

/// The newest rollup generation per (partition, width).
pub(crate) fn newest_rollups(manifest: &Manifest) -> HashMap<((i64, i64), i64), u64> {
    let mut out: HashMap<((i64, i64), i64), u64> = HashMap::new();
    for r in &manifest.rollups {
        let g = out.entry((r.partition, r.width)).or_default();
        *g = (*g).max(r.generation);
    }
    out
}

/// Whether partition `part` lacks a fresh rollup at one of the levels it should have.
/// `newest` is [`newest_rollups`] of the current manifest.
pub(crate) fn needs_rebuild(
    part: (i64, i64),
    newest: &HashMap<((i64, i64), i64), u64>,
    files: &FileGens,
    widths: Widths,
    floors: [i64; 2],
) -> bool {
    let newest_file = files.newest(part);
    levels_for(part, widths, floors)
        .into_iter()
        .any(|l| match newest.get(&(part, widths[l])) {
            None => true,
            Some(g) => newest_file.is_some_and(|f| f > *g),
        })
}

/// Opens every rollup file the manifest names (dropping entries of devices deleted since it
/// was written) and deletes the files it does not name.
pub(crate) fn load(dir: &Path, manifest: &Manifest) -> Result<Vec<Arc<LoadedRollup>>> {
    let rollup_dir = dir.join(rollup::DIR);
    let named: HashSet<String> = manifest
        .rollups
        .iter()
        .map(|r| rollup::file_name(r.generation, r.width))
        .collect();
    for entry in fs::read_dir(&rollup_dir).map_err(Error::io("list rollup files"))? {
        let entry = entry.map_err(Error::io("list rollup files"))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !named.contains(&name) {
            tracing::info!(file = %entry.path().display(), "Removing a rollup file the manifest does not name (interrupted flush or compaction).");
            fs::remove_file(entry.path()).map_err(Error::io("remove a leftover rollup file"))?;
        }
    }
    let mut entries = manifest.rollups.clone();
    entries.sort_by_key(|r| r.generation);
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let path = rollup_dir.join(rollup::file_name(entry.generation, entry.width));
        let rf = RollupFile::open(&path, entry.generation)?;
        if rf.bf.partition != entry.partition || rf.width != entry.width {
            return Err(Error::Corrupt {
                file: path,
                offset: 16,
                reason: format!(
                    "partition {:?} width {} in the file, {:?} width {} in the manifest",
                    rf.bf.partition, rf.width, entry.partition, entry.width
                ),
            });
        }
        // Deleted devices are hidden at query time (a tombstone newer than the file's
        // generation), as for block files.
        out.push(Arc::new(LoadedRollup { rf, entry }));
    }
    Ok(out)
}

/// The rollup files of one partition being written (one per level), fed one series at a time
/// in key order.
pub(crate) struct RollupSet {
    writers: Vec<(usize, RollupWriter)>,
    widths: Widths,
    part: (i64, i64),
    generation: u64,
    /// Series added so far.
    added: usize,
}

impl RollupSet {
    pub(crate) fn create(
        dir: &Path,
        generation: u64,
        part: (i64, i64),
        levels: &[usize],
        widths: Widths,
    ) -> Result<RollupSet> {
        let rollup_dir = dir.join(rollup::DIR);
        let mut writers = Vec::with_capacity(levels.len());
        for &l in levels {
            writers.push((
                l,
                RollupWriter::create(&rollup_dir, generation, part, widths[l])?,
            ));
        }
        Ok(RollupSet {
            writers,
            widths,
            part,
            generation,
            added: 0,
        })
    }

    /// Whether no series was added (or there is no level to write).
    pub(crate) fn is_empty(&self) -> bool {
        self.added == 0 || self.writers.is_empty()
    }

    /// Adds one series' entries taken over from earlier rollups of the partition, one per
    /// (level, file, entry) source (see `storage::CompactJob`), in key order with the other
    /// series. A source that cannot be read is skipped with a warning.
    pub(crate) fn add_carried(
        &mut self,
        key: &SeriesKey,
        sources: &[(usize, Arc<LoadedRollup>, RollupMeta)],
    ) -> Result<()> {
        for (level, file, meta) in sources {
            let Some((_, w)) = self.writers.iter_mut().find(|(l, _)| l == level) else {
                continue;
            };
            match file.rf.read(meta) {
                Ok(buckets) => {
                    w.add(key, meta.kind, &buckets)?;
                    self.added += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, series = %key, "A rollup entry could not be carried forward.");
                }
            }
        }
        Ok(())
    }

    /// Adds one series' merged points of the partition (ascending, unique timestamps).
    pub(crate) fn add(&mut self, key: &SeriesKey, kind: ValueKind, points: &[Point]) -> Result<()> {
        if self.writers.is_empty() || points.is_empty() {
            return Ok(());
        }
        self.added += 1;
        // The coarse buckets fold the fine ones, exactly as `query::level_partials` does.
        let fine = partial_aggregate(points, self.widths[0]);
        for (level, w) in &mut self.writers {
            if *level == 0 {
                w.add(key, kind, &fine)?;
            } else {
                w.add(key, kind, &fold_partials(&fine, self.widths[1]))?;
            }
        }
        Ok(())
    }

    /// Finishes and reopens the files (written even when empty, so that a partition whose
    /// series were all deleted does not look as if it still needed a rollup).
    pub(crate) fn finish(self, dir: &Path) -> Result<Vec<Arc<LoadedRollup>>> {
        let rollup_dir = dir.join(rollup::DIR);
        let mut out = Vec::with_capacity(self.writers.len());
        for (level, w) in self.writers {
            let written = w.finish()?;
            let width = self.widths[level];
            let path = rollup_dir.join(rollup::file_name(self.generation, width));
            let rf = RollupFile::open(&path, self.generation)?;
            out.push(Arc::new(LoadedRollup {
                rf,
                entry: RollupEntry {
                    generation: self.generation,
                    width,
                    partition: self.part,
                    bytes: written.bytes,
                },
            }));
        }
        if !out.is_empty() {
            sync_dir(&rollup_dir).map_err(Error::io("sync the rollup directory"))?;
        }
        Ok(out)
    }
}

/// The rollup list after installing `new` (each replaces the older rollups of its partition
/// at its width) and dropping `replaced_part`'s older rollups of every width (a compaction or
/// rebuild of that partition recomputed them all), then those below their level's floor.
/// Returns (kept, removed).
pub(crate) fn updated_list(
    current: &[Arc<LoadedRollup>],
    new: &[Arc<LoadedRollup>],
    replaced_part: Option<((i64, i64), u64)>,
    floors: [i64; 2],
    widths: Widths,
) -> (Vec<Arc<LoadedRollup>>, Vec<Arc<LoadedRollup>>) {
    let (mut kept, mut removed) = (Vec::new(), Vec::new());
    for r in current {
        let e = &r.entry;
        let superseded = new.iter().any(|n| {
            n.entry.width == e.width
                && n.entry.generation > e.generation
                && overlaps(n.entry.partition, e.partition)
        }) || replaced_part
            .is_some_and(|(p, g)| g > e.generation && overlaps(p, e.partition));
        let expired = level_of(e.width, widths).is_some_and(|l| e.partition.1 <= floors[l]);
        if superseded || expired {
            removed.push(Arc::clone(r));
        } else {
            kept.push(Arc::clone(r));
        }
    }
    kept.extend(new.iter().cloned());
    kept.sort_by_key(|r| r.entry.generation);
    (kept, removed)
}

pub(crate) fn remove_files(dir: &Path, rollups: &[Arc<LoadedRollup>]) {
    if rollups.is_empty() {
        return;
    }
    for r in rollups {
        if let Err(error) = fs::remove_file(&r.rf.bf.path) {
            // Harmless: open deletes files the manifest does not name.
            tracing::warn!(%error, file = %r.rf.bf.path.display(), "Removing a rollup file failed.");
        }
    }
    if let Err(error) = sync_dir(&dir.join(rollup::DIR)) {
        tracing::warn!(%error, "Syncing the rollup directory failed.");
    }
}
