//! Embedded time-series engine for wulian: a write-ahead log, an in-memory head of recent
//! points, compressed immutable block files per time partition, range and aggregate queries,
//! compaction and retention.
//!
//! # Data model
//!
//! A series is `(tenant, device, key)` ([`SeriesKey`]) and holds points `(ts ms, value)`. Its
//! value kind ([`ValueKind`]) is fixed by its first write; a write of another kind is refused
//! with [`Error::TypeMismatch`], except that an integer written to a float series is stored as
//! a float. Timestamps must be in `0..=MAX_TIMESTAMP` (year 9999), floats finite. A write
//! call is all-or-nothing: every check runs before anything is logged. A second write at the
//! same series and timestamp replaces the first (last write wins: the head over block files, a
//! newer file over an older one); late and out-of-order points are accepted, also into
//! partitions already flushed, and queried in timestamp order.
//!
//! # Storage (see DESIGN.md)
//!
//! ```text
//! <dir>/LOCK                       advisory lock: one engine per directory
//! <dir>/wal/000000000001.wal ...   WAL segments: header, then [len][crc32][payload] records
//! <dir>/MANIFEST                   block and rollup files, WAL replay start, retention floors,
//!                                  tombstones
//! <dir>/blocks/000000000007.blk    one partition's compressed chunks (one per series) + index
//! <dir>/rollups/000000000007-60000.rup  one partition's 1-minute bucket summaries per series
//! ```
//!
//! - Writes go to one writer thread (`wal::writer`) that group-commits: everything queued is
//!   validated, appended with one write(2), fsynced once ([`Durability::Sync`]) or at least
//!   every interval ([`Durability::Async`]), applied to the head, then acknowledged.
//! - The head (`head`) keeps every series (kind, last-value cache, per-device index) and the
//!   points not yet flushed.
//! - When the WAL passes `checkpoint_bytes`, the oldest unflushed write passes `flush_age`, and
//!   on close, the head is flushed (`storage`): one block file (`block`, `compress`) per
//!   partition touched, the manifest (`manifest`) replaced atomically, then the WAL segments it
//!   covers are deleted. Partitions with several files are compacted into one.
//! - Each partition also gets rollup files (`rollup`, `rollup_store`): per series, count, sum,
//!   min, max, first and last per 1-minute and per 1-hour bucket, written by flushes (for a
//!   partition that had no file), compactions and background rebuilds, kept longer than raw
//!   data ([`Config::rollup_1m_retention`], [`Config::rollup_1h_retention`]). Aggregates whose
//!   interval is a multiple of a rollup width read them where the answer is identical.
//! - Retention (`retention`, [`Tsdb::enforce_retention_policy`]) drops whole partitions of raw
//!   data per device (its own retention, its tenant's, or a default): partitions where every
//!   series expired are deleted, others rewritten without the expired series; rollups keep
//!   summarising what is dropped.
//! - Open loads the manifest and the block indexes, then replays the later WAL segments
//!   (`wal::replay`). A torn record at the tail of the last segment (never acknowledged) is cut
//!   off with a warning; damage anywhere else refuses to open with [`Error::Corrupt`].
//!
//! # Using it from async code
//!
//! [`Tsdb::open`] blocks (replay); call it at startup or in `spawn_blocking`. Writes are async
//! and wait for the group commit. Reads take a read lock briefly to copy what they need from
//! memory, then read block files without it (a query over flushed data does file I/O: call it
//! from `spawn_blocking` when ranges are large). No lock is held across an `.await`. Dropping
//! the last handle without [`Tsdb::close`] stops the writer (joining its thread, which may take
//! as long as an ongoing flush) without a flush; the next open replays the WAL.

mod block;
mod classes;
mod codec;
mod compress;
mod error;
mod framed;
mod fsutil;
mod head;
mod manifest;
mod query;
mod retention;
mod rollup;
mod rollup_store;
mod snapshot;
mod stats;
mod storage;
mod value;
mod wal;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

#[doc(hidden)]
pub use compress::float_column_sizes;
pub use error::{Error, Result};
pub use query::PartialBucket;
pub use retention::{RetentionPolicy, RetentionReport};
pub use stats::{FSYNC_BUCKETS_US, FsyncLatency, Stats};
#[doc(hidden)]
pub use storage::{FaultPoint, inject_fault};
pub use value::{
    Aggregation, Bucket, MAX_NAME_BYTES, MAX_TIMESTAMP, MIN_TIMESTAMP, ParseAggregationError,
    Point, RangeResult, SeriesKey, Value, ValueKind, WriteEntry, WriteSummary,
};

use crate::head::Head;
use crate::stats::Counters;
use crate::wal::segment::SegmentLog;
use crate::wal::writer::{self, Request};

/// When a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After the WAL is fsynced: an acknowledged write survives power loss.
    Sync,
    /// After the write(2) to the WAL: survives a process crash; a power loss may lose up to
    /// `interval` of acknowledged writes. The WAL is fsynced at least every `interval`.
    Async { interval: Duration },
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of the store; created if missing.
    pub dir: PathBuf,
    pub durability: Durability,
    /// Size at which a WAL segment is sealed and the next one started. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// WAL size that triggers a flush (the head written to block files, the WAL cut).
    /// Default 256 MiB.
    pub checkpoint_bytes: u64,
    /// Age of the oldest unflushed write that triggers a flush (checked when writes arrive,
    /// and every fsync interval in `Async` mode). Default 1 hour; `None` = size only.
    pub flush_age: Option<Duration>,
    /// Width of a time partition: block files hold one partition each, and retention drops
    /// whole partitions. Default 1 day. Changing it for an existing store is allowed (files
    /// keep their own bounds) but retention then works at file granularity.
    pub partition: Duration,
    /// A partition with this many files is merged into one after a flush. Default 4.
    pub compaction_files: usize,
    /// Data older than this is dropped by [`Tsdb::enforce_retention`], a whole partition at a
    /// time. `None` (default) keeps everything. The partition's rollups stay (see below).
    /// [`Tsdb::enforce_retention_policy`] takes a per-device policy instead.
    pub retention: Option<Duration>,
    /// How long the 1-minute rollups are kept ([`Tsdb::enforce_retention`], whole partitions).
    /// Default 90 days; `None` keeps them forever.
    pub rollup_1m_retention: Option<Duration>,
    /// How long the 1-hour rollups are kept. Default 2 years (730 days); `None` = forever.
    pub rollup_1h_retention: Option<Duration>,
    /// The rollup bucket widths, fine and coarse (default 1 minute and 1 hour). The coarse
    /// one must be a multiple of the fine one. A level is written only for partitions it
    /// tiles (the default 1-day partition suits both). For tests; rollups written with other
    /// widths are ignored.
    #[doc(hidden)]
    pub rollup_widths: [Duration; 2],
}

impl Config {
    /// Defaults: [`Durability::Sync`], 64 MiB segments, checkpoint at 256 MiB of WAL.
    pub fn new(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            durability: Durability::Sync,
            wal_segment_bytes: 64 * 1024 * 1024,
            checkpoint_bytes: 256 * 1024 * 1024,
            flush_age: Some(Duration::from_secs(3600)),
            partition: Duration::from_secs(86_400),
            compaction_files: 4,
            retention: None,
            rollup_1m_retention: Some(Duration::from_secs(90 * 86_400)),
            rollup_1h_retention: Some(Duration::from_secs(730 * 86_400)),
            rollup_widths: [Duration::from_secs(60), Duration::from_secs(3600)],
        }
    }
}

/// State shared by the handles (readers) and the writer thread (the only mutator).
pub(crate) struct Shared {
    pub head: RwLock<Head>,
    pub counters: Counters,
}

/// A handle to an open store. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Tsdb {
    inner: Arc<Inner>,
}

/// Field order matters: `tx` is dropped before `_writer`, so that when the last handle goes
/// the writer sees its channel close and `WriterThread::drop` can join it.
struct Inner {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    closed: AtomicBool,
    dir: PathBuf,
    widths: query::Widths,
    _writer: WriterThread,
}

struct WriterThread(Mutex<Option<JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        if let Some(handle) = self.0.get_mut().take()
            && handle.join().is_err()
        {
            tracing::error!("The WAL writer thread panicked.");
        }
    }
}

impl fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tsdb")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Tsdb {
    /// Opens (creating the directory if needed): loads the manifest and the block indexes (or a
    /// first-version snapshot), replays the WAL, starts the writer thread. Blocking; call from
    /// startup or `spawn_blocking`.
    pub fn open(config: Config) -> Result<Tsdb> {
        let started = Instant::now();
        let widths = rollup_widths(&config)?;
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(Error::io("create the store directory"))?;
        let lock = fsutil::lock_dir(&dir)?;
        let wal_dir = dir.join("wal");
        let snapshot_dir = dir.join("snapshot");
        let blocks_dir = dir.join(storage::BLOCKS_DIR);
        let rollup_dir = dir.join(rollup::DIR);
        for d in [&wal_dir, &blocks_dir, &rollup_dir] {
            fs::create_dir_all(d).map_err(Error::io("create the store directory"))?;
        }
        fsutil::sync_dir(&dir).map_err(Error::io("sync the store directory"))?;

        let mut head = Head::default();
        let (start, snapshot) = match manifest::Manifest::load(&dir)? {
            Some(m) => {
                if snapshot_dir.exists() {
                    // A first-version snapshot whose removal was interrupted by a crash.
                    snapshot::remove_older(&snapshot_dir, u64::MAX)?;
                }
                let start = m.next_segment;
                storage::load(&dir, m, &mut head)?;
                (start, None)
            }
            None => {
                storage::load(&dir, manifest::Manifest::default(), &mut head)?;
                if snapshot_dir.exists() {
                    let snapshot = snapshot::load_latest(&snapshot_dir, &mut head)?;
                    (snapshot.as_ref().map_or(1, |s| s.next_segment), snapshot)
                } else {
                    (1, None)
                }
            }
        };
        let replayed = wal::replay::replay(&wal_dir, start, &mut head)?;
        let log = match replayed.segments.split_last() {
            Some((&(last, len), sealed)) => {
                SegmentLog::resume(&wal_dir, last, len, sealed.to_vec())
            }
            None => SegmentLog::start(&wal_dir, start, Vec::new()),
        }
        .map_err(Error::io("open the WAL"))?;

        let counters = Counters::default();
        Counters::set(&counters.wal_bytes, log.total_bytes());
        Counters::set(&counters.wal_segments, log.segment_count() as u64);
        Counters::set(
            &counters.snapshot_bytes,
            snapshot.as_ref().map_or(0, |s| s.bytes),
        );
        counters
            .recovered_torn_tail
            .store(replayed.truncated_tail, Ordering::Relaxed);
        Counters::set(&counters.block_files, head.manifest.files.len() as u64);
        Counters::set(
            &counters.block_bytes,
            head.manifest.files.iter().map(|f| f.bytes).sum(),
        );
        Counters::set(
            &counters.block_points,
            head.manifest.files.iter().map(|f| f.points).sum(),
        );
        Counters::set(&counters.rollup_files, head.manifest.rollups.len() as u64);
        Counters::set(
            &counters.rollup_bytes,
            head.manifest.rollups.iter().map(|r| r.bytes).sum(),
        );
        Counters::set(
            &counters.device_floors,
            head.manifest.device_floors.len() as u64,
        );
        tracing::info!(
            dir = %dir.display(),
            snapshot = snapshot.as_ref().map(|s| s.path.display().to_string()),
            wal_records = replayed.records,
            wal_segments = log.segment_count(),
            wal_bytes = log.total_bytes(),
            torn_tail = replayed.truncated_tail,
            series = head.series_count(),
            points = head.point_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Time-series store opened."
        );
        let shared = Arc::new(Shared {
            head: RwLock::new(head),
            counters,
        });

        let (tx, rx) = mpsc::channel(writer::CHANNEL_CAPACITY);
        let handle = writer::spawn(writer::Writer {
            rx,
            log,
            shared: Arc::clone(&shared),
            dir: dir.clone(),
            snapshot_dir,
            flush_age: config.flush_age,
            partition_ms: i64::try_from(config.partition.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            compaction_files: config.compaction_files,
            retention: config.retention,
            rollup_retention_ms: [
                config.rollup_1m_retention.map(duration_ms),
                config.rollup_1h_retention.map(duration_ms),
            ],
            widths,
            wake: tx.downgrade(),
            durability: config.durability,
            segment_bytes: config.wal_segment_bytes,
            checkpoint_bytes: config.checkpoint_bytes,
            lock,
        })
        .map_err(Error::io("start the WAL writer thread"))?;
        if let Durability::Async { interval } = config.durability {
            spawn_ticker(&tx, interval).map_err(Error::io("start the WAL fsync thread"))?;
        }
        Ok(Tsdb {
            inner: Arc::new(Inner {
                tx,
                shared,
                closed: AtomicBool::new(false),
                dir,
                widths,
                _writer: WriterThread(Mutex::new(Some(handle))),
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Writes a batch. When the future resolves `Ok`, the batch is durable per the durability
    /// policy and visible to reads. All-or-nothing: key names, timestamp range, finite floats
    /// and series kinds are checked before anything is logged. Dropping the future after the
    /// batch was queued does not cancel it.
    pub async fn write(&self, entries: Vec<WriteEntry>) -> Result<WriteSummary> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if entries.is_empty() {
            return Ok(WriteSummary { points: 0 });
        }
        for entry in &entries {
            entry.validate()?;
        }
        let (reply, answer) = oneshot::channel();
        self.request(Request::Write { entries, reply }).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Deletes all series of a device. Logged as a tombstone, so it survives restart.
    pub async fn delete_device(&self, tenant: &str, device: &str) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.request(Request::DeleteDevice {
            tenant: tenant.to_string(),
            device: device.to_string(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Flushes the head to block files now and cuts the WAL (normally automatic, see
    /// [`Config::checkpoint_bytes`] and [`Config::flush_age`]).
    pub async fn checkpoint(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.request(Request::Checkpoint { reply }).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Fsyncs the WAL, flushes the head to block files, stops the writer. Later writes fail
    /// with [`Error::Closed`]; reads keep working on what is in memory. Closing again is a
    /// no-op that returns once the first close has finished.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let (reply, answer) = oneshot::channel();
        if self.inner.tx.send(Request::Close { reply }).await.is_err() {
            return Ok(());
        }
        // A dropped reply means an earlier close already stopped the writer.
        answer.await.unwrap_or(Ok(()))
    }

    async fn request(&self, request: Request) -> Result<()> {
        self.inner.tx.send(request).await.map_err(|_| Error::Closed)
    }

    /// Points with `from <= ts < to`, ascending, at most `limit`; `truncated` says whether
    /// more were left out. An unknown series has no points. A block file that cannot be read
    /// is logged as an error and its points are missing from the answer; [`Tsdb::try_range`]
    /// reports it instead.
    pub fn range(&self, series: &SeriesKey, from: i64, to: i64, limit: usize) -> RangeResult {
        match self.try_range(series, from, to, limit) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, %series, "A range query could not read a block file.");
                RangeResult {
                    points: Vec::new(),
                    truncated: false,
                }
            }
        }
    }

    /// [`Tsdb::range`], with storage errors ([`Error::Corrupt`], [`Error::Io`]) returned.
    /// Reads the in-memory head and the block files of the partitions the range overlaps.
    pub fn try_range(
        &self,
        series: &SeriesKey,
        from: i64,
        to: i64,
        limit: usize,
    ) -> Result<RangeResult> {
        let Some(view) = self.series_view(series, from, to) else {
            return Ok(RangeResult {
                points: Vec::new(),
                truncated: false,
            });
        };
        let mut points = view.points(Some(limit))?;
        let truncated = points.len() > limit;
        points.truncate(limit);
        Ok(RangeResult { points, truncated })
    }

    /// Points with `from <= ts < to` folded into buckets aligned to multiples of
    /// `interval_ms` since the epoch; only non-empty buckets, ascending. Intervals that are a
    /// multiple of 1 minute or 1 hour are answered from rollups where that gives the identical
    /// result (sums are added minute by minute, then hour by hour, then per bucket, whatever
    /// the source), including partitions whose raw data retention has dropped (whole buckets
    /// only there). Min/Max/Avg/Sum on a
    /// string or bool series is [`Error::NotNumeric`]; an interval below 1 ms is
    /// [`Error::InvalidInterval`]. An unknown series has no buckets. A damaged block file is
    /// [`Error::Corrupt`].
    pub fn aggregate(
        &self,
        series: &SeriesKey,
        from: i64,
        to: i64,
        interval_ms: i64,
        agg: Aggregation,
    ) -> Result<Vec<Bucket>> {
        if interval_ms < 1 {
            return Err(Error::InvalidInterval);
        }
        let Some(view) = self.series_view(series, from, to) else {
            return Ok(Vec::new());
        };
        query::check(&series.key, view.kind, interval_ms, agg)?;
        let parts = self.partials(&view, interval_ms)?;
        Ok(query::to_buckets(&parts, agg))
    }

    /// [`Tsdb::aggregate`] with each bucket's mergeable summary ([`PartialBucket`]), for
    /// combining buckets across series. Works on every kind; whether an aggregation applies to
    /// the series' kind is the caller's check ([`Tsdb::series_kind`]).
    pub fn partial_aggregate(
        &self,
        series: &SeriesKey,
        from: i64,
        to: i64,
        interval_ms: i64,
    ) -> Result<Vec<PartialBucket>> {
        if interval_ms < 1 {
            return Err(Error::InvalidInterval);
        }
        let Some(view) = self.series_view(series, from, to) else {
            return Ok(Vec::new());
        };
        self.partials(&view, interval_ms)
    }

    fn partials(&self, view: &storage::SeriesView, interval_ms: i64) -> Result<Vec<PartialBucket>> {
        let (parts, reads) = view.partials(interval_ms, self.inner.widths)?;
        Counters::add(&self.inner.shared.counters.rollup_reads, reads);
        Ok(parts)
    }

    /// What `series` holds in `[from, to)`: the head's points and the block files to read,
    /// captured under the head's read lock (released before any file is decoded). `None` for
    /// an unknown series.
    fn series_view(&self, series: &SeriesKey, from: i64, to: i64) -> Option<storage::SeriesView> {
        let head = self.inner.shared.head.read();
        storage::SeriesView::new(&head, series, from, to, self.inner.widths)
    }

    /// Drops the data older than [`Config::retention`] before `now_ms` (ms since the epoch),
    /// a whole partition at a time: the floor is the start of the partition that
    /// `now_ms - retention` falls in. Points below the floor disappear from raw reads, series
    /// left without points disappear from `keys`/`latest`, their files are deleted, and later
    /// writes below the floor are accepted and discarded. The dropped partitions' rollups are
    /// brought up to date first and stay, so aggregates over whole minutes/hours keep
    /// answering for them, until [`Config::rollup_1m_retention`] /
    /// [`Config::rollup_1h_retention`] drop those the same way. Returns the number of block
    /// files deleted. Without any configured retention it does nothing. Call it periodically.
    ///
    /// The same as [`Tsdb::enforce_retention_policy`] with [`RetentionPolicy::uniform`]
    /// of [`Config::retention`].
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        Ok(self.retention(now_ms, None).await?.files_deleted)
    }

    /// Drops raw data by a per-device policy at `now_ms`: a device's points in a partition go
    /// once the partition ends at or before `now_ms - ` the device's retention (its own, else
    /// its tenant's, else the default; see [`RetentionPolicy`]), and the rollup retentions
    /// apply as in [`Tsdb::enforce_retention`].
    ///
    /// The store-wide floor rises only to `now_ms - ` the longest retention of the policy (not
    /// at all when something is kept forever); each device with a shorter retention gets a
    /// floor of its own, stored in the manifest. A partition whose every series expired has
    /// its block files deleted whole; one that also holds live series is rewritten without the
    /// expired chunks, like a compaction. Either way its rollups are brought up to date first
    /// and keep summarising the dropped series, so aggregates over whole minutes/hours still
    /// answer for them. Writes below a device's floor are accepted and discarded (also at WAL
    /// replay), so dropped data never comes back; a series whose raw data is all gone leaves
    /// `keys` and `latest`. Floors never go down: lengthening a retention keeps what is still
    /// there, it does not bring back what was dropped.
    ///
    /// Runs on the writer thread (writes wait). Call it periodically; with an unchanged policy
    /// and nothing newly expired it costs a scan of the file list.
    pub async fn enforce_retention_policy(
        &self,
        now_ms: i64,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport> {
        self.retention(now_ms, Some(Box::new(policy.clone()))).await
    }

    async fn retention(
        &self,
        now_ms: i64,
        policy: Option<Box<RetentionPolicy>>,
    ) -> Result<RetentionReport> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.request(Request::Retention {
            now_ms,
            policy,
            reply,
        })
        .await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Merges now every partition that has more than one block file (normally automatic after
    /// a flush once a partition has [`Config::compaction_files`] files). Returns the number of
    /// partitions merged.
    pub async fn compact(&self) -> Result<usize> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.request(Request::Compact { reply }).await?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The latest point of each key of a device, sorted by key, from the last-value cache.
    pub fn latest(&self, tenant: &str, device: &str) -> Vec<(String, Point)> {
        let head = self.inner.shared.head.read();
        head.device(tenant, device)
            .map(|d| {
                d.series()
                    .map(|(k, s)| (k.to_string(), s.latest()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The keys (series) of a device, sorted.
    pub fn keys(&self, tenant: &str, device: &str) -> Vec<String> {
        let head = self.inner.shared.head.read();
        head.device(tenant, device)
            .map(|d| d.series().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// The kind of a series, `None` if it does not exist.
    pub fn series_kind(&self, series: &SeriesKey) -> Option<ValueKind> {
        self.inner.shared.head.read().kind(series)
    }

    pub fn stats(&self) -> Stats {
        let (series, devices, points) = {
            let head = self.inner.shared.head.read();
            (
                head.series_count(),
                head.device_count(),
                head.memory_points(),
            )
        };
        let c = &self.inner.shared.counters;
        Stats {
            series,
            devices,
            points: points + Counters::get(&c.block_points),
            wal_bytes: Counters::get(&c.wal_bytes),
            wal_segments: Counters::get(&c.wal_segments),
            snapshot_bytes: Counters::get(&c.snapshot_bytes),
            checkpoints: Counters::get(&c.checkpoints),
            block_files: Counters::get(&c.block_files),
            block_bytes: Counters::get(&c.block_bytes),
            block_points: Counters::get(&c.block_points),
            compactions: Counters::get(&c.compactions),
            rollup_files: Counters::get(&c.rollup_files),
            rollup_bytes: Counters::get(&c.rollup_bytes),
            rollup_reads: Counters::get(&c.rollup_reads),
            retention_files_deleted: Counters::get(&c.retention_files_deleted),
            retention_partitions_rewritten: Counters::get(&c.retention_partitions_rewritten),
            retention_series_dropped: Counters::get(&c.retention_series_dropped),
            device_floors: Counters::get(&c.device_floors),
            commit_groups: Counters::get(&c.commit_groups),
            commit_requests: Counters::get(&c.commit_requests),
            wal_fsync: c.fsync_latency(),
            recovered_torn_tail: c.recovered_torn_tail.load(Ordering::Relaxed),
        }
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The rollup widths in ms, checked: at least 1 ms, the coarse a multiple of the fine.
fn rollup_widths(config: &Config) -> Result<query::Widths> {
    let [fine, coarse] = config.rollup_widths.map(duration_ms);
    if fine < 1 || coarse < fine || coarse % fine != 0 {
        return Err(Error::InvalidConfig {
            reason: format!(
                "rollup widths {fine} ms and {coarse} ms: both at least 1 ms, the second a multiple of the first"
            ),
        });
    }
    Ok([fine, coarse])
}

/// Async mode: a thread that asks the writer to fsync every `interval`. It holds only a weak
/// sender, so it neither keeps the writer alive nor outlives it by more than one interval.
fn spawn_ticker(tx: &mpsc::Sender<Request>, interval: Duration) -> std::io::Result<()> {
    let weak = tx.downgrade();
    let period = interval.max(Duration::from_millis(1));
    std::thread::Builder::new()
        .name("wulian-tsdb-fsync".to_string())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                let Some(tx) = weak.upgrade() else { return };
                if tx.blocking_send(Request::Tick).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Tsdb>();
    }

    /// A store written by the first version (snapshot + WAL) opens, and its first flush moves
    /// everything into block files and deletes the snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_version_snapshot_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let k = SeriesKey::new("t", "d", "x");
        {
            // Segment 1 holds a point after the snapshot's cut (segments < 1: none).
            let db = Tsdb::open(Config::new(dir.path())).unwrap();
            db.write(vec![WriteEntry {
                series: k.clone(),
                ts: 5,
                value: Value::F64(5.0),
            }])
            .await
            .unwrap();
        }
        let snapshot_dir = dir.path().join("snapshot");
        fs::create_dir_all(&snapshot_dir).unwrap();
        let mut head = Head::default();
        head.upsert(&k, 1, Value::F64(1.0)).unwrap();
        head.upsert(&k, 5, Value::F64(0.0)).unwrap();
        snapshot::write(&snapshot_dir, 1, &head).unwrap();
        let all = |db: &Tsdb| db.range(&k, 0, 100, 100).points;
        let db = Tsdb::open(Config::new(dir.path())).unwrap();
        assert_eq!(
            all(&db),
            vec![
                Point {
                    ts: 1,
                    value: Value::F64(1.0)
                },
                Point {
                    ts: 5,
                    value: Value::F64(5.0)
                }
            ]
        );
        db.close().await.unwrap();
        assert_eq!(fs::read_dir(&snapshot_dir).unwrap().count(), 0);
        let again = Tsdb::open(Config::new(dir.path())).unwrap();
        assert_eq!(all(&again), all(&db));
        assert_eq!(again.stats().block_files, 1);
    }

    #[test]
    fn config_defaults() {
        let c = Config::new("/tmp/x");
        assert_eq!(c.durability, Durability::Sync);
        assert_eq!(c.wal_segment_bytes, 64 << 20);
        assert_eq!(c.checkpoint_bytes, 256 << 20);
    }
}
