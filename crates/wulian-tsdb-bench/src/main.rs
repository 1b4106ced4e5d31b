//! `wulian-tsdb-bench`: generates a TSBS-"iot"-shaped data set and measures ingest, CPU, bytes
//! on disk, peak memory and a TSBS-iot-like query set on wulian-tsdb (embedded,
//! `Durability::Sync`), InfluxDB 1.x, VictoriaMetrics (both over HTTP, line protocol),
//! PostgreSQL (ThingsBoard's `ts_kv` layout) and SQLite. Every subcommand that measures prints
//! one JSON object on standard output; `bench/tsdb.sh` runs them side by side.

#[cfg(test)]
mod crosscheck;
mod generate;
mod influx;
mod lineproto;
mod measure;
mod pg;
mod queries;
mod sql;
mod sqlite;
mod victoria;
mod wulian;

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value as Json, json};

use generate::Dataset;

#[derive(Parser)]
#[command(about = "TSBS-iot-shaped generator and telemetry-store benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Scale {
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
    /// Repetitions of each query (after one warm-up run).
    #[arg(long, default_value_t = 30)]
    query_runs: usize,
    /// A query stops repeating after this many seconds (at least 3 runs).
    #[arg(long, default_value_t = 10)]
    query_budget_secs: u64,
}

impl Scale {
    pub fn budget(&self) -> Duration {
        Duration::from_secs(self.query_budget_secs)
    }
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
    /// The embedded engine: Tsdb::write with Durability::Sync, WAL replay, checkpoint +
    /// compact, queries.
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
    /// The embedded engine with many devices: latest() over all of them, memory per idle series.
    WulianDevices {
        /// Store directory (must not exist or be empty).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        keys: usize,
        /// Points per series.
        #[arg(long, default_value_t = 2)]
        points: usize,
        #[arg(long, default_value_t = 30)]
        query_runs: usize,
    },
    /// InfluxDB 1.x over HTTP: POST /write?precision=ms, queries in InfluxQL.
    Influx {
        #[command(flatten)]
        scale: Scale,
        #[arg(long, default_value = "http://127.0.0.1:8086")]
        url: String,
        #[arg(long, default_value = "bench")]
        db: String,
        /// influxd's pid, for its CPU time and peak RSS.
        #[arg(long)]
        pid: u32,
        /// influxd's data and WAL directories, for bytes on disk.
        #[arg(long, num_args = 1..)]
        disk: Vec<PathBuf>,
        /// Longest wait for InfluxDB's compactions to settle after ingest.
        #[arg(long, default_value_t = 120)]
        settle_secs: u64,
    },
    /// VictoriaMetrics over HTTP: POST /write (line protocol), queries in MetricsQL.
    Victoria {
        #[command(flatten)]
        scale: Scale,
        #[arg(long, default_value = "http://127.0.0.1:8428")]
        url: String,
        /// victoria-metrics' pid, for its CPU time and peak RSS.
        #[arg(long)]
        pid: u32,
        /// Its -storageDataPath, for bytes on disk.
        #[arg(long)]
        data_dir: PathBuf,
        /// Longest wait for its merges to settle after ingest.
        #[arg(long, default_value_t = 120)]
        settle_secs: u64,
    },
    /// PostgreSQL, ThingsBoard's ts_kv layout, batched upserts, synchronous_commit=on.
    Postgres {
        #[command(flatten)]
        scale: Scale,
        /// libpq-style connection string of an empty database.
        #[arg(long)]
        conn: String,
        /// The postmaster's pid, for the CPU time and memory of it and its children.
        #[arg(long)]
        pid: u32,
    },
    /// SQLite (bundled), the same tables, WAL mode, synchronous=FULL.
    Sqlite {
        #[command(flatten)]
        scale: Scale,
        #[arg(long)]
        path: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let report = match cli.command {
        Command::Generate { scale, out } => return cmd_generate(&scale, &out),
        Command::Wulian {
            scale,
            dir,
            checkpoint_mib,
        } => wulian::bench(&scale, &dir, checkpoint_mib)?,
        Command::WulianDevices {
            dir,
            devices,
            keys,
            points,
            query_runs,
        } => {
            if devices == 0 || keys == 0 || points == 0 {
                bail!("--devices, --keys and --points must be at least 1");
            }
            wulian::many_devices(&dir, devices, keys, points, query_runs)?
        }
        Command::Influx {
            scale,
            url,
            db,
            pid,
            disk,
            settle_secs,
        } => influx::bench(
            &scale,
            &influx::Target {
                url: &url,
                db: &db,
                pid,
                disk: &disk,
                settle_secs,
            },
        )?,
        Command::Victoria {
            scale,
            url,
            pid,
            data_dir,
            settle_secs,
        } => victoria::bench(
            &scale,
            &victoria::Target {
                url: &url,
                pid,
                data_dir: &data_dir,
                settle_secs,
            },
        )?,
        Command::Postgres { scale, conn, pid } => pg::bench(&scale, &conn, pid)?,
        Command::Sqlite { scale, path } => sqlite::bench(&scale, &path)?,
    };
    println!("{report}");
    Ok(())
}

pub fn dataset(scale: &Scale) -> Dataset {
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

/// The part of every report that describes the data set.
pub fn common(scale: &Scale, d: &Dataset) -> Json {
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

/// Adds the fields of `extra` (an object) to a report.
pub fn merge(report: &mut serde_json::Map<String, Json>, extra: Json) -> Result<()> {
    let Json::Object(extra) = extra else {
        bail!("not a JSON object");
    };
    report.extend(extra);
    Ok(())
}
