//! QoS 0 telemetry goes to the store in short batches, not one write per message.
//!
//! A QoS 0 PUBLISH is never acknowledged, so nobody waits for its durable write. Written one
//! by one as they arrive, at 10,000 messages a second, each cost the store's writer thread a
//! wake-up, a group commit with its fsync, and a reply: about half of the broker's CPU, and the
//! margin by which its delivery latency trailed Mosquitto's. Here the writes staged within a
//! short window ([`WINDOW`] unless configured) go to the store together: one wake-up and one
//! group commit for all of them. Each keeps its own request, so a refusal (a value of the
//! wrong type for its series) stays its own.
//!
//! What QoS 0 gives up is bounded: a process killed within the window loses that window's
//! messages, which is what "at most once" allows; readings become queryable, and rules see
//! them, up to a window later. Past [`MAX_QUEUED`] waiting writes a publisher writes as
//! before and waits for the store, so a store that falls behind slows publishers down rather
//! than growing this queue. [`Deferred::flush`] writes what is waiting (at shutdown).
//!
//! A device's readings keep their order: while a device has writes waiting here, its
//! acknowledged (QoS 1 or 2) write first flushes them ([`Deferred::holds`]). Otherwise a later
//! reading could reach the store and the rules before an earlier one, and an earlier value
//! for the same timestamp would replace the later one. A QoS 0 write that finds the queue
//! full is the exception: it is written at once, as the store is already behind, and making
//! it flush the queue first would serialise every publisher behind the batches.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a staged write waits for others to join its batch, by default.
pub const WINDOW: Duration = Duration::from_millis(2);
/// A batch this large is written at once, without waiting for the window to end.
const FLUSH_AT: usize = 1024;
/// Writes waiting at most; beyond, publishers write themselves (see the module docs).
const MAX_QUEUED: usize = 8192;

/// A staged write: writes, then hands the stored readings on (rules, observers, live streams)
/// and counts the outcome.
pub(crate) type WriteJob = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The writes waiting for the next batch.
pub(crate) struct Deferred {
    inner: Arc<Inner>,
    /// Where the flusher runs: the runtime that created the pipeline when there is one (not
    /// an application lane's, which a device on a lane listener would otherwise pick).
    runtime: Option<tokio::runtime::Handle>,
}

struct Inner {
    queue: Mutex<Queue>,
    /// Wakes the flusher: the queue was empty and is not, or it reached [`FLUSH_AT`].
    wake: Notify,
    /// Held while a batch is written, so that [`Deferred::flush`] also waits for that one.
    writing: tokio::sync::Mutex<()>,
    flusher_started: AtomicBool,
    /// The window, in microseconds.
    window_us: AtomicU64,
    hasher: RandomState,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<(DeviceKey, WriteJob)>,
    /// Writes queued or being written, per device; a batch's are counted down once it is
    /// written (one lock for the batch, not one per write).
    waiting: HashMap<DeviceKey, usize>,
}

/// A device, as a hash of its tenant and id: two devices that share one only cost an
/// unneeded flush.
pub(crate) type DeviceKey = u64;

impl Deferred {
    pub(crate) fn new() -> Deferred {
        Deferred {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                wake: Notify::new(),
                writing: tokio::sync::Mutex::new(()),
                flusher_started: AtomicBool::new(false),
                window_us: AtomicU64::new(WINDOW.as_micros() as u64),
                hasher: RandomState::new(),
            }),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Sets how long writes wait for their batch.
    pub(crate) fn set_window(&self, window: Duration) {
        let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        self.inner.window_us.store(us, Ordering::Relaxed);
    }

    /// The key of a device of a tenant.
    pub(crate) fn key(&self, tenant: &str, device: &str) -> DeviceKey {
        self.inner.hasher.hash_one((tenant, device))
    }

    /// Whether `device` has writes queued or being written.
    pub(crate) fn holds(&self, device: DeviceKey) -> bool {
        self.inner.lock().waiting.contains_key(&device)
    }

    /// Queues `job`, a write of `device`, for the next batch. Gives it back when the queue is
    /// full or there is no runtime to write from: the caller then runs it itself.
    pub(crate) fn push(&self, device: DeviceKey, job: WriteJob) -> Result<(), WriteJob> {
        if !self.inner.flusher_started.load(Ordering::Acquire) {
            let Some(runtime) = self
                .runtime
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok())
            else {
                return Err(job);
            };
            if !self.inner.flusher_started.swap(true, Ordering::AcqRel) {
                runtime.spawn(Arc::clone(&self.inner).run());
            }
        }
        let queued = {
            let mut queue = self.inner.lock();
            if queue.jobs.len() >= MAX_QUEUED {
                return Err(job);
            }
            queue.jobs.push((device, job));
            *queue.waiting.entry(device).or_default() += 1;
            queue.jobs.len()
        };
        if queued == 1 || queued == FLUSH_AT {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Writes everything queued now, and waits for a batch already being written.
    pub(crate) async fn flush(&self) {
        let _writing = self.inner.writing.lock().await;
        self.inner.write_queued().await;
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is queued now as one batch (the caller holds `writing`).
    async fn write_queued(&self) {
        let batch = std::mem::take(&mut self.lock().jobs);
        let (devices, jobs): (Vec<DeviceKey>, Vec<WriteJob>) = batch.into_iter().unzip();
        futures_util::future::join_all(jobs).await;
        let mut queue = self.lock();
        for device in devices {
            if let Some(n) = queue.waiting.get_mut(&device) {
                *n -= 1;
                if *n == 0 {
                    queue.waiting.remove(&device);
                }
            }
        }
    }

    /// The flusher task: one batch per wake-up, gathered over the window. Each job prepares
    /// on its first poll and sends its write request on the next, so the store's writer
    /// receives the whole batch at once and commits it as one group.
    async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let window = Duration::from_micros(self.window_us.load(Ordering::Relaxed));
            if !window.is_zero() && self.lock().jobs.len() < FLUSH_AT {
                tokio::time::sleep(window).await;
            }
            let _writing = self.writing.lock().await;
            self.write_queued().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting_job(done: &Arc<AtomicUsize>) -> WriteJob {
        let done = Arc::clone(done);
        Box::pin(async move {
            done.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn queued_writes_run_within_the_window() {
        let deferred = Deferred::new();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..10 {
            assert!(deferred.push(0, counting_job(&done)).is_ok());
        }
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "nothing runs before the window"
        );
        for _ in 0..200 {
            if done.load(Ordering::SeqCst) == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 10);
        // A later write gets a batch of its own.
        assert!(deferred.push(0, counting_job(&done)).is_ok());
        deferred.flush().await;
        assert_eq!(done.load(Ordering::SeqCst), 11);
    }

    #[tokio::test]
    async fn a_full_queue_hands_the_write_back() {
        let deferred = Deferred::new();
        let done = Arc::new(AtomicUsize::new(0));
        // Holding the writing lock keeps the flusher from emptying the queue.
        let writing = Arc::clone(&deferred.inner);
        let held = writing.writing.lock().await;
        for _ in 0..MAX_QUEUED {
            assert!(deferred.push(0, counting_job(&done)).is_ok());
        }
        let refused = deferred.push(0, counting_job(&done));
        assert!(refused.is_err(), "the queue is bounded");
        refused.unwrap_err().await;
        drop(held);
        deferred.flush().await;
        assert_eq!(done.load(Ordering::SeqCst), MAX_QUEUED + 1);
    }

    #[tokio::test]
    async fn a_device_is_held_until_its_writes_are_done() {
        let deferred = Deferred::new();
        let done = Arc::new(AtomicUsize::new(0));
        let (a, b) = (deferred.key("t", "a"), deferred.key("t", "b"));
        assert!(!deferred.holds(a));
        assert!(deferred.push(a, counting_job(&done)).is_ok());
        assert!(deferred.push(a, counting_job(&done)).is_ok());
        assert!(deferred.holds(a));
        assert!(!deferred.holds(b));
        deferred.flush().await;
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert!(!deferred.holds(a), "released once written");
    }

    #[test]
    fn without_a_runtime_the_caller_writes() {
        let deferred = Deferred::new();
        let done = Arc::new(AtomicUsize::new(0));
        assert!(deferred.push(0, counting_job(&done)).is_err());
    }
}
