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
//! So a write that fails to reach the log never shows up in memory, and a write is visible to
//! readers no later than its acknowledgement. Because validation and application happen on
//! this one thread, there is no race between checking a series' kind and logging the write.
//!
//! I/O failure policy: a failed append is rolled back (the file truncated to its previous
//! length) and the group is answered with the error; the log stays usable. A failed fsync, or
//! a failed rollback, leaves the file's contents unknown: the writer is poisoned and answers
//! every later write with [`Error::WalFailed`] until restart (replay then keeps what is valid).
//!
//! Checkpoints also run here, when the WAL exceeds `checkpoint_bytes`, on request, and on
//! close: seal the current segment, write the head as a snapshot covering everything before the
//! new segment, then delete the covered segments. Writes wait while a checkpoint runs (reads
//! do not); that stall is the price of this first version.

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
use crate::snapshot;
use crate::stats::Counters;
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
    Close {
        reply: Reply<()>,
    },
    /// Async mode: fsync if anything is unsynced.
    Tick,
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
    pub snapshot_dir: PathBuf,
    pub durability: Durability,
    pub segment_bytes: u64,
    pub checkpoint_bytes: u64,
    /// The directory lock; released when the writer ends.
    pub lock: File,
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
    fn kind(&self, head: &Head, key: &SeriesKey) -> Option<ValueKind> {
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
        head.kind(key)
    }
}

struct Running {
    rx: mpsc::Receiver<Request>,
    log: SegmentLog,
    shared: Arc<Shared>,
    snapshot_dir: PathBuf,
    /// `None` in Sync mode.
    async_interval: Option<Duration>,
    segment_bytes: u64,
    checkpoint_bytes: u64,
    /// WAL size at which the next automatic checkpoint runs.
    checkpoint_at: u64,
    poisoned: bool,
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
            snapshot_dir: w.snapshot_dir,
            async_interval,
            segment_bytes: w.segment_bytes,
            checkpoint_bytes: w.checkpoint_bytes,
            checkpoint_at: w.checkpoint_bytes,
            poisoned: false,
            _lock: w.lock,
        }
    }

    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_GROUP);
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                // Every handle was dropped without close(): make what was written durable.
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
                Request::Checkpoint { reply } => {
                    self.commit(&mut group);
                    let result = self.checkpoint();
                    answer(reply, result);
                }
                Request::Close { reply } => {
                    self.commit(&mut group);
                    // The rest of the batch is dropped (callers see Error::Closed).
                    return Some(reply);
                }
            }
        }
        self.commit(&mut group);
        if tick && self.log.is_dirty() && !self.poisoned {
            // Nobody waits on a tick; a failure is logged and poisons the writer.
            if let Err(error) = self.sync_or_poison() {
                tracing::debug!(%error, "Periodic WAL fsync failed.");
            }
        }
        self.maybe_checkpoint();
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
        let checked = {
            let head = self.shared.head.read();
            entries.iter_mut().try_for_each(|e| {
                let known = new_kinds
                    .get(&e.series)
                    .copied()
                    .or_else(|| group.kind(&head, &e.series));
                match known {
                    None => {
                        new_kinds.insert(e.series.clone(), e.value.kind());
                        Ok(())
                    }
                    Some(kind) if kind == e.value.kind() => Ok(()),
                    Some(ValueKind::Float) if e.value.kind() == ValueKind::Integer => {
                        if let Value::I64(v) = e.value {
                            e.value = Value::F64(v as f64);
                        }
                        Ok(())
                    }
                    Some(kind) => Err(Error::TypeMismatch {
                        key: e.series.key.clone(),
                        expected: kind,
                        actual: e.value.kind(),
                    }),
                }
            })
        };
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

    /// Logs the group, applies it to the head, answers it.
    fn commit(&mut self, group: &mut Group) {
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
        Counters::add(&self.shared.counters.commit_groups, 1);
        Counters::add(&self.shared.counters.commit_requests, ops.len() as u64);
        self.publish_wal_size();

        let mut done = Vec::with_capacity(ops.len());
        {
            let mut head = self.shared.head.write();
            for op in ops {
                match op {
                    Op::Write { entries, reply } => {
                        let points = entries.len();
                        for e in entries {
                            if let Err(conflict) = head.upsert(&e.series, e.ts, e.value) {
                                // Unreachable: the write was validated against these kinds.
                                tracing::error!(series = %e.series, ?conflict, "Validated write conflicts with the head.");
                            }
                        }
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
        match self.async_interval {
            None => self.sync_or_poison(),
            Some(interval) if self.log.since_sync() >= interval => self.sync_or_poison(),
            Some(_) => Ok(()),
        }
    }

    fn sync_or_poison(&mut self) -> Result<()> {
        self.log.sync().map_err(|source| {
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
        if self.poisoned || self.log.total_bytes() < self.checkpoint_at {
            return;
        }
        match self.checkpoint() {
            Ok(()) => self.checkpoint_at = self.checkpoint_bytes,
            Err(error) => {
                // Nothing is lost (the WAL still holds everything); try again after another
                // checkpoint_bytes rather than on every group.
                self.checkpoint_at = self.log.total_bytes().saturating_add(self.checkpoint_bytes);
                tracing::warn!(%error, "Checkpoint failed; the WAL keeps growing until one succeeds.");
            }
        }
    }

    /// Snapshot the head and cut the WAL (see the module doc).
    fn checkpoint(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        if !self.log.has_records() {
            return Ok(());
        }
        let started = Instant::now();
        self.sync_or_poison()?;
        let next = if self.log.current_len() > HEADER_LEN {
            self.log
                .rotate()
                .map_err(Error::io("start a new WAL segment"))?
        } else {
            self.log.current()
        };
        let info = {
            let head = self.shared.head.read();
            snapshot::write(&self.snapshot_dir, next, &head)?
        };
        snapshot::remove_older(&self.snapshot_dir, next)?;
        self.log
            .remove_before(next)
            .map_err(Error::io("remove checkpointed WAL segments"))?;
        Counters::set(&self.shared.counters.snapshot_bytes, info.bytes);
        Counters::add(&self.shared.counters.checkpoints, 1);
        self.publish_wal_size();
        tracing::info!(
            snapshot = %info.path.display(),
            bytes = info.bytes,
            wal_segment = next,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Checkpoint written."
        );
        Ok(())
    }

    /// Final fsync and checkpoint. A failed checkpoint is logged but not an error: the synced
    /// WAL holds everything and is replayed at the next open.
    fn close(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::WalFailed);
        }
        self.sync_or_poison()?;
        if let Err(error) = self.checkpoint() {
            tracing::warn!(%error, "Checkpoint at close failed; the next open replays the WAL.");
        }
        Ok(())
    }
}
