//! SQLite (bundled) with the same ThingsBoard-like `ts_kv` / `ts_kv_latest` tables as the
//! PostgreSQL run: WAL mode, `synchronous=FULL`, one transaction per write request.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};
use serde_json::{Value as Json, json};

use crate::measure::{Answer, dir_bytes, proc_status, tree_cpu_secs};
use crate::queries::{Engine, Plan, Query, Repeat, run_all};
use crate::sql::{self, Batch, Fold};
use crate::{Scale, common, dataset};

const SCHEMA: &str = "
CREATE TABLE ts_kv (
    entity_id INTEGER NOT NULL,
    key       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    bool_v    INTEGER,
    str_v     TEXT,
    long_v    INTEGER,
    dbl_v     REAL,
    json_v    TEXT,
    PRIMARY KEY (entity_id, key, ts)
) WITHOUT ROWID;
CREATE TABLE ts_kv_latest (
    entity_id INTEGER NOT NULL,
    key       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    bool_v    INTEGER,
    str_v     TEXT,
    long_v    INTEGER,
    dbl_v     REAL,
    json_v    TEXT,
    PRIMARY KEY (entity_id, key)
) WITHOUT ROWID;
CREATE TABLE ts_kv_dictionary (key TEXT PRIMARY KEY, key_id INTEGER UNIQUE NOT NULL);
CREATE TABLE device (
    entity_id     INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    fleet         TEXT NOT NULL,
    model         TEXT NOT NULL,
    load_capacity INTEGER NOT NULL
);
";

const INSERT_TS_KV: &str =
    "INSERT INTO ts_kv (entity_id, key, ts, long_v, dbl_v) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (entity_id, key, ts) DO UPDATE SET bool_v = excluded.bool_v, str_v = excluded.str_v,
    long_v = excluded.long_v, dbl_v = excluded.dbl_v, json_v = excluded.json_v";

const UPSERT_LATEST: &str = "INSERT INTO ts_kv_latest (entity_id, key, ts, long_v, dbl_v) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (entity_id, key) DO UPDATE SET ts = excluded.ts, bool_v = excluded.bool_v,
    str_v = excluded.str_v, long_v = excluded.long_v, dbl_v = excluded.dbl_v, json_v = excluded.json_v
WHERE ts_kv_latest.ts <= excluded.ts";

/// Creates the database and its tables, with the dictionary and the devices.
pub(crate) fn create(path: &Path, plan: &Plan) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    for (k, id) in sql::dictionary() {
        conn.execute(
            "INSERT INTO ts_kv_dictionary (key, key_id) VALUES (?1, ?2)",
            params![k, id],
        )?;
    }
    for (i, name, fleet, model, cap) in sql::devices(plan) {
        conn.execute(
            "INSERT INTO device VALUES (?1, ?2, ?3, ?4, ?5)",
            params![i, name, fleet, model, cap],
        )?;
    }
    Ok(conn)
}

/// Writes every request, one transaction each.
pub(crate) fn write(conn: &mut Connection, batches: &[Batch]) -> Result<()> {
    for b in batches {
        let tx = conn.transaction()?;
        {
            let mut kv = tx.prepare_cached(INSERT_TS_KV)?;
            for r in &b.rows {
                kv.execute(params![r.truck, r.key, r.ts, r.long_v, r.dbl_v])?;
            }
            let mut latest = tx.prepare_cached(UPSERT_LATEST)?;
            for r in &b.latest {
                latest.execute(params![r.truck, r.key, r.ts, r.long_v, r.dbl_v])?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

pub fn bench(scale: &Scale, path: &Path) -> Result<Json> {
    let d = dataset(scale);
    let plan = Plan::new(&d)?;
    let batches = sql::batches(&d);
    let rss_before = proc_status("self", "VmRSS")?;
    let mut conn = create(path, &plan)?;
    let cpu_before = tree_cpu_secs(std::process::id())?;
    let started = Instant::now();
    write(&mut conn, &batches)?;
    let ingest = started.elapsed().as_secs_f64();
    let cpu = tree_cpu_secs(std::process::id())? - cpu_before;
    conn.execute_batch("ANALYZE")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let bytes = dir_bytes(path) + dir_bytes(&wal);

    let mut engine = SqliteEngine { conn: &conn };
    let queries = run_all(
        &mut engine,
        &plan,
        Repeat {
            runs: scale.query_runs,
            budget: scale.budget(),
        },
    )?;
    let stored: u64 = conn.query_row("SELECT count(*) FROM ts_kv", [], |r| r.get(0))?;
    let peak = proc_status("self", "VmHWM")?;

    let mut out = common(scale, &d);
    let o = out.as_object_mut().context("report is an object")?;
    o.insert("engine".into(), json!("SQLite"));
    o.insert(
        "settings".into(),
        json!(format!(
            "SQLite {} (bundled), journal_mode=WAL, synchronous=FULL, one transaction per request, one writer; ThingsBoard-like ts_kv and ts_kv_latest, WITHOUT ROWID, upserts",
            rusqlite::version()
        )),
    );
    o.insert("writers".into(), json!(1));
    o.insert("ingest_secs".into(), json!(ingest));
    o.insert("values_per_sec".into(), json!(d.values as f64 / ingest));
    o.insert("cpu_secs".into(), json!(cpu));
    o.insert("values_per_cpu_sec".into(), json!(d.values as f64 / cpu));
    o.insert(
        "cpu_note".into(),
        json!("CPU time of the benchmark process (SQLite is in-process) during ingest"),
    );
    o.insert("bytes_on_disk".into(), json!(bytes));
    o.insert(
        "bytes_per_value".into(),
        json!(bytes as f64 / d.values as f64),
    );
    o.insert("points_stored".into(), json!(stored));
    o.insert(
        "peak_rss_bytes".into(),
        json!(peak.saturating_sub(rss_before)),
    );
    o.insert(
        "rss_note".into(),
        json!("VmHWM of the benchmark process minus its VmRSS before opening the database"),
    );
    crate::merge(o, queries)?;
    Ok(out)
}

pub(crate) struct SqliteEngine<'a> {
    pub(crate) conn: &'a Connection,
}

impl Engine for SqliteEngine<'_> {
    fn run(&mut self, q: Query, plan: &Plan) -> Result<Answer> {
        let (text, fold) = sql::query(q, plan);
        let mut stmt = self.conn.prepare_cached(&text)?;
        let last = stmt.column_count() - 1;
        let mut rows = stmt.query([])?;
        let mut a = Answer::default();
        while let Some(row) = rows.next()? {
            match fold {
                Fold::LastColumn => {
                    let v: Option<f64> = row.get(last)?;
                    if let Some(v) = v {
                        a.add(v);
                    }
                }
                Fold::TruckIndex => a.add(Plan::truck_index(&row.get::<_, String>(0)?)?),
            }
        }
        Ok(a)
    }

    fn text(&self, q: Query, plan: &Plan) -> Option<String> {
        Some(sql::query(q, plan).0)
    }
}
