//! The writer thread: the single owner of the WAL and the only mutator of the head.
//!
//! Group commit: callers send requests over a bounded channel and await a oneshot reply. The
//! thread blocks for one request, drains whatever else is already queued (up to
//! [`MAX_GROUP`]), and for that group:
//!
//! 1. validates each write against the head's series kinds (plus the kinds the earlier
//!    requests of the same group establish) and encodes it as one record; a refused request
//!    is answered at once and leaves no trace;
//! 2. appends all records with one write(2);
//! 3. in `Sync` mode fsyncs once; in `Async` mode fsyncs only if the interval has passed
//!    (a ticker thread also sends `Tick`s so idle data is synced within the interval);
//! 4. applies the group to the head, and only then answers every request.
//!
//! In `Sync` mode steps 3 and 4 are pipelined: the fsync runs on a sync thread while this one
//! admits, encodes and appends the next group; then it waits for that fsync, starts the next
//! group's, and applies and answers the synced group while the next fsync runs. A group is
//! still applied only after its own fsync returned (the next group's bytes were appended
//! after that fsync started, so it never vouches for them), and admission checks kinds
//! against the synced-but-unapplied group too. Anything that freezes or cuts the log (flush,
//! retention, compaction, close) first finishes the pending group.
//!
//! So a write that fails to reach the log never shows up in memory, and a write is visible to
//! readers no later than its acknowledgement. Because validation and application happen on
//! this one thread, there is no race between checking a series' kind and logging the write.
//!
//! I/O failure policy: a failed append is rolled back (the file truncated to its previous
//! length) and the group is answered with the error; the log stays usable. A failed fsync, or
//! a failed rollback, leaves the file's contents unknown: the writer is poisoned and answers
//! every later write with [`Error::WalFailed`] until restart (replay then keeps what is valid).
//!
//! Flushes (what `checkpoint` means since v2) are started here, when the WAL exceeds
//! `checkpoint_bytes`, when the oldest unflushed write is older than `flush_age`, on request,
//! on retention and on close: seal the current segment and freeze the head (`start_flush`);
//! a flush thread writes the block files (`storage::FlushJob`); back here the manifest is
//! stored and the files installed (`finish_flush`), then the covered segments are deleted.
//! Compactions run the same way on a compaction thread (`start_compaction`,
//! `finish_compaction`), started only while no flush is in flight. Writes continue while those
//! threads work; retention, explicit flushes and compactions, and close wait for them first.
//! See DESIGN.md.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::Durability;
use crate::Shared;
use crate::error::{Error, Result};
use crate::head::Head;
use crate::query::Widths;
use crate::retention::{self, RetentionPolicy, RetentionReport};
use crate::snapshot;
use crate::stats::Counters;
use crate::storage::{self, CompactJob, Compacted, FaultPoint, Flushed};
use crate::value::{SeriesKey, Value, ValueKind, WriteEntry, WriteSummary};
use crate::wal::record::{self, MAX_PAYLOAD};
use crate::wal::segment::{AppendError, HEADER_LEN, SegmentLog};

/// Most requests folded into one group commit.
pub(crate) const MAX_GROUP: usize = 1024;
/// Capacity of the request channel; senders wait (asynchronously) when it is full.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// What callers ask of the writer.
pub(crate) enum Request {
    Write {
        entries: Vec<WriteEntry>,
        reply: Reply<WriteSummary>,
    },
    DeleteDevice {
        tenant: String,
        device: String,
        reply: Reply<()>,
    },
    Checkpoint {
        reply: Reply<()>,
    },
    /// Retention at `now_ms`, by `policy` (`None`: `Config::retention` for every device).
    Retention {
        now_ms: i64,
        policy: Option<Box<RetentionPolicy>>,
        reply: Reply<RetentionReport>,
    },
    /// Merge every partition that has more than one file; answers the partitions merged.
    Compact {
        reply: Reply<usize>,
    },
    Close {
        reply: Reply<()>,
    },
    /// Async mode: fsync if anything is unsynced.
    Tick,
    /// A background flush or compaction finished writing its files (sent by its thread to
    /// wake the writer, which then installs them).
    FlushDone,
    /// Sync mode: the syncer thread finished the fsync of the pending group.
    Synced,
}

fn answer<T>(reply: Reply<T>, result: Result<T>) {
    if reply.send(result).is_err() {
        tracing::trace!("A caller stopped waiting for its answer.");
    }
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub rx: mpsc::Receiver<Request>,
    pub log: SegmentLog,
    pub shared: Arc<Shared>,
    /// The store's root directory.
    pub dir: PathBuf,
    pub snapshot_dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes: u64,
    pub checkpoint_bytes: u64,
    pub flush_age: Option<Duration>,
    pub partition_ms: i64,
    pub compaction_files: usize,
    /// `Config::retention`: the policy of `Tsdb::enforce_retention`.
    pub retention: Option<Duration>,
    /// Retention of the fine and the coarse rollups.
    pub rollup_retention_ms: [Option<i64>; 2],
    pub widths: Widths,
    /// For the flush thread to wake the writer; weak so that it does not keep it alive.
    pub wake: mpsc::WeakSender<Request>,
    /// The directory lock; released when the writer ends.
    pub lock: File,
}

/// A compaction whose merged file is being written by the compaction thread.
struct Compacting {
    done: std::sync::mpsc::Receiver<Result<Compacted>>,
    thread: std::thread::JoinHandle<()>,
    part: (i64, i64),
}

/// A flush whose files are being written by the flush thread.
struct InFlight {
    done: std::sync::mpsc::Receiver<Result<Flushed>>,
    thread: std::thread::JoinHandle<()>,
    next_segment: u64,
    started: Instant,
    /// WAL bytes when the flush started (the segments it covers included).
    wal_at_start: u64,
}

pub(crate) fn spawn(writer: Writer) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wulian-tsdb-wal".to_string())
        .spawn(move || Running::new(writer).run())
}

/// One queued write or deletion of the group being built.
enum Op {
    Write {
        entries: Vec<WriteEntry>,
        reply: Reply<WriteSummary>,
    },
    Delete {
        tenant: String,
        device: String,
        reply: Reply<()>,
    },
}

impl Op {
    fn fail(self, error: Error) {
        match self {
            Op::Write { reply, .. } => answer(reply, Err(error)),
            Op::Delete { reply, .. } => answer(reply, Err(error)),
        }
    }
}

/// The group being built: encoded records, the requests they answer, and the series kinds the
/// group has established so far (on top of the head's).
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    ops: Vec<Op>,
    kinds: HashMap<SeriesKey, ValueKind>,
    /// tenant → devices deleted earlier in the group (their head kinds no longer apply).
    deleted: HashMap<String, HashSet<String>>,
}

impl Group {
    /// The kind `key` has after this group, on top of `pending` (the group logged before this
    /// one and not yet applied to the head) and the head.
    fn kind(&self, pending: Option<&Group>, head: &Head, key: &SeriesKey) -> Option<ValueKind> {
        if let Some(kind) = self.kinds.get(key) {
            return Some(*kind);
        }
        if self
            .deleted
            .get(&key.tenant)
            .is_some_and(|d| d.contains(&key.device))
        {
            return None;
        }
        match pending {
            Some(p) => p.kind(None, head, key),
            None => head.kind(key),
        }
    }

    /// Whether the group changes no series kinds (so that the head alone decides them).
    fn keeps_kinds(&self) -> bool {
        self.kinds.is_empty() && self.deleted.is_empty()
    }
}

/// Sync mode's fsync thread. The writer appends a group, hands the segment to this thread,
/// and while the fsync runs it applies the previous group and admits the next; a group is
/// applied and answered only once its own fsync has returned. At most one fsync is in flight.
struct Syncer {
    jobs: Option<std::sync::mpsc::Sender<File>>,
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn spawn(wake: mpsc::WeakSender<Request>, shared: Arc<Shared>) -> std::io::Result<Syncer> {
        let (jobs, rx) = std::sync::mpsc::channel::<File>();
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wulian-tsdb-sync".to_string())
            .spawn(move || {
                for file in rx {
                    let started = Instant::now();
                    let synced = file.sync_data();
                    shared.counters.observe_fsync(started.elapsed());
                    if tx.send(synced).is_err() {
                        return;
                    }
                    // Never wait: a full channel means the writer has requests to handle,
                    // and it collects the result with them.
                    if let Some(tx) = wake.upgrade()
                        && let Err(e) = tx.try_send(Request::Synced)
                    {
                        tracing::trace!(error = %e, "No wake-up needed for the writer.");
                    }
                }
            })?;
        Ok(Syncer {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("The WAL sync thread panicked.");
        }
    }
}

struct Running {
    rx: mpsc::Receiver<Request>,
    log: SegmentLog,
    shared: Arc<Shared>,
    dir: PathBuf,
    snapshot_dir: PathBuf,
    /// `None` in Sync mode.
    async_interval: Option<Duration>,
    segment_bytes: u64,
    checkpoint_bytes: u64,
    flush_age: Option<Duration>,
    partition_ms: i64,
    compaction_files: usize,
    retention: Option<Duration>,
    rollup_retention_ms: [Option<i64>; 2],
    widths: Widths,
    /// Partitions whose rollup rebuild failed (e.g. a damaged chunk): not retried until
    /// restart, so that a broken file does not make the writer loop on it.
    rollup_failed: HashSet<(i64, i64)>,
    /// Whether the files or rollups changed since the last search for a partition whose
    /// rollups need rebuilding (so that the search does not run after every group commit).
    rollups_dirty: bool,
    /// When the oldest write not yet flushed to block files was committed.
    unflushed_since: Option<Instant>,
    wake: mpsc::WeakSender<Request>,
    in_flight: Option<InFlight>,
    compacting: Option<Compacting>,
    /// WAL size at which the next automatic checkpoint runs.
    checkpoint_at: u64,
    poisoned: bool,
    /// Sync mode: the fsync thread (started with the first group) and the group whose fsync
    /// it runs (logged, not yet applied nor answered).
    syncer: Option<Syncer>,
    pending: Option<Group>,
    _lock: File,
}

impl Running {
    fn new(w: Writer) -> Running {
        let async_interval = match w.durability {
            Durability::Sync => None,
            Durability::Async { interval } => Some(interval),
        };
        Running {
            rx: w.rx,
            log: w.log,
            shared: w.shared,
            dir: w.dir,
            snapshot_dir: w.snapshot_dir,
            async_interval,
            segment_bytes: w.segment_bytes,
            checkpoint_bytes: w.checkpoint_bytes,
            flush_age: w.flush_age,
            partition_ms: w.partition_ms.max(1),
            compaction_files: w.compaction_files,
            retention: w.retention,
            rollup_retention_ms: w.rollup_retention_ms,
            widths: w.widths,
            rollup_failed: HashSet::new(),
            rollups_dirty: true,
            unflushed_since: None,
            wake: w.wake,
            in_flight: None,
            compacting: None,
            checkpoint_at: w.checkpoint_bytes,
            poisoned: false,
            syncer: None,
            pending: None,
            _lock: w.lock,
        }
    }

    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_GROUP);
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                // Every handle was dropped without close(): finish a flush in progress, and
                // make what was written durable.
                self.finish_pending();
                if let Err(error) = self.wait_flush() {
                    tracing::warn!(%error, "Background flush failed; the next open replays the WAL.");
                }
                if let Err(error) = self.wait_compaction() {
                    tracing::warn!(%error, "Background compaction failed.");
                }
                if !self.poisoned
                    && let Err(error) = self.log.sync()
                {
                    tracing::error!(%error, "Final fsync of the WAL failed.");
                }
                tracing::debug!("WAL writer stopping: all handles dropped.");
                return;
            };
            batch.push(first);
            while batch.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if let Some(reply) = self.handle(&mut batch) {
                let result = self.close();
                // Requests queued behind the close are dropped with the receiver; their
                // callers see Error::Closed. The segment file and the directory lock are
                // released before the caller of close() hears back, so it may reopen at once.
                drop(self);
                answer(reply, result);
                return;
            }
        }
    }

    /// Handles one drained batch. Returns the close request's reply if the batch held one.
    fn handle(&mut self, batch: &mut Vec<Request>) -> Option<Reply<()>> {
        let mut group = Group::default();
        let mut tick = false;
        for request in batch.drain(..) {
            match request {
                Request::Write { entries, reply } => self.admit_write(&mut group, entries, reply),
                Request::DeleteDevice {
                    tenant,
                    device,
                    reply,
                } => self.admit_delete(&mut group, tenant, device, reply),
                Request::Tick => tick = true,
                Request::FlushDone | Request::Synced => {}
                Request::Checkpoint { reply } => {
                    self.commit(&mut group);
                    let result = self.checkpoint();
                    answer(reply, result);
                }
                Request::Retention {
                    now_ms,
                    policy,
                    reply,
                } => {
                    self.commit(&mut group);
                    let policy =
                        policy.map_or_else(|| RetentionPolicy::uniform(self.retention), |p| *p);
                    let result = self.retention(now_ms, &policy);
                    answer(reply, result);
                }
                Request::Compact { reply } => {
                    self.commit(&mut group);
                    let result = self.compact(2);
                    answer(reply, result);
                }
                Request::Close { reply } => {
                    self.commit(&mut group);
                    // The rest of the batch is dropped (callers see Error::Closed).
                    return Some(reply);
                }
            }
        }
        if self.async_interval.is_none() {
            self.commit_pipelined(&mut group);
        } else {
            self.commit(&mut group);
        }
        self.poll_pending();
        if tick && self.log.is_dirty() && !self.poisoned {
            // Nobody waits on a tick; a failure is logged and poisons the writer.
            if let Err(error) = self.sync_or_poison() {
                tracing::debug!(%error, "Periodic WAL fsync failed.");
            }
        }
        self.poll_flush();
        self.poll_compaction();
        self.maybe_checkpoint();
        self.maybe_compact();
        None
    }

    /// Validates a write against the series kinds, widens integers for float series, encodes
    /// it. Answers at once if it is refused.
    fn admit_write(
        &mut self,
        group: &mut Group,
        mut entries: Vec<WriteEntry>,
        reply: Reply<WriteSummary>,
    ) {
        let mut new_kinds: HashMap<SeriesKey, ValueKind> = HashMap::new();
        let pending = self.pending.as_ref();
        let quiet = group.keeps_kinds() && pending.is_none_or(Group::keeps_kinds);
        let checked = (|| {
            let head = self.shared.head.read();
            // The device of the previous entry: a run of one device's entries looks it up once.
            let mut cached: Option<(usize, Option<&crate::head::Device>)> = None;
            let mut cursor = crate::head::KeyCursor::default();
            for i in 0..entries.len() {
                let known = if new_kinds.is_empty() && quiet {
                    // Nothing in this group changes kinds: the head alone decides.
                    let (t, d) = (&entries[i].series.tenant, &entries[i].series.device);
                    let same = cached.is_some_and(|(j, _)| {
                        entries[j].series.device == *d && entries[j].series.tenant == *t
                    });
                    if !same {
                        cached = Some((i, head.device(t, d)));
                        cursor.reset();
                    }
                    cached
                        .and_then(|(_, dev)| dev)
                        .and_then(|dev| dev.kind_in_run(&entries[i].series.key, &mut cursor))
                } else {
                    new_kinds
                        .get(&entries[i].series)
                        .copied()
                        .or_else(|| group.kind(pending, &head, &entries[i].series))
                };
                let e = &mut entries[i];
                match known {
                    None => {
                        new_kinds.insert(e.series.clone(), e.value.kind());
                        cached = None;
                    }
                    Some(kind) if kind == e.value.kind() => {}
                    Some(ValueKind::Float) if e.value.kind() == ValueKind::Integer => {
                        if let Value::I64(v) = e.value {
                            e.value = Value::F64(v as f64);
                        }
                    }
                    Some(kind) => {
                        return Err(Error::TypeMismatch {
                            key: e.series.key.clone(),
                            expected: kind,
                            actual: e.value.kind(),
                        });
                    }
                }
            }
            Ok(())
        })();
        if let Err(error) = checked {
            return answer(reply, Err(error));
        }
        let mark = group.buf.len();
        let size = record::encode_write(&mut group.buf, &entries);
        if size > MAX_PAYLOAD {
            group.buf.truncate(mark);
            return answer(
                reply,
                Err(Error::BatchTooLarge {
                    bytes: size,
                    max: MAX_PAYLOAD,
                }),
            );
        }
        group.kinds.extend(new_kinds);
        group.ops.push(Op::Write { entries, reply });
    }

    fn admit_delete(
        &mut self,
        group: &mut Group,
        tenant: String,
        device: String,
        reply: Reply<()>,
    ) {
        record::encode_delete_device(&mut group.buf, &tenant, &device);
        group
            .kinds
            .retain(|k, _| !(k.tenant == tenant && k.device == device));
        group
            .deleted
            .entry(tenant.clone())
            .or_default()
            .insert(device.clone());
        group.ops.push(Op::Delete {
            tenant,
            device,
            reply,
        });
    }

    /// Logs the group, applies it to the head, answers it (after the pending group, if any).
    fn commit(&mut self, group: &mut Group) {
        self.finish_pending();
        let ops = std::mem::take(&mut group.ops);
        let buf = std::mem::take(&mut group.buf);
        *group = Group::default();
        if ops.is_empty() {
            return;
        }
        if let Err(error) = self.log_bytes(&buf) {
            for op in ops {
                op.fail(error.duplicate());
            }
            return;
        }
        self.unflushed_since.get_or_insert_with(Instant::now);
        self.publish_wal_size();
        self.apply(ops);
    }

    /// Sync mode's commit: appends the group, waits for the pending group's fsync (started
    /// before these bytes were written, so it does not cover them), starts this group's fsync
    /// on the syncer thread, and applies and answers the pending group while it runs.
    fn commit_pipelined(&mut self, group: &mut Group) {
        let mut group = std::mem::take(group);
        if group.ops.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut group.buf);
        let appended = self.append_bytes(&buf);
        let previous = self.pending.take().map(|p| {
            let synced = self.wait_sync();
            (p, synced)
        });
        match appended {
            Err(error) => {
                for op in group.ops {
                    op.fail(error.duplicate());
                }
            }
            // The earlier group's fsync failed: the writer is poisoned, this group's bytes
            // were never synced.
            Ok(()) if self.poisoned => {
                for op in group.ops {
                    op.fail(Error::WalFailed);
                }
            }
            Ok(()) => {
                self.unflushed_since.get_or_insert_with(Instant::now);
                self.publish_wal_size();
                match self.start_sync() {
                    Ok(()) => self.pending = Some(group),
                    Err(error) => {
                        // No second handle or thread: sync here instead.
                        tracing::debug!(%error, "Off-thread fsync unavailable.");
                        let synced = self.sync_or_poison();
                        self.settle(group, synced);
                    }
                }
            }
        }
        if let Some((p, synced)) = previous {
            self.settle(p, synced);
        }
    }

    fn start_sync(&mut self) -> std::io::Result<()> {
        if self.syncer.is_none() {
            self.syncer = Some(Syncer::spawn(self.wake.clone(), Arc::clone(&self.shared))?);
        }
        let file = self.log.sync_handle()?;
        let jobs = self.syncer.as_ref().and_then(|s| s.jobs.as_ref());
        match jobs.map(|j| j.send(file)) {
            Some(Ok(())) => Ok(()),
            _ => {
                self.syncer = None;
                Err(std::io::Error::other("the WAL sync thread stopped"))
            }
        }
    }

    /// Waits for the fsync of the pending group; a failure poisons the writer.
    fn wait_sync(&mut self) -> Result<()> {
        let result = match &self.syncer {
            Some(s) => s
                .done
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the WAL sync thread died"))),
            None => Err(std::io::Error::other("the WAL sync thread is gone")),
        };
        result.map_err(|source| {
            self.poisoned = true;
            tracing::error!(error = %source, segment = self.log.current(), "WAL fsync failed; refusing writes until restart.");
            Error::Io {
                context: "fsync the WAL",
                source,
            }
        })
    }

    /// Applies and answers the pending group if its fsync has finished.
    fn poll_pending(&mut self) {
        if self.pending.is_none() {
            return;
        }
        let result = match self.syncer.as_ref().map(|s| s.done.try_recv()) {
            Some(Err(std::sync::mpsc::TryRecvError::Empty)) => return,
            Some(Ok(Ok(()))) => Ok(()),
            // Failures take the waiting path, which poisons and reports them.
            _ => return self.finish_pending(),
        };
        if let Some(group) = self.pending.take() {
            self.settle(group, result);
        }
    }

    /// Waits for the pending group's fsync, then applies and answers it.
    fn finish_pending(&mut self) {
        if self.pending.is_some() {
            let synced = self.wait_sync();
            if let Some(group) = self.pending.take() {
                self.settle(group, synced);
            }
        }
    }

    fn settle(&mut self, group: Group, synced: Result<()>) {
        match synced {
            Ok(()) => self.apply(group.ops),
            Err(error) => {
                for op in group.ops {
                    op.fail(error.duplicate());
                }
            }
        }
    }

    /// Applies logged (and, per the policy, synced) operations to the head, then answers them.
    fn apply(&mut self, ops: Vec<Op>) {
        Counters::add(&self.shared.counters.commit_groups, 1);
        Counters::add(&self.shared.counters.commit_requests, ops.len() as u64);
        let mut done = Vec::with_capacity(ops.len());
        {
            let mut head = self.shared.head.write();
            for op in ops {
                match op {
                    Op::Write { entries, reply } => {
                        let points = entries.len();
                        head.upsert_batch(entries, |series, conflict| {
                            // Unreachable: the write was validated against these kinds.
                            tracing::error!(%series, ?conflict, "Validated write conflicts with the head.");
                        });
                        done.push(Ok((reply, points)));
                    }
                    Op::Delete {
                        tenant,
                        device,
                        reply,
                    } => {
                        let (series, points) = head.delete_device(&tenant, &device);
                        tracing::debug!(%tenant, %device, series, points, "Device data deleted.");
                        done.push(Err(reply));
                    }
                }
            }
        }
        for d in done {
            match d {
                Ok((reply, points)) => answer(reply, Ok(WriteSummary { points })),
                Err(reply) => answer(reply, Ok(())),
            }
        }
    }

    /// Appends `bytes` (rotating first if the segment is full) and syncs per the policy.
    fn log_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.append_bytes(bytes)?;
        match self.async_interval {
            None => self.sync_or_poison(),
            Some(interval) if self.log.since_sync() >= interval => self.sync_or_poison(),
            Some(_) => Ok(()),
        }
    }

    /// Appends `bytes`, rotating first if the segment is full.
    fn append_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        if self.log.current_len() >= self.segment_bytes && self.log.current_len() > HEADER_LEN {
            self.sync_or_poison()?;
            if let Err(error) = self.log.rotate() {
                // Not fatal: keep appending to the current segment and try again next time.
                tracing::warn!(%error, segment = self.log.current(), "Starting a new WAL segment failed.");
            }
        }
        if let Err(AppendError {
            source,
            rolled_back,
        }) = self.log.append(bytes)
        {
            if !rolled_back {
                self.poisoned = true;
                tracing::error!(error = %source, "WAL append failed and could not be rolled back; refusing writes until restart.");
            } else {
                tracing::warn!(error = %source, "WAL append failed; the group was refused.");
            }
            return Err(Error::Io {
                context: "append to the WAL",
                source,
            });
        }
        Ok(())
    }

    fn sync_or_poison(&mut self) -> Result<()> {
        let dirty = self.log.is_dirty();
        let started = Instant::now();
        let synced = self.log.sync();
        if dirty {
            self.shared.counters.observe_fsync(started.elapsed());
        }
        synced.map_err(|source| {
            self.poisoned = true;
            tracing::error!(error = %source, segment = self.log.current(), "WAL fsync failed; refusing writes until restart.");
            Error::Io {
                context: "fsync the WAL",
                source,
            }
        })
    }

    fn publish_wal_size(&self) {
        Counters::set(&self.shared.counters.wal_bytes, self.log.total_bytes());
        Counters::set(
            &self.shared.counters.wal_segments,
            self.log.segment_count() as u64,
        );
    }

    fn maybe_checkpoint(&mut self) {
        if self.poisoned {
            return;
        }
        if let Some(flight) = &self.in_flight {
            if self.log.total_bytes().saturating_sub(flight.wal_at_start) < self.checkpoint_bytes {
                return;
            }
            // Another flush' worth of writes arrived while this one is still being written:
            // the flush thread cannot keep up, so writes wait for it (backpressure). This
            // bounds the WAL and the head at about twice `checkpoint_bytes`.
            if let Err(error) = self.wait_flush() {
                self.flush_failed(&error);
                return;
            }
        }
        let aged = match (self.flush_age, self.unflushed_since) {
            (Some(age), Some(since)) => since.elapsed() >= age,
            _ => false,
        };
        if !aged && self.log.total_bytes() < self.checkpoint_at {
            return;
        }
        if let Err(error) = self.start_flush(false) {
            self.flush_failed(&error);
        }
    }

    /// Nothing is lost when a flush fails (the WAL still holds everything); try again after
    /// another `checkpoint_bytes` rather than on every group.
    fn flush_failed(&mut self, error: &Error) {
        self.checkpoint_at = self.log.total_bytes().saturating_add(self.checkpoint_bytes);
        self.unflushed_since = Some(Instant::now());
        tracing::warn!(%error, "Flush failed; the WAL keeps growing until one succeeds.");
    }

    /// A failure injected by a crash test stops the writer for good, as a crash would.
    fn poison_on_fault<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(Error::Io {
            context: "injected fault",
            ..
        }) = &result
        {
            self.poisoned = true;
        }
        result
    }

    /// Flush the head into block files and cut the WAL, and wait for it (see the module doc).
    fn checkpoint(&mut self) -> Result<()> {
        self.flush(false).map(|_| ())
    }

    /// A flush, waited for. Returns the number of block files dropped by retention.
    fn flush(&mut self, force: bool) -> Result<usize> {
        if self.start_flush(force)? {
            self.wait_flush()
        } else {
            Ok(0)
        }
    }

    /// Seals the WAL segment, freezes the head and hands it to a flush thread. Returns whether
    /// a flush was started (not when there is nothing to flush and `force` is false).
    fn start_flush(&mut self, force: bool) -> Result<bool> {
        // The pending group must be in the head that is frozen, or the flush would cut the
        // WAL it is in without writing its points.
        self.finish_pending();
        self.wait_flush()?;
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        if !force && !self.log.has_records() {
            return Ok(false);
        }
        self.sync_or_poison()?;
        let next = if self.log.current_len() > HEADER_LEN {
            self.log
                .rotate()
                .map_err(Error::io("start a new WAL segment"))?
        } else {
            self.log.current()
        };
        let fault = storage::check_fault(&self.dir, FaultPoint::FlushAfterRotate);
        self.poison_on_fault(fault)?;
        let job = {
            let mut head = self.shared.head.write();
            storage::prepare_flush(&self.dir, &mut head, self.partition_ms, self.widths)
        };
        self.unflushed_since = None;
        let (tx, done) = std::sync::mpsc::channel();
        let wake = self.wake.clone();
        let spawned = std::thread::Builder::new()
            .name("wulian-tsdb-flush".to_string())
            .spawn(move || {
                let result = job.write();
                if tx.send(result).is_err() {
                    tracing::debug!("The writer stopped before the flush finished.");
                }
                // Never wait here: the writer may be joining this thread. A full channel
                // means the writer is busy, and it polls for the result after every group.
                if let Some(tx) = wake.upgrade()
                    && let Err(e) = tx.try_send(Request::FlushDone)
                {
                    tracing::trace!(error = %e, "No wake-up needed for the writer.");
                }
            });
        match spawned {
            Ok(thread) => {
                self.in_flight = Some(InFlight {
                    done,
                    thread,
                    next_segment: next,
                    started: Instant::now(),
                    wal_at_start: self.log.total_bytes(),
                });
                Ok(true)
            }
            Err(source) => {
                self.shared.head.write().unfreeze();
                Err(Error::Io {
                    context: "start the flush thread",
                    source,
                })
            }
        }
    }

    /// Installs the background flush if it has finished.
    fn poll_flush(&mut self) {
        let result = match &self.in_flight {
            None => return,
            Some(f) => match f.done.try_recv() {
                Ok(result) => result,
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(Error::Io {
                    context: "run the flush thread",
                    source: std::io::Error::other("the flush thread died"),
                }),
            },
        };
        if let Err(error) = self.finish_flush(result) {
            self.flush_failed(&error);
        }
    }

    /// Waits for the background flush, if any, and installs it. Returns the number of block
    /// files dropped by retention.
    fn wait_flush(&mut self) -> Result<usize> {
        let result = match &self.in_flight {
            None => return Ok(0),
            Some(f) => f.done.recv().unwrap_or_else(|_| {
                Err(Error::Io {
                    context: "run the flush thread",
                    source: std::io::Error::other("the flush thread died"),
                })
            }),
        };
        self.finish_flush(result)
    }

    fn finish_flush(&mut self, result: Result<Flushed>) -> Result<usize> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(0);
        };
        if flight.thread.join().is_err() {
            tracing::error!("The flush thread panicked.");
        }
        let installed = self.poison_on_fault(result).and_then(|flushed| {
            let result = storage::install_flush(
                &self.dir,
                &self.shared.head,
                flushed,
                flight.next_segment,
                self.widths,
            );
            self.poison_on_fault(result)
        });
        let done = match installed {
            Ok(done) => done,
            Err(error) => {
                // The frozen points go back into the head; the WAL still holds them.
                self.shared.head.write().unfreeze();
                self.unflushed_since.get_or_insert_with(Instant::now);
                return Err(error);
            }
        };
        self.checkpoint_at = self.checkpoint_bytes;
        self.rollups_dirty = true;
        self.log
            .remove_before(flight.next_segment)
            .map_err(Error::io("remove flushed WAL segments"))?;
        // A store written by the first version had snapshots; the block files now hold it all.
        if self.snapshot_dir.exists() {
            snapshot::remove_older(&self.snapshot_dir, u64::MAX)?;
        }
        Counters::add(&self.shared.counters.checkpoints, 1);
        self.publish_wal_size();
        tracing::info!(
            files_written = done.files_written,
            files_dropped = done.files_dropped,
            wal_segment = flight.next_segment,
            elapsed_ms = flight.started.elapsed().as_millis() as u64,
            "Head flushed to block files."
        );
        self.publish_block_stats();
        Ok(done.files_dropped)
    }

    /// Merges every partition with at least `min_files` files, and waits (explicit compaction).
    fn compact(&mut self, min_files: usize) -> Result<usize> {
        self.wait_flush()?;
        self.wait_compaction()?;
        let mut n = 0;
        while self.start_compaction(min_files)? {
            self.wait_compaction()?;
            n += 1;
        }
        Ok(n)
    }

    /// Starts a background compaction if a partition has `compaction_files` files, or else a
    /// rollup rebuild of a partition whose rollups are missing or stale, if neither a flush
    /// nor another compaction is in flight.
    fn maybe_compact(&mut self) {
        if self.poisoned || self.in_flight.is_some() || self.compacting.is_some() {
            return;
        }
        match self.start_compaction(self.compaction_files) {
            Ok(true) => {}
            Ok(false) if self.rollups_dirty => {
                let job = storage::prepare_rollup_rebuild(
                    &self.dir,
                    &self.shared.head,
                    self.widths,
                    &self.rollup_failed,
                );
                match job {
                    None => self.rollups_dirty = false,
                    Some(job) => {
                        if let Err(error) = self.spawn_compaction(job) {
                            tracing::warn!(%error, "Starting a rollup rebuild failed.");
                        }
                    }
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "Starting a compaction failed."),
        }
    }

    /// Hands one partition to a compaction thread. Only while no flush is in flight: the
    /// merged file's generation must be below those of every file written after it.
    fn start_compaction(&mut self, min_files: usize) -> Result<bool> {
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        if self.in_flight.is_some() || self.compacting.is_some() {
            return Ok(false);
        }
        let Some(job) =
            storage::prepare_compaction(&self.dir, &self.shared.head, min_files, self.widths)
        else {
            return Ok(false);
        };
        self.spawn_compaction(job)?;
        Ok(true)
    }

    /// Runs a compaction or rollup rebuild on a compaction thread.
    fn spawn_compaction(&mut self, job: CompactJob) -> Result<()> {
        let part = job.part();
        let (tx, done) = std::sync::mpsc::channel();
        let wake = self.wake.clone();
        let thread = std::thread::Builder::new()
            .name("wulian-tsdb-compact".to_string())
            .spawn(move || {
                let result = job.write();
                if tx.send(result).is_err() {
                    tracing::debug!("The writer stopped before the compaction finished.");
                }
                // Never wait here: the writer may be joining this thread.
                if let Some(tx) = wake.upgrade()
                    && let Err(e) = tx.try_send(Request::FlushDone)
                {
                    tracing::trace!(error = %e, "No wake-up needed for the writer.");
                }
            })
            .map_err(Error::io("start the compaction thread"))?;
        self.compacting = Some(Compacting { done, thread, part });
        Ok(())
    }

    fn poll_compaction(&mut self) {
        let result = match &self.compacting {
            None => return,
            Some(c) => match c.done.try_recv() {
                Ok(result) => result,
                Err(std::sync::mpsc::TryRecvError::Empty) => return,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(Error::Io {
                    context: "run the compaction thread",
                    source: std::io::Error::other("the compaction thread died"),
                }),
            },
        };
        if let Err(error) = self.finish_compaction(result) {
            tracing::warn!(%error, "Compaction failed; the files stay as they are.");
        }
    }

    fn wait_compaction(&mut self) -> Result<()> {
        let result = match &self.compacting {
            None => return Ok(()),
            Some(c) => c.done.recv().unwrap_or_else(|_| {
                Err(Error::Io {
                    context: "run the compaction thread",
                    source: std::io::Error::other("the compaction thread died"),
                })
            }),
        };
        self.finish_compaction(result)
    }

    fn finish_compaction(&mut self, result: Result<Compacted>) -> Result<()> {
        let Some(c) = self.compacting.take() else {
            return Ok(());
        };
        if c.thread.join().is_err() {
            tracing::error!("The compaction thread panicked.");
        }
        self.rollups_dirty = true;
        let installed = self.poison_on_fault(result).and_then(|done| {
            let result =
                storage::install_compaction(&self.dir, &self.shared.head, done, self.widths);
            self.poison_on_fault(result)
        });
        // A failure leaves the old files in place; a merged file that was written but not
        // installed is not in the manifest and is deleted at the next open.
        if installed.is_err() {
            self.rollup_failed.insert(c.part);
        }
        installed?;
        Counters::add(&self.shared.counters.compactions, 1);
        self.publish_block_stats();
        Ok(())
    }

    /// Applies `policy` at `now_ms` (see DESIGN.md, Retention), and the rollups' own
    /// retentions. Steps:
    ///
    /// 1. the store-wide floor rises to `now - ` the longest retention the policy allows (not
    ///    at all if something is kept forever); each device whose own retention is shorter
    ///    gets a floor of its own above it;
    /// 2. the head is flushed, then every partition about to lose raw data has its rollups
    ///    brought up to date (while the old floors are still the stored ones);
    /// 3. the device floors are set (writes below them are discarded from now on) and the
    ///    partitions holding expired and live chunks are rewritten without the expired ones,
    ///    each installed like a compaction (its manifest stores the floors);
    /// 4. the files of partitions whose every series expired are deleted whole, the head cut
    ///    at the floors, and a last flush stores the store-wide floor and drops the files
    ///    below it.
    ///
    /// Everything runs here, on the writer thread: writes wait for it.
    fn retention(&mut self, now_ms: i64, policy: &RetentionPolicy) -> Result<RetentionReport> {
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        let (old_floor, old_rollup_floors, old_device_floors) = {
            let head = self.shared.head.read();
            (
                head.manifest.floor,
                head.manifest.rollup_floors,
                head.manifest.device_floors.clone(),
            )
        };
        let mut report = RetentionReport {
            floor: old_floor,
            device_floors: old_device_floors.len(),
            ..RetentionReport::default()
        };
        if !policy.limits_anything() && self.rollup_retention_ms.iter().all(Option::is_none) {
            return Ok(report);
        }
        self.wait_flush()?;
        self.wait_compaction()?;
        let partition_ms = self.partition_ms;
        let floor = policy
            .longest()
            .map(|r| retention::floor_at(now_ms, r, partition_ms))
            .filter(|f| *f > old_floor);
        let global = floor.unwrap_or(old_floor);
        let mut rollup_floors = old_rollup_floors;
        for (level, r) in self.rollup_retention_ms.iter().enumerate() {
            if let Some(r) = r {
                let f = storage::partition_of(now_ms.saturating_sub(*r).max(0), partition_ms).0;
                rollup_floors[level] = rollup_floors[level].max(f);
            }
        }
        let device_floors = {
            let head = self.shared.head.read();
            retention::device_floors(&head, policy, now_ms, partition_ms, global)
        };
        let changed = floor.is_some()
            || rollup_floors != old_rollup_floors
            || device_floors != old_device_floors;
        if changed && (floor.is_some() || !device_floors.is_empty()) {
            // Every point must be in a block file before partitions are judged and rollups
            // rebuilt. (Unchanged floors need no flush: writes below them were discarded.)
            self.flush(false)?;
        }
        let affected = {
            let head = self.shared.head.read();
            retention::classify(&head, &device_floors, global)
        };
        if !changed && affected.is_empty() {
            return Ok(report);
        }

        // 2. Rollups first, for every partition that loses raw data.
        let mut parts: Vec<(i64, i64)> = affected
            .whole
            .iter()
            .chain(&affected.rewrite)
            .copied()
            .collect();
        if let Some(floor) = floor {
            let head = self.shared.head.read();
            parts.extend(
                head.files
                    .iter()
                    .filter(|f| f.entry.max_ts < floor)
                    .map(|f| f.entry.partition),
            );
        }
        parts.sort_unstable();
        parts.dedup();
        let mut failed: Vec<(i64, i64)> = Vec::new();
        for part in parts {
            let job = storage::prepare_rollups_for(
                &self.dir,
                &self.shared.head,
                part,
                self.widths,
                rollup_floors,
            );
            let Some(job) = job else { continue };
            let rebuilt = job.write().and_then(|done| {
                storage::install_compaction(&self.dir, &self.shared.head, done, self.widths)
            });
            if let Err(error) = self.poison_on_fault(rebuilt) {
                if self.poisoned {
                    return Err(error);
                }
                // A damaged partition must not block retention forever: a partition that
                // loses all its raw data goes without up-to-date rollups (the raw data they
                // would come from is damaged); one that keeps some is left as it is.
                tracing::warn!(%error, partition_start = part.0, "Rebuilding a partition's rollups before retention failed; its raw data is dropped without them, or kept if it still holds live series.");
                failed.push(part);
            }
        }

        // 3. Device floors, then the rewrites.
        self.shared.head.write().manifest.device_floors = device_floors;
        for part in affected.rewrite {
            if failed.contains(&part) {
                report.partitions_failed += 1;
                continue;
            }
            let job = storage::prepare_rewrite(
                &self.dir,
                &self.shared.head,
                part,
                self.widths,
                rollup_floors,
            );
            let rewritten = job.write().and_then(|done| {
                let replaced = done.replaced();
                storage::install_compaction(&self.dir, &self.shared.head, done, self.widths)
                    .map(|()| replaced)
            });
            match self.poison_on_fault(rewritten) {
                Ok(replaced) => {
                    report.partitions_rewritten += 1;
                    report.files_rewritten += replaced;
                }
                Err(error) if !self.poisoned => {
                    // The expired points stay hidden (below their floors); the next call
                    // tries again.
                    tracing::warn!(%error, partition_start = part.0, "Rewriting a partition without its expired series failed; it is kept as it is.");
                    report.partitions_failed += 1;
                }
                Err(error) => return Err(error),
            }
        }
        let fault = storage::check_fault(&self.dir, FaultPoint::RetentionAfterRewrite);
        self.poison_on_fault(fault)?;

        // 4. Whole partitions, the head, the store-wide floor.
        if !affected.whole.is_empty() {
            report.files_deleted +=
                storage::install_drop(&self.dir, &self.shared.head, &affected.whole)?;
        }
        {
            let mut head = self.shared.head.write();
            head.manifest.rollup_floors = rollup_floors;
            if let Some(floor) = floor {
                report.series_dropped += head.apply_floor(floor);
            }
            report.series_dropped += head.apply_device_floors();
            report.floor = head.manifest.floor;
            report.device_floors = head.manifest.device_floors.len();
        }
        report.files_deleted += self.flush(true)?;
        let c = &self.shared.counters;
        Counters::add(&c.retention_files_deleted, report.files_deleted as u64);
        Counters::add(
            &c.retention_partitions_rewritten,
            report.partitions_rewritten as u64,
        );
        Counters::add(&c.retention_series_dropped, report.series_dropped as u64);
        Counters::set(&c.device_floors, report.device_floors as u64);
        self.rollups_dirty = true;
        self.publish_block_stats();
        tracing::info!(
            floor = report.floor,
            device_floors = report.device_floors,
            rollup_floor_fine = rollup_floors[0],
            rollup_floor_coarse = rollup_floors[1],
            files_deleted = report.files_deleted,
            partitions_rewritten = report.partitions_rewritten,
            files_rewritten = report.files_rewritten,
            series_dropped = report.series_dropped,
            partitions_failed = report.partitions_failed,
            "Retention applied."
        );
        Ok(report)
    }

    fn publish_block_stats(&self) {
        let head = self.shared.head.read();
        let c = &self.shared.counters;
        Counters::set(&c.block_files, head.manifest.files.len() as u64);
        Counters::set(
            &c.block_bytes,
            head.manifest.files.iter().map(|f| f.bytes).sum(),
        );
        Counters::set(
            &c.block_points,
            head.manifest.files.iter().map(|f| f.points).sum(),
        );
        Counters::set(&c.rollup_files, head.manifest.rollups.len() as u64);
        Counters::set(
            &c.rollup_bytes,
            head.manifest.rollups.iter().map(|r| r.bytes).sum(),
        );
    }

    /// Final fsync and checkpoint. A failed checkpoint is logged but not an error: the synced
    /// WAL holds everything and is replayed at the next open.
    fn close(&mut self) -> Result<()> {
        // Never leave a flush or compaction thread running past the directory lock.
        if let Err(error) = self.wait_flush() {
            tracing::warn!(%error, "Background flush failed; the next open replays the WAL.");
        }
        if let Err(error) = self.wait_compaction() {
            tracing::warn!(%error, "Background compaction failed.");
        }
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        self.sync_or_poison()?;
        if let Err(error) = self.checkpoint() {
            tracing::warn!(%error, "Flush at close failed; the next open replays the WAL.");
        }
        Ok(())
    }
}
