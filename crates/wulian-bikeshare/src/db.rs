//! The bike share's own database: one SQLite file beside the registry's, holding what the
//! platform does not (riders, trips, the ledger, plans, work orders, city credentials).
//!
//! One connection behind a mutex, used from the blocking pool: the writes are small and
//! SQLite serialises writers anyway. WAL with `synchronous = FULL`: money and trips that were
//! acknowledged survive a power loss.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::Connection;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
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
        let conn = Connection::open(dir.join("bikeshare.db"))?;
        Db::init(conn)
    }

    /// An in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Db> {
        Db::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Db> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        for schema in schemas() {
            conn.execute_batch(schema)?;
        }
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(|e| Error::Internal(format!("database task failed: {e}")))?
    }

    /// Runs `f` inside one transaction on the blocking pool; committed when `f` returns `Ok`.
    pub async fn tx<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Synchronous access for start-up and tests.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        f(&mut self.conn.lock())
    }
}
