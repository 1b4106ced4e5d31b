//! InfluxDB 1.x over HTTP: line protocol writes, InfluxQL queries.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};

use crate::generate::READINGS;
use crate::lineproto;
use crate::measure::{Answer, dir_bytes, proc_status, tree_cpu_secs};
use crate::queries::{
    DRIVING, Engine, HIGH_LOAD, LONG_SESSION_BUCKETS, LOW_FUEL, Plan, Query, Repeat, STATIONARY,
    run_all,
};
use crate::{Scale, common, dataset};

fn query(agent: &ureq::Agent, url: &str, db: &str, q: &str) -> Result<Json> {
    let mut resp = agent
        .get(format!("{url}/query"))
        .query("db", db)
        .query("epoch", "ms")
        .query("q", q)
        .call()
        .with_context(|| format!("InfluxDB query {q}"))?;
    if resp.status().as_u16() != 200 {
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("InfluxDB answered {} to {q}: {text}", resp.status());
    }
    let body: Json = serde_json::from_reader(resp.body_mut().as_reader())?;
    for r in body["results"].as_array().into_iter().flatten() {
        if let Some(e) = r.get("error") {
            bail!("InfluxDB query {q}: {e}");
        }
    }
    Ok(body)
}

/// One series of an InfluxQL answer: its tags and its rows (time first).
struct Series<'a> {
    tags: &'a serde_json::Map<String, Json>,
    rows: Vec<&'a Vec<Json>>,
}

fn series(body: &Json) -> Vec<Series<'_>> {
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, Json>> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(serde_json::Map::new);
    body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
        .map(|s| Series {
            tags: s["tags"].as_object().unwrap_or(empty),
            rows: s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Json::as_array)
                .collect(),
        })
        .collect()
}

impl Series<'_> {
    fn tag(&self, k: &str) -> Result<&str> {
        self.tags
            .get(k)
            .and_then(Json::as_str)
            .with_context(|| format!("InfluxDB series without tag {k}"))
    }
    /// The non-null numbers of every row, time excluded.
    fn numbers(&self) -> impl Iterator<Item = f64> + '_ {
        self.rows
            .iter()
            .flat_map(|r| r.iter().skip(1))
            .filter_map(Json::as_f64)
    }
}

fn sum_all(body: &Json) -> Answer {
    let mut a = Answer::default();
    for s in series(body) {
        for v in s.numbers() {
            a.add(v);
        }
    }
    a
}

pub struct Target<'a> {
    pub url: &'a str,
    pub db: &'a str,
    pub pid: u32,
    pub disk: &'a [PathBuf],
    pub settle_secs: u64,
}

pub fn bench(scale: &Scale, t: &Target) -> Result<Json> {
    let d = dataset(scale);
    let plan = Plan::new(&d)?;
    let agent = lineproto::agent();
    let mut resp = agent
        .post(format!("{}/query", t.url))
        .query("q", format!("CREATE DATABASE {}", t.db))
        .send_empty()
        .context("CREATE DATABASE")?;
    if resp.status().as_u16() != 200 {
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        bail!("CREATE DATABASE answered {}: {text}", resp.status());
    }
    let bodies = lineproto::bodies(&d);
    let line_bytes: usize = bodies.iter().map(String::len).sum();
    let cpu_before = tree_cpu_secs(t.pid)?;
    let ingest = lineproto::post_all(
        &agent,
        &format!("{}/write?db={}&precision=ms", t.url, t.db),
        bodies,
        scale.writers,
    )?;
    let cpu = tree_cpu_secs(t.pid)? - cpu_before;

    // Configured cold durations are short: InfluxDB snapshots its cache and compacts soon.
    let (settle, settled) = lineproto::settle(t.disk, Duration::from_secs(t.settle_secs));
    let bytes: u64 = t.disk.iter().map(|p| dir_bytes(p)).sum();

    let mut engine = InfluxEngine {
        agent: agent.clone(),
        url: t.url.to_string(),
        db: t.db.to_string(),
    };
    let queries = run_all(
        &mut engine,
        &plan,
        Repeat {
            runs: scale.query_runs,
            budget: scale.budget(),
        },
    )?;
    let count = query(
        &agent,
        t.url,
        t.db,
        "SELECT count(*) FROM \"readings\"; SELECT count(*) FROM \"diagnostics\"",
    )?;
    let stored = sum_all(&count).checksum as u64;
    let peak = proc_status(&t.pid.to_string(), "VmHWM")?;

    let mut out = common(scale, &d);
    let o = out.as_object_mut().context("report is an object")?;
    o.insert("engine".into(), json!("InfluxDB"));
    o.insert("ingest_secs".into(), json!(ingest.as_secs_f64()));
    o.insert(
        "values_per_sec".into(),
        json!(d.values as f64 / ingest.as_secs_f64()),
    );
    o.insert("cpu_secs".into(), json!(cpu));
    o.insert("values_per_cpu_sec".into(), json!(d.values as f64 / cpu));
    o.insert(
        "cpu_note".into(),
        json!("utime+stime of influxd during ingest"),
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
    crate::merge(o, queries)?;
    Ok(out)
}

struct InfluxEngine {
    agent: ureq::Agent,
    url: String,
    db: String,
}

fn range(from: i64, to: i64) -> String {
    format!("time >= {from}ms AND time < {to}ms")
}

impl Engine for InfluxEngine {
    fn run(&mut self, q: Query, plan: &Plan) -> Result<Answer> {
        let text = self.text(q, plan).context("every query has InfluxQL")?;
        let body = query(&self.agent, &self.url, &self.db, &text)?;
        let mut a = Answer::default();
        // InfluxQL has no HAVING: thresholds on aggregates are applied to the answer here.
        match q {
            Query::Raw1d
            | Query::HourlyAvgSpan
            | Query::LatestAll
            | Query::LastLoc
            | Query::FleetHourlyVelocity => return Ok(sum_all(&body)),
            Query::LowFuel => {
                for v in series(&body).iter().flat_map(|s| s.numbers()) {
                    if v <= LOW_FUEL {
                        a.add(v);
                    }
                }
            }
            Query::HighLoad => {
                for s in series(&body) {
                    let cap: f64 = s.tag("load_capacity")?.parse()?;
                    for v in s.numbers() {
                        if v >= HIGH_LOAD * cap {
                            a.add(v);
                        }
                    }
                }
            }
            Query::StationaryTrucks => {
                for v in series(&body).iter().flat_map(|s| s.numbers()) {
                    if v < STATIONARY {
                        a.add(v);
                    }
                }
            }
            Query::LongDrivingSessions => {
                for s in series(&body) {
                    let driving = s.numbers().filter(|&v| v > DRIVING).count() as u64;
                    if driving > LONG_SESSION_BUCKETS {
                        a.add(Plan::truck_index(s.tag("name")?)?);
                    }
                }
            }
            Query::AvgLoad => {
                for s in series(&body) {
                    let cap: f64 = s.tag("load_capacity")?.parse()?;
                    for v in s.numbers() {
                        a.add(v / cap);
                    }
                }
            }
        }
        Ok(a)
    }

    fn text(&self, q: Query, plan: &Plan) -> Option<String> {
        let fleet = &plan.fleet;
        let truck0 = &plan.trucks[0].name;
        Some(match q {
            Query::Raw1d => format!(
                "SELECT {} FROM \"readings\" WHERE \"name\"='{truck0}' AND {}",
                READINGS.join(","),
                range(plan.day.0, plan.day.1)
            ),
            Query::HourlyAvgSpan => format!(
                "SELECT mean(velocity) FROM \"readings\" WHERE \"name\"='{truck0}' AND {} GROUP BY time(1h)",
                range(plan.span.0, plan.span.1)
            ),
            Query::LatestAll => "SELECT last(*) FROM \"readings\" GROUP BY \"name\"; SELECT last(*) FROM \"diagnostics\" GROUP BY \"name\"".to_string(),
            Query::LastLoc => format!(
                "SELECT last(latitude), last(longitude) FROM \"readings\" WHERE \"fleet\"='{fleet}' GROUP BY \"name\""
            ),
            Query::LowFuel => format!(
                "SELECT last(fuel_state) FROM \"diagnostics\" WHERE \"fleet\"='{fleet}' GROUP BY \"name\""
            ),
            Query::HighLoad => format!(
                "SELECT last(current_load) FROM \"diagnostics\" WHERE \"fleet\"='{fleet}' GROUP BY \"name\", \"load_capacity\""
            ),
            Query::StationaryTrucks => format!(
                "SELECT mean(velocity) FROM \"readings\" WHERE \"fleet\"='{fleet}' AND {} GROUP BY \"name\"",
                range(plan.last_10m.0, plan.last_10m.1)
            ),
            Query::LongDrivingSessions => format!(
                "SELECT mean(velocity) FROM \"readings\" WHERE \"fleet\"='{fleet}' AND {} GROUP BY \"name\", time(10m)",
                range(plan.last_4h.0, plan.last_4h.1)
            ),
            Query::AvgLoad => format!(
                "SELECT mean(current_load) FROM \"diagnostics\" WHERE {} GROUP BY \"fleet\", \"model\", \"load_capacity\"",
                range(plan.span.0, plan.span.1)
            ),
            Query::FleetHourlyVelocity => format!(
                "SELECT mean(velocity) FROM \"readings\" WHERE {} GROUP BY time(1h)",
                range(plan.day.0, plan.day.1)
            ),
        })
    }
}
