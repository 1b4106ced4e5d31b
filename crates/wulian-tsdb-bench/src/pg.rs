//! PostgreSQL with ThingsBoard's `ts_kv` layout: `ts_kv` partitioned by range of `ts`,
//! `ts_kv_latest`, `ts_kv_dictionary`; batched upserts (`ON CONFLICT DO UPDATE`), one
//! transaction per write request, `synchronous_commit = on`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postgres::{Client, NoTls, Statement};
use serde_json::{Value as Json, json};

use crate::measure::{Answer, PssSampler, proc_status, tree_cpu_secs};
use crate::queries::{Engine, Plan, Query, Repeat, run_all};
use crate::sql::{self, Batch, Fold, KvRow};
use crate::{Scale, common, dataset};

/// ThingsBoard partitions `ts_kv` by month; 30-day ranges here.
const PARTITION_MS: i64 = 30 * 86_400_000;

const SCHEMA: &str = "
CREATE TABLE ts_kv_dictionary (
    key    varchar(255) NOT NULL,
    key_id serial UNIQUE,
    CONSTRAINT ts_key_id_pkey PRIMARY KEY (key)
);
CREATE TABLE ts_kv (
    entity_id uuid NOT NULL,
    key       int NOT NULL,
    ts        bigint NOT NULL,
    bool_v    boolean,
    str_v     varchar(10000000),
    long_v    bigint,
    dbl_v     double precision,
    json_v    json,
    CONSTRAINT ts_kv_pkey PRIMARY KEY (entity_id, key, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE ts_kv_latest (
    entity_id uuid NOT NULL,
    key       int NOT NULL,
    ts        bigint NOT NULL,
    bool_v    boolean,
    str_v     varchar(10000000),
    long_v    bigint,
    dbl_v     double precision,
    json_v    json,
    CONSTRAINT ts_kv_latest_pkey PRIMARY KEY (entity_id, key)
);
CREATE TABLE device (
    entity_id     uuid PRIMARY KEY,
    name          varchar(255) NOT NULL UNIQUE,
    fleet         varchar(255) NOT NULL,
    model         varchar(255) NOT NULL,
    load_capacity int NOT NULL
);
";

const INSERT_TS_KV: &str = "
INSERT INTO ts_kv (entity_id, key, ts, long_v, dbl_v)
SELECT e::uuid, k, t, l, d FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::float8[]) AS u(e, k, t, l, d)
ON CONFLICT (entity_id, key, ts) DO UPDATE SET bool_v = EXCLUDED.bool_v, str_v = EXCLUDED.str_v,
    long_v = EXCLUDED.long_v, dbl_v = EXCLUDED.dbl_v, json_v = EXCLUDED.json_v";

const UPSERT_LATEST: &str = "
INSERT INTO ts_kv_latest (entity_id, key, ts, long_v, dbl_v)
SELECT e::uuid, k, t, l, d FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::float8[]) AS u(e, k, t, l, d)
ON CONFLICT (entity_id, key) DO UPDATE SET ts = EXCLUDED.ts, bool_v = EXCLUDED.bool_v,
    str_v = EXCLUDED.str_v, long_v = EXCLUDED.long_v, dbl_v = EXCLUDED.dbl_v, json_v = EXCLUDED.json_v
WHERE ts_kv_latest.ts <= EXCLUDED.ts";

/// A truck's `entity_id`.
fn uuid(truck: u32) -> String {
    format!("00000000-0000-4000-8000-{truck:012x}")
}

fn connect(conn: &str) -> Result<Client> {
    Client::connect(conn, NoTls).with_context(|| format!("connect to PostgreSQL ({conn})"))
}

/// Columns of an `unnest` insert.
struct Columns<'a> {
    entity: Vec<&'a str>,
    key: Vec<i32>,
    ts: Vec<i64>,
    long_v: Vec<Option<i64>>,
    dbl_v: Vec<Option<f64>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &[KvRow], uuids: &'a [String]) -> Columns<'a> {
        Columns {
            entity: rows
                .iter()
                .map(|r| uuids[r.truck as usize].as_str())
                .collect(),
            key: rows.iter().map(|r| r.key).collect(),
            ts: rows.iter().map(|r| r.ts).collect(),
            long_v: rows.iter().map(|r| r.long_v).collect(),
            dbl_v: rows.iter().map(|r| r.dbl_v).collect(),
        }
    }
}

fn write_batch(client: &mut Client, stmts: &(Statement, Statement), c: &[Columns]) -> Result<()> {
    let mut tx = client.transaction()?;
    for (stmt, c) in [&stmts.0, &stmts.1].into_iter().zip(c) {
        tx.execute(stmt, &[&c.entity, &c.key, &c.ts, &c.long_v, &c.dbl_v])?;
    }
    tx.commit()?;
    Ok(())
}

pub fn bench(scale: &Scale, conn: &str, pid: u32) -> Result<Json> {
    let d = dataset(scale);
    let plan = Plan::new(&d)?;
    let mut client = connect(conn)?;
    client.batch_execute(SCHEMA)?;
    let mut from = d.start_ms - d.start_ms.rem_euclid(PARTITION_MS);
    while from <= d.end_ms {
        client.batch_execute(&format!(
            "CREATE TABLE ts_kv_{from} PARTITION OF ts_kv FOR VALUES FROM ({from}) TO ({})",
            from + PARTITION_MS
        ))?;
        from += PARTITION_MS;
    }
    for (k, id) in sql::dictionary() {
        client.execute(
            "INSERT INTO ts_kv_dictionary (key, key_id) VALUES ($1, $2)",
            &[&k, &id],
        )?;
    }
    for (i, name, fleet, model, cap) in sql::devices(&plan) {
        client.execute(
            "INSERT INTO device VALUES ($1::text::uuid, $2, $3, $4, $5)",
            &[&uuid(i), &name, &fleet, &model, &cap],
        )?;
    }
    let version: String = client.query_one("SHOW server_version", &[])?.get(0);
    let mut settings = Vec::new();
    for s in [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_level",
        "shared_buffers",
        "max_wal_size",
        "checkpoint_timeout",
        "max_parallel_workers_per_gather",
        "jit",
    ] {
        let v: String = client.query_one(&format!("SHOW {s}"), &[])?.get(0);
        settings.push(format!("{s}={v}"));
    }

    // The columns of every request, built before the clock starts (ThingsBoard's JDBC batch
    // is assembled in the application too).
    let uuids: Vec<String> = (0..d.trucks.len() as u32).map(uuid).collect();
    let batches: Vec<Batch> = sql::batches(&d);
    let columns: Vec<[Columns; 2]> = batches
        .iter()
        .map(|b| [Columns::of(&b.rows, &uuids), Columns::of(&b.latest, &uuids)])
        .collect();

    let sampler = PssSampler::start(pid);
    let cpu_before = tree_cpu_secs(pid)?;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..scale.writers)
            .map(|_| {
                let (next, columns) = (&next, &columns);
                s.spawn(move || -> Result<()> {
                    let mut client = connect(conn)?;
                    let stmts = (
                        client.prepare(INSERT_TS_KV)?,
                        client.prepare(UPSERT_LATEST)?,
                    );
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(c) = columns.get(i) else {
                            return Ok(());
                        };
                        write_batch(&mut client, &stmts, c)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })?;
    let ingest = started.elapsed().as_secs_f64();
    // The writers' backends exit when their connections close; let the postmaster reap them
    // so that their CPU time is counted.
    std::thread::sleep(Duration::from_millis(1000));
    let cpu = tree_cpu_secs(pid)? - cpu_before;

    // What autovacuum would do soon after a bulk load: visibility map and statistics.
    let started = Instant::now();
    client.batch_execute("VACUUM ANALYZE")?;
    client.batch_execute("CHECKPOINT")?;
    let vacuum = started.elapsed().as_secs_f64();
    let bytes: i64 = client
        .query_one(
            "SELECT sum(pg_total_relation_size(oid))::bigint FROM pg_class WHERE relkind = 'r' AND relname LIKE 'ts_kv%'",
            &[],
        )?
        .get(0);
    let stored: i64 = client.query_one("SELECT count(*) FROM ts_kv", &[])?.get(0);
    if stored as u64 != d.values {
        bail!("ts_kv holds {stored} rows, {} were written", d.values);
    }

    let mut engine = PgEngine {
        client,
        statements: HashMap::new(),
    };
    let queries = run_all(
        &mut engine,
        &plan,
        Repeat {
            runs: scale.query_runs,
            budget: scale.budget(),
        },
    )?;
    let peak = sampler.stop();
    let postmaster_hwm = proc_status(&pid.to_string(), "VmHWM")?;

    let mut out = common(scale, &d);
    let o = out.as_object_mut().context("report is an object")?;
    o.insert("engine".into(), json!("PostgreSQL"));
    o.insert(
        "settings".into(),
        json!(format!(
            "PostgreSQL {version}, {}; ThingsBoard ts_kv (partitioned by 30-day ts ranges) + ts_kv_latest, one transaction per request of two unnest() upserts (ts_kv, ts_kv_latest), {} connections",
            settings.join(", "),
            scale.writers
        )),
    );
    o.insert("ingest_secs".into(), json!(ingest));
    o.insert("values_per_sec".into(), json!(d.values as f64 / ingest));
    o.insert("cpu_secs".into(), json!(cpu));
    o.insert("values_per_cpu_sec".into(), json!(d.values as f64 / cpu));
    o.insert(
        "cpu_note".into(),
        json!("utime+stime of the postmaster and all its children (backends, WAL writer, checkpointer, autovacuum) during ingest"),
    );
    o.insert("vacuum_secs".into(), json!(vacuum));
    o.insert("bytes_on_disk".into(), json!(bytes));
    o.insert(
        "bytes_per_value".into(),
        json!(bytes as f64 / d.values as f64),
    );
    o.insert(
        "bytes_note".into(),
        json!("pg_total_relation_size of ts_kv's partitions, ts_kv_latest and ts_kv_dictionary (heap, TOAST, indexes) after VACUUM ANALYZE; WAL not counted"),
    );
    o.insert("points_stored".into(), json!(stored));
    o.insert("peak_rss_bytes".into(), json!(peak));
    o.insert("postmaster_vmhwm_bytes".into(), json!(postmaster_hwm));
    o.insert(
        "rss_note".into(),
        json!("peak of the summed PSS (shared pages divided among processes) of the postmaster and its children, sampled every 200 ms from ingest to the last query"),
    );
    crate::merge(o, queries)?;
    Ok(out)
}

struct PgEngine {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Engine for PgEngine {
    fn run(&mut self, q: Query, plan: &Plan) -> Result<Answer> {
        let (text, fold) = sql::query(q, plan);
        let stmt = match self.statements.get(q.name()) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(&text)?;
                self.statements.insert(q.name(), s.clone());
                s
            }
        };
        let mut a = Answer::default();
        for row in self.client.query(&stmt, &[])? {
            match fold {
                Fold::LastColumn => {
                    let v: Option<f64> = row.try_get(row.len() - 1)?;
                    if let Some(v) = v {
                        a.add(v);
                    }
                }
                Fold::TruckIndex => a.add(Plan::truck_index(row.try_get::<_, &str>(0)?)?),
            }
        }
        Ok(a)
    }

    fn text(&self, q: Query, plan: &Plan) -> Option<String> {
        Some(sql::query(q, plan).0)
    }
}
