//! `wulian-tsdb-bench`: generates a TSBS-"iot"-shaped data set and measures ingest, bytes on
//! disk, peak memory and a few queries on wulian-tsdb (embedded, `Durability::Sync`), InfluxDB
//! 1.x (HTTP line protocol) and SQLite (a ThingsBoard-`ts_kv`-like table). Every subcommand that
//! measures prints one JSON object on standard output; `bench/tsdb.sh` runs them side by side.

mod generate;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value as Json, json};

use generate::{DIAGNOSTICS, Dataset, READINGS, Table};

#[derive(Parser)]
#[command(about = "TSBS-iot-shaped generator and telemetry-store benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Scale {
    /// Number of trucks (devices).
    #[arg(long, default_value_t = 100)]
    trucks: usize,
    /// Hours of data, one row per table per truck every 10 s.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rows per write request (whole one-minute batches of one truck, 12 rows each).
    #[arg(long, default_value_t = 1000)]
    rows_per_request: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Repetitions of each query.
    #[arg(long, default_value_t = 30)]
    query_runs: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Writes the data set as InfluxDB line protocol (ms precision) to a file, or `-`.
    Generate {
        #[command(flatten)]
        scale: Scale,
        #[arg(long, default_value = "-")]
        out: String,
    },
    /// The embedded engine: Tsdb::write with Durability::Sync, then checkpoint + compact.
    Wulian {
        #[command(flatten)]
        scale: Scale,
        /// Store directory (must not exist or be empty).
        #[arg(long)]
        dir: PathBuf,
        /// `Config::checkpoint_bytes` in MiB: WAL size that triggers a flush (default 256).
        #[arg(long, default_value_t = 256)]
        checkpoint_mib: u64,
    },
    /// InfluxDB 1.x over HTTP: POST /write?precision=ms, queries with InfluxQL.
    Influx {
        #[command(flatten)]
        scale: Scale,
        #[arg(long, default_value = "http://127.0.0.1:8086")]
        url: String,
        #[arg(long, default_value = "bench")]
        db: String,
        /// influxd's pid, for its peak RSS.
        #[arg(long)]
        pid: u32,
        /// influxd's data and WAL directories, for bytes on disk.
        #[arg(long, num_args = 1..)]
        disk: Vec<PathBuf>,
        /// Longest wait for InfluxDB's compactions to settle after ingest.
        #[arg(long, default_value_t = 120)]
        settle_secs: u64,
    },
    /// SQLite (bundled), ts_kv-like table, WAL mode, synchronous=FULL, one transaction per request.
    Sqlite {
        #[command(flatten)]
        scale: Scale,
        #[arg(long)]
        path: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate { scale, out } => cmd_generate(&scale, &out),
        Command::Wulian {
            scale,
            dir,
            checkpoint_mib,
        } => print(bench_wulian(&scale, &dir, checkpoint_mib)?),
        Command::Influx {
            scale,
            url,
            db,
            pid,
            disk,
            settle_secs,
        } => print(bench_influx(&scale, &url, &db, pid, &disk, settle_secs)?),
        Command::Sqlite { scale, path } => print(bench_sqlite(&scale, &path)?),
    }
}

fn print(report: Json) -> Result<()> {
    println!("{report}");
    Ok(())
}

fn dataset(scale: &Scale) -> Dataset {
    let started = Instant::now();
    let d = generate::generate(
        scale.trucks,
        scale.hours,
        scale.seed,
        scale.rows_per_request,
    );
    eprintln!(
        "generated {} values in {} rows, {} requests ({} batches, {} missing, {} late) in {:.1} s",
        d.values,
        d.rows,
        d.requests.len(),
        d.batches,
        d.batches_missing,
        d.batches_late,
        started.elapsed().as_secs_f64()
    );
    d
}

fn cmd_generate(scale: &Scale, out: &str) -> Result<()> {
    let d = dataset(scale);
    let mut sink: Box<dyn std::io::Write> = if out == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(fs::File::create(out).with_context(|| format!("create {out}"))?)
    };
    let mut buf = String::new();
    for request in &d.requests {
        buf.clear();
        for row in request {
            generate::line(&d.trucks[row.truck as usize], row, &mut buf);
        }
        sink.write_all(buf.as_bytes())?;
    }
    sink.flush()?;
    Ok(())
}

fn common(scale: &Scale, d: &Dataset) -> Json {
    json!({
        "trucks": scale.trucks,
        "hours": scale.hours,
        "seed": scale.seed,
        "values": d.values,
        "rows": d.rows,
        "requests": d.requests.len(),
        "rows_per_request": scale.rows_per_request,
        "writers": scale.writers,
        "batches": d.batches,
        "batches_missing": d.batches_missing,
        "batches_late": d.batches_late,
        "start_ms": d.start_ms,
        "end_ms": d.end_ms,
    })
}

/// `VmHWM` or `VmRSS` of a process, in bytes.
fn proc_status(pid: &str, field: &str) -> Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            let kb: u64 = rest
                .trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no {field} in /proc/{pid}/status")
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| dir_bytes(&e.path()))
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs `f` `runs` times (after one warm-up), returns p50/p99 in ms and what `f` counted.
fn time_query(runs: usize, mut f: impl FnMut() -> Result<u64>) -> Result<Json> {
    let count = f()?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let c = f()?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if c != count {
            bail!("query result changed between runs: {count} then {c}");
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(json!({
        "runs": runs,
        "p50_ms": percentile(&ms, 50.0),
        "p99_ms": percentile(&ms, 99.0),
        "result": count,
    }))
}

/// The query window of the single-device raw query: the first day (or the whole span if less).
fn day_window(d: &Dataset) -> (i64, i64) {
    (d.start_ms, (d.start_ms + 86_400_000).min(d.end_ms))
}

const QUERY_DOC: [(&str, &str); 3] = [
    (
        "raw_1d",
        "truck_0, its 7 readings fields, raw points over the first day (or the span if shorter)",
    ),
    (
        "hourly_avg_span",
        "truck_0, velocity, hourly average over the whole span",
    ),
    (
        "latest_all",
        "latest value of every field (10) of every truck",
    ),
];

// ---------------------------------------------------------------------------------------------
// wulian-tsdb, embedded

fn bench_wulian(scale: &Scale, dir: &Path, checkpoint_mib: u64) -> Result<Json> {
    use wulian_tsdb::{Aggregation, Config, Durability, SeriesKey, Tsdb, Value, WriteEntry};
    let d = Arc::new(dataset(scale));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rss_before = proc_status("self", "VmRSS")?;
    let mut config = Config::new(dir);
    config.durability = Durability::Sync;
    config.checkpoint_bytes = checkpoint_mib << 20;
    let db = Tsdb::open(config.clone())?;
    let names: Arc<Vec<String>> = Arc::new(d.trucks.iter().map(|t| t.name.clone()).collect());
    let keys: Vec<&'static str> = READINGS.iter().chain(DIAGNOSTICS.iter()).copied().collect();
    let keys = Arc::new(keys);

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..scale.writers {
            let (db, d, next, names, keys) = (
                db.clone(),
                Arc::clone(&d),
                Arc::clone(&next),
                Arc::clone(&names),
                Arc::clone(&keys),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = d.requests.get(i) else {
                        return Ok::<(), wulian_tsdb::Error>(());
                    };
                    let mut entries = Vec::with_capacity(request.len() * 7);
                    for row in request {
                        let device = &names[row.truck as usize];
                        for (f, v) in row.fields() {
                            let key = keys[row.table.key_id(f)];
                            entries.push(WriteEntry {
                                series: SeriesKey::new("bench", device.as_str(), key),
                                ts: row.ts,
                                value: if row.table.is_int(f) {
                                    Value::I64(v as i64)
                                } else {
                                    Value::F64(v)
                                },
                            });
                        }
                    }
                    db.write(entries).await?;
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task")?;
        }
        Ok::<(), wulian_tsdb::Error>(())
    })?;
    let ingest = started.elapsed();
    let stats_after_ingest = db.stats();
    let started = Instant::now();
    rt.block_on(db.checkpoint())?;
    rt.block_on(db.compact())?;
    let flush_compact = started.elapsed();
    let st = db.stats();
    let bytes = dir_bytes(dir);

    let (from, to) = day_window(&d);
    let truck0 = names[0].clone();
    let mut queries = serde_json::Map::new();
    queries.insert(
        "raw_1d".into(),
        time_query(scale.query_runs, || {
            let mut n = 0;
            for key in READINGS {
                let s = SeriesKey::new("bench", truck0.as_str(), key);
                n += db.try_range(&s, from, to, 100_000)?.points.len() as u64;
            }
            Ok(n)
        })?,
    );
    queries.insert(
        "hourly_avg_span".into(),
        time_query(scale.query_runs, || {
            let s = SeriesKey::new("bench", truck0.as_str(), "velocity");
            Ok(db
                .aggregate(&s, d.start_ms, d.end_ms, 3_600_000, Aggregation::Avg)?
                .len() as u64)
        })?,
    );
    queries.insert(
        "latest_all".into(),
        time_query(scale.query_runs, || {
            Ok(names
                .iter()
                .map(|n| db.latest("bench", n).len() as u64)
                .sum())
        })?,
    );
    let peak = proc_status("self", "VmHWM")?;
    rt.block_on(db.close())?;
    drop(db);
    // The store reopens cleanly from what was written.
    let reopened = Tsdb::open(config)?;
    let reopened_points = reopened.stats().points;
    drop(reopened);

    let mut out = common(scale, &d);
    let o = out.as_object_mut().expect("object");
    o.insert("engine".into(), json!("wulian-tsdb"));
    o.insert(
        "settings".into(),
        json!(format!("embedded, Durability::Sync (fsync per group commit), checkpoint_bytes {checkpoint_mib} MiB, otherwise default Config (1-day partitions, compaction at 4 files)")),
    );
    o.insert("ingest_secs".into(), json!(ingest.as_secs_f64()));
    o.insert(
        "values_per_sec".into(),
        json!(d.values as f64 / ingest.as_secs_f64()),
    );
    o.insert(
        "commit_groups".into(),
        json!(stats_after_ingest.commit_groups),
    );
    o.insert(
        "commit_requests".into(),
        json!(stats_after_ingest.commit_requests),
    );
    o.insert(
        "flushes_during_ingest".into(),
        json!(stats_after_ingest.checkpoints),
    );
    o.insert(
        "flush_compact_secs".into(),
        json!(flush_compact.as_secs_f64()),
    );
    o.insert("block_files".into(), json!(st.block_files));
    o.insert("bytes_on_disk".into(), json!(bytes));
    o.insert(
        "bytes_per_value".into(),
        json!(bytes as f64 / d.values as f64),
    );
    o.insert("points_stored".into(), json!(reopened_points));
    o.insert(
        "peak_rss_bytes".into(),
        json!(peak.saturating_sub(rss_before)),
    );
    o.insert(
        "rss_note".into(),
        json!("VmHWM of the benchmark process minus its VmRSS before Tsdb::open (the pre-generated data set)"),
    );
    o.insert("queries".into(), Json::Object(queries));
    o.insert("query_doc".into(), query_doc());
    Ok(out)
}

fn query_doc() -> Json {
    Json::Object(
        QUERY_DOC
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// InfluxDB 1.x over HTTP

fn influx_query(agent: &ureq::Agent, url: &str, db: &str, q: &str) -> Result<Json> {
    let mut resp = agent
        .get(&format!("{url}/query"))
        .query("db", db)
        .query("epoch", "ms")
        .query("q", q)
        .call()
        .with_context(|| format!("InfluxDB query {q}"))?;
    let body: Json = serde_json::from_reader(resp.body_mut().as_reader())?;
    for r in body["results"].as_array().into_iter().flatten() {
        if let Some(e) = r.get("error") {
            bail!("InfluxDB query {q}: {e}");
        }
    }
    Ok(body)
}

/// Number of values (non-null cells except `time`) in an InfluxQL answer.
fn influx_values(body: &Json) -> u64 {
    let mut n = 0;
    for r in body["results"].as_array().into_iter().flatten() {
        for s in r["series"].as_array().into_iter().flatten() {
            for row in s["values"].as_array().into_iter().flatten() {
                n += row.as_array().map_or(0, |cells| {
                    cells.iter().skip(1).filter(|c| !c.is_null()).count()
                }) as u64;
            }
        }
    }
    n
}

fn bench_influx(
    scale: &Scale,
    url: &str,
    db: &str,
    pid: u32,
    disk: &[PathBuf],
    settle_secs: u64,
) -> Result<Json> {
    let d = dataset(scale);
    let pid = pid.to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    agent
        .post(&format!("{url}/query"))
        .query("q", format!("CREATE DATABASE {db}"))
        .send_empty()
        .context("CREATE DATABASE")?;
    // Line protocol prepared before the clock starts: the load generator's formatting cost is
    // not charged to InfluxDB.
    let bodies: Vec<String> = d
        .requests
        .iter()
        .map(|request| {
            let mut buf = String::with_capacity(request.len() * 220);
            for row in request {
                generate::line(&d.trucks[row.truck as usize], row, &mut buf);
            }
            buf
        })
        .collect();
    let line_bytes: usize = bodies.iter().map(String::len).sum();
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let write_url = format!("{url}/write");
    let started = Instant::now();
    let handles: Vec<_> = (0..scale.writers)
        .map(|_| {
            let (bodies, next, agent, write_url, db) = (
                Arc::clone(&bodies),
                Arc::clone(&next),
                agent.clone(),
                write_url.clone(),
                db.to_string(),
            );
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok(());
                    };
                    let resp = agent
                        .post(&write_url)
                        .query("db", &db)
                        .query("precision", "ms")
                        .send(body.as_bytes())
                        .context("InfluxDB write")?;
                    if resp.status().as_u16() != 204 {
                        bail!("InfluxDB write answered {}", resp.status());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread")?;
    }
    let ingest = started.elapsed();

    // Let InfluxDB snapshot its cache and compact (configured cold durations are short): wait
    // until the WAL is gone and the size is stable for 10 s, at most `settle_secs`.
    let started = Instant::now();
    let total = || disk.iter().map(|p| dir_bytes(p)).sum::<u64>();
    let wal_bytes = || {
        disk.iter()
            .filter(|p| p.to_string_lossy().contains("wal"))
            .map(|p| dir_bytes(p))
            .sum::<u64>()
    };
    let mut last = total();
    let mut stable_since = Instant::now();
    let mut settled = false;
    while started.elapsed() < Duration::from_secs(settle_secs) {
        std::thread::sleep(Duration::from_secs(1));
        let now = total();
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(10) && wal_bytes() < 64 << 10 {
            settled = true;
            break;
        }
    }
    let settle = started.elapsed();
    let bytes = total();

    let (from, to) = day_window(&d);
    let q_raw = format!(
        "SELECT {} FROM \"readings\" WHERE \"name\"='truck_0' AND time >= {from}ms AND time < {to}ms",
        READINGS.join(",")
    );
    let q_avg = format!(
        "SELECT mean(velocity) FROM \"readings\" WHERE \"name\"='truck_0' AND time >= {}ms AND time < {}ms GROUP BY time(1h)",
        d.start_ms, d.end_ms
    );
    let q_latest = "SELECT last(*) FROM \"readings\" GROUP BY \"name\"; SELECT last(*) FROM \"diagnostics\" GROUP BY \"name\"".to_string();
    let mut queries = serde_json::Map::new();
    for (name, q) in [
        ("raw_1d", &q_raw),
        ("hourly_avg_span", &q_avg),
        ("latest_all", &q_latest),
    ] {
        queries.insert(
            name.into(),
            time_query(scale.query_runs, || {
                Ok(influx_values(&influx_query(&agent, url, db, q)?))
            })?,
        );
    }
    let count = influx_query(
        &agent,
        url,
        db,
        "SELECT count(*) FROM \"readings\"; SELECT count(*) FROM \"diagnostics\"",
    )?;
    let stored: u64 = count["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .flat_map(|row| row.as_array().into_iter().flatten().skip(1))
        .filter_map(Json::as_u64)
        .sum();
    let peak = proc_status(&pid, "VmHWM")?;

    let mut out = common(scale, &d);
    let o = out.as_object_mut().expect("object");
    o.insert("engine".into(), json!("InfluxDB"));
    o.insert("ingest_secs".into(), json!(ingest.as_secs_f64()));
    o.insert(
        "values_per_sec".into(),
        json!(d.values as f64 / ingest.as_secs_f64()),
    );
    o.insert("line_protocol_bytes".into(), json!(line_bytes));
    o.insert("settle_secs".into(), json!(settle.as_secs_f64()));
    o.insert("settled".into(), json!(settled));
    o.insert("bytes_on_disk".into(), json!(bytes));
    o.insert(
        "bytes_per_value".into(),
        json!(bytes as f64 / d.values as f64),
    );
    o.insert("points_stored".into(), json!(stored));
    o.insert("peak_rss_bytes".into(), json!(peak));
    o.insert("rss_note".into(), json!("VmHWM of influxd"));
    o.insert(
        "queries_influxql".into(),
        json!({"raw_1d": q_raw, "hourly_avg_span": q_avg, "latest_all": q_latest}),
    );
    o.insert("queries".into(), Json::Object(queries));
    o.insert("query_doc".into(), query_doc());
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SQLite, ts_kv-like

const SQLITE_SCHEMA: &str = "
CREATE TABLE ts_kv (
    entity_id INTEGER NOT NULL,
    key       INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    long_v    INTEGER,
    dbl_v     REAL,
    PRIMARY KEY (entity_id, key, ts)
) WITHOUT ROWID;
CREATE TABLE ts_kv_dictionary (key TEXT PRIMARY KEY, key_id INTEGER UNIQUE NOT NULL);
";

fn bench_sqlite(scale: &Scale, path: &Path) -> Result<Json> {
    use rusqlite::{Connection, params};
    let d = dataset(scale);
    let rss_before = proc_status("self", "VmRSS")?;
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SQLITE_SCHEMA)?;
    for (i, k) in READINGS.iter().chain(DIAGNOSTICS.iter()).enumerate() {
        conn.execute(
            "INSERT INTO ts_kv_dictionary (key, key_id) VALUES (?1, ?2)",
            params![k, i as i64],
        )?;
    }
    let started = Instant::now();
    for request in &d.requests {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO ts_kv (entity_id, key, ts, long_v, dbl_v) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for row in request {
                for (f, v) in row.fields() {
                    let key = row.table.key_id(f) as i64;
                    if row.table.is_int(f) {
                        stmt.execute(params![row.truck, key, row.ts, v as i64, None::<f64>])?;
                    } else {
                        stmt.execute(params![row.truck, key, row.ts, None::<i64>, v])?;
                    }
                }
            }
        }
        tx.commit()?;
    }
    let ingest = started.elapsed();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let bytes = dir_bytes(path) + dir_bytes(&wal);

    let (from, to) = day_window(&d);
    let mut queries = serde_json::Map::new();
    queries.insert(
        "raw_1d".into(),
        time_query(scale.query_runs, || {
            let mut stmt = conn.prepare_cached(
                "SELECT key, ts, dbl_v FROM ts_kv WHERE entity_id = 0 AND key BETWEEN 0 AND 6 AND ts >= ?1 AND ts < ?2",
            )?;
            let mut n = 0;
            let mut rows = stmt.query(params![from, to])?;
            while let Some(r) = rows.next()? {
                let _: Option<f64> = r.get(2)?;
                n += 1;
            }
            Ok(n)
        })?,
    );
    let velocity = Table::Readings.key_id(3) as i64;
    queries.insert(
        "hourly_avg_span".into(),
        time_query(scale.query_runs, || {
            let mut stmt = conn.prepare_cached(
                "SELECT ts / 3600000, avg(dbl_v) FROM ts_kv WHERE entity_id = 0 AND key = ?1 AND ts >= ?2 AND ts < ?3 GROUP BY 1",
            )?;
            let mut n = 0;
            let mut rows = stmt.query(params![velocity, d.start_ms, d.end_ms])?;
            while rows.next()?.is_some() {
                n += 1;
            }
            Ok(n)
        })?,
    );
    let trucks = d.trucks.len() as i64;
    queries.insert(
        "latest_all".into(),
        time_query(scale.query_runs, || {
            let mut stmt = conn.prepare_cached(
                "SELECT ts, long_v, dbl_v FROM ts_kv WHERE entity_id = ?1 AND key = ?2 ORDER BY ts DESC LIMIT 1",
            )?;
            let mut n = 0;
            for e in 0..trucks {
                for k in 0..10i64 {
                    let mut rows = stmt.query(params![e, k])?;
                    if rows.next()?.is_some() {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })?,
    );
    let stored: u64 = conn.query_row("SELECT count(*) FROM ts_kv", [], |r| r.get(0))?;
    let peak = proc_status("self", "VmHWM")?;
    drop(conn);

    let mut out = common(scale, &d);
    let o = out.as_object_mut().expect("object");
    o.insert("engine".into(), json!("SQLite"));
    o.insert(
        "settings".into(),
        json!(format!(
            "SQLite {} (bundled), journal_mode=WAL, synchronous=FULL, one transaction per request, one writer; table ts_kv(entity_id, key, ts, long_v, dbl_v) PRIMARY KEY (entity_id, key, ts) WITHOUT ROWID",
            rusqlite::version()
        )),
    );
    o.insert("writers".into(), json!(1));
    o.insert("ingest_secs".into(), json!(ingest.as_secs_f64()));
    o.insert(
        "values_per_sec".into(),
        json!(d.values as f64 / ingest.as_secs_f64()),
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
    o.insert("queries".into(), Json::Object(queries));
    o.insert("query_doc".into(), query_doc());
    Ok(out)
}
