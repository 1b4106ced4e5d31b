//! The bike share's own database: one SQLite file beside the registry's, holding what the
//! platform does not (riders, trips, the ledger, plans, work orders, city credentials).
//!
//! WAL with `synchronous = FULL`: money and trips that were acknowledged survive a power loss.
//! An fsync costs milliseconds and a rental writes several times, so writes are **group
//! committed**: [`Db::tx`] hands its work to one writer thread, which runs every pending piece
//! of work in one transaction — each in a savepoint of its own, so a failing one is rolled back
//! alone — commits once, and only then answers each caller. Reads ([`Db::run`]) use a few other
//! connections and never wait for the writer (WAL readers see the last commit).

use std::path::Path;
use std::sync::{Arc, mpsc};

use parking_lot::Mutex;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// What the writer runs for one caller: the work in its savepoint, returning what delivers the
/// answer once the commit's outcome is known.
type Job = Box<dyn FnOnce(&Connection) -> Deliver + Send>;
type Deliver = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// Work taken into one transaction at most: bounds the latency a commit adds.
const MAX_BATCH: usize = 512;

/// Read connections: reads of different requests run side by side (WAL readers do not block
/// each other nor the writer).
const READERS: usize = 4;

#[derive(Clone)]
pub struct Db {
    writer: mpsc::SyncSender<Job>,
    readers: Arc<[Mutex<Connection>]>,
}

/// Each module owns its tables; they are created in this order.
fn schemas() -> [&'static str; 8] {
    [
        crate::system::SCHEMA,
        crate::riders::SCHEMA,
        crate::ledger::SCHEMA,
        crate::wallet::SCHEMA,
        crate::trips::SCHEMA,
        crate::workorders::SCHEMA,
        crate::vehicle_events::SCHEMA,
        crate::city::SCHEMA,
    ]
}

impl Db {
    /// Opens (creating if needed) `<dir>/bikeshare.db`.
    pub fn open(dir: &Path) -> Result<Db> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("bikeshare.db");
        let writer = Connection::open(&path)?;
        init(&writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(&path)?;
            configure(&reader)?;
            readers.push(Mutex::new(reader));
        }
        Db::start(writer, readers)
    }

    fn start(writer: Connection, readers: Vec<Mutex<Connection>>) -> Result<Db> {
        let (tx, rx) = mpsc::sync_channel::<Job>(4096);
        std::thread::Builder::new()
            .name("bikeshare-db".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(|e| Error::Internal(format!("start the database writer: {e}")))?;
        Ok(Db {
            writer: tx,
            readers: readers.into(),
        })
    }

    /// Reads with the read connection on the blocking pool (a write here would bypass group
    /// commit: use [`Db::tx`]).
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || f(&mut reader(&readers)))
            .await
            .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
    }

    /// Runs `f` atomically and durably: committed (and fsynced) with whatever else is pending,
    /// answered after the commit. An `Err` from `f` rolls back `f`'s writes only.
    pub async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |conn: &Connection| -> Deliver {
            let outcome = in_savepoint(conn, f);
            Box::new(move |committed: std::result::Result<(), String>| {
                let result = match committed {
                    Ok(()) => outcome,
                    // The work may have succeeded, but it is not durable: it did not happen.
                    Err(e) => outcome.and(Err(Error::Internal(format!("commit failed: {e}")))),
                };
                reply.send(result).ok();
            })
        });
        let writer = self.writer.clone();
        // `send` blocks only when 4,096 pieces of work are queued: backpressure, off the runtime.
        tokio::task::spawn_blocking(move || writer.send(job))
            .await
            .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
            .map_err(|_| Error::Internal("the database writer stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the database writer stopped".into()))?
    }

    /// Synchronous reads (and start-up writes such as secrets) on the read connection.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        f(&mut reader(&self.readers))
    }
}

/// A free read connection, or the first one once it is free.
fn reader(readers: &[Mutex<Connection>]) -> parking_lot::MutexGuard<'_, Connection> {
    readers
        .iter()
        .find_map(|r| r.try_lock())
        .unwrap_or_else(|| readers[0].lock())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

fn init(conn: &Connection) -> Result<()> {
    configure(conn)?;
    for schema in schemas() {
        conn.execute_batch(schema)?;
    }
    crate::workorders::migrate(conn)?;
    Ok(())
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job")?;
    let out = f(conn);
    let end = if out.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    match conn.execute_batch(end) {
        Ok(()) => out,
        Err(e) => out.and(Err(e.into())),
    }
}

/// The writer thread: one transaction per batch of pending work, one fsync per commit.
fn write_loop(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Nothing ran; dropping the work answers its callers with an error.
            tracing::error!(%error, jobs = jobs.len(), "Bike share database: cannot begin a transaction.");
            continue;
        }
        let mut deliveries: Vec<Deliver> = Vec::with_capacity(jobs.len());
        for job in jobs {
            // A bug in one piece of work must not take the writer (and every later write) down:
            // its savepoint is rolled back and its caller gets an error.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn))) {
                Ok(deliver) => deliveries.push(deliver),
                Err(_) => {
                    tracing::error!("Bike share database: a write panicked; rolled back.");
                    conn.execute_batch("ROLLBACK TO job; RELEASE job").ok();
                }
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            conn.execute_batch("ROLLBACK").ok();
            e.to_string()
        });
        for deliver in deliveries {
            deliver(committed.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_commit_together_and_a_failure_stays_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        db.tx(|c| {
            c.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")?;
            Ok(())
        })
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for n in 0..200_i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.tx(move |c| {
                    c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                    if n % 50 == 7 {
                        // Fails after writing: its insert must be rolled back, nobody else's.
                        return Err(Error::invalid("test", "refused"));
                    }
                    Ok(n)
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 196);
        let stored: i64 = db
            .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(
            stored, 196,
            "every acknowledged write is visible, no refused one"
        );
        // Reopening sees the same: the writes were committed.
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        let stored: i64 = db
            .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(stored, 196);
    }
}
