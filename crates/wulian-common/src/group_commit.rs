//! Group commit for SQLite databases with one writer connection (the registry, the broker's
//! store).
//!
//! SQLite in WAL mode with `synchronous = FULL` fsyncs the WAL inside every COMMIT, while the
//! single writer connection is locked: writes then queue behind each other's fsyncs, and a busy
//! platform (commands to thousands of locks, a connect storm's retained presence messages)
//! commits no faster than the disk syncs — and, on the blocking pool, holds a thread per queued
//! write. Instead the writer runs with `synchronous = NORMAL` (a COMMIT writes the WAL but does
//! not sync it) and every writer, after releasing the connection, waits here until the WAL is
//! synced past its commit. One writer syncs for all who committed before it started: a thousand
//! commits that arrive together cost one fsync, not a thousand.
//!
//! Durability is unchanged — a write is acknowledged to its caller only after its WAL frames are
//! on disk. SQLite's WAL checksums keep the database consistent whatever a crash leaves behind.
//! The difference from FULL: other connections may read a commit a moment before it is durable.

use std::path::PathBuf;

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct Progress {
    /// Commits made so far (numbered from 1, in commit order).
    committed: u64,
    /// Every commit up to this number is on disk.
    durable: u64,
    /// Someone is syncing the WAL now; the others wait for it.
    syncing: bool,
}

/// The WAL's sync state. `wal` is `None` for an in-memory database (nothing to sync).
#[derive(Debug)]
pub struct GroupCommit {
    wal: Option<PathBuf>,
    progress: Mutex<Progress>,
    synced: Condvar,
}

impl GroupCommit {
    /// `wal`: the database's `-wal` file (`<db path>-wal`); `None` for an in-memory database.
    pub fn new(wal: Option<PathBuf>) -> GroupCommit {
        GroupCommit {
            wal,
            progress: Mutex::new(Progress::default()),
            synced: Condvar::new(),
        }
    }

    /// Records a commit; call it while still holding the writer connection, so that numbers
    /// follow commit order. Returns the number to wait for.
    pub fn committed(&self) -> u64 {
        let mut progress = self.lock();
        progress.committed += 1;
        progress.committed
    }

    /// Blocks until commit `seq` is on disk: syncs the WAL unless someone is already doing it,
    /// in which case waits for them (and syncs again if their sync started before `seq`).
    pub fn wait_durable(&self, seq: u64) -> std::io::Result<()> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let mut progress = self.lock();
        loop {
            if progress.durable >= seq {
                return Ok(());
            }
            if progress.syncing {
                progress = self
                    .synced
                    .wait(progress)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            progress.syncing = true;
            let target = progress.committed;
            drop(progress);
            let synced = sync_file(wal);
            progress = self.lock();
            progress.syncing = false;
            if synced.is_ok() {
                progress.durable = progress.durable.max(target);
            }
            self.synced.notify_all();
            // On failure the waiters try again themselves; this caller hears of it.
            synced?;
        }
    }
}

impl GroupCommit {
    /// The counters hold no invariant a panic could break: a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opening the WAL afresh for each sync keeps this correct even if SQLite recreates the file.
fn sync_file(path: &PathBuf) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(file) => file.sync_data(),
        // No WAL file: nothing was written since SQLite last removed it (at close, after a
        // full checkpoint that synced the database itself).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn in_memory_commits_are_durable_at_once() {
        let group = GroupCommit::new(None);
        let seq = group.committed();
        group.wait_durable(seq).unwrap();
    }

    #[test]
    fn concurrent_waiters_all_return_and_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let group = Arc::new(GroupCommit::new(Some(wal)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let group = Arc::clone(&group);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let seq = group.committed();
                        group.wait_durable(seq).unwrap();
                        assert!(group.lock().durable >= seq);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let progress = group.lock();
        assert_eq!(progress.committed, 400);
        assert_eq!(progress.durable, 400);
        assert!(!progress.syncing);
    }

    #[test]
    fn a_failed_sync_is_reported_and_retried_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be opened for sync as a file on every platform; use a path whose
        // parent does not exist to make the open fail with something other than NotFound.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let group = GroupCommit::new(Some(blocker.join("db-wal")));
        let seq = group.committed();
        assert!(group.wait_durable(seq).is_err());
        assert_eq!(group.lock().durable, 0);
        assert!(!group.lock().syncing);
    }
}
