//! Counters for `/metrics` and startup logs. The writer thread updates them after each group
//! commit, flush and compaction; `Tsdb::stats` reads them together with the head's counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the WAL fsync latency buckets, in µs ([`Stats::wal_fsync`]).
pub const FSYNC_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// How long the WAL's fsyncs took since open: what every durable acknowledgement waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsyncLatency {
    /// Fsyncs per bucket of [`FSYNC_BUCKETS_US`] (each its own, not cumulative), and one more
    /// for those above the last bound.
    pub counts: [u64; FSYNC_BUCKETS_US.len() + 1],
    pub sum_us: u64,
}

/// A point-in-time view of the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    pub series: usize,
    pub devices: usize,
    /// Points in memory (head and a flush in progress) plus points in block files. A point
    /// rewritten after it was flushed counts once per copy until compaction merges them.
    pub points: u64,
    /// Bytes in WAL segments on disk (everything since the last flush).
    pub wal_bytes: u64,
    pub wal_segments: u64,
    /// Size of a snapshot left by the first engine version (loaded at open, removed by the
    /// first flush); 0 otherwise.
    pub snapshot_bytes: u64,
    /// Flushes (head → block files, WAL cut) completed since open.
    pub checkpoints: u64,
    /// Block files on disk, their bytes, and the points they hold (a point rewritten after it
    /// was flushed counts once per file until compaction merges them).
    pub block_files: u64,
    pub block_bytes: u64,
    pub block_points: u64,
    /// Rollup files on disk (one per partition and bucket width) and their bytes.
    pub rollup_files: u64,
    pub rollup_bytes: u64,
    /// Rollup frames (one series, one day) read by aggregate queries since open: how often
    /// charts were answered from rollups instead of raw points.
    pub rollup_reads: u64,
    /// Block files deleted by retention since open (store-wide floor, or every series in them
    /// past its device's retention).
    pub retention_files_deleted: u64,
    /// Partitions rewritten by retention since open, without the series past their device's
    /// retention.
    pub retention_partitions_rewritten: u64,
    /// Series whose raw data retention dropped entirely since open.
    pub retention_series_dropped: u64,
    /// Devices with a retention floor of their own (above the store-wide one).
    pub device_floors: u64,
    /// Partitions merged by compaction (or whose rollups were rebuilt) since open.
    pub compactions: u64,
    /// Group commits since open, and the write/delete calls they carried; their ratio is how
    /// many calls share one WAL write (and, in `Sync` mode, one fsync).
    pub commit_groups: u64,
    pub commit_requests: u64,
    /// Fsyncs of the WAL and their latency.
    pub wal_fsync: FsyncLatency,
    /// Whether the last open cut a torn record off the tail of the WAL (logged as a warning).
    pub recovered_torn_tail: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub wal_bytes: AtomicU64,
    pub wal_segments: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    pub checkpoints: AtomicU64,
    pub block_files: AtomicU64,
    pub block_bytes: AtomicU64,
    pub block_points: AtomicU64,
    pub compactions: AtomicU64,
    pub rollup_files: AtomicU64,
    pub rollup_bytes: AtomicU64,
    pub rollup_reads: AtomicU64,
    pub retention_files_deleted: AtomicU64,
    pub retention_partitions_rewritten: AtomicU64,
    pub retention_series_dropped: AtomicU64,
    pub device_floors: AtomicU64,
    pub commit_groups: AtomicU64,
    pub commit_requests: AtomicU64,
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
    pub fsync_sum_us: AtomicU64,
    pub recovered_torn_tail: std::sync::atomic::AtomicBool,
}

impl Counters {
    pub(crate) fn set(counter: &AtomicU64, v: u64) {
        counter.store(v, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one fsync of the WAL that took `took`.
    pub(crate) fn observe_fsync(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        Counters::add(&self.fsync_buckets[bucket], 1);
        Counters::add(&self.fsync_sum_us, us);
    }

    pub(crate) fn fsync_latency(&self) -> FsyncLatency {
        FsyncLatency {
            counts: self.fsync_buckets.each_ref().map(Counters::get),
            sum_us: Counters::get(&self.fsync_sum_us),
        }
    }
}
